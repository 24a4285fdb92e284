// KeyManager: loading the key DB at open (LoadAll: meta rows, dataset rows, key versions, name
// rows) and the names-v1 -> names-v2 migration (MigrateNames).

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {

using internal::DatasetEntry;
using internal::DatasetSnapshot;
using internal::VersionSnapshot;

namespace {

// Dataset rows as read at open, by handle, before they are published.
using LoadedDatasets = std::map<uint64_t, std::shared_ptr<DatasetSnapshot>>;

absl::Status Corrupt(const std::string& what) {
  return MakeError(ErrorCode::kKeyDbRowCorrupt, "key DB inconsistent: " + what);
}

// Reads every dataset row into `loaded`, opening sealed names and salts; a names-v1 live row
// gets the salt it lacks (MigrateNames stores it).
absl::Status LoadDatasetRows(KeyDb& db, const internal::DatasetNames& dataset_names,
                             bool sealed_names, LoadedDatasets& loaded) {
  return db.Scan(
      KeyDbTable::kDatasets, "",
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
              dataset_names.OpenName(row.handle(), row.sealed_name());
          if (!name.ok()) return Corrupt("a dataset row's sealed name does not open");
          row.set_name(*std::move(name));
        }
        if (!row.sealed_name_salt().empty()) {
          absl::StatusOr<std::string> salt =
              dataset_names.OpenSalt(row.handle(), row.sealed_name_salt());
          if (!salt.ok()) return Corrupt("a dataset row's sealed salt does not open");
          row.set_name_salt(*std::move(salt));
        }
        if (row.state() != v1::DESTROYED && row.name_salt().empty()) {
          // Names-v1 rows had none: the migration stores this one. A names-v2 live
          // row always has one.
          if (sealed_names) return Corrupt("a dataset row has no name salt");
          COFFER_ASSIGN_OR_RETURN(std::string salt, internal::NewNameSalt());
          row.set_name_salt(std::move(salt));
        }
        loaded[snap->row.handle()] = std::move(snap);
        return absl::OkStatus();
      });
}

// Reads every key version row into its live dataset in `loaded`, in version order.
absl::Status LoadKeyVersions(KeyDb& db, LoadedDatasets& loaded) {
  return db.Scan(
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
      });
}

// OK when a live dataset's purpose states match the key versions loaded for it.
absl::Status CheckVersionsMatchRow(const DatasetSnapshot& snap) {
  for (storage::KeyPurpose purpose : internal::kAllPurposes) {
    const v1::PurposeState* state = snap.Purpose(purpose);
    const auto& list = snap.versions[static_cast<size_t>(purpose)];
    if (state == nullptr || state->max_version() != list.size() || state->primary_version() == 0 ||
        state->primary_version() > list.size()) {
      return Corrupt("a dataset's key versions do not match its row (a row was deleted?)");
    }
  }
  return absl::OkStatus();
}

// Every name row must point at a live dataset of that name, and every live dataset (`names`)
// have one.
absl::Status CheckNameRows(KeyDb& db, const internal::DatasetNames& dataset_names,
                           const std::map<std::string, uint64_t, std::less<>>& names,
                           bool sealed_names) {
  std::map<std::string, uint64_t, std::less<>> name_keys;
  for (const auto& [name, handle] : names) {
    if (!sealed_names) {
      name_keys[name] = handle;
      continue;
    }
    COFFER_ASSIGN_OR_RETURN(std::string key, dataset_names.LookupKey(name));
    name_keys[std::move(key)] = handle;
  }
  size_t name_rows = 0;
  COFFER_RETURN_IF_ERROR(db.Scan(
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
  return absl::OkStatus();
}

}  // namespace

// The dataset rows' policy format this build writes and reads (v1::PolicyFormatRow).
constexpr uint32_t kPolicyFormat = 2;

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
  v1::PolicyFormatRow policy_format;
  COFFER_ASSIGN_OR_RETURN(bool has_policy_format,
                          db_->Get(KeyDbTable::kMeta, "policy_format", policy_format));
  policy_format_ = has_policy_format ? policy_format.format() : 1;
  if (policy_format_ < 1 || policy_format_ > kPolicyFormat) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "key DB policy format " + std::to_string(policy_format_) +
                         " is newer than this build reads (1 or 2): its datasets may carry "
                         "policies this build would ignore");
  }

  LoadedDatasets loaded;
  COFFER_RETURN_IF_ERROR(LoadDatasetRows(*db_, *dataset_names_, sealed_names, loaded));
  COFFER_RETURN_IF_ERROR(LoadKeyVersions(*db_, loaded));
  auto map = std::make_shared<DatasetMap>();
  for (auto& [handle, snap] : loaded) {
    if (snap->row.state() != v1::DESTROYED) {
      COFFER_RETURN_IF_ERROR(CheckVersionsMatchRow(*snap));
      names_[snap->row.name()] = handle;
    }
    auto entry = std::make_shared<DatasetEntry>(handle);
    entry->snapshot.store(std::move(snap));
    (*map)[handle] = std::move(entry);
  }
  COFFER_RETURN_IF_ERROR(CheckNameRows(*db_, *dataset_names_, names_, sealed_names));
  datasets_.store(std::move(map));
  return absl::OkStatus();
}

absl::Status KeyManager::MigratePolicyFormat() {
  if (policy_format_ == kPolicyFormat) return absl::OkStatus();
  KeyDb::Batch batch(*db_);
  v1::PolicyFormatRow format;
  format.set_format(kPolicyFormat);
  COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kMeta, "policy_format", format));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  policy_format_ = kPolicyFormat;
  return absl::OkStatus();
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
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
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

}  // namespace coffer::kms
