// KeyDb: the key manager's own RocksDB directory, every row authenticated by the HSM — the key
// DB's schema over a SignedRowStore (kms/keys/signed_row_store.h).
//
// Column families (docs/key-manager.md, "Key DB layout"): datasets, names, key_versions,
// intents, meta. Each stored value is a serialised kms/keys/key_db.proto message followed by a
// 32-byte tag, HMAC-SHA256 under the token's row key (hsm::RowAuthenticator) over
//   "coffer-keydb-row-v1" 0x00 | column family 0x00 | key length (u32 BE) | key | message.
// Binding the column family and key stops a valid row from being moved to another place; a
// flipped state, hold, policy or version byte fails the tag. Reads verify the tag and return
// KEY_DB_ROW_CORRUPT (DATA_LOSS), never the unauthenticated bytes. (An old authenticated value
// put back in place — a rollback of one row — is not detected by the tag alone; the key manager
// cross-checks version rows against the dataset row's counts.)
//
// Every Write is one atomic RocksDB WriteBatch with WriteOptions::sync = true: when Write
// returns OK the change survives a crash and a power loss.
//
// Generation (docs/key-manager.md, "Key DB generation"): every Write also puts the meta row
// "generation" (v1::KeyDbGenerationRow), one higher than any value handed out before, in the same
// batch — so the generation on disk can never disagree with the rows it counts. generation()
// returns the newest value whose write returned OK: since each write is synced before Write
// returns, that value is on disk and survives a crash or a power loss (RocksDB replays the synced
// WAL), so whoever records it (the audit log's checkpoints) never records a generation the key DB
// could lose. A failed write consumes its value (it may or may not be on disk) and the next write
// takes a higher one, so a value is never written for two different states.
//
// Thread safety: all methods may be called from any thread (RocksDB is thread-safe; tags are
// computed before the batch is written). Writes are serialised by an internal mutex, held across
// the generation row's tag (an HSM call) and the synced write, so generations follow the order
// in which batches reach the disk; key-DB writes are rare (admin operations, usage reservations
// once per block), never per record. Ownership: the KeyDb owns its store; the
// RowAuthenticator must outlive it. Failures: IO_ERROR for RocksDB errors (the message carries
// RocksDB's), KEY_DB_ROW_CORRUPT for a row that fails its tag or does not parse, errors of the
// RowAuthenticator as they are.

#ifndef COFFER_KMS_KEYS_KEY_DB_H_
#define COFFER_KMS_KEYS_KEY_DB_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/message_lite.h"
#include "hsm/service_keys.h"
#include "kms/keys/signed_row_store.h"

namespace coffer::kms {

enum class KeyDbTable : uint8_t { kDatasets = 0, kNames, kKeyVersions, kIntents, kMeta };
inline constexpr size_t kKeyDbTableCount = 5;
inline constexpr size_t kKeyDbTagBytes = kSignedRowTagBytes;

// The column family name of `table` ("datasets", "names", "key_versions", "intents", "meta").
std::string_view KeyDbTableName(KeyDbTable table);

// Row keys (docs/key-manager.md).
std::string DatasetRowKey(uint64_t handle);  // handle, 8 bytes BE
std::string KeyVersionRowKey(uint64_t handle, uint8_t purpose, uint32_t version);
std::string KeyVersionPrefix(uint64_t handle);  // every version row of a dataset starts so

class KeyDb {
 public:
  // Opens (creating if missing, mode 0700) the key DB in `directory`.
  static absl::StatusOr<std::unique_ptr<KeyDb>> Open(const std::string& directory,
                                                     hsm::RowAuthenticator* authenticator);
  ~KeyDb();
  KeyDb(const KeyDb&) = delete;
  KeyDb& operator=(const KeyDb&) = delete;

  // A set of changes applied atomically by Write. Put computes the row's tag at once (an HSM
  // call), so a Put error leaves the batch unchanged.
  class Batch {
   public:
    explicit Batch(KeyDb& db);
    ~Batch();
    Batch(const Batch&) = delete;
    Batch& operator=(const Batch&) = delete;
    absl::Status Put(KeyDbTable table, std::string_view key,
                     const google::protobuf::MessageLite& row);
    void Delete(KeyDbTable table, std::string_view key);
    size_t count() const { return rows_.count(); }

   private:
    friend class KeyDb;
    SignedRowStore::Batch rows_;
  };

  // Writes `batch` atomically and syncs it, with the next generation in the same batch. The batch
  // must not write the meta row "generation" itself (only KeyDb names that key).
  absl::Status Write(Batch& batch);

  // The newest generation written: 0 for a key DB that has no generation row yet (written before
  // generations existed, or new and never written).
  uint64_t generation() const { return generation_.load(std::memory_order_acquire); }

  // Writes only the generation row, at max(`at_least`, the next generation), in one synced batch:
  // for a restore, whose restored key DB must start above every generation the live log recorded
  // (docs/key-manager.md, "Key DB generation"), and for the first open of a key DB without the
  // row. Returns the generation written.
  absl::StatusOr<uint64_t> AdvanceGeneration(uint64_t at_least);

  // Writes a consistent copy of the whole DB (memtables flushed, no WAL needed) into
  // `target_dir`, which must not exist (RocksDB Checkpoint; SST files hard-linked when on the
  // same file system). For full backups (kms/keys/full_backup.h).
  absl::Status CreateCheckpoint(const std::string& target_dir);

  // SignedRowStore::CompactAll: overwritten and deleted rows leave the files.
  absl::Status CompactAll();

  // Reads and verifies one row into `row`; nullopt-like false when absent.
  absl::StatusOr<bool> Get(KeyDbTable table, std::string_view key,
                           google::protobuf::MessageLite& row);

  // Calls `visit(key, verified message bytes)` for every row of `table` whose key starts with
  // `prefix`, in key order. Stops at the first error (a row failing its tag included).
  absl::Status Scan(
      KeyDbTable table, std::string_view prefix,
      const std::function<absl::Status(std::string_view key, std::string_view message)>& visit);

 private:
  KeyDb(std::unique_ptr<SignedRowStore> store, uint64_t generation);

  // Puts generation max(next_generation_, at_least) into `batch` and writes it.
  absl::StatusOr<uint64_t> WriteWithGeneration(Batch& batch, uint64_t at_least);

  std::unique_ptr<SignedRowStore> store_;
  std::mutex write_mu_;
  uint64_t next_generation_;  // guarded by write_mu_; never handed out twice
  std::atomic<uint64_t> generation_;
};

// The meta row holding the generation.
inline constexpr std::string_view kKeyDbGenerationKey = "generation";

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_KEY_DB_H_
