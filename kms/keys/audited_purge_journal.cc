#include "kms/keys/audited_purge_journal.h"

#include <algorithm>
#include <array>

namespace coffer::kms {

class AuditPurgeJournal::Attributed final : public storage::PurgeJournal {
 public:
  Attributed(AuditPurgeJournal* parent, audit::AuditActor actor,
             std::optional<audit::AuditActor> approver)
      : parent_(parent), actor_(std::move(actor)), approver_(std::move(approver)) {}

  absl::Status WillPurge(const storage::PurgedItem& item) override {
    return parent_->Journal(item, actor_, approver_);
  }
  void PurgeWritten(const storage::PurgedItem& item) override { parent_->PurgeWritten(item); }

 private:
  AuditPurgeJournal* parent_;
  audit::AuditActor actor_;
  std::optional<audit::AuditActor> approver_;
};

std::unique_ptr<storage::PurgeJournal> AuditPurgeJournal::ForRequest(
    audit::AuditActor actor, std::optional<audit::AuditActor> approver) {
  return std::make_unique<Attributed>(this, std::move(actor), std::move(approver));
}

absl::Status AuditPurgeJournal::WillPurge(const storage::PurgedItem& item) {
  return Journal(item, actor_, std::nullopt);
}

absl::Status AuditPurgeJournal::Journal(const storage::PurgedItem& item,
                                        const audit::AuditActor& actor,
                                        const std::optional<audit::AuditActor>& approver) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !holding_; });
    ++in_flight_;
  }
  audit::AuditEvent event;
  event.kind = item.kind == storage::PurgedItemKind::kRecord ? audit::v1::RECORD_PURGE
                                                             : audit::v1::ATTACHMENT_PURGE;
  event.actor = actor;
  event.approver = approver;
  event.dataset_handle = item.dataset_handle;
  event.stage = audit::v1::STAGE_REQUESTED;
  // One entry per ref, in the existing RECORD_PURGE / ATTACHMENT_PURGE format: the item's ref
  // first, then the id's ref under each other live lookup version, so that a restore replays the
  // purge whichever version the backup holds the item under (full_backup_restore.cc replays every
  // entry's ref). If a later append fails, the earlier ones stand: a journaled purge is replayed
  // even when it was refused here (storage/purge_journal.h).
  absl::Status appended = absl::OkStatus();
  auto append = [&](const crypto::HmacSha256Tag& tag) {
    std::array<uint8_t, audit::kRecordRefSize> ref{};
    std::copy(tag.begin(), tag.end(), ref.begin());
    event.record_ref = ref;
    appended = log_->Append(event).status();
  };
  append(item.ref);
  for (size_t i = 0; appended.ok() && i < item.other_refs.size(); ++i) append(item.other_refs[i]);
  if (!appended.ok()) PurgeWritten(item);  // no purge follows
  return appended;
}

void AuditPurgeJournal::PurgeWritten(const storage::PurgedItem& /*item*/) {
  std::lock_guard<std::mutex> lock(mu_);
  --in_flight_;
  cv_.notify_all();
}

uint64_t AuditPurgeJournal::QuiescentSequence() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !holding_; });
  holding_ = true;
  cv_.wait(lock, [&] { return in_flight_ == 0; });
  const uint64_t boundary = log_->stats().next_sequence;
  holding_ = false;
  cv_.notify_all();
  return boundary;
}

}  // namespace coffer::kms
