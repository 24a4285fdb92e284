// KeyManager: the KeyProvider side storage calls on its hot path — data keys from the shared
// cache or unwrapped in the token on a miss (audited), the primary of a purpose with its usage
// reserved in blocks, usage-driven rotation, and export's read path into a locked dataset.

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {

using internal::DatasetEntry;
using internal::DatasetSnapshot;
using internal::InternalActor;
using internal::VersionSnapshot;

namespace {

bool ValidPurpose(storage::KeyPurpose purpose) {
  auto value = static_cast<uint8_t>(purpose);
  return value >= 1 && value <= 4;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyManager::UnwrapOnMiss(
    uint64_t handle, const VersionSnapshot& version) {
  auto purpose = static_cast<storage::KeyPurpose>(version.row.purpose());
  hsm::KeyWrapper* wrapper = Module(version.row.module());
  if (wrapper == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the key's PKCS#11 module is not configured: " + version.row.module());
  }
  absl::StatusOr<crypto::SecretBytes> dek = wrapper->Unwrap(version.wrapped);
  audit::AuditEvent event = internal::MakeEvent(
      audit::v1::KEY_UNWRAP, InternalActor(), handle, internal::AuditPurpose(purpose),
      version.row.version(), audit::v1::STAGE_COMPLETED, "key cache miss");
  event.result = ErrorCodeOf(dek.status());
  absl::Status audited = Audit(event);
  if (!dek.ok()) return dek.status();
  COFFER_RETURN_IF_ERROR(audited);  // no key leaves without its durable entry
  return storage::DataKey::Create(purpose, version.row.version(), *std::move(dek));
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyManager::CachedKey(
    const EntryPtr& entry, const VersionSnapshot& version) {
  auto purpose = static_cast<storage::KeyPurpose>(version.row.purpose());
  KeyCacheKey key{entry->handle, purpose, version.row.version()};
  COFFER_ASSIGN_OR_RETURN(
      auto data_key, cache_.GetOrLoad(key, [&] { return UnwrapOnMiss(entry->handle, version); }));
  // A disable, destroy or retirement may have been published while we loaded: it erased the
  // cache before our insert or we see it now and erase what we inserted.
  Snapshot now = entry->snapshot.load();
  if (absl::Status access = CheckDataAccess(*now); !access.ok()) {
    cache_.EraseDataset(entry->handle);
    return access;
  }
  const VersionSnapshot* current = now->Version(purpose, version.row.version());
  if (current == nullptr || current->row.state() == v1::RETIRED) {
    cache_.Erase(key);
    return MakeError(ErrorCode::kKeyVersionRetired,
                     "key version " + std::to_string(key.version) + " was retired");
  }
  return data_key;
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyManager::KeyForVersion(
    uint64_t dataset_handle, storage::KeyPurpose purpose, uint32_t version) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(dataset_handle));
  Snapshot snap = entry->snapshot.load();
  COFFER_RETURN_IF_ERROR(CheckDataAccess(*snap));
  const VersionSnapshot* v = snap->Version(purpose, version);
  if (v == nullptr) {
    return MakeError(ErrorCode::kKeyVersionNotFound,
                     "no " + std::string(storage::KeyPurposeName(purpose)) + " key version " +
                         std::to_string(version));
  }
  if (v->row.state() == v1::RETIRED) {
    return MakeError(ErrorCode::kKeyVersionRetired,
                     "key version " + std::to_string(version) +
                         " was retired (below the minimum decryption version)");
  }
  return CachedKey(entry, *v);
}

absl::StatusOr<std::vector<uint32_t>> KeyManager::LiveVersions(uint64_t dataset_handle,
                                                               storage::KeyPurpose purpose) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(dataset_handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() == v1::DESTROYING || snap->row.state() == v1::DESTROYED) {
    return MakeError(ErrorCode::kKeyDestroyed, "the dataset was destroyed");
  }
  const v1::PurposeState* state = snap->Purpose(purpose);
  std::vector<uint32_t> live{state->primary_version()};
  for (uint32_t v = state->primary_version(); v > 1 && v - 1 >= state->min_decrypt_version(); --v) {
    const VersionSnapshot* older = snap->Version(purpose, v - 1);
    if (older != nullptr && older->row.state() != v1::RETIRED) live.push_back(v - 1);
  }
  return live;
}

absl::StatusOr<bool> KeyManager::AcceptsWrites(uint64_t dataset_handle, storage::KeyPurpose purpose,
                                               uint32_t version) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(dataset_handle));
  Snapshot snap = entry->snapshot.load();
  const v1::PurposeState* state = snap->Purpose(purpose);
  const VersionSnapshot* v = snap->Version(purpose, version);
  return v != nullptr && v->row.state() != v1::RETIRED && version >= state->min_decrypt_version() &&
         version >= snap->writes_from[static_cast<size_t>(purpose)];
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyManager::ExportKey(
    uint64_t dataset_handle, storage::KeyPurpose purpose, std::optional<uint32_t> version) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(dataset_handle));
  Snapshot snap = entry->snapshot.load();
  const DatasetState state = internal::FromRow(snap->row.state());
  if (state == DatasetState::kActive) {
    return MakeError(ErrorCode::kDatasetStateForbids,
                     "dataset is ACTIVE: export reads only DISABLED or PENDING_DESTRUCTION "
                     "datasets");
  }
  if (state == DatasetState::kDisabled || state == DatasetState::kPendingDestruction) {
    // Check everything else CheckDataAccess checks, as if the dataset were active.
    if (snap->row.wrapping_key_missing()) {
      return MakeError(ErrorCode::kWrappingKeyMissing,
                       "the dataset's wrapping key is missing from the HSM (see start-up report)");
    }
  } else {
    COFFER_RETURN_IF_ERROR(CheckDataAccess(*snap));
  }
  const uint32_t wanted =
      version.has_value() ? *version : snap->Purpose(purpose)->primary_version();
  const VersionSnapshot* v = snap->Version(purpose, wanted);
  if (v == nullptr) {
    return MakeError(ErrorCode::kKeyVersionNotFound,
                     "no " + std::string(storage::KeyPurposeName(purpose)) + " key version " +
                         std::to_string(wanted));
  }
  if (v->row.state() == v1::RETIRED) {
    return MakeError(ErrorCode::kKeyVersionRetired,
                     "key version " + std::to_string(wanted) + " was retired");
  }
  // Not through the cache: it holds keys of ACTIVE datasets only (a disable erases them), and
  // the export's own provider keeps what it unwrapped for the one export.
  return UnwrapOnMiss(entry->handle, *v);
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyManager::PrimaryKey(
    uint64_t dataset_handle, storage::KeyPurpose purpose, uint64_t encryptions) {
  if (!ValidPurpose(purpose)) {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  // Each pass either counts, reserves a block, or rotates; a handful always suffices unless
  // other writers keep exhausting what this one reserved.
  for (int pass = 0; pass < 64; ++pass) {
    COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(dataset_handle));
    Snapshot snap = entry->snapshot.load();
    COFFER_RETURN_IF_ERROR(CheckDataAccess(*snap));
    const v1::PurposeState* state = snap->Purpose(purpose);
    const VersionSnapshot* v = snap->Version(purpose, state->primary_version());
    const uint64_t limit = snap->row.policy().usage_limit();
    if (encryptions > limit) {
      return MakeError(ErrorCode::kInvalidArgument, "more encryptions than the usage limit");
    }
    internal::UsageCounter& usage = *v->usage;
    uint64_t used = usage.used.load();
    for (;;) {
      if (used > limit - encryptions) break;                  // would pass the limit: rotate
      if (used + encryptions > usage.reserved.load()) break;  // reserve first
      if (usage.used.compare_exchange_weak(used, used + encryptions)) {
        return CachedKey(entry, *v);
      }
    }
    if (used > limit - encryptions) {
      COFFER_RETURN_IF_ERROR(RotateForUsage(dataset_handle, purpose, v->row.version()));
    } else {
      COFFER_RETURN_IF_ERROR(ReserveUsage(entry, purpose, v->row.version(), used + encryptions));
    }
  }
  return MakeError(ErrorCode::kUnavailable, "usage accounting contended; retry");
}

absl::Status KeyManager::ReserveUsage(const EntryPtr& entry, storage::KeyPurpose purpose,
                                      uint32_t version, uint64_t needed) {
  std::lock_guard<std::mutex> lock(entry->mu);
  Snapshot snap = entry->snapshot.load();
  const VersionSnapshot* v = snap->Version(purpose, version);
  if (v == nullptr) return absl::OkStatus();  // the caller re-reads the snapshot
  internal::UsageCounter& usage = *v->usage;
  const uint64_t reserved = usage.reserved.load();
  if (reserved >= needed) return absl::OkStatus();
  const uint64_t limit = snap->row.policy().usage_limit();
  uint64_t target =
      std::max(needed, reserved + std::min(options_.usage_reservation_block, limit - reserved));
  target = std::min(target, limit);
  v1::KeyVersionRow row = v->row;
  row.set_reserved_until(target);
  KeyDb::Batch batch(*db_);
  COFFER_RETURN_IF_ERROR(
      batch.Put(KeyDbTable::kKeyVersions,
                KeyVersionRowKey(entry->handle, static_cast<uint8_t>(purpose), version), row));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  usage.reserved.store(target);
  return absl::OkStatus();
}

absl::Status KeyManager::RotateForUsage(uint64_t handle, storage::KeyPurpose purpose,
                                        uint32_t version) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->Purpose(purpose)->primary_version() != version) return absl::OkStatus();
  RotationCause cause = RotationCause::kUsage;
  if (purpose == storage::KeyPurpose::kLookup) cause = RotationCause::kReindex;
  if (purpose == storage::KeyPurpose::kPseudonym) cause = RotationCause::kRekey;
  absl::StatusOr<uint32_t> rotated = RotateLocked(entry, purpose, cause, InternalActor());
  if (!rotated.ok()) {
    return MakeError(ErrorCode::kUsageLimitReached,
                     "primary key reached its usage limit and rotation failed: " +
                         std::string(rotated.status().message()));
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms
