#include "kms/keys/key_db.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"

namespace coffer::kms {
namespace {

constexpr std::string_view kRowDomain = "coffer-keydb-row-v1";
constexpr std::string_view kTableNames[kKeyDbTableCount] = {"datasets", "names", "key_versions",
                                                            "intents", "meta"};

void AppendBigEndian(std::string& out, uint64_t value, int bytes) {
  for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

absl::Status FromRocks(const rocksdb::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return MakeError(ErrorCode::kIoError,
                   std::string("key DB ") + std::string(what) + " failed: " + status.ToString());
}

}  // namespace

std::string_view KeyDbTableName(KeyDbTable table) {
  return kTableNames[static_cast<size_t>(table)];
}

std::string DatasetRowKey(uint64_t handle) {
  std::string key;
  AppendBigEndian(key, handle, 8);
  return key;
}

std::string KeyVersionPrefix(uint64_t handle) { return DatasetRowKey(handle); }

std::string KeyVersionRowKey(uint64_t handle, uint8_t purpose, uint32_t version) {
  std::string key = DatasetRowKey(handle);
  key.push_back(static_cast<char>(purpose));
  AppendBigEndian(key, version, 4);
  return key;
}

absl::StatusOr<std::unique_ptr<KeyDb>> KeyDb::Open(const std::string& directory,
                                                   hsm::RowAuthenticator* authenticator) {
  if (authenticator == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "key DB needs a row authenticator");
  }
  if (mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
    return MakeError(ErrorCode::kIoError,
                     "cannot create key DB directory " + directory + ": " + std::strerror(errno));
  }
  rocksdb::DBOptions options;
  options.create_if_missing = true;
  options.create_missing_column_families = true;
  options.paranoid_checks = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  families.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions());
  for (std::string_view name : kTableNames) {
    families.emplace_back(std::string(name), rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  COFFER_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(options, directory, families, &handles, &db), "open"));
  return std::unique_ptr<KeyDb>(new KeyDb(db, std::move(handles), authenticator));
}

KeyDb::KeyDb(rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> handles,
             hsm::RowAuthenticator* authenticator)
    : db_(db), handles_(std::move(handles)), authenticator_(authenticator) {}

KeyDb::~KeyDb() {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
  delete db_;
}

absl::StatusOr<std::string> KeyDb::Seal(KeyDbTable table, std::string_view key,
                                        std::string_view message) {
  std::string input(kRowDomain);
  input.push_back('\0');
  input.append(KeyDbTableName(table));
  input.push_back('\0');
  AppendBigEndian(input, key.size(), 4);
  input.append(key);
  input.append(message);
  COFFER_ASSIGN_OR_RETURN(auto tag, authenticator_->HmacRowKey(input));
  return std::string(reinterpret_cast<const char*>(tag.data()), tag.size());
}

absl::StatusOr<std::string_view> KeyDb::Verify(KeyDbTable table, std::string_view key,
                                               std::string_view value) {
  const std::string where = "key DB row in " + std::string(KeyDbTableName(table));
  if (value.size() < kKeyDbTagBytes) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, where + " is truncated");
  }
  std::string_view message = value.substr(0, value.size() - kKeyDbTagBytes);
  COFFER_ASSIGN_OR_RETURN(std::string expected, Seal(table, key, message));
  if (!crypto::ConstantTimeEquals(expected, value.substr(message.size()))) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt,
                     where + " failed authentication: it was edited, moved or damaged");
  }
  return message;
}

KeyDb::Batch::Batch(KeyDb& db) : db_(db), batch_(std::make_unique<rocksdb::WriteBatch>()) {}
KeyDb::Batch::~Batch() = default;

absl::Status KeyDb::Batch::Put(KeyDbTable table, std::string_view key,
                               const google::protobuf::MessageLite& row) {
  std::string message;
  if (!row.SerializeToString(&message)) {
    return MakeError(ErrorCode::kInternal, "cannot serialise a key DB row");
  }
  COFFER_ASSIGN_OR_RETURN(std::string tag, db_.Seal(table, key, message));
  message.append(tag);
  COFFER_RETURN_IF_ERROR(FromRocks(batch_->Put(db_.handles_[static_cast<size_t>(table) + 1],
                                               rocksdb::Slice(key.data(), key.size()), message),
                                   "batch put"));
  ++count_;
  return absl::OkStatus();
}

void KeyDb::Batch::Delete(KeyDbTable table, std::string_view key) {
  batch_
      ->Delete(db_.handles_[static_cast<size_t>(table) + 1], rocksdb::Slice(key.data(), key.size()))
      .PermitUncheckedError();
  ++count_;
}

absl::Status KeyDb::Write(Batch& batch) {
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, batch.batch_.get()), "write");
}

absl::StatusOr<bool> KeyDb::Get(KeyDbTable table, std::string_view key,
                                google::protobuf::MessageLite& row) {
  std::string value;
  rocksdb::Status status =
      db_->Get(rocksdb::ReadOptions(), handles_[static_cast<size_t>(table) + 1],
               rocksdb::Slice(key.data(), key.size()), &value);
  if (status.IsNotFound()) return false;
  COFFER_RETURN_IF_ERROR(FromRocks(status, "read"));
  COFFER_ASSIGN_OR_RETURN(std::string_view message, Verify(table, key, value));
  if (!row.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt,
                     "key DB row in " + std::string(KeyDbTableName(table)) + " does not parse");
  }
  return true;
}

absl::Status KeyDb::Scan(
    KeyDbTable table, std::string_view prefix,
    const std::function<absl::Status(std::string_view key, std::string_view message)>& visit) {
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), handles_[static_cast<size_t>(table) + 1]));
  for (it->Seek(rocksdb::Slice(prefix.data(), prefix.size())); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    COFFER_ASSIGN_OR_RETURN(
        std::string_view message,
        Verify(table, key, std::string_view(it->value().data(), it->value().size())));
    COFFER_RETURN_IF_ERROR(visit(key, message));
  }
  return FromRocks(it->status(), "scan");
}

absl::Status KeyDb::CreateCheckpoint(const std::string& target_dir) {
  rocksdb::Checkpoint* raw = nullptr;
  COFFER_RETURN_IF_ERROR(FromRocks(rocksdb::Checkpoint::Create(db_, &raw), "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocks(checkpoint->CreateCheckpoint(target_dir, /*log_size_for_flush=*/0),
                   "checkpoint");
}

}  // namespace coffer::kms
