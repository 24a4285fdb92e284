// KeyManager: open, create, describe. Loading the key DB at open and the names migration:
// key_manager_load.cc; the KeyProvider hot path and usage reservations:
// key_manager_data_keys.cc; rotation and retirement: rotation.cc; lifecycle and destruction:
// lifecycle.cc; re-wrap: rewrap.cc; start-up recovery and reconciliation: recovery.cc.

#include "kms/keys/key_manager.h"

#include <unistd.h>

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_db.pb.h"

namespace coffer::kms {

using internal::DatasetEntry;
using internal::DatasetSnapshot;
using internal::VersionSnapshot;

namespace {

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > kMaxDatasetNameSize) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
           c == '/';
  });
}

absl::Status ValidatePolicy(const DatasetPolicy& policy) {
  if (policy.records_rotation.count() <= 0 || policy.attachments_rotation.count() <= 0) {
    return MakeError(ErrorCode::kInvalidArgument, "rotation periods must be at least 1 second");
  }
  if (policy.usage_limit == 0) {
    return MakeError(ErrorCode::kInvalidArgument, "usage limit must be at least 1");
  }
  if (policy.retention_max_age.count() < 0 || policy.minimum_retention.count() < 0 ||
      policy.destruction_wait.count() < 0 || policy.auto_destroy_after_disabled.count() < 0) {
    return MakeError(ErrorCode::kInvalidArgument, "policy durations must not be negative");
  }
  return absl::OkStatus();
}

}  // namespace

namespace internal {

audit::AuditActor InternalActor() {
  audit::AuditActor actor;
  actor.uid = static_cast<uint32_t>(getuid());
  actor.pid = static_cast<uint32_t>(getpid());
  actor.socket = audit::v1::SOCKET_INTERNAL;
  return actor;
}

absl::StatusOr<std::string> NewNameSalt() {
  std::string salt(receipt::kNameSaltBytes, '\0');
  COFFER_RETURN_IF_ERROR(
      crypto::RandomBytes(absl::MakeSpan(reinterpret_cast<uint8_t*>(salt.data()), salt.size())));
  return salt;
}

v1::KeyVersionRow RowForWrite(const VersionSnapshot& version) {
  v1::KeyVersionRow row = version.row;
  row.set_reserved_until(version.usage->reserved.load());
  return row;
}

absl::Status CheckDataAccess(const DatasetSnapshot& snap) {
  switch (internal::FromRow(snap.row.state())) {
    case DatasetState::kActive:
      break;
    case DatasetState::kDisabled:
      return MakeError(ErrorCode::kDatasetStateForbids, "dataset is DISABLED");
    case DatasetState::kPendingDestruction:
      return MakeError(ErrorCode::kDatasetStateForbids, "dataset is PENDING_DESTRUCTION");
    case DatasetState::kDestroying:
    case DatasetState::kDestroyed:
      return MakeError(ErrorCode::kKeyDestroyed,
                       "key destroyed: the dataset's wrapping keys were destroyed");
  }
  if (snap.row.wrapping_key_missing()) {
    return MakeError(ErrorCode::kWrappingKeyMissing,
                     "the dataset's wrapping key is missing from the HSM (see start-up report)");
  }
  return absl::OkStatus();
}

}  // namespace internal

using internal::CheckDataAccess;
using internal::InternalActor;
using internal::NewNameSalt;

KeyManager::KeyManager(KeyManagerOptions options, std::unique_ptr<KeyDb> db)
    : options_(std::move(options)),
      clock_(options_.clock),
      db_(std::move(db)),
      cache_(options_.cache, options_.clock),
      datasets_(std::make_shared<const DatasetMap>()) {}

KeyManager::~KeyManager() = default;

absl::StatusOr<std::unique_ptr<KeyManager>> KeyManager::Open(KeyManagerOptions options) {
  if (options.row_authenticator == nullptr || options.signer == nullptr ||
      options.audit_log == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "key manager needs a row authenticator, a signer and an audit log");
  }
  if (options.modules.empty() || !options.modules.contains(options.default_module) ||
      options.modules.at(options.default_module) == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "default_module must name a configured module");
  }
  if (options.usage_reservation_block == 0 || options.usage_rotate_percent == 0 ||
      options.usage_rotate_percent > 100) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "usage_reservation_block must be >= 1 and usage_rotate_percent 1..100");
  }
  COFFER_RETURN_IF_ERROR(ValidatePolicy(options.default_policy));
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "key manager needs a clock");
  }
  COFFER_ASSIGN_OR_RETURN(auto db,
                          KeyDb::Open(options.key_db_directory, options.row_authenticator));
  if (options.minimum_key_db_generation.has_value() &&
      db->generation() < *options.minimum_key_db_generation) {
    // Numbers and a path only: nothing from the rows.
    return MakeError(
        ErrorCode::kKeyDbRolledBack,
        "the key DB in " + options.key_db_directory + " is at generation " +
            std::to_string(db->generation()) + ", older than generation " +
            std::to_string(*options.minimum_key_db_generation) +
            " that the audit log recorded: an older copy of the key DB was put back (policy, "
            "state or usage changes since would be undone). Put the current key DB back, or "
            "restore a full backup with `keyctl backup restore` (docs/key-manager.md, \"Key DB "
            "generation\")");
  }
  if (db->generation() == 0) {
    // A key DB from before generations (or a new one): it starts at 1, in a batch of its own.
    COFFER_RETURN_IF_ERROR(db->AdvanceGeneration(1).status());
  }
  COFFER_ASSIGN_OR_RETURN(internal::DatasetNames names,
                          internal::DatasetNames::Create(*options.row_authenticator));
  std::unique_ptr<KeyManager> manager(new KeyManager(std::move(options), std::move(db)));
  manager->dataset_names_ = std::make_unique<internal::DatasetNames>(std::move(names));
  std::lock_guard<std::mutex> lock(manager->admin_mu_);
  COFFER_RETURN_IF_ERROR(manager->LoadAll());
  COFFER_RETURN_IF_ERROR(manager->MigrateNames());
  COFFER_RETURN_IF_ERROR(manager->MigratePolicyFormat());
  COFFER_RETURN_IF_ERROR(manager->OpenGrants());
  COFFER_RETURN_IF_ERROR(manager->OpenAccessAuditPolicy());
  COFFER_RETURN_IF_ERROR(manager->CheckClockAtOpen());
  COFFER_RETURN_IF_ERROR(manager->Recover());
  COFFER_RETURN_IF_ERROR(manager->Reconcile());
  return manager;
}

absl::Status KeyManager::PutDatasetRow(KeyDb::Batch& batch, const v1::DatasetRow& row) const {
  v1::DatasetRow stored = row;
  stored.clear_name();
  stored.clear_sealed_name();
  stored.clear_name_salt();
  stored.clear_sealed_name_salt();
  if (!row.name().empty()) {
    COFFER_ASSIGN_OR_RETURN(std::string sealed, dataset_names_->Seal(row.handle(), row.name()));
    stored.set_sealed_name(std::move(sealed));
  }
  if (!row.name_salt().empty()) {
    COFFER_ASSIGN_OR_RETURN(std::string sealed,
                            dataset_names_->SealSalt(row.handle(), row.name_salt()));
    stored.set_sealed_name_salt(std::move(sealed));
  }
  return batch.Put(KeyDbTable::kDatasets, DatasetRowKey(row.handle()), stored);
}

KeyManager::EntryPtr KeyManager::FindEntry(uint64_t handle) const {
  std::shared_ptr<const DatasetMap> map = datasets_.load();
  auto it = map->find(handle);
  return it == map->end() ? nullptr : it->second;
}

absl::StatusOr<KeyManager::EntryPtr> KeyManager::RequireEntry(uint64_t handle) const {
  EntryPtr entry = FindEntry(handle);
  if (entry == nullptr) {
    return MakeError(ErrorCode::kDatasetNotFound,
                     "no dataset with handle " + std::to_string(handle));
  }
  return entry;
}

void KeyManager::Publish(const EntryPtr& entry, Snapshot snapshot) {
  entry->snapshot.store(std::move(snapshot));
}

void KeyManager::AddEntry(uint64_t handle, Snapshot snapshot) {
  auto entry = std::make_shared<DatasetEntry>(handle);
  entry->snapshot.store(std::move(snapshot));
  auto map = std::make_shared<DatasetMap>(*datasets_.load());
  (*map)[handle] = std::move(entry);
  datasets_.store(std::move(map));
}

absl::Status KeyManager::Audit(const audit::AuditEvent& event) {
  return options_.audit_log->Append(event).status();
}

absl::StatusOr<uint64_t> KeyManager::AuditAt(const audit::AuditEvent& event) {
  return options_.audit_log->Append(event);
}

absl::Status KeyManager::Refuse(audit::v1::EventKind attempted, uint64_t handle,
                                const audit::AuditActor& actor, absl::Status why) {
  audit::AuditEvent event =
      internal::MakeEvent(audit::v1::REQUEST_REFUSED, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                          0, audit::v1::STAGE_COMPLETED, internal::RefusedDetail(attempted));
  event.result = ErrorCodeOf(why);
  // The refusal stands whether or not its entry could be written; nothing changed.
  Audit(event).IgnoreError();
  return why;
}

hsm::KeyWrapper* KeyManager::Module(const std::string& name) const {
  auto it = options_.modules.find(name);
  return it == options_.modules.end() ? nullptr : it->second;
}

void KeyManager::Crash(std::string_view step) const {
  if (options_.crash_point) options_.crash_point(step);
}

int64_t KeyManager::NowMicros() const { return ToUnixMicros(clock_->Now()); }

namespace {

// OK when a dataset may be created under `name` with `policy`: a valid name not yet taken.
absl::Status CheckNewDataset(std::string_view name,
                             const std::map<std::string, uint64_t, std::less<>>& names,
                             const DatasetPolicy& policy) {
  if (!ValidName(name)) {
    return MakeError(ErrorCode::kDatasetNameInvalid,
                     "dataset names are 1-128 characters of a-z 0-9 . _ - /");
  }
  if (names.contains(name)) {
    return MakeError(ErrorCode::kDatasetExists, "a dataset with that name exists");
  }
  return ValidatePolicy(policy);
}

// Writes the CREATING intent for dataset `handle` and its first DWK, {module, 1}.
absl::Status WriteCreatingIntent(KeyDb& db, uint64_t handle, const std::string& module,
                                 const DatasetPolicy& policy, const audit::AuditActor& actor,
                                 int64_t now) {
  v1::IntentRow intent;
  intent.set_kind(v1::INTENT_CREATING);
  intent.set_handle(handle);
  intent.set_started_micros(now);
  *intent.mutable_actor() = internal::ToRow(actor);
  *intent.mutable_policy() = internal::ToRow(policy);
  intent.mutable_new_wrapping_key()->set_module(module);
  intent.mutable_new_wrapping_key()->set_version(1);
  KeyDb::Batch batch(db);
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, DatasetRowKey(handle), intent));
  return db.Write(batch);
}

// A new ACTIVE dataset's row: DWK {module, 1}, version 1 the primary of every purpose.
v1::DatasetRow NewDatasetRow(uint64_t handle, std::string_view name, std::string name_salt,
                             const DatasetPolicy& policy, const std::string& module, int64_t now) {
  v1::DatasetRow row;
  row.set_handle(handle);
  row.set_name(std::string(name));
  row.set_name_salt(std::move(name_salt));
  row.set_state(v1::ACTIVE);
  row.set_created_micros(now);
  row.set_state_changed_micros(now);
  *row.mutable_policy() = internal::ToRow(policy);
  row.mutable_current_wrapping_key()->set_module(module);
  row.mutable_current_wrapping_key()->set_version(1);
  *row.add_live_wrapping_keys() = row.current_wrapping_key();
  for (storage::KeyPurpose purpose : internal::kAllPurposes) {
    v1::PurposeState* state = row.add_purposes();
    state->set_purpose(internal::RowPurpose(purpose));
    state->set_primary_version(1);
    state->set_max_version(1);
    state->set_min_decrypt_version(1);
  }
  return row;
}

// Version 1 of a new dataset's `purpose` key: a fresh DEK wrapped under DWK {handle, 1}.
absl::StatusOr<VersionSnapshot> FirstKeyVersion(hsm::KeyWrapper& wrapper, uint64_t handle,
                                                storage::KeyPurpose purpose,
                                                const std::string& module, int64_t now) {
  COFFER_ASSIGN_OR_RETURN(auto dek, crypto::RandomSecret(hsm::kDekBytes));
  COFFER_ASSIGN_OR_RETURN(hsm::WrappedKey wrapped, wrapper.Wrap({handle, 1}, dek));
  VersionSnapshot version;
  version.row.set_handle(handle);
  version.row.set_purpose(internal::RowPurpose(purpose));
  version.row.set_version(1);
  version.row.set_state(v1::PRIMARY);
  version.row.set_wrapped_key(wrapped.Serialize());
  version.row.set_module(module);
  version.row.set_created_micros(now);
  version.wrapped = std::move(wrapped);
  version.usage = std::make_shared<internal::UsageCounter>();
  return version;
}

}  // namespace

absl::StatusOr<uint64_t> KeyManager::NewDatasetHandle() const {
  // An opaque random handle, never derived from the name.
  uint64_t handle = 0;
  while (handle == 0 || FindEntry(handle) != nullptr) {
    uint8_t bytes[8];
    COFFER_RETURN_IF_ERROR(crypto::RandomBytes(absl::MakeSpan(bytes)));
    handle = 0;
    for (uint8_t b : bytes) handle = (handle << 8) | b;
    handle &= ~(uint64_t{1} << 63);  // stays positive in every language's signed 64-bit
  }
  return handle;
}

absl::StatusOr<uint64_t> KeyManager::CreateDataset(std::string_view name,
                                                   std::optional<DatasetPolicy> policy,
                                                   const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DATASET_CREATE;
  DatasetPolicy chosen = policy.value_or(options_.default_policy);
  if (absl::Status valid = CheckNewDataset(name, names_, chosen); !valid.ok()) {
    return Refuse(kKind, 0, actor, valid);
  }
  COFFER_ASSIGN_OR_RETURN(uint64_t handle, NewDatasetHandle());
  const std::string& module = options_.default_module;
  hsm::KeyWrapper* wrapper = Module(module);
  const int64_t now = NowMicros();

  COFFER_RETURN_IF_ERROR(Audit(internal::MakeEvent(
      kKind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, 1, audit::v1::STAGE_REQUESTED)));
  COFFER_RETURN_IF_ERROR(WriteCreatingIntent(*db_, handle, module, chosen, actor, now));
  Crash("create.intent");

  auto finish = [&](const absl::Status& result) -> absl::Status {
    audit::AuditEvent done = internal::MakeEvent(
        kKind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, 1, audit::v1::STAGE_COMPLETED);
    done.result = ErrorCodeOf(result);
    absl::Status audited = Audit(done);
    return result.ok() ? audited : result;
  };
  auto roll_back = [&](const absl::Status& cause) -> absl::Status {
    absl::Status destroyed = wrapper->DestroyWrappingKey({handle, 1});
    if (!destroyed.ok() && ErrorCodeOf(destroyed) != ErrorCode::kHsmKeyNotFound) {
      return finish(cause);  // the intent stays: Open will retry the rollback
    }
    KeyDb::Batch batch(*db_);
    batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
    db_->Write(batch).IgnoreError();  // if it fails, the intent stays for Open
    return finish(cause);
  };

  if (absl::Status created = wrapper->CreateWrappingKey({handle, 1}); !created.ok()) {
    return roll_back(created);
  }
  Crash("create.wrapping_key");

  absl::StatusOr<std::string> salt = NewNameSalt();
  if (!salt.ok()) return roll_back(salt.status());
  auto snap = std::make_shared<DatasetSnapshot>();
  snap->row = NewDatasetRow(handle, name, *std::move(salt), chosen, module, now);
  KeyDb::Batch batch(*db_);
  for (storage::KeyPurpose purpose : internal::kAllPurposes) {
    absl::StatusOr<VersionSnapshot> version =
        FirstKeyVersion(*wrapper, handle, purpose, module, now);
    if (!version.ok()) return roll_back(version.status());
    if (absl::Status put =
            batch.Put(KeyDbTable::kKeyVersions,
                      KeyVersionRowKey(handle, static_cast<uint8_t>(purpose), 1), version->row);
        !put.ok()) {
      return roll_back(put);
    }
    snap->versions[static_cast<size_t>(purpose)].push_back(*std::move(version));
  }
  v1::NameRow name_row;
  name_row.set_handle(handle);
  absl::StatusOr<std::string> name_key = dataset_names_->LookupKey(name);
  if (!name_key.ok()) return roll_back(name_key.status());
  absl::Status staged = PutDatasetRow(batch, snap->row);
  if (staged.ok()) staged = batch.Put(KeyDbTable::kNames, *name_key, name_row);
  batch.Delete(KeyDbTable::kIntents, DatasetRowKey(handle));
  if (staged.ok()) staged = db_->Write(batch);
  if (!staged.ok()) return roll_back(staged);
  Crash("create.committed");

  names_[std::string(name)] = handle;
  AddEntry(handle, std::move(snap));
  COFFER_RETURN_IF_ERROR(finish(absl::OkStatus()));
  return handle;
}

std::vector<DatasetSummary> KeyManager::ListDatasets() const {
  std::vector<DatasetSummary> out;
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    Snapshot snap = entry->snapshot.load();
    out.push_back({handle, snap->row.name(), internal::FromRow(snap->row.state())});
  }
  std::sort(out.begin(), out.end(),
            [](const DatasetSummary& a, const DatasetSummary& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<uint64_t> KeyManager::FindDataset(std::string_view name) const {
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() != v1::DESTROYED && snap->row.name() == name) return handle;
  }
  return MakeError(ErrorCode::kDatasetNotFound, "no dataset with that name");
}

absl::StatusOr<DatasetInfo> KeyManager::DescribeDataset(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  const v1::DatasetRow& row = snap->row;
  DatasetInfo info;
  info.handle = handle;
  info.name = row.name();
  info.name_salt = row.name_salt();
  info.state = internal::FromRow(row.state());
  info.created = internal::FromMicros(row.created_micros());
  info.state_changed = internal::FromMicros(row.state_changed_micros());
  if (row.state() == v1::PENDING_DESTRUCTION) {
    info.destroy_after = internal::FromMicros(row.destroy_after_micros());
  }
  info.policy = internal::FromRow(row.policy());
  info.current_wrapping_key = internal::FromRow(row.current_wrapping_key());
  for (const auto& ref : row.live_wrapping_keys()) {
    info.live_wrapping_keys.push_back(internal::FromRow(ref));
  }
  info.wrapping_key_missing = row.wrapping_key_missing();
  for (storage::KeyPurpose purpose : internal::kAllPurposes) {
    const v1::PurposeState* state = snap->Purpose(purpose);
    if (state == nullptr) continue;
    PurposeInfo purpose_info;
    purpose_info.purpose = purpose;
    purpose_info.primary_version = state->primary_version();
    purpose_info.min_decrypt_version = state->min_decrypt_version();
    for (const VersionSnapshot& version : snap->versions[static_cast<size_t>(purpose)]) {
      KeyVersionInfo v;
      v.version = version.row.version();
      v.state = internal::FromRow(version.row.state());
      v.created = internal::FromMicros(version.row.created_micros());
      v.usage_count = version.usage->used.load();
      v.primary = v.version == state->primary_version();
      v.wrapping_key = {version.row.module(), version.wrapped.key.version};
      purpose_info.versions.push_back(std::move(v));
    }
    info.purposes.push_back(std::move(purpose_info));
  }
  return info;
}

absl::StatusOr<DatasetStorageView> KeyManager::StorageView(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  DatasetPolicy policy = internal::FromRow(snap->row.policy());
  DatasetStorageView view;
  view.state = internal::FromRow(snap->row.state());
  view.bin_days = policy.bin_days;
  view.retention_max_age = policy.retention_max_age;
  view.minimum_retention = policy.minimum_retention;
  view.legal_hold = policy.legal_hold;
  view.max_records = policy.max_records;
  view.max_stored_bytes = policy.max_stored_bytes;
  return view;
}

}  // namespace coffer::kms
