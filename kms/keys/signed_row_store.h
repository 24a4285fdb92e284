// SignedRowStore: a RocksDB directory of protobuf rows, each authenticated by the HSM's row key.
// The key DB (kms/keys/key_db.h) and the admin registry (kms/admin/admin_registry.h) are schemas
// over it; the store owns the RocksDB handle, the column families, the tags and the writes.
//
// Stored value = serialised message ‖ 32-byte tag, HMAC-SHA256 under the token's row key
// (hsm::RowAuthenticator) over
//   tag_domain 0x00 | [column family name 0x00 |] key length (u32 BE) | key | message
// (docs/key-manager.md, "Row authentication"). The column family name is in the input when the
// format binds it: the key DB's does ("coffer-keydb-row-v1"); the admin registry's
// ("coffer-admin-row-v1") keeps all rows in the default family and never did. Binding the key
// (and family) stops a valid row from being moved to another place; the domain stops a row of
// one store from passing in the other. The store adds nothing else: keys, values and family
// names on disk are exactly what the schemas wrote before the store existed
// (tests/kms/keys/golden/).
//
// Reads verify the tag in constant time before parsing and return KEY_DB_ROW_CORRUPT
// (DATA_LOSS) for a row that is truncated, fails its tag or does not parse — never the
// unauthenticated bytes. The message names the store and the column family, never the row's key
// or contents. (An older authenticated value put back in place passes its tag; schemas
// cross-check what they can.)
//
// Every write — a Batch, or a one-row Put or Delete — is one atomic RocksDB WriteBatch with
// WriteOptions::sync = true: when it returns OK the change survives a crash and a power loss.
//
// Thread safety: every method may be called from any thread (RocksDB is thread-safe; tags are
// computed before a batch is written). A Batch belongs to one thread. Read-modify-write
// sequences are the schema's to serialise. Ownership: the store owns the RocksDB handle; the
// RowAuthenticator must outlive it; a Batch must not outlive its store. Failures: IO_ERROR for
// RocksDB errors (storage/rocks_status.h), KEY_DB_ROW_CORRUPT as above, INVALID_ARGUMENT for bad
// options, errors of the RowAuthenticator as they are.

#ifndef COFFER_KMS_KEYS_SIGNED_ROW_STORE_H_
#define COFFER_KMS_KEYS_SIGNED_ROW_STORE_H_

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "hsm/service_keys.h"

namespace rocksdb {
class DB;
class ColumnFamilyHandle;
class WriteBatch;
}  // namespace rocksdb

namespace coffer::kms {

inline constexpr size_t kSignedRowTagBytes = 32;

// How a store's rows are tagged and named. Part of the stored format: never change it for an
// existing store.
struct SignedRowFormat {
  std::string store_name;  // starts every error message: "key DB", "admin registry"
  std::string tag_domain;  // first bytes of every tag input: "coffer-keydb-row-v1"
  bool tag_binds_column_family = true;
};

class SignedRowStore {
 public:
  struct Options {
    // Created with any missing parents when absent; a directory the store creates is mode 0700.
    std::string directory;
    // The column families rows live in; a row's `family` is an index into this list. RocksDB's
    // "default" family is always opened and may be listed to hold rows.
    std::vector<std::string> column_families;
    SignedRowFormat format;
    hsm::RowAuthenticator* authenticator = nullptr;  // required
  };

  // Opens (creating if missing) the store, creating missing column families.
  static absl::StatusOr<std::unique_ptr<SignedRowStore>> Open(Options options);
  ~SignedRowStore();
  SignedRowStore(const SignedRowStore&) = delete;
  SignedRowStore& operator=(const SignedRowStore&) = delete;

  // A set of changes applied atomically by Write. Put serialises and tags the row at once (an
  // HSM call), so a Put error leaves the batch unchanged.
  class Batch {
   public:
    explicit Batch(SignedRowStore& store);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    absl::Status Put(size_t family, std::string_view key, const google::protobuf::MessageLite& row);
    void Delete(size_t family, std::string_view key);
    size_t count() const { return count_; }

   private:
    friend class SignedRowStore;
    SignedRowStore& store_;
    std::unique_ptr<rocksdb::WriteBatch> batch_;
    size_t count_ = 0;
  };

  // Writes `batch` atomically and syncs it.
  absl::Status Write(Batch& batch);

  // One-row writes, each its own synced batch.
  absl::Status Put(size_t family, std::string_view key, const google::protobuf::MessageLite& row);
  absl::Status Delete(size_t family, std::string_view key);

  // Reads, verifies and parses one row into `row`. false (and `row` untouched) when absent.
  absl::StatusOr<bool> Get(size_t family, std::string_view key, google::protobuf::MessageLite& row);

  // Calls `visit(key, verified message bytes)` for every row of `family` whose key starts with
  // `prefix`, in key order. Stops at the first error (a row failing its tag included).
  absl::Status Scan(
      size_t family, std::string_view prefix,
      const std::function<absl::Status(std::string_view key, std::string_view message)>& visit);

  // Writes a consistent copy of the whole store (memtables flushed, no WAL needed) into
  // `target_dir`, which must not exist (RocksDB Checkpoint; SST files hard-linked when on the
  // same file system).
  absl::Status CreateCheckpoint(const std::string& target_dir);

  // Flushes the memtables and compacts every column family down to the bottom level, so that
  // overwritten and deleted values leave the SST files (and the WAL files that held them are
  // released). For migrations that must leave no copy of the old bytes in the store's files.
  absl::Status CompactAll();

 private:
  SignedRowStore(Options options, rocksdb::DB* db, std::vector<rocksdb::ColumnFamilyHandle*> opened,
                 std::vector<rocksdb::ColumnFamilyHandle*> by_family);

  // `family` must index Options::column_families (a programming error otherwise: it throws).
  rocksdb::ColumnFamilyHandle* Family(size_t family) const { return by_family_.at(family); }
  absl::Status Corrupt(size_t family, std::string_view why) const;
  absl::StatusOr<std::string> Tag(size_t family, std::string_view key, std::string_view message);
  absl::StatusOr<std::string_view> Verify(size_t family, std::string_view key,
                                          std::string_view value);

  Options options_;
  rocksdb::DB* db_;
  std::vector<rocksdb::ColumnFamilyHandle*> opened_;     // every handle Open returned
  std::vector<rocksdb::ColumnFamilyHandle*> by_family_;  // indexed like column_families
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_SIGNED_ROW_STORE_H_
