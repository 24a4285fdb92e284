#include "kms/keys/key_db.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keys/key_db.pb.h"

namespace coffer::kms {
namespace {

// Part of the stored format (docs/key-manager.md): never change for an existing key DB.
constexpr std::string_view kTableNames[kKeyDbTableCount] = {"datasets", "names", "key_versions",
                                                            "intents", "meta"};

size_t FamilyOf(KeyDbTable table) { return static_cast<size_t>(table); }

void AppendBigEndian(std::string& out, uint64_t value, int bytes) {
  for (int shift = (bytes - 1) * 8; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((value >> shift) & 0xff));
  }
}

}  // namespace

std::string_view KeyDbTableName(KeyDbTable table) { return kTableNames[FamilyOf(table)]; }

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
  SignedRowStore::Options options;
  options.directory = directory;
  for (std::string_view name : kTableNames) options.column_families.emplace_back(name);
  options.format = {
      .store_name = "key DB", .tag_domain = "coffer-keydb-row-v1", .tag_binds_column_family = true};
  options.authenticator = authenticator;
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<SignedRowStore> store,
                          SignedRowStore::Open(std::move(options)));
  v1::KeyDbGenerationRow row;
  COFFER_ASSIGN_OR_RETURN(bool found,
                          store->Get(FamilyOf(KeyDbTable::kMeta), kKeyDbGenerationKey, row));
  if (found && row.generation() == UINT64_MAX) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "key DB generation is exhausted");
  }
  return std::unique_ptr<KeyDb>(new KeyDb(std::move(store), found ? row.generation() : 0));
}

KeyDb::KeyDb(std::unique_ptr<SignedRowStore> store, uint64_t generation)
    : store_(std::move(store)), next_generation_(generation + 1), generation_(generation) {}

KeyDb::~KeyDb() = default;

KeyDb::Batch::Batch(KeyDb& db) : rows_(*db.store_) {}
KeyDb::Batch::~Batch() = default;

absl::Status KeyDb::Batch::Put(KeyDbTable table, std::string_view key,
                               const google::protobuf::MessageLite& row) {
  return rows_.Put(FamilyOf(table), key, row);
}

void KeyDb::Batch::Delete(KeyDbTable table, std::string_view key) {
  rows_.Delete(FamilyOf(table), key);
}

absl::Status KeyDb::Write(Batch& batch) { return WriteWithGeneration(batch, 0).status(); }

absl::StatusOr<uint64_t> KeyDb::AdvanceGeneration(uint64_t at_least) {
  Batch batch(*this);
  return WriteWithGeneration(batch, at_least);
}

absl::StatusOr<uint64_t> KeyDb::WriteWithGeneration(Batch& batch, uint64_t at_least) {
  std::lock_guard<std::mutex> lock(write_mu_);
  const uint64_t generation = std::max(next_generation_, at_least);
  if (generation == UINT64_MAX) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt, "key DB generation is exhausted");
  }
  // Consumed whatever happens below: a failed write may still have reached the disk.
  next_generation_ = generation + 1;
  v1::KeyDbGenerationRow row;
  row.set_generation(generation);
  COFFER_RETURN_IF_ERROR(batch.rows_.Put(FamilyOf(KeyDbTable::kMeta), kKeyDbGenerationKey, row));
  COFFER_RETURN_IF_ERROR(store_->Write(batch.rows_));
  // Synced (SignedRowStore::Write): only now may anyone record this generation.
  generation_.store(generation, std::memory_order_release);
  return generation;
}

absl::StatusOr<bool> KeyDb::Get(KeyDbTable table, std::string_view key,
                                google::protobuf::MessageLite& row) {
  return store_->Get(FamilyOf(table), key, row);
}

absl::Status KeyDb::Scan(
    KeyDbTable table, std::string_view prefix,
    const std::function<absl::Status(std::string_view key, std::string_view message)>& visit) {
  return store_->Scan(FamilyOf(table), prefix, visit);
}

absl::Status KeyDb::CreateCheckpoint(const std::string& target_dir) {
  return store_->CreateCheckpoint(target_dir);
}

absl::Status KeyDb::CompactAll() { return store_->CompactAll(); }

}  // namespace coffer::kms
