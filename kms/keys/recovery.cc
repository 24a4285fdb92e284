// KeyManager: start-up recovery of intents, reconciliation of token objects with key-DB rows,
// and the clock check.
//
// Intents in a restored key DB (KeyManagerOptions::restored_copy; FullBackups::RestoreInto opens
// the restored copy with the live token while the live daemon keeps serving from its own key DB,
// whose intents it resolves itself). A restore never creates or destroys a token object, so each
// intent a backup captured is resolved in key-DB rows only:
//  - CREATING: the intent row is dropped. The DWK it names is left in the token: the live daemon
//    either finished that create (the DWK is a live dataset's key) or rolls it back itself.
//  - REWRAPPING: if the token holds the old and the new DWK, the re-wrap is finished in rows
//    (DEKs unwrapped and wrapped again: no object changes) and, with destroy_old, the old DWK is
//    only dropped from the dataset's live list, never destroyed. Otherwise the intent is dropped
//    and the dataset stays under its old DWK; a version row already under the new DWK keeps that
//    DWK listed, so a DWK the token lacks makes Reconcile mark the dataset WRAPPING_KEY_MISSING
//    (docs/key-manager.md: a re-wrap with destroy_old outdates older backups) — never fixed by
//    creating a key. A switched re-wrap only drops the old DWK from the live list.
//  - DESTROYING: finished in rows (DEK rows deleted, signed tombstone, every DWK recorded as
//    already absent) once the token holds none of the dataset's DWKs; otherwise the dataset
//    stays DESTROYING with its intent — it serves nothing — and the live daemon destroys the
//    DWKs (its key DB holds the same destruction), or the daemon that later serves the restored
//    directory finishes it.

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {

using internal::DatasetSnapshot;

namespace {

// Whether a key-version row of `snap` is wrapped under `ref`.
bool AnyVersionUnder(const DatasetSnapshot& snap, const v1::WrappingKeyRef& ref) {
  for (const auto& list : snap.versions) {
    for (const internal::VersionSnapshot& v : list) {
      if (v.row.module() == ref.module() && v.wrapped.key.version == ref.version()) return true;
    }
  }
  return false;
}

}  // namespace

absl::Status KeyManager::CheckClockAtOpen() {
  if (NowMicros() >= clock_high_water_micros_) return absl::OkStatus();
  recovery_.clock_went_backwards = true;
  audit::AuditEvent event = internal::MakeEvent(
      audit::v1::CLOCK_WENT_BACKWARDS, internal::InternalActor(), 0, audit::v1::PURPOSE_UNSPECIFIED,
      0, audit::v1::STAGE_COMPLETED, "clock behind the key DB high-water mark at start-up");
  event.result = ErrorCode::kClockWentBackwards;
  return Audit(event);
}

absl::Status KeyManager::Recover() {
  std::vector<std::pair<uint64_t, std::string>> intents;
  COFFER_RETURN_IF_ERROR(db_->Scan(
      KeyDbTable::kIntents, "", [&](std::string_view, std::string_view message) -> absl::Status {
        v1::IntentRow intent;
        if (!intent.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
          return MakeError(ErrorCode::kKeyDbRowCorrupt, "an intent row does not parse");
        }
        intents.emplace_back(intent.handle(), std::string(message));
        return absl::OkStatus();
      }));
  const audit::AuditActor actor = internal::InternalActor();
  for (const auto& [handle, bytes] : intents) {
    v1::IntentRow intent;
    intent.ParseFromString(bytes);
    switch (intent.kind()) {
      case v1::INTENT_CREATING:
        COFFER_RETURN_IF_ERROR(RecoverCreating(handle, intent, actor));
        break;
      case v1::INTENT_DESTROYING:
        COFFER_RETURN_IF_ERROR(RecoverDestroying(handle, intent));
        break;
      case v1::INTENT_REWRAPPING:
        COFFER_RETURN_IF_ERROR(RecoverRewrapping(handle, intent, bytes, actor));
        break;
      default:
        return MakeError(ErrorCode::kKeyDbRowCorrupt, "an intent row has an unknown kind");
    }
  }
  return absl::OkStatus();
}

absl::Status KeyManager::RecoverCreating(uint64_t handle, const v1::IntentRow& intent,
                                         const audit::AuditActor& actor) {
  // Nothing of the dataset reached the key DB (the rows and the intent's removal are
  // one batch): undo the token side.
  if (FindEntry(handle) != nullptr) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "a CREATING intent names an existing dataset");
  }
  if (options_.restored_copy) {
    // The DWK may be a live dataset's by now: the token is left to the live daemon.
    KeyDb::Batch batch(*db_);
    batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    audit::AuditEvent event = internal::MakeEvent(
        audit::v1::DATASET_CREATE, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, 1,
        audit::v1::STAGE_COMPLETED,
        "create intent dropped from a restored key DB; the token is left unchanged");
    event.result = ErrorCode::kCancelled;
    COFFER_RETURN_IF_ERROR(Audit(event));
    recovery_.creates_rolled_back.push_back(handle);
    return absl::OkStatus();
  }
  const v1::WrappingKeyRef& ref = intent.new_wrapping_key();
  hsm::KeyWrapper* wrapper = Module(ref.module());
  if (wrapper == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + ref.module());
  }
  absl::Status destroyed = wrapper->DestroyWrappingKey({handle, ref.version()});
  if (destroyed.ok()) {
    recovery_.orphans_removed.push_back({handle, ref.version()});
  } else if (ErrorCodeOf(destroyed) != ErrorCode::kHsmKeyNotFound) {
    return destroyed;
  }
  KeyDb::Batch batch(*db_);
  batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  audit::AuditEvent event =
      internal::MakeEvent(audit::v1::DATASET_CREATE, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                          1, audit::v1::STAGE_COMPLETED, "create rolled back after a crash");
  event.result = ErrorCode::kCancelled;
  COFFER_RETURN_IF_ERROR(Audit(event));
  recovery_.creates_rolled_back.push_back(handle);
  return absl::OkStatus();
}

absl::Status KeyManager::RecoverDestroying(uint64_t handle, const v1::IntentRow& intent) {
  EntryPtr entry = FindEntry(handle);
  if (entry == nullptr || entry->snapshot.load()->row.state() != v1::DESTROYING) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt,
                     "a DESTROYING intent names no dataset being destroyed");
  }
  COFFER_RETURN_IF_ERROR(
      FinishDestroyLocked(entry, internal::FromRow(intent.actor()), intent.audit_sequence()));
  // A restored copy may leave it DESTROYING (recorded in destroys_deferred).
  if (entry->snapshot.load()->row.state() == v1::DESTROYED) {
    recovery_.destroys_completed.push_back(handle);
  }
  return absl::OkStatus();
}

absl::Status KeyManager::RecoverRewrapping(uint64_t handle, const v1::IntentRow& intent,
                                           const std::string& intent_bytes,
                                           const audit::AuditActor& actor) {
  EntryPtr entry = FindEntry(handle);
  if (entry == nullptr) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "a REWRAPPING intent names no dataset");
  }
  if (options_.restored_copy && !intent.switched()) {
    // Rows move only while the token holds both DWKs (unwrap under the old, wrap under
    // the new); otherwise the intent is dropped and Reconcile reports what is missing.
    COFFER_ASSIGN_OR_RETURN(bool held_new, TokenHolds(handle, intent.new_wrapping_key()));
    COFFER_ASSIGN_OR_RETURN(bool held_old, TokenHolds(handle, intent.old_wrapping_key()));
    if (!held_new || !held_old) {
      COFFER_RETURN_IF_ERROR(DropRewrapIntentLocked(entry, intent));
      recovery_.rewraps_dropped.push_back(handle);
      return absl::OkStatus();
    }
  } else if (!intent.switched()) {
    const v1::WrappingKeyRef& ref = intent.new_wrapping_key();
    hsm::KeyWrapper* wrapper = Module(ref.module());
    if (wrapper == nullptr) {
      return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + ref.module());
    }
    if (intent.rewrapped() == 0 && !AnyVersionUnder(*entry->snapshot.load(), ref)) {
      // No row is under the new DWK yet, so it holds nothing: made again rather than trusted.
      // A kill while the token was generating it may have left a half-made object — SoftHSM2
      // writes a new object's file in several steps, and one can carry the DWK's label without
      // a usable key — which would fail every wrap, and with it every start.
      absl::Status destroyed = wrapper->DestroyWrappingKey({handle, ref.version()});
      if (!destroyed.ok() && ErrorCodeOf(destroyed) != ErrorCode::kHsmKeyNotFound) {
        return destroyed;
      }
      COFFER_RETURN_IF_ERROR(wrapper->CreateWrappingKey({handle, ref.version()}));
    } else {
      absl::Status created = wrapper->CreateWrappingKey({handle, ref.version()});
      if (!created.ok() && ErrorCodeOf(created) != ErrorCode::kAlreadyExists) return created;
    }
  }
  COFFER_RETURN_IF_ERROR(ContinueRewrapLocked(entry, intent_bytes, /*progress=*/{}));
  COFFER_RETURN_IF_ERROR(Audit(
      internal::MakeEvent(audit::v1::KEY_REWRAP, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                          intent.new_wrapping_key().version(), audit::v1::STAGE_COMPLETED,
                          "re-wrap resumed and completed after a restart")));
  recovery_.rewraps_completed.push_back(handle);
  return absl::OkStatus();
}

absl::StatusOr<bool> KeyManager::TokenHolds(uint64_t handle, const v1::WrappingKeyRef& ref) const {
  hsm::KeyWrapper* wrapper = Module(ref.module());
  if (wrapper == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "module not configured: " + ref.module());
  }
  COFFER_ASSIGN_OR_RETURN(std::vector<hsm::WrappingKeyId> ids, wrapper->ListWrappingKeys());
  const hsm::WrappingKeyId id{handle, ref.version()};
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

absl::Status KeyManager::DropRewrapIntentLocked(const EntryPtr& entry,
                                                const v1::IntentRow& intent) {
  const uint64_t handle = entry->handle;
  const v1::WrappingKeyRef& new_ref = intent.new_wrapping_key();
  {
    std::lock_guard<std::mutex> lock(entry->mu);
    auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
    // A version row under the new DWK (possible only if that DWK was destroyed since): keep it
    // listed, so Reconcile marks the dataset WRAPPING_KEY_MISSING rather than hiding the loss.
    bool under_new = false;
    for (const auto& list : next->versions) {
      for (const internal::VersionSnapshot& v : list) {
        under_new |=
            v.row.module() == new_ref.module() && v.wrapped.key.version == new_ref.version();
      }
    }
    bool listed = false;
    for (const auto& ref : next->row.live_wrapping_keys()) {
      listed |= ref.module() == new_ref.module() && ref.version() == new_ref.version();
    }
    KeyDb::Batch batch(*db_);
    if (under_new && !listed) {
      *next->row.add_live_wrapping_keys() = new_ref;
      COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
    }
    batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    Publish(entry, std::move(next));
  }
  audit::AuditEvent event = internal::MakeEvent(
      audit::v1::KEY_REWRAP, internal::InternalActor(), handle, audit::v1::PURPOSE_UNSPECIFIED,
      new_ref.version(), audit::v1::STAGE_COMPLETED,
      "re-wrap intent dropped from a restored key DB: the token lacks its old or new wrapping key");
  event.result = ErrorCode::kCancelled;
  return Audit(event);
}

absl::Status KeyManager::Reconcile() {
  // Which DWKs the key DB says exist, per module.
  std::map<std::string, std::set<hsm::WrappingKeyId>> expected;
  std::set<uint64_t> known;
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    known.insert(handle);
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() == v1::DESTROYED) continue;
    for (const auto& ref : snap->row.live_wrapping_keys()) {
      expected[ref.module()].insert({handle, ref.version()});
    }
  }
  std::map<std::string, std::set<hsm::WrappingKeyId>> present;
  for (const auto& [name, wrapper] : options_.modules) {
    COFFER_ASSIGN_OR_RETURN(std::vector<hsm::WrappingKeyId> ids, wrapper->ListWrappingKeys());
    present[name].insert(ids.begin(), ids.end());
    for (const hsm::WrappingKeyId& id : ids) {
      if (!expected[name].contains(id)) recovery_.unknown_wrapping_keys.emplace_back(name, id);
    }
  }
  for (const auto& [handle, entry] : *dataset_map) {  // the same map as above
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() == v1::DESTROYED) continue;
    bool missing = false;
    for (const auto& ref : snap->row.live_wrapping_keys()) {
      if (!present.contains(ref.module())) continue;  // module not configured in this run
      if (!present[ref.module()].contains({handle, ref.version()})) {
        recovery_.missing_wrapping_keys.emplace_back(ref.module(),
                                                     hsm::WrappingKeyId{handle, ref.version()});
        missing = true;
      }
    }
    if (missing == snap->row.wrapping_key_missing()) continue;
    // Mark (or clear) the problem durably; never "fix" it by creating a new key.
    auto next = std::make_shared<DatasetSnapshot>(*snap);
    next->row.set_wrapping_key_missing(missing);
    KeyDb::Batch batch(*db_);
    COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
    Publish(entry, std::move(next));
    if (missing) cache_.EraseDataset(handle);
  }
  return absl::OkStatus();
}

std::string_view DatasetStateName(DatasetState state) {
  switch (state) {
    case DatasetState::kActive:
      return "ACTIVE";
    case DatasetState::kDisabled:
      return "DISABLED";
    case DatasetState::kPendingDestruction:
      return "PENDING_DESTRUCTION";
    case DatasetState::kDestroying:
      return "DESTROYING";
    case DatasetState::kDestroyed:
      return "DESTROYED";
  }
  return "UNKNOWN";
}

std::string_view KeyVersionStateName(KeyVersionState state) {
  switch (state) {
    case KeyVersionState::kPrimary:
      return "PRIMARY";
    case KeyVersionState::kDecryptOnly:
      return "DECRYPT_ONLY";
    case KeyVersionState::kCompromised:
      return "COMPROMISED";
    case KeyVersionState::kRetired:
      return "RETIRED";
  }
  return "UNKNOWN";
}

}  // namespace coffer::kms
