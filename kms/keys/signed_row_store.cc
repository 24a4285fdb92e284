#include "kms/keys/signed_row_store.h"

#include <filesystem>
#include <string>
#include <system_error>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/utilities/checkpoint.h"
#include "rocksdb/write_batch.h"
#include "storage/rocks_status.h"

namespace coffer::kms {
namespace {

absl::Status FromRocks(const rocksdb::Status& status, const SignedRowFormat& format,
                       std::string_view what) {
  return storage::FromRocks(status, ErrorCode::kIoError,
                            format.store_name + " " + std::string(what));
}

rocksdb::Slice SliceOf(std::string_view bytes) { return {bytes.data(), bytes.size()}; }

// Creates `directory` (and missing parents) when absent, restricting it to its owner; an
// existing directory is left as it is.
absl::Status CreateDirectory(const std::string& directory, const SignedRowFormat& format) {
  std::error_code ec;
  if (std::filesystem::exists(directory, ec)) return absl::OkStatus();
  std::filesystem::create_directories(directory, ec);
  if (!ec) {
    std::filesystem::permissions(directory, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
  }
  if (ec) {
    return MakeError(ErrorCode::kIoError, "cannot create " + format.store_name + " directory " +
                                              directory + ": " + ec.message());
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SignedRowStore>> SignedRowStore::Open(Options options) {
  if (options.authenticator == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     options.format.store_name + " needs a row authenticator");
  }
  if (options.directory.empty() || options.column_families.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     options.format.store_name + " needs a directory and a column family");
  }
  COFFER_RETURN_IF_ERROR(CreateDirectory(options.directory, options.format));
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.paranoid_checks = true;
  // RocksDB needs "default" opened; rows may live there too.
  std::vector<std::string> names = {rocksdb::kDefaultColumnFamilyName};
  for (const std::string& name : options.column_families) {
    if (name != rocksdb::kDefaultColumnFamilyName) names.push_back(name);
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> opened;
  rocksdb::DB* db = nullptr;
  COFFER_RETURN_IF_ERROR(
      FromRocks(rocksdb::DB::Open(db_options, options.directory, families, &opened, &db),
                options.format, "open"));
  std::vector<rocksdb::ColumnFamilyHandle*> by_family;
  for (const std::string& name : options.column_families) {
    for (size_t i = 0; i < names.size(); ++i) {
      if (names[i] == name) by_family.push_back(opened[i]);
    }
  }
  return std::unique_ptr<SignedRowStore>(
      new SignedRowStore(std::move(options), db, std::move(opened), std::move(by_family)));
}

SignedRowStore::SignedRowStore(Options options, rocksdb::DB* db,
                               std::vector<rocksdb::ColumnFamilyHandle*> opened,
                               std::vector<rocksdb::ColumnFamilyHandle*> by_family)
    : options_(std::move(options)),
      db_(db),
      opened_(std::move(opened)),
      by_family_(std::move(by_family)) {}

SignedRowStore::~SignedRowStore() {
  for (rocksdb::ColumnFamilyHandle* handle : opened_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
  delete db_;
}

absl::Status SignedRowStore::Corrupt(size_t family, std::string_view why) const {
  return MakeError(ErrorCode::kKeyDbRowCorrupt,
                   options_.format.store_name + " row in column family " +
                       options_.column_families.at(family) + " " + std::string(why));
}

absl::StatusOr<std::string> SignedRowStore::Tag(size_t family, std::string_view key,
                                                std::string_view message) {
  std::string input = options_.format.tag_domain;
  input.push_back('\0');
  if (options_.format.tag_binds_column_family) {
    input.append(options_.column_families.at(family));
    input.push_back('\0');
  }
  for (int shift = 24; shift >= 0; shift -= 8) {
    input.push_back(static_cast<char>((key.size() >> shift) & 0xff));
  }
  input.append(key);
  input.append(message);
  COFFER_ASSIGN_OR_RETURN(auto tag, options_.authenticator->HmacRowKey(input));
  static_assert(sizeof(tag) == kSignedRowTagBytes);
  return std::string(reinterpret_cast<const char*>(tag.data()), tag.size());
}

absl::StatusOr<std::string_view> SignedRowStore::Verify(size_t family, std::string_view key,
                                                        std::string_view value) {
  if (value.size() < kSignedRowTagBytes) return Corrupt(family, "is truncated");
  std::string_view message = value.substr(0, value.size() - kSignedRowTagBytes);
  COFFER_ASSIGN_OR_RETURN(std::string expected, Tag(family, key, message));
  if (!crypto::ConstantTimeEquals(expected, value.substr(message.size()))) {
    return Corrupt(family, "failed authentication: it was edited, moved or damaged");
  }
  return message;
}

SignedRowStore::Batch::Batch(SignedRowStore& store)
    : store_(store), batch_(std::make_unique<rocksdb::WriteBatch>()) {}
SignedRowStore::Batch::~Batch() = default;

absl::Status SignedRowStore::Batch::Put(size_t family, std::string_view key,
                                        const google::protobuf::MessageLite& row) {
  std::string value;
  if (!row.SerializeToString(&value)) {
    return MakeError(ErrorCode::kInternal,
                     "cannot serialise a " + store_.options_.format.store_name + " row");
  }
  COFFER_ASSIGN_OR_RETURN(std::string tag, store_.Tag(family, key, value));
  value.append(tag);
  COFFER_RETURN_IF_ERROR(FromRocks(batch_->Put(store_.Family(family), SliceOf(key), value),
                                   store_.options_.format, "batch put"));
  ++count_;
  return absl::OkStatus();
}

void SignedRowStore::Batch::Delete(size_t family, std::string_view key) {
  batch_->Delete(store_.Family(family), SliceOf(key)).PermitUncheckedError();
  ++count_;
}

absl::Status SignedRowStore::Write(Batch& batch) {
  rocksdb::WriteOptions options;
  options.sync = true;
  return FromRocks(db_->Write(options, batch.batch_.get()), options_.format, "write");
}

absl::Status SignedRowStore::Put(size_t family, std::string_view key,
                                 const google::protobuf::MessageLite& row) {
  Batch batch(*this);
  COFFER_RETURN_IF_ERROR(batch.Put(family, key, row));
  return Write(batch);
}

absl::Status SignedRowStore::Delete(size_t family, std::string_view key) {
  Batch batch(*this);
  batch.Delete(family, key);
  return Write(batch);
}

absl::StatusOr<bool> SignedRowStore::Get(size_t family, std::string_view key,
                                         google::protobuf::MessageLite& row) {
  std::string value;
  rocksdb::Status status = db_->Get(rocksdb::ReadOptions(), Family(family), SliceOf(key), &value);
  if (status.IsNotFound()) return false;
  COFFER_RETURN_IF_ERROR(FromRocks(status, options_.format, "read"));
  COFFER_ASSIGN_OR_RETURN(std::string_view message, Verify(family, key, value));
  if (!row.ParseFromArray(message.data(), static_cast<int>(message.size()))) {
    return Corrupt(family, "does not parse");
  }
  return true;
}

absl::Status SignedRowStore::Scan(
    size_t family, std::string_view prefix,
    const std::function<absl::Status(std::string_view key, std::string_view message)>& visit) {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), Family(family)));
  for (it->Seek(SliceOf(prefix)); it->Valid(); it->Next()) {
    std::string_view key(it->key().data(), it->key().size());
    if (key.substr(0, prefix.size()) != prefix) break;
    COFFER_ASSIGN_OR_RETURN(
        std::string_view message,
        Verify(family, key, std::string_view(it->value().data(), it->value().size())));
    COFFER_RETURN_IF_ERROR(visit(key, message));
  }
  return FromRocks(it->status(), options_.format, "scan");
}

absl::Status SignedRowStore::CreateCheckpoint(const std::string& target_dir) {
  rocksdb::Checkpoint* raw = nullptr;
  COFFER_RETURN_IF_ERROR(
      FromRocks(rocksdb::Checkpoint::Create(db_, &raw), options_.format, "checkpoint"));
  std::unique_ptr<rocksdb::Checkpoint> checkpoint(raw);
  return FromRocks(checkpoint->CreateCheckpoint(target_dir, /*log_size_for_flush=*/0),
                   options_.format, "checkpoint");
}

absl::Status SignedRowStore::CompactAll() {
  rocksdb::FlushOptions flush;
  flush.wait = true;
  COFFER_RETURN_IF_ERROR(FromRocks(db_->Flush(flush, opened_), options_.format, "flush"));
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (rocksdb::ColumnFamilyHandle* family : opened_) {
    COFFER_RETURN_IF_ERROR(FromRocks(db_->CompactRange(compact, family, nullptr, nullptr),
                                     options_.format, "compaction"));
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms
