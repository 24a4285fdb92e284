// KeyManager: open, load, create, describe. The KeyProvider hot path and usage reservations:
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
  COFFER_RETURN_IF_ERROR(manager->CheckClockAtOpen());
  COFFER_RETURN_IF_ERROR(manager->Recover());
  COFFER_RETURN_IF_ERROR(manager->Reconcile());
  return manager;
}

namespace {

absl::Status Corrupt(const std::string& what) {
  return MakeError(ErrorCode::kKeyDbRowCorrupt, "key DB inconsistent: " + what);
}

// A dataset's name-commitment salt: random, from the private DRBG (not a key: its customer is
// given it).
absl::StatusOr<std::string> NewNameSalt() {
  std::string salt(receipt::kNameSaltBytes, '\0');
  COFFER_RETURN_IF_ERROR(
      crypto::RandomBytes(absl::MakeSpan(reinterpret_cast<uint8_t*>(salt.data()), salt.size())));
  return salt;
}

}  // namespace

absl::Status KeyManager::LoadAll() {
  v1::ClockRow clock_row;
  COFFER_ASSIGN_OR_RETURN(bool has_clock, db_->Get(KeyDbTable::kMeta, "clock", clock_row));
  if (has_clock) clock_high_water_micros_ = clock_row.high_water_micros();
  v1::NamesFormatRow names_format;
  COFFER_ASSIGN_OR_RETURN(bool has_names_format,
                          db_->Get(KeyDbTable::kMeta, "names_format", names_format));
  names_format_ = has_names_format ? names_format.format() : internal::kNamesFormatPlaintext;
  if (names_format_ != internal::kNamesFormatPlaintext &&
      names_format_ != internal::kNamesFormatSealed) {
    return MakeError(ErrorCode::kUnsupportedFormat, "key DB names format " +
                                                        std::to_string(names_format_) +
                                                        " is newer than this build reads (1 or 2)");
  }
  const bool sealed_names = names_format_ == internal::kNamesFormatSealed;

  std::map<uint64_t, std::shared_ptr<DatasetSnapshot>> loaded;
  COFFER_RETURN_IF_ERROR(
      db_->Scan(KeyDbTable::kDatasets, "",
                [&](std::string_view key, std::string_view message) -> absl::Status {
                  auto snap = std::make_shared<DatasetSnapshot>();
                  if (!snap->row.ParseFromArray(message.data(), static_cast<int>(message.size())) ||
                      key != DatasetRowKey(snap->row.handle())) {
                    return Corrupt("a dataset row does not parse or sits under another handle");
                  }
                  v1::DatasetRow& row = snap->row;
                  if (sealed_names && !row.name().empty()) {
                    return Corrupt("a dataset row holds its name in plaintext");
                  }
                  if (!row.sealed_name().empty()) {
                    absl::StatusOr<std::string> name =
                        dataset_names_->OpenName(row.handle(), row.sealed_name());
                    if (!name.ok()) return Corrupt("a dataset row's sealed name does not open");
                    row.set_name(*std::move(name));
                  }
                  if (!row.sealed_name_salt().empty()) {
                    absl::StatusOr<std::string> salt =
                        dataset_names_->OpenSalt(row.handle(), row.sealed_name_salt());
                    if (!salt.ok()) return Corrupt("a dataset row's sealed salt does not open");
                    row.set_name_salt(*std::move(salt));
                  }
                  if (row.state() != v1::DESTROYED && row.name_salt().empty()) {
                    // Names-v1 rows had none: the migration stores this one. A names-v2 live
                    // row always has one.
                    if (sealed_names) return Corrupt("a dataset row has no name salt");
                    COFFER_ASSIGN_OR_RETURN(std::string salt, NewNameSalt());
                    row.set_name_salt(std::move(salt));
                  }
                  loaded[snap->row.handle()] = std::move(snap);
                  return absl::OkStatus();
                }));
  COFFER_RETURN_IF_ERROR(db_->Scan(
      KeyDbTable::kKeyVersions, "",
      [&](std::string_view key, std::string_view message) -> absl::Status {
        VersionSnapshot version;
        if (!version.row.ParseFromArray(message.data(), static_cast<int>(message.size())) ||
            key != KeyVersionRowKey(version.row.handle(),
                                    static_cast<uint8_t>(version.row.purpose()),
                                    version.row.version())) {
          return Corrupt("a key version row does not parse or sits under another key");
        }
        auto it = loaded.find(version.row.handle());
        if (it == loaded.end() || it->second->row.state() == v1::DESTROYED) {
          return Corrupt("a key version row belongs to no live dataset");
        }
        COFFER_ASSIGN_OR_RETURN(version.wrapped, hsm::WrappedKey::Parse(version.row.wrapped_key()));
        if (version.wrapped.key.dataset_handle != version.row.handle()) {
          return Corrupt("a wrapped key names another dataset");
        }
        version.usage = std::make_shared<internal::UsageCounter>();
        version.usage->used = version.row.reserved_until();  // a restart counts the block used
        version.usage->reserved = version.row.reserved_until();
        auto purpose = static_cast<size_t>(version.row.purpose());
        if (purpose == 0 || purpose >= internal::kPurposeSlots) {
          return Corrupt("a key version row has an unknown purpose");
        }
        auto& list = it->second->versions[purpose];
        if (version.row.version() != list.size() + 1) {
          return Corrupt("key versions are not contiguous");
        }
        list.push_back(std::move(version));
        return absl::OkStatus();
      }));
  auto map = std::make_shared<DatasetMap>();
  for (auto& [handle, snap] : loaded) {
    if (snap->row.state() != v1::DESTROYED) {
      for (storage::KeyPurpose purpose : internal::kAllPurposes) {
        const v1::PurposeState* state = snap->Purpose(purpose);
        const auto& list = snap->versions[static_cast<size_t>(purpose)];
        if (state == nullptr || state->max_version() != list.size() ||
            state->primary_version() == 0 || state->primary_version() > list.size()) {
          return Corrupt("a dataset's key versions do not match its row (a row was deleted?)");
        }
      }
      names_[snap->row.name()] = handle;
    }
    auto entry = std::make_shared<DatasetEntry>(handle);
    entry->snapshot.store(std::move(snap));
    (*map)[handle] = std::move(entry);
  }
  // Every name row must point at a live dataset of that name, and every live dataset have one.
  std::map<std::string, uint64_t, std::less<>> name_keys;
  for (const auto& [name, handle] : names_) {
    if (!sealed_names) {
      name_keys[name] = handle;
      continue;
    }
    COFFER_ASSIGN_OR_RETURN(std::string key, dataset_names_->LookupKey(name));
    name_keys[std::move(key)] = handle;
  }
  size_t name_rows = 0;
  COFFER_RETURN_IF_ERROR(db_->Scan(
      KeyDbTable::kNames, "", [&](std::string_view key, std::string_view message) -> absl::Status {
        v1::NameRow row;
        if (!row.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
          return Corrupt("a name row does not parse");
        }
        auto it = name_keys.find(key);
        if (it == name_keys.end() || it->second != row.handle()) {
          return Corrupt("a name row points at no live dataset of that name");
        }
        ++name_rows;
        return absl::OkStatus();
      }));
  if (name_rows != name_keys.size()) return Corrupt("a live dataset has no name row");
  datasets_.store(std::move(map));
  return absl::OkStatus();
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

// One batch rewrites every dataset row with its name sealed, re-keys every name row by its
// lookup HMAC, drops the names from CREATING intents and records names_format 2: a crash leaves
// the key DB wholly v1 or wholly v2 (the batch is atomic, so no intent row is needed), and the
// next open redoes it. Then a full compaction and a reopen remove the plaintext from the DB's
// files (a crash before they finish leaves it until the next compaction). Backups
// taken before hold their v1 copy until they are pruned (docs/key-manager.md).
absl::Status KeyManager::MigrateNames() {
  if (names_format_ == internal::kNamesFormatSealed) return absl::OkStatus();
  KeyDb::Batch batch(*db_);
  for (const auto& [handle, entry] : *datasets_.load()) {
    COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, entry->snapshot.load()->row));
  }
  for (const auto& [name, handle] : names_) {
    batch.Delete(KeyDbTable::kNames, name);
    v1::NameRow name_row;
    name_row.set_handle(handle);
    COFFER_ASSIGN_OR_RETURN(std::string key, dataset_names_->LookupKey(name));
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kNames, key, name_row));
  }
  std::vector<std::pair<std::string, v1::IntentRow>> intents;
  COFFER_RETURN_IF_ERROR(
      db_->Scan(KeyDbTable::kIntents, "",
                [&](std::string_view key, std::string_view message) -> absl::Status {
                  v1::IntentRow intent;
                  if (!intent.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
                    return Corrupt("an intent row does not parse");
                  }
                  if (!intent.name().empty())
                    intents.emplace_back(std::string(key), std::move(intent));
                  return absl::OkStatus();
                }));
  for (auto& [key, intent] : intents) {
    intent.clear_name();
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, key, intent));
  }
  v1::NamesFormatRow format;
  format.set_format(internal::kNamesFormatSealed);
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, "names_format", format));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  names_format_ = internal::kNamesFormatSealed;
  COFFER_RETURN_IF_ERROR(db_->CompactAll());
  // The MANIFEST still records the old files' smallest and largest keys (v1 name rows are keyed
  // by the name); RocksDB writes a fresh MANIFEST when it opens, so reopen.
  db_.reset();
  COFFER_ASSIGN_OR_RETURN(db_, KeyDb::Open(options_.key_db_directory, options_.row_authenticator));
  return absl::OkStatus();
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

absl::StatusOr<uint64_t> KeyManager::CreateDataset(std::string_view name,
                                                   std::optional<DatasetPolicy> policy,
                                                   const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  constexpr auto kKind = audit::v1::DATASET_CREATE;
  if (!ValidName(name)) {
    return Refuse(kKind, 0, actor,
                  MakeError(ErrorCode::kDatasetNameInvalid,
                            "dataset names are 1-128 characters of a-z 0-9 . _ - /"));
  }
  if (names_.contains(name)) {
    return Refuse(kKind, 0, actor,
                  MakeError(ErrorCode::kDatasetExists, "a dataset with that name exists"));
  }
  DatasetPolicy chosen = policy.value_or(options_.default_policy);
  if (absl::Status valid = ValidatePolicy(chosen); !valid.ok()) {
    return Refuse(kKind, 0, actor, valid);
  }
  // An opaque random handle, never derived from the name.
  uint64_t handle = 0;
  while (handle == 0 || FindEntry(handle) != nullptr) {
    uint8_t bytes[8];
    COFFER_RETURN_IF_ERROR(crypto::RandomBytes(absl::MakeSpan(bytes)));
    handle = 0;
    for (uint8_t b : bytes) handle = (handle << 8) | b;
    handle &= ~(uint64_t{1} << 63);  // stays positive in every language's signed 64-bit
  }
  const std::string& module = options_.default_module;
  hsm::KeyWrapper* wrapper = Module(module);
  const int64_t now = NowMicros();

  COFFER_RETURN_IF_ERROR(Audit(internal::MakeEvent(
      kKind, actor, handle, audit::v1::PURPOSE_UNSPECIFIED, 1, audit::v1::STAGE_REQUESTED)));
  v1::IntentRow intent;
  intent.set_kind(v1::INTENT_CREATING);
  intent.set_handle(handle);
  intent.set_started_micros(now);
  *intent.mutable_actor() = internal::ToRow(actor);
  *intent.mutable_policy() = internal::ToRow(chosen);
  intent.mutable_new_wrapping_key()->set_module(module);
  intent.mutable_new_wrapping_key()->set_version(1);
  {
    KeyDb::Batch batch(*db_);
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kIntents, DatasetRowKey(handle), intent));
    COFFER_RETURN_IF_ERROR(db_->Write(batch));
  }
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

  auto snap = std::make_shared<DatasetSnapshot>();
  v1::DatasetRow& row = snap->row;
  row.set_handle(handle);
  row.set_name(std::string(name));
  absl::StatusOr<std::string> salt = NewNameSalt();
  if (!salt.ok()) return roll_back(salt.status());
  row.set_name_salt(*std::move(salt));
  row.set_state(v1::ACTIVE);
  row.set_created_micros(now);
  row.set_state_changed_micros(now);
  *row.mutable_policy() = internal::ToRow(chosen);
  row.mutable_current_wrapping_key()->set_module(module);
  row.mutable_current_wrapping_key()->set_version(1);
  *row.add_live_wrapping_keys() = row.current_wrapping_key();
  KeyDb::Batch batch(*db_);
  for (storage::KeyPurpose purpose : internal::kAllPurposes) {
    v1::PurposeState* state = row.add_purposes();
    state->set_purpose(internal::RowPurpose(purpose));
    state->set_primary_version(1);
    state->set_max_version(1);
    state->set_min_decrypt_version(1);
    auto dek = crypto::RandomSecret(hsm::kDekBytes);
    if (!dek.ok()) return roll_back(dek.status());
    auto wrapped = wrapper->Wrap({handle, 1}, *dek);
    if (!wrapped.ok()) return roll_back(wrapped.status());
    VersionSnapshot version;
    version.row.set_handle(handle);
    version.row.set_purpose(internal::RowPurpose(purpose));
    version.row.set_version(1);
    version.row.set_state(v1::PRIMARY);
    version.row.set_wrapped_key(wrapped->Serialize());
    version.row.set_module(module);
    version.row.set_created_micros(now);
    version.wrapped = *std::move(wrapped);
    version.usage = std::make_shared<internal::UsageCounter>();
    if (absl::Status put =
            batch.Put(KeyDbTable::kKeyVersions,
                      KeyVersionRowKey(handle, static_cast<uint8_t>(purpose), 1), version.row);
        !put.ok()) {
      return roll_back(put);
    }
    snap->versions[static_cast<size_t>(purpose)].push_back(std::move(version));
  }
  v1::NameRow name_row;
  name_row.set_handle(handle);
  absl::StatusOr<std::string> name_key = dataset_names_->LookupKey(name);
  if (!name_key.ok()) return roll_back(name_key.status());
  absl::Status staged = PutDatasetRow(batch, row);
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
  for (const auto& [handle, entry] : *datasets_.load()) {
    Snapshot snap = entry->snapshot.load();
    out.push_back({handle, snap->row.name(), internal::FromRow(snap->row.state())});
  }
  std::sort(out.begin(), out.end(),
            [](const DatasetSummary& a, const DatasetSummary& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<uint64_t> KeyManager::FindDataset(std::string_view name) const {
  for (const auto& [handle, entry] : *datasets_.load()) {
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
  return view;
}

}  // namespace coffer::kms
