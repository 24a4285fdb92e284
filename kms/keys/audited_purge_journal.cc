#include "kms/keys/audited_purge_journal.h"

#include <algorithm>
#include <array>

namespace coffer::kms {

absl::Status AuditPurgeJournal::WillPurge(const storage::PurgedItem& item) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return !holding_; });
    ++in_flight_;
  }
  audit::AuditEvent event;
  event.kind = item.kind == storage::PurgedItemKind::kRecord ? audit::v1::RECORD_PURGE
                                                             : audit::v1::ATTACHMENT_PURGE;
  event.actor = actor_;
  event.dataset_handle = item.dataset_handle;
  event.stage = audit::v1::STAGE_REQUESTED;
  std::array<uint8_t, audit::kRecordRefSize> ref{};
  std::copy(item.ref.begin(), item.ref.end(), ref.begin());
  event.record_ref = ref;
  absl::Status appended = log_->Append(event).status();
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
