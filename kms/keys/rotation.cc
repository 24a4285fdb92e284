// KeyManager: rotation (manual, scheduled, usage-based, emergency), retirement and the
// scheduler tick (RunDueWork).

#include <algorithm>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "crypto/base/status.h"
#include "crypto/random.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {

using internal::DatasetSnapshot;
using internal::VersionSnapshot;

namespace {

absl::Status CheckCause(storage::KeyPurpose purpose, RotationCause cause) {
  bool allowed = false;
  switch (purpose) {
    case storage::KeyPurpose::kRecords:
    case storage::KeyPurpose::kAttachments:
      allowed = cause != RotationCause::kReindex && cause != RotationCause::kRekey;
      break;
    // An emergency rotation changes them too: it starts the re-index itself, and leaves old
    // pseudonym versions live until the operator confirms the translate run.
    case storage::KeyPurpose::kLookup:
      allowed = cause == RotationCause::kReindex || cause == RotationCause::kEmergency;
      break;
    case storage::KeyPurpose::kPseudonym:
      allowed = cause == RotationCause::kRekey || cause == RotationCause::kEmergency;
      break;
  }
  if (allowed) return absl::OkStatus();
  return MakeError(ErrorCode::kFailedPrecondition,
                   std::string(storage::KeyPurposeName(purpose)) + " keys change only by " +
                       (purpose == storage::KeyPurpose::kLookup      ? "a full re-index"
                        : purpose == storage::KeyPurpose::kPseudonym ? "an explicit re-key"
                                                                     : "a rotation"));
}

bool ValidPurpose(storage::KeyPurpose purpose) {
  auto value = static_cast<uint8_t>(purpose);
  return value >= 1 && value <= 4;
}

}  // namespace

absl::StatusOr<uint32_t> KeyManager::Rotate(uint64_t handle, storage::KeyPurpose purpose,
                                            RotationCause cause, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(audit::v1::KEY_ROTATE, handle, actor, entry.status());
  return RotateLocked(*entry, purpose, cause, actor);
}

absl::StatusOr<uint32_t> KeyManager::RotateLocked(const EntryPtr& entry,
                                                  storage::KeyPurpose purpose, RotationCause cause,
                                                  const audit::AuditActor& actor) {
  constexpr auto kKind = audit::v1::KEY_ROTATE;
  const uint64_t handle = entry->handle;
  if (!ValidPurpose(purpose)) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kInvalidArgument, "unknown key purpose"));
  }
  if (absl::Status allowed = CheckCause(purpose, cause); !allowed.ok()) {
    return Refuse(kKind, handle, actor, allowed);
  }
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::ACTIVE) {
    return Refuse(
        kKind, handle, actor,
        MakeError(ErrorCode::kDatasetStateForbids,
                  "rotation needs an ACTIVE dataset; it is " +
                      std::string(DatasetStateName(internal::FromRow(snap->row.state())))));
  }
  const uint32_t new_version = snap->Purpose(purpose)->max_version() + 1;
  const v1::WrappingKeyRef& dwk = snap->row.current_wrapping_key();
  hsm::KeyWrapper* wrapper = Module(dwk.module());
  if (wrapper == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + dwk.module());
  }
  audit::AuditEvent event =
      internal::MakeEvent(kKind, actor, handle, internal::AuditPurpose(purpose), new_version,
                          audit::v1::STAGE_REQUESTED, internal::RotationDetail(cause));
  COFFER_RETURN_IF_ERROR(Audit(event));
  auto finish = [&](const absl::Status& result) -> absl::Status {
    event.stage = audit::v1::STAGE_COMPLETED;
    event.result = ErrorCodeOf(result);
    absl::Status audited = Audit(event);
    return result.ok() ? audited : result;
  };

  // The HSM call happens before any lock a reader or writer of this dataset could meet.
  auto dek = crypto::RandomSecret(hsm::kDekBytes);
  if (!dek.ok()) return finish(dek.status());
  auto wrapped = wrapper->Wrap({handle, dwk.version()}, *dek);
  if (!wrapped.ok()) return finish(wrapped.status());

  std::lock_guard<std::mutex> lock(entry->mu);
  snap = entry->snapshot.load();
  auto next = std::make_shared<DatasetSnapshot>(*snap);
  v1::PurposeState* state = next->MutablePurpose(purpose);
  auto& list = next->versions[static_cast<size_t>(purpose)];
  VersionSnapshot& old_primary = list[state->primary_version() - 1];
  if (old_primary.row.state() == v1::PRIMARY) old_primary.row.set_state(v1::DECRYPT_ONLY);
  old_primary.row.set_reserved_until(old_primary.usage->reserved.load());
  VersionSnapshot fresh;
  fresh.row.set_handle(handle);
  fresh.row.set_purpose(internal::RowPurpose(purpose));
  fresh.row.set_version(new_version);
  fresh.row.set_state(v1::PRIMARY);
  fresh.row.set_wrapped_key(wrapped->Serialize());
  fresh.row.set_module(dwk.module());
  fresh.row.set_created_micros(NowMicros());
  fresh.wrapped = *std::move(wrapped);
  fresh.usage = std::make_shared<internal::UsageCounter>();
  state->set_primary_version(new_version);
  state->set_max_version(new_version);

  KeyDb::Batch batch(*db_);
  const auto purpose_byte = static_cast<uint8_t>(purpose);
  absl::Status staged =
      batch.Put(KeyDbTable::kKeyVersions,
                KeyVersionRowKey(handle, purpose_byte, fresh.row.version()), fresh.row);
  if (staged.ok()) {
    staged = batch.Put(KeyDbTable::kKeyVersions,
                       KeyVersionRowKey(handle, purpose_byte, old_primary.row.version()),
                       old_primary.row);
  }
  if (staged.ok()) staged = PutDatasetRow(batch, next->row);
  if (staged.ok()) staged = db_->Write(batch);
  if (!staged.ok()) return finish(staged);
  list.push_back(std::move(fresh));
  Publish(entry, std::move(next));
  COFFER_RETURN_IF_ERROR(finish(absl::OkStatus()));
  return new_version;
}

absl::Status KeyManager::EmergencyRotate(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(audit::v1::KEY_ROTATE, handle, actor, entry.status());
  for (storage::KeyPurpose purpose :
       {storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments,
        storage::KeyPurpose::kLookup, storage::KeyPurpose::kPseudonym}) {
    COFFER_ASSIGN_OR_RETURN(uint32_t version,
                            RotateLocked(*entry, purpose, RotationCause::kEmergency, actor));
    if (purpose == storage::KeyPurpose::kPseudonym) continue;  // old tokens still re-identify
    // Every older version that still decrypts (or still finds items) is now compromised.
    std::lock_guard<std::mutex> entry_lock((*entry)->mu);
    Snapshot snap = (*entry)->snapshot.load();
    auto next = std::make_shared<DatasetSnapshot>(*snap);
    KeyDb::Batch batch(*db_);
    for (VersionSnapshot& v : next->versions[static_cast<size_t>(purpose)]) {
      if (v.row.version() >= version || v.row.state() != v1::DECRYPT_ONLY) continue;
      v.row.set_state(v1::COMPROMISED);
      COFFER_RETURN_IF_ERROR(
          batch.Put(KeyDbTable::kKeyVersions,
                    KeyVersionRowKey(handle, static_cast<uint8_t>(purpose), v.row.version()),
                    internal::RowForWrite(v)));
    }
    if (batch.count() > 0) {
      COFFER_RETURN_IF_ERROR(db_->Write(batch));
      Publish(*entry, std::move(next));
    }
  }
  return absl::OkStatus();
}

absl::Status KeyManager::RetireCompromised(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return entry.status();
  if (options_.data_counter == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "retiring versions needs the data counter");
  }
  DueWorkReport report;
  RetireCompromisedLocked(*entry, actor, report);
  return report.failures.empty() ? absl::OkStatus() : report.failures.front().second;
}

absl::Status KeyManager::RetireBelow(uint64_t handle, storage::KeyPurpose purpose,
                                     uint32_t min_version, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(audit::v1::KEY_RETIRE, handle, actor, entry.status());
  return RetireLocked(*entry, purpose, min_version, actor, RetireProof::kDataCounter);
}

absl::Status KeyManager::RetirePseudonymAfterTranslate(uint64_t handle, uint32_t min_version,
                                                       const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(audit::v1::KEY_RETIRE, handle, actor, entry.status());
  return RetireLocked(*entry, storage::KeyPurpose::kPseudonym, min_version, actor,
                      RetireProof::kTranslateConfirmed);
}

namespace {

// OK when `proof` may retire versions of `purpose`: a known purpose, and the operator's
// translate-run confirmation for pseudonym keys and for them only.
absl::Status CheckRetireProof(storage::KeyPurpose purpose, bool translate_confirmed) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  // Pseudonym tokens live in the CRM's own tables: only the operator can say the translate run
  // moved them all, and only that word retires a pseudonym version (never a counter, never
  // the scheduler).
  const bool pseudonym = purpose == storage::KeyPurpose::kPseudonym;
  if (pseudonym != translate_confirmed) {
    return pseudonym ? MakeError(ErrorCode::kPseudonymTranslateUnconfirmed,
                                 "pseudonym versions retire only once the CRM's translate "
                                 "run moved every stored token: confirm it with "
                                 "--translate-done")
                     : MakeError(ErrorCode::kInvalidArgument,
                                 "--translate-done applies to pseudonym keys only");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status KeyManager::RetireLocked(const EntryPtr& entry, storage::KeyPurpose purpose,
                                      uint32_t min_version, const audit::AuditActor& actor,
                                      RetireProof proof) {
  constexpr auto kKind = audit::v1::KEY_RETIRE;
  const uint64_t handle = entry->handle;
  const bool compromised_only = proof == RetireProof::kCompromisedOnly;
  if (absl::Status allowed = CheckRetireProof(purpose, proof == RetireProof::kTranslateConfirmed);
      !allowed.ok()) {
    return Refuse(kKind, handle, actor, allowed);
  }
  const bool pseudonym = purpose == storage::KeyPurpose::kPseudonym;
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() == v1::DESTROYING || snap->row.state() == v1::DESTROYED) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kKeyDestroyed, "the dataset was destroyed"));
  }
  const v1::PurposeState* state = snap->Purpose(purpose);
  if (min_version == 0 || min_version > state->primary_version()) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kInvalidArgument,
                            "the minimum decryption version must be 1.." +
                                std::to_string(state->primary_version()) + " (the primary)"));
  }
  // Copied: `state` points into `snap`, which the commit below replaces (and so may free).
  const uint32_t old_min_version = state->min_decrypt_version();
  if (min_version <= old_min_version) return absl::OkStatus();
  if (!pseudonym && options_.data_counter == nullptr) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kFailedPrecondition,
                            "no data counter configured: cannot prove a version unused"));
  }
  // A write sealed under one of these versions may be between its AcceptsWrites check and its
  // write, under its id's stripe: turn later ones away, wait for those under way, then count.
  // The mark is lifted when this ends, whichever way (a retired version stays turned away by
  // min_decrypt_version).
  auto mark_writes_from = [&](uint32_t from) {
    std::lock_guard<std::mutex> entry_lock(entry->mu);
    auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
    next->writes_from[static_cast<size_t>(purpose)] = from;
    Publish(entry, std::move(next));
  };
  absl::Cleanup unmark = [&] {
    if (!pseudonym) mark_writes_from(0);
  };
  if (!pseudonym) {
    mark_writes_from(min_version);
    options_.data_counter->AwaitWritesUnderWay();
    COFFER_RETURN_IF_ERROR(ProveVersionsUnused(handle, *snap, purpose, old_min_version, min_version,
                                               compromised_only, actor));
  }
  audit::AuditText detail = "retire versions below the minimum decryption version";
  if (compromised_only) detail = "retire compromised versions after re-encryption";
  if (pseudonym) detail = "retire pseudonym versions: the operator confirmed the translate run";
  audit::AuditEvent event =
      internal::MakeEvent(kKind, actor, handle, internal::AuditPurpose(purpose), min_version,
                          audit::v1::STAGE_REQUESTED, detail);
  COFFER_RETURN_IF_ERROR(Audit(event));
  absl::Status result = CommitRetirementLocked(entry, purpose, old_min_version, min_version);
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = Audit(event);
  return result.ok() ? audited : result;
}

absl::Status KeyManager::ProveVersionsUnused(uint64_t handle, const DatasetSnapshot& snap,
                                             storage::KeyPurpose purpose, uint32_t from,
                                             uint32_t below, bool compromised_only,
                                             const audit::AuditActor& actor) {
  constexpr auto kKind = audit::v1::KEY_RETIRE;
  for (uint32_t v = from; v < below; ++v) {
    const VersionSnapshot* version = snap.Version(purpose, v);
    if (version->row.state() == v1::RETIRED) continue;
    if (compromised_only && version->row.state() != v1::COMPROMISED) {
      return MakeError(ErrorCode::kInternal, "only compromised versions retire automatically");
    }
    absl::StatusOr<uint64_t> count = options_.data_counter->CountProtectedBy(handle, purpose, v);
    if (!count.ok()) return Refuse(kKind, handle, actor, count.status());
    if (*count > 0) {
      const bool lookup = purpose == storage::KeyPurpose::kLookup;
      return Refuse(
          kKind, handle, actor,
          MakeError(
              ErrorCode::kKeyVersionInUse,
              "key version " + std::to_string(v) + (lookup ? " still names " : " still protects ") +
                  std::to_string(*count) + " stored items; " +
                  (lookup ? "run the re-index first (keyctl reindex start)" : "re-encrypt first")));
    }
  }
  return absl::OkStatus();
}

absl::Status KeyManager::CommitRetirementLocked(const EntryPtr& entry, storage::KeyPurpose purpose,
                                                uint32_t old_min_version, uint32_t min_version) {
  const uint64_t handle = entry->handle;
  absl::Status result;
  std::lock_guard<std::mutex> entry_lock(entry->mu);
  auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
  next->MutablePurpose(purpose)->set_min_decrypt_version(min_version);
  KeyDb::Batch batch(*db_);
  for (uint32_t v = old_min_version; v < min_version && result.ok(); ++v) {
    VersionSnapshot& version = next->versions[static_cast<size_t>(purpose)][v - 1];
    version.row.set_state(v1::RETIRED);
    result = batch.Put(KeyDbTable::kKeyVersions,
                       KeyVersionRowKey(handle, static_cast<uint8_t>(purpose), v),
                       internal::RowForWrite(version));
  }
  if (result.ok()) result = PutDatasetRow(batch, next->row);
  if (result.ok()) result = db_->Write(batch);
  if (result.ok()) {
    Publish(entry, std::move(next));
    for (uint32_t v = 1; v < min_version; ++v) cache_.Erase({handle, purpose, v});
  }
  return result;
}

absl::StatusOr<DueWorkReport> KeyManager::RunDueWork() {
  std::lock_guard<std::mutex> lock(admin_mu_);
  DueWorkReport report;
  const int64_t now = NowMicros();
  if (now < clock_high_water_micros_) {
    report.clock_went_backwards = true;
    audit::AuditEvent event =
        internal::MakeEvent(audit::v1::CLOCK_WENT_BACKWARDS, internal::InternalActor(), 0,
                            audit::v1::PURPOSE_UNSPECIFIED, 0, audit::v1::STAGE_COMPLETED,
                            "clock went backwards: rotation and expiry skipped");
    event.result = ErrorCode::kClockWentBackwards;
    COFFER_RETURN_IF_ERROR(Audit(event));
    return report;
  }
  if (now > clock_high_water_micros_) {
    v1::ClockRow row;
    row.set_high_water_micros(now);
    KeyDb::Batch batch(*db_);
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, "clock", row));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    clock_high_water_micros_ = now;
  }
  report.keys_expired = cache_.DropExpired();
  const audit::AuditActor actor = internal::InternalActor();
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() == v1::ACTIVE) RotateDueLocked(entry, *snap, now, actor, report);
    if (options_.data_counter != nullptr && snap->row.state() != v1::DESTROYING &&
        snap->row.state() != v1::DESTROYED) {
      RetireCompromisedLocked(entry, actor, report);
    }
    ScheduleDueDestructionLocked(entry, now, actor, report);
  }
  return report;
}

void KeyManager::RotateDueLocked(const EntryPtr& entry, const DatasetSnapshot& snap, int64_t now,
                                 const audit::AuditActor& actor, DueWorkReport& report) {
  const uint64_t handle = entry->handle;
  const DatasetPolicy policy = internal::FromRow(snap.row.policy());
  for (storage::KeyPurpose purpose :
       {storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments}) {
    const VersionSnapshot* primary =
        snap.Version(purpose, snap.Purpose(purpose)->primary_version());
    const Seconds period = purpose == storage::KeyPurpose::kRecords ? policy.records_rotation
                                                                    : policy.attachments_rotation;
    const int64_t age_micros = now - primary->row.created_micros();
    std::optional<RotationCause> cause;
    if (age_micros >= period.count() * 1'000'000) {
      cause = RotationCause::kScheduled;  // once, however many periods were missed
    } else if (primary->usage->used.load() >=
               policy.usage_limit / 100 * options_.usage_rotate_percent +
                   policy.usage_limit % 100 * options_.usage_rotate_percent / 100) {
      cause = RotationCause::kUsage;
    }
    if (!cause) continue;
    absl::StatusOr<uint32_t> rotated = RotateLocked(entry, purpose, *cause, actor);
    if (rotated.ok()) {
      report.rotated.emplace_back(handle, purpose);
    } else {
      report.failures.emplace_back(handle, rotated.status());
    }
  }
}

void KeyManager::RetireCompromisedLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                                         DueWorkReport& report) {
  const uint64_t handle = entry->handle;
  for (storage::KeyPurpose purpose :
       {storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments,
        storage::KeyPurpose::kLookup}) {
    Snapshot current = entry->snapshot.load();
    const v1::PurposeState* state = current->Purpose(purpose);
    uint32_t min = state->min_decrypt_version();
    while (min < state->primary_version()) {
      const VersionSnapshot* v = current->Version(purpose, min);
      if (v->row.state() != v1::COMPROMISED) break;
      absl::StatusOr<uint64_t> count =
          options_.data_counter->CountProtectedBy(handle, purpose, min);
      if (!count.ok() || *count > 0) break;
      ++min;
    }
    if (min == state->min_decrypt_version()) continue;
    absl::Status retired = RetireLocked(entry, purpose, min, actor, RetireProof::kCompromisedOnly);
    if (retired.ok()) {
      report.compromised_retired.emplace_back(handle, purpose);
    } else {
      report.failures.emplace_back(handle, retired);
    }
  }
}

void KeyManager::ScheduleDueDestructionLocked(const EntryPtr& entry, int64_t now,
                                              const audit::AuditActor& actor,
                                              DueWorkReport& report) {
  const uint64_t handle = entry->handle;
  // Lifecycle automation: DISABLED long enough and not held -> PENDING_DESTRUCTION, exactly as
  // ScheduleDestruction (the waiting period then applies). Guarded by RunDueWork's clock check.
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() == v1::DISABLED && !snap->row.policy().legal_hold() &&
      snap->row.policy().auto_destroy_after_disabled_seconds() > 0 &&
      now - snap->row.state_changed_micros() >=
          snap->row.policy().auto_destroy_after_disabled_seconds() * int64_t{1'000'000}) {
    const int64_t after = now + snap->row.policy().destruction_wait_seconds() * int64_t{1'000'000};
    // Not while an item is inside the minimum retention: tried again on each run until then.
    absl::Status scheduled = CheckRetentionAllowsDestruction(*snap);
    if (scheduled.ok()) {
      scheduled = ChangeStateLocked(entry, v1::PENDING_DESTRUCTION, audit::v1::DESTRUCTION_SCHEDULE,
                                    actor, after, "lifecycle automation");
    }
    if (scheduled.ok()) {
      report.auto_scheduled.push_back(handle);
    } else {
      report.failures.emplace_back(handle, scheduled);
    }
  }
  snap = entry->snapshot.load();
  if (snap->row.state() == v1::PENDING_DESTRUCTION && now >= snap->row.destroy_after_micros()) {
    if (snap->row.policy().legal_hold()) {
      report.failures.emplace_back(
          handle, MakeError(ErrorCode::kLegalHoldActive, "a legal hold blocks destruction"));
      return;
    }
    absl::Status destroyed = DestroyLocked(entry, actor);
    if (destroyed.ok()) {
      report.destroyed.push_back(handle);
    } else {
      report.failures.emplace_back(handle, destroyed);
    }
  }
}

}  // namespace coffer::kms
