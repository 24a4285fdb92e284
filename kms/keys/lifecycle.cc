// KeyManager: policies, legal hold, the lifecycle states and destruction with its tombstone.

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/time/time.h"
#include "crypto/base/status.h"
#include "kms/audit/signing_domain.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/tombstone.h"

namespace coffer::kms {

using internal::DatasetSnapshot;
using internal::VersionSnapshot;

namespace {

std::string StateName(const DatasetSnapshot& snap) {
  return std::string(DatasetStateName(internal::FromRow(snap.row.state())));
}

absl::Status WrongState(const DatasetSnapshot& snap, std::string_view needed) {
  return MakeError(ErrorCode::kDatasetStateForbids,
                   "the dataset is " + StateName(snap) + "; this needs " + std::string(needed));
}

bool Destroyed(const DatasetSnapshot& snap) {
  return snap.row.state() == v1::DESTROYING || snap.row.state() == v1::DESTROYED;
}

absl::Status DestroyedError() {
  return MakeError(ErrorCode::kKeyDestroyed, "key destroyed: the dataset was destroyed");
}

}  // namespace

absl::Status KeyManager::ChangeStateLocked(const EntryPtr& entry, int new_state,
                                           audit::v1::EventKind kind,
                                           const audit::AuditActor& actor,
                                           int64_t destroy_after_micros, audit::AuditText detail,
                                           const std::optional<AdminApproval>& approval) {
  audit::AuditEvent event =
      internal::MakeEvent(kind, actor, entry->handle, audit::v1::PURPOSE_UNSPECIFIED, 0,
                          audit::v1::STAGE_REQUESTED, detail);
  if (approval.has_value()) event.approver = approval->approver;
  COFFER_ASSIGN_OR_RETURN(const uint64_t requested_sequence, AuditAt(event));
  absl::Status result;
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
    const int64_t now = NowMicros();
    next->row.set_state(static_cast<v1::DatasetState>(new_state));
    next->row.set_state_changed_micros(now);
    next->row.set_destroy_after_micros(destroy_after_micros);
    if (new_state == v1::PENDING_DESTRUCTION) {
      next->row.set_destruction_requested_micros(now);
      *next->row.mutable_destruction_requested_by() = internal::ToRow(actor);
      next->row.set_destruction_schedule_audit_sequence(requested_sequence);
      next->row.clear_destruction_approvals();
      if (approval.has_value()) {
        v1::Approval* row = next->row.add_destruction_approvals();
        *row->mutable_approver() = internal::ToRow(approval->approver);
        row->set_request_id(approval->request_id);
        row->set_audit_sequence(approval->audit_sequence);
      }
    }
    KeyDb::Batch batch(*db_);
    result = PutDatasetRow(batch, next->row);
    if (result.ok()) result = db_->Write(batch);
    if (result.ok()) {
      Publish(entry, std::move(next));
      // Wipe at once: a locked dataset's keys must not stay in memory.
      if (new_state != v1::ACTIVE) cache_.EraseDataset(entry->handle);
    }
  }
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = Audit(event);
  return result.ok() ? audited : result;
}

absl::Status KeyManager::Disable(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DATASET_DISABLE;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) return Refuse(kKind, handle, actor, DestroyedError());
  if (snap->row.state() != v1::ACTIVE) {
    return Refuse(kKind, handle, actor, WrongState(*snap, "ACTIVE"));
  }
  return ChangeStateLocked(*entry, v1::DISABLED, kKind, actor, 0);
}

absl::Status KeyManager::Enable(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DATASET_ENABLE;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) return Refuse(kKind, handle, actor, DestroyedError());
  if (snap->row.state() != v1::DISABLED) {
    return Refuse(kKind, handle, actor, WrongState(*snap, "DISABLED (cancel a destruction first)"));
  }
  return ChangeStateLocked(*entry, v1::ACTIVE, kKind, actor, 0);
}

absl::Status KeyManager::ScheduleDestruction(uint64_t handle, const audit::AuditActor& actor,
                                             const std::optional<AdminApproval>& approval) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DESTRUCTION_SCHEDULE;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) return Refuse(kKind, handle, actor, DestroyedError());
  if (snap->row.state() != v1::DISABLED) {
    return Refuse(kKind, handle, actor, WrongState(*snap, "DISABLED"));
  }
  if (snap->row.policy().legal_hold()) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kLegalHoldActive, "a legal hold blocks destruction"));
  }
  if (absl::Status locked = CheckRetentionAllowsDestruction(*snap); !locked.ok()) {
    return Refuse(kKind, handle, actor, locked);
  }
  const int64_t after =
      NowMicros() + snap->row.policy().destruction_wait_seconds() * int64_t{1'000'000};
  return ChangeStateLocked(*entry, v1::PENDING_DESTRUCTION, kKind, actor, after, {}, approval);
}

absl::Status KeyManager::CancelDestruction(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DESTRUCTION_CANCEL;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) {
    return Refuse(
        kKind, handle, actor,
        MakeError(ErrorCode::kDestructionStarted,
                  "destruction has begun (" + StateName(*snap) + "); it cannot be cancelled"));
  }
  if (snap->row.state() != v1::PENDING_DESTRUCTION) {
    return Refuse(kKind, handle, actor, WrongState(*snap, "PENDING_DESTRUCTION"));
  }
  return ChangeStateLocked(*entry, v1::DISABLED, kKind, actor, 0);
}

absl::Status KeyManager::SetLegalHold(uint64_t handle, bool hold, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  const auto kind = hold ? audit::v1::HOLD_SET : audit::v1::HOLD_CLEAR;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) return Refuse(kind, handle, actor, DestroyedError());
  if (snap->row.policy().legal_hold() == hold) return absl::OkStatus();
  audit::AuditEvent event = internal::MakeEvent(kind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                                                0, audit::v1::STAGE_REQUESTED);
  COFFER_RETURN_IF_ERROR(Audit(event));
  absl::Status result;
  {
    std::lock_guard<std::mutex> entry_lock((*entry)->mu);
    auto next = std::make_shared<DatasetSnapshot>(*(*entry)->snapshot.load());
    next->row.mutable_policy()->set_legal_hold(hold);
    KeyDb::Batch batch(*db_);
    result = PutDatasetRow(batch, next->row);
    if (result.ok()) result = db_->Write(batch);
    if (result.ok()) Publish(*entry, std::move(next));
  }
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = Audit(event);
  return result.ok() ? audited : result;
}

absl::Status KeyManager::SetPolicy(uint64_t handle, const DatasetPolicy& policy,
                                   const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::POLICY_CHANGE;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (Destroyed(*snap)) return Refuse(kKind, handle, actor, DestroyedError());
  const DatasetPolicy old = internal::FromRow(snap->row.policy());
  if (policy.legal_hold != old.legal_hold) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kInvalidArgument, "change a legal hold with SetLegalHold"));
  }
  if (policy.records_rotation.count() <= 0 || policy.attachments_rotation.count() <= 0 ||
      policy.usage_limit == 0 || policy.retention_max_age.count() < 0 ||
      policy.minimum_retention.count() < 0 || policy.destruction_wait.count() < 0 ||
      policy.auto_destroy_after_disabled.count() < 0) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kInvalidArgument,
                            "periods must be positive, durations not negative, usage limit >= 1"));
  }
  std::vector<audit::AuditEvent> events;
  auto change = [&](audit::AuditText name, int64_t before, int64_t after) {
    if (before == after) return;
    audit::AuditEvent event = internal::MakeEvent(
        kKind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, 0, audit::v1::STAGE_REQUESTED);
    event.policy_change = audit::AuditPolicyChange{name, before, after};
    events.push_back(std::move(event));
  };
  change("records_rotation_seconds", old.records_rotation.count(), policy.records_rotation.count());
  change("attachments_rotation_seconds", old.attachments_rotation.count(),
         policy.attachments_rotation.count());
  change("usage_limit", static_cast<int64_t>(old.usage_limit),
         static_cast<int64_t>(policy.usage_limit));
  change("bin_days", old.bin_days, policy.bin_days);
  change("retention_max_age_seconds", old.retention_max_age.count(),
         policy.retention_max_age.count());
  change("minimum_retention_seconds", old.minimum_retention.count(),
         policy.minimum_retention.count());
  change("destruction_wait_seconds", old.destruction_wait.count(), policy.destruction_wait.count());
  change("auto_destroy_after_disabled_seconds", old.auto_destroy_after_disabled.count(),
         policy.auto_destroy_after_disabled.count());
  // -1: none of its own (the daemon's setting applies).
  change(
      "reencrypt_versions_back",
      old.reencrypt_versions_back.has_value() ? int64_t{*old.reencrypt_versions_back} : -1,
      policy.reencrypt_versions_back.has_value() ? int64_t{*policy.reencrypt_versions_back} : -1);
  change("max_records", static_cast<int64_t>(old.max_records),
         static_cast<int64_t>(policy.max_records));
  change("max_stored_bytes", static_cast<int64_t>(old.max_stored_bytes),
         static_cast<int64_t>(policy.max_stored_bytes));
  if (events.empty()) return absl::OkStatus();
  COFFER_RETURN_IF_ERROR(options_.audit_log->AppendBatch(events).status());
  absl::Status result;
  {
    std::lock_guard<std::mutex> entry_lock((*entry)->mu);
    auto next = std::make_shared<DatasetSnapshot>(*(*entry)->snapshot.load());
    *next->row.mutable_policy() = internal::ToRow(policy);
    KeyDb::Batch batch(*db_);
    result = PutDatasetRow(batch, next->row);
    if (result.ok()) result = db_->Write(batch);
    if (result.ok()) Publish(*entry, std::move(next));
  }
  for (audit::AuditEvent& event : events) {
    event.stage = audit::v1::STAGE_COMPLETED;
    event.result = ErrorCodeOf(result);
  }
  absl::Status audited = options_.audit_log->AppendBatch(events).status();
  return result.ok() ? audited : result;
}

absl::Status KeyManager::CheckRetentionAllowsDestruction(
    const internal::DatasetSnapshot& snap) const {
  const int64_t retention_seconds = snap.row.policy().minimum_retention_seconds();
  // Without a data counter there is no data DB whose items could be locked.
  if (retention_seconds <= 0 || options_.data_counter == nullptr) return absl::OkStatus();
  COFFER_ASSIGN_OR_RETURN(std::optional<int64_t> newest,
                          options_.data_counter->NewestItemWrite(snap.row.handle()));
  if (!newest.has_value()) return absl::OkStatus();
  const int64_t locked_until = *newest + retention_seconds * int64_t{1'000'000};
  if (NowMicros() >= locked_until) return absl::OkStatus();
  return MakeError(ErrorCode::kComplianceLocked,
                   "the dataset holds items inside its minimum retention (compliance lock) until " +
                       absl::FormatTime(absl::RFC3339_sec, absl::FromUnixMicros(locked_until),
                                        absl::UTCTimeZone()) +
                       ": it cannot be destroyed before then");
}

absl::Status KeyManager::DestroyLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                                       bool replay) {
  constexpr auto kKind = audit::v1::DATASET_DESTROY;
  Snapshot snap = entry->snapshot.load();
  if (!replay && snap->row.policy().legal_hold()) {
    return Refuse(kKind, entry->handle, actor,
                  MakeError(ErrorCode::kLegalHoldActive, "a legal hold blocks destruction"));
  }
  // A retention raised while the destruction waited holds it too.
  if (absl::Status locked = CheckRetentionAllowsDestruction(*snap); !replay && !locked.ok()) {
    return Refuse(kKind, entry->handle, actor, locked);
  }
  COFFER_ASSIGN_OR_RETURN(
      const uint64_t requested_sequence,
      AuditAt(internal::MakeEvent(kKind, actor, entry->handle, audit::v1::PURPOSE_UNSPECIFIED, 0,
                                  audit::v1::STAGE_REQUESTED)));
  const int64_t now = NowMicros();
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
    next->row.set_state(v1::DESTROYING);
    next->row.set_state_changed_micros(now);
    v1::IntentRow intent;
    intent.set_kind(v1::INTENT_DESTROYING);
    intent.set_handle(entry->handle);
    intent.set_started_micros(now);
    *intent.mutable_actor() = internal::ToRow(actor);
    intent.set_audit_sequence(requested_sequence);
    KeyDb::Batch batch(*db_);
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, DatasetRowKey(entry->handle), intent));
    COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    Publish(entry, std::move(next));
    cache_.EraseDataset(entry->handle);
  }
  Crash("destroy.intent");
  return FinishDestroyLocked(entry, actor, requested_sequence);
}

namespace {

// Fills the tombstone's record of dataset `snap` (all but its destroyed DWKs), destroyed at
// `now`. The row must have a name salt.
void FillTombstone(const DatasetSnapshot& snap, uint64_t requested_sequence, int64_t now,
                   v1::Tombstone& tombstone) {
  const v1::DatasetRow& row = snap.row;
  // Version 2 commits to the name under the dataset's salt (never a bare hash of it).
  tombstone.set_name_commitment(receipt::NameCommitment(row.name_salt(), row.name()));
  tombstone.set_created_micros(row.created_micros());
  tombstone.set_destruction_requested_micros(row.destruction_requested_micros());
  tombstone.set_destroyed_micros(now);
  const v1::Actor& requester = row.destruction_requested_by();
  tombstone.set_actor_uid(requester.uid());
  tombstone.set_actor_admin_id(requester.admin_id());
  tombstone.set_actor_admin_name(requester.admin_name());
  uint32_t versions = 0;
  for (const auto& list : snap.versions) versions += static_cast<uint32_t>(list.size());
  tombstone.set_key_versions_destroyed(versions);
  *tombstone.mutable_destruction_approvals() = row.destruction_approvals();
  tombstone.set_schedule_audit_sequence(row.destruction_schedule_audit_sequence());
  tombstone.set_destroy_audit_sequence(requested_sequence);
  tombstone.set_scheduled_by_lifecycle_automation(requester.socket() == audit::v1::SOCKET_INTERNAL);
  tombstone.set_format_version(kTombstoneFormatVersion);
}

// The DESTROYED row that replaces `row`: the signed tombstone and what a receipt needs.
v1::DatasetRow DestroyedRow(uint64_t handle, const v1::DatasetRow& row, int64_t now,
                            std::string tombstone, std::string signature) {
  v1::DatasetRow destroyed;
  destroyed.set_handle(handle);
  destroyed.set_state(v1::DESTROYED);
  destroyed.set_created_micros(row.created_micros());
  destroyed.set_state_changed_micros(now);
  destroyed.set_destruction_requested_micros(row.destruction_requested_micros());
  destroyed.set_tombstone(std::move(tombstone));
  destroyed.set_tombstone_signature(std::move(signature));
  destroyed.set_name_salt(row.name_salt());  // kept (sealed): a receipt is found by name
  return destroyed;
}

}  // namespace

absl::StatusOr<bool> KeyManager::TokenHoldsAnyDwk(uint64_t handle,
                                                  const v1::DatasetRow& row) const {
  for (const v1::WrappingKeyRef& ref : row.live_wrapping_keys()) {
    COFFER_ASSIGN_OR_RETURN(bool held, TokenHolds(handle, ref));
    if (held) return true;
  }
  return false;
}

absl::Status KeyManager::DestroyWrappingKeysLocked(uint64_t handle, const v1::DatasetRow& row,
                                                   v1::Tombstone& tombstone) {
  for (const v1::WrappingKeyRef& ref : row.live_wrapping_keys()) {
    hsm::KeyWrapper* wrapper = Module(ref.module());
    if (wrapper == nullptr) {
      return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + ref.module());
    }
    absl::Status destroyed =
        options_.restored_copy
            ? MakeError(ErrorCode::kHsmKeyNotFound, "absent from the token (checked above)")
            : wrapper->DestroyWrappingKey({handle, ref.version()});
    const ErrorCode code = ErrorCodeOf(destroyed);
    if (!destroyed.ok() && code != ErrorCode::kHsmKeyNotFound && code != ErrorCode::kKeyDestroyed) {
      return destroyed;  // the intent stays; Open or the next tick resumes
    }
    *tombstone.add_destroyed_wrapping_keys() = ref;
    tombstone.add_wrapping_key_destroyed_micros(NowMicros());
    tombstone.add_wrapping_key_already_absent(!destroyed.ok());
    Crash("destroy.wrapping_key");
  }
  return absl::OkStatus();
}

absl::Status KeyManager::FinishDestroyLocked(const EntryPtr& entry, const audit::AuditActor& actor,
                                             uint64_t requested_sequence) {
  const uint64_t handle = entry->handle;
  Snapshot snap = entry->snapshot.load();
  auto finish = [&](const absl::Status& result) -> absl::Status {
    audit::AuditEvent event =
        internal::MakeEvent(audit::v1::DATASET_DESTROY, actor, handle,
                            audit::v1::PURPOSE_UNSPECIFIED, 0, audit::v1::STAGE_COMPLETED);
    event.result = ErrorCodeOf(result);
    absl::StatusOr<uint64_t> audited = AuditAt(event);
    if (!result.ok()) return result;
    if (!audited.ok()) return audited.status();
    // For the deletion receipt. A crash before this write leaves 0 ("not recorded").
    return UpdateDestroyedRow(
        entry, [&](v1::DatasetRow& row) { row.set_destroy_completed_audit_sequence(*audited); });
  };
  if (options_.restored_copy) {
    // A restored copy never destroys a token object (kms/keys/recovery.cc): it finishes only
    // once the token holds none of the DWKs, and otherwise stays DESTROYING with its intent.
    absl::StatusOr<bool> held = TokenHoldsAnyDwk(handle, snap->row);
    if (!held.ok()) return finish(held.status());
    if (*held) {
      std::vector<uint64_t>& deferred = recovery_.destroys_deferred;
      if (std::find(deferred.begin(), deferred.end(), handle) == deferred.end()) {
        deferred.push_back(handle);
      }
      return absl::OkStatus();
    }
  }
  v1::Tombstone tombstone;
  tombstone.set_dataset_handle(handle);
  if (absl::Status destroyed = DestroyWrappingKeysLocked(handle, snap->row, tombstone);
      !destroyed.ok()) {
    return finish(destroyed);
  }
  const v1::DatasetRow& row = snap->row;
  if (row.name_salt().empty()) {
    return finish(MakeError(ErrorCode::kKeyDbRowCorrupt, "the dataset has no name salt"));
  }
  const int64_t now = NowMicros();
  FillTombstone(*snap, requested_sequence, now, tombstone);
  std::string serialized;
  if (!tombstone.SerializeToString(&serialized)) {
    return finish(MakeError(ErrorCode::kInternal, "cannot serialise the tombstone"));
  }
  absl::StatusOr<std::string> signature =
      options_.signer->Sign(audit::DomainMessage(audit::SigningDomain::kTombstone, serialized));
  if (!signature.ok()) return finish(signature.status());

  auto next = std::make_shared<DatasetSnapshot>();
  next->row = DestroyedRow(handle, row, now, std::move(serialized), *std::move(signature));
  KeyDb::Batch batch(*db_);
  for (const auto& list : snap->versions) {
    for (const VersionSnapshot& v : list) {
      batch.Delete(
          KeyDbTable::kKeyVersions,
          KeyVersionRowKey(handle, static_cast<uint8_t>(v.row.purpose()), v.row.version()));
    }
  }
  auto name = names_.find(row.name());
  if (name != names_.end() && name->second == handle) {
    absl::StatusOr<std::string> name_key = dataset_names_->LookupKey(row.name());
    if (!name_key.ok()) return finish(name_key.status());
    batch.Delete(KeyDbTable::kNames, *name_key);
  }
  batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
  absl::Status written = PutDatasetRow(batch, next->row);
  if (written.ok()) written = db_->Write(batch);
  if (!written.ok()) return finish(written);
  Crash("destroy.committed");
  if (name != names_.end() && name->second == handle) names_.erase(name);
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    Publish(entry, std::move(next));
  }
  cache_.EraseDataset(handle);
  return finish(absl::OkStatus());
}

absl::Status KeyManager::CheckpointKeyDb(const std::string& target_dir) {
  return db_->CreateCheckpoint(target_dir);
}

uint64_t KeyManager::key_db_generation() const { return db_->generation(); }

absl::StatusOr<uint64_t> KeyManager::AdvanceKeyDbGeneration(uint64_t at_least) {
  return db_->AdvanceGeneration(at_least);
}

absl::Status KeyManager::ReplayDestruction(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  EntryPtr entry = FindEntry(handle);
  if (entry == nullptr) return absl::OkStatus();  // created after the backup: nothing here
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() == v1::DESTROYED) return absl::OkStatus();
  if (snap->row.state() == v1::DESTROYING) {
    return FinishDestroyLocked(entry, actor, /*requested_sequence=*/0);
  }
  return DestroyLocked(entry, actor, /*replay=*/true);
}

absl::StatusOr<SignedTombstone> KeyManager::GetTombstone(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::DESTROYED) {
    return WrongState(*snap, "DESTROYED");
  }
  return SignedTombstone{snap->row.tombstone(), snap->row.tombstone_signature()};
}

}  // namespace coffer::kms
