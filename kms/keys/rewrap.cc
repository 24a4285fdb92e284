// KeyManager: the resumable re-wrap job (new DWK version, or migration to another module).
//
// Steps, each durable before the next (docs/key-manager.md, "Re-wrap"):
//   1. REWRAPPING intent {old DWK, new DWK, rewrapped = 0}            crash point rewrap.intent
//   2. create the new DWK in the target module (ALREADY_EXISTS = done)  rewrap.wrapping_key
//   3. per DEK version, in key order: unwrap with the old DWK, wrap with the new, write the row
//      and advance the cursor in one batch                               rewrap.row
//   4. point the dataset at the new DWK (intent kept only if the old one must go) rewrap.switched
//   5. optionally destroy the old DWK, then drop it from the live list and the intent
//                                                                        rewrap.old_destroyed
// Progress (phase "rewrap"): step 3, one report per DEK version moved, of the versions not yet
// under the new DWK when the step starts.

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_manager.h"
#include "storage/phase_reporter.h"

namespace coffer::kms {

using internal::DatasetSnapshot;
using internal::VersionSnapshot;

absl::Status KeyManager::Rewrap(uint64_t handle, std::string_view module, bool destroy_old,
                                const audit::AuditActor& actor,
                                const coffer::ProgressFn& progress) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::KEY_REWRAP;
  absl::StatusOr<EntryPtr> entry = RequireEntry(handle);
  if (!entry.ok()) return Refuse(kKind, handle, actor, entry.status());
  Snapshot snap = (*entry)->snapshot.load();
  if (snap->row.state() == v1::DESTROYING || snap->row.state() == v1::DESTROYED) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kKeyDestroyed, "key destroyed: the dataset was destroyed"));
  }
  const v1::WrappingKeyRef& current = snap->row.current_wrapping_key();
  const std::string target = module.empty() ? current.module() : std::string(module);
  hsm::KeyWrapper* wrapper = Module(target);
  if (wrapper == nullptr) {
    return Refuse(kKind, handle, actor,
                  MakeError(ErrorCode::kInvalidArgument, "no configured module of that name"));
  }
  // DWK versions increase across modules, so an id is never reused for a dataset.
  uint32_t new_version = current.version();
  for (const auto& ref : snap->row.live_wrapping_keys()) {
    new_version = std::max(new_version, ref.version());
  }
  ++new_version;
  audit::AuditEvent event =
      internal::MakeEvent(kKind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, new_version,
                          audit::v1::STAGE_REQUESTED, "re-wrap data keys under a new wrapping key");
  COFFER_RETURN_IF_ERROR(Audit(event));
  v1::IntentRow intent;
  intent.set_kind(v1::INTENT_REWRAPPING);
  intent.set_handle(handle);
  intent.set_started_micros(NowMicros());
  *intent.mutable_actor() = internal::ToRow(actor);
  *intent.mutable_old_wrapping_key() = current;
  intent.mutable_new_wrapping_key()->set_module(target);
  intent.mutable_new_wrapping_key()->set_version(new_version);
  intent.set_destroy_old(destroy_old);
  std::string intent_bytes;
  intent.SerializeToString(&intent_bytes);
  absl::Status result;
  {
    KeyDb::Batch batch(*db_);
    result = batch.Put(KeyDbTable::kIntents, DatasetRowKey(handle), intent);
    if (result.ok()) result = db_->Write(batch);
  }
  if (result.ok()) {
    Crash("rewrap.intent");
    result = wrapper->CreateWrappingKey({handle, new_version});
    if (result.ok()) Crash("rewrap.wrapping_key");
  }
  if (result.ok()) result = ContinueRewrapLocked(*entry, intent_bytes, progress);
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = Audit(event);
  // A failure leaves the intent in place: Open (or a retry of the same target) resumes it.
  return result.ok() ? audited : result;
}

absl::Status KeyManager::ContinueRewrapLocked(const EntryPtr& entry,
                                              const std::string& intent_bytes,
                                              const coffer::ProgressFn& progress) {
  v1::IntentRow intent;
  if (!intent.ParseFromString(intent_bytes)) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "a re-wrap intent does not parse");
  }
  const v1::WrappingKeyRef new_ref = intent.new_wrapping_key();
  hsm::KeyWrapper* target = Module(new_ref.module());
  if (target == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + new_ref.module());
  }
  if (!intent.switched()) {
    COFFER_RETURN_IF_ERROR(RewrapRowsLocked(entry, *target, intent, progress));
    COFFER_RETURN_IF_ERROR(SwitchWrappingKeyLocked(entry, intent));
    Crash("rewrap.switched");
    if (!intent.destroy_old()) return absl::OkStatus();
  }
  return DropOldWrappingKeyLocked(entry, intent);
}

absl::Status KeyManager::RewrapRowsLocked(const EntryPtr& entry, hsm::KeyWrapper& target,
                                          v1::IntentRow& intent,
                                          const coffer::ProgressFn& progress) {
  const uint64_t handle = entry->handle;
  const v1::WrappingKeyRef new_ref = intent.new_wrapping_key();
  // Rows in key order: (purpose, version).
  std::vector<std::pair<storage::KeyPurpose, uint32_t>> order;
  uint64_t to_move = 0;
  {
    Snapshot snap = entry->snapshot.load();
    for (storage::KeyPurpose purpose : internal::kAllPurposes) {
      for (const VersionSnapshot& v : snap->versions[static_cast<size_t>(purpose)]) {
        order.emplace_back(purpose, v.row.version());
        if (v.row.module() != new_ref.module() || v.wrapped.key.version != new_ref.version()) {
          ++to_move;
        }
      }
    }
  }
  storage::PhaseReporter reporter(progress, "rewrap", to_move, storage::PhaseReporter::kItemStep);
  // Every row is checked from the start (a row already under the new DWK costs no HSM call),
  // so a rotation between a failed run and its resumption cannot make the cursor skip one;
  // `rewrapped` reports progress.
  for (size_t i = 0; i < order.size(); ++i) {
    const auto [purpose, version] = order[i];
    Snapshot snap = entry->snapshot.load();
    const VersionSnapshot* v = snap->Version(purpose, version);
    hsm::KeyWrapper* source = Module(v->row.module());
    if (source == nullptr) {
      return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + v->row.module());
    }
    if (v->row.module() == new_ref.module() && v->wrapped.key.version == new_ref.version()) {
      continue;
    }
    COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes dek, source->Unwrap(v->wrapped));
    COFFER_ASSIGN_OR_RETURN(hsm::WrappedKey rewrapped,
                            target.Wrap({handle, new_ref.version()}, dek));
    std::lock_guard<std::mutex> lock(entry->mu);
    auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
    VersionSnapshot& row = next->versions[static_cast<size_t>(purpose)][version - 1];
    row.row.set_wrapped_key(rewrapped.Serialize());
    row.row.set_module(new_ref.module());
    row.wrapped = rewrapped;
    intent.set_rewrapped(static_cast<uint32_t>(i + 1));
    KeyDb::Batch batch(*db_);
    COFFER_RETURN_IF_ERROR(batch.Put(
        KeyDbTable::kKeyVersions, KeyVersionRowKey(handle, static_cast<uint8_t>(purpose), version),
        internal::RowForWrite(row)));
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, DatasetRowKey(handle), intent));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    Publish(entry, std::move(next));
    Crash("rewrap.row");
    reporter.Add(1);
  }
  reporter.Finish();
  return absl::OkStatus();
}

absl::Status KeyManager::SwitchWrappingKeyLocked(const EntryPtr& entry, v1::IntentRow& intent) {
  const uint64_t handle = entry->handle;
  const v1::WrappingKeyRef new_ref = intent.new_wrapping_key();
  std::lock_guard<std::mutex> lock(entry->mu);
  auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
  *next->row.mutable_current_wrapping_key() = new_ref;
  bool listed = false;
  for (const auto& ref : next->row.live_wrapping_keys()) {
    listed |= ref.module() == new_ref.module() && ref.version() == new_ref.version();
  }
  if (!listed) *next->row.add_live_wrapping_keys() = new_ref;
  intent.set_switched(true);
  KeyDb::Batch batch(*db_);
  COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
  if (intent.destroy_old()) {
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, DatasetRowKey(handle), intent));
  } else {
    batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
  }
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  Publish(entry, std::move(next));
  return absl::OkStatus();
}

absl::Status KeyManager::DropOldWrappingKeyLocked(const EntryPtr& entry,
                                                  const v1::IntentRow& intent) {
  const uint64_t handle = entry->handle;
  const v1::WrappingKeyRef new_ref = intent.new_wrapping_key();
  const v1::WrappingKeyRef old_ref = intent.old_wrapping_key();
  // Destroy the old DWK only when no row refers to it any more.
  Snapshot snap = entry->snapshot.load();
  for (const auto& list : snap->versions) {
    for (const VersionSnapshot& v : list) {
      if (v.row.module() == old_ref.module() && v.wrapped.key.version == old_ref.version()) {
        return MakeError(ErrorCode::kInternal, "a key version still refers to the old DWK");
      }
    }
  }
  // A restored copy never destroys a token object: the old DWK is only dropped from the live
  // list below; the live daemon's own intent destroys it (kms/keys/recovery.cc).
  if (!options_.restored_copy &&
      (old_ref.module() != new_ref.module() || old_ref.version() != new_ref.version())) {
    hsm::KeyWrapper* old_module = Module(old_ref.module());
    if (old_module == nullptr) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "module not configured: " + old_ref.module());
    }
    absl::Status destroyed = old_module->DestroyWrappingKey({handle, old_ref.version()});
    const ErrorCode code = ErrorCodeOf(destroyed);
    if (!destroyed.ok() && code != ErrorCode::kHsmKeyNotFound && code != ErrorCode::kKeyDestroyed) {
      return destroyed;
    }
    Crash("rewrap.old_destroyed");
  }
  std::lock_guard<std::mutex> lock(entry->mu);
  auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
  auto* live = next->row.mutable_live_wrapping_keys();
  for (int i = live->size() - 1; i >= 0; --i) {
    if (live->Get(i).module() == old_ref.module() && live->Get(i).version() == old_ref.version() &&
        !(old_ref.module() == new_ref.module() && old_ref.version() == new_ref.version())) {
      live->DeleteSubrange(i, 1);
    }
  }
  KeyDb::Batch batch(*db_);
  COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
  batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  Publish(entry, std::move(next));
  return absl::OkStatus();
}

}  // namespace coffer::kms
