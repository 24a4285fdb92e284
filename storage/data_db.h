// DataDb: the data DB's RocksDB instance, shared by every store and job (docs/formats.md#data-db).
//
// It owns the RocksDB handle and its column families (records, attachment segments and
// pointers, uploads, recycle bin, job state), the memory bounds (one WriteBufferManager caps
// the memtables of every column family and charges them to the block cache), and two pieces of
// coordination that every writer must share:
//
//  - Lock stripes. Every write of an id (record or attachment name) — client puts and deletes,
//    bin moves, re-encryption, purge, expiry — holds the stripe of that id's stored key for its
//    whole read-check-write. We chose stripes over OptimisticTransactionDB: background jobs
//    would otherwise lose validation races against hot ids and retry without bound, an
//    attachment commit spans several keys and column families, and a stripe is held only for
//    one WriteBatch, never across an HSM call or a stream upload. Reads take no lock.
//  - A read-view registry. Iterators and snapshots are handed out only as ScopedIterator and
//    ScopedSnapshot, which register themselves, so a physical purge can wait until every view
//    that can still see purged data (or pin the files holding it) is released.
//
// Durability: writes are acknowledged once in the WAL (sync=false); Durability::kSync adds an
// fsync per write group (RocksDB's group commit).
//
// Thread safety: every method may be called concurrently. Ownership: the DataDb owns the
// RocksDB handle; views it hands out must be destroyed before it. Failures: DATA_DB_ERROR with
// RocksDB's status text (which never contains plaintext: keys are HMACs, values ciphertexts).

#ifndef COFFER_STORAGE_DATA_DB_H_
#define COFFER_STORAGE_DATA_DB_H_

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rocksdb/db.h"
#include "storage/internal/layout.h"
#include "storage/rocks_status.h"

namespace rocksdb {
class Cache;
class WriteBufferManager;
}  // namespace rocksdb

namespace coffer::storage {

enum class Durability {
  kWal,   // acknowledged when in the WAL: survives a daemon crash
  kSync,  // also fsynced (group commit): survives power loss
};

struct DataDbOptions {
  Durability durability = Durability::kWal;
  // Cap on all memtables together (WriteBufferManager): RSS does not grow with upload size.
  size_t memtable_budget_bytes = 64 << 20;
  // Block cache shared by every column family: data blocks, index and bloom filter blocks, and
  // the memtable budget is charged to it as well. cofferd sets it from storage.block_cache_bytes.
  size_t block_cache_bytes = 64 << 20;
  size_t max_value_bytes = 16 << 20;  // record values (VALUE_TOO_LARGE beyond)
  size_t lock_stripes = 4096;
  bool create_if_missing = true;
};

// The RocksDB options the data DB opens with, for a benchmark's plain-RocksDB baseline.
rocksdb::Options DataDbRocksOptions(const DataDbOptions& options,
                                    std::shared_ptr<rocksdb::Cache> cache,
                                    std::shared_ptr<rocksdb::WriteBufferManager> wbm);

// Converts a failed RocksDB status into DATA_DB_ERROR naming the data DB and `what`
// (storage/rocks_status.h).
absl::Status FromRocks(const rocksdb::Status& status, std::string_view what);

class DataDb;

// A registered view; move-only. Unregisters when destroyed.
class ReadViewTicket {
 public:
  ReadViewTicket() = default;
  ReadViewTicket(ReadViewTicket&& other) noexcept;
  ReadViewTicket& operator=(ReadViewTicket&& other) noexcept;
  ReadViewTicket(const ReadViewTicket&) = delete;
  ReadViewTicket& operator=(const ReadViewTicket&) = delete;
  ~ReadViewTicket();

 private:
  friend class DataDb;
  ReadViewTicket(DataDb* db, uint64_t id) : db_(db), id_(id) {}
  DataDb* db_ = nullptr;
  uint64_t id_ = 0;
};

// A RocksDB iterator registered with its DataDb. Destroys the iterator before unregistering.
class ScopedIterator {
 public:
  ScopedIterator(ScopedIterator&&) noexcept = default;
  ScopedIterator& operator=(ScopedIterator&&) noexcept = default;
  rocksdb::Iterator* operator->() const { return iterator_.get(); }
  rocksdb::Iterator& operator*() const { return *iterator_; }

 private:
  friend class DataDb;
  ScopedIterator(ReadViewTicket ticket, std::unique_ptr<rocksdb::Iterator> iterator)
      : ticket_(std::move(ticket)), iterator_(std::move(iterator)) {}
  ReadViewTicket ticket_;  // declared first: released last
  std::unique_ptr<rocksdb::Iterator> iterator_;
};

// A RocksDB snapshot registered with its DataDb, released when destroyed.
class ScopedSnapshot {
 public:
  ScopedSnapshot(const ScopedSnapshot&) = delete;
  ScopedSnapshot& operator=(const ScopedSnapshot&) = delete;
  ~ScopedSnapshot();
  const rocksdb::Snapshot* get() const { return snapshot_; }

 private:
  friend class DataDb;
  ScopedSnapshot(ReadViewTicket ticket, rocksdb::DB* db, const rocksdb::Snapshot* snapshot)
      : ticket_(std::move(ticket)), db_(db), snapshot_(snapshot) {}
  ReadViewTicket ticket_;
  rocksdb::DB* db_;
  const rocksdb::Snapshot* snapshot_;
};

class DataDb {
 public:
  // Opens (or creates) the data DB in directory `path`.
  static absl::StatusOr<std::unique_ptr<DataDb>> Open(const std::string& path,
                                                      const DataDbOptions& options);
  DataDb(const DataDb&) = delete;
  DataDb& operator=(const DataDb&) = delete;
  ~DataDb();  // every view must be gone; flushes nothing (the WAL has every write)

  const DataDbOptions& options() const { return options_; }
  const std::string& path() const { return path_; }
  rocksdb::DB* rocks() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* cf(internal::Cf cf) const;
  const rocksdb::WriteOptions& write_options() const { return write_options_; }

  // The stripe serializing writes of the id whose stored key (or bin key) ends in `mac`.
  std::mutex& StripeFor(std::string_view mac) const;

  // Locks the stripes of every MAC in `macs` (each stripe once, in address order: every writer
  // that holds several stripes takes them this way, and the others hold one, so this cannot
  // deadlock). An id stored under several lookup versions has one MAC per version; a write of
  // it holds them all (docs/formats.md#data-db-lookup-versions). Unlocked when destroyed.
  using StripeLocks = std::vector<std::unique_lock<std::mutex>>;
  StripeLocks LockStripes(const std::vector<std::string_view>& macs) const;

  // A barrier over the stripes: returns once every writer that held a stripe when it was called
  // has let go of it (each stripe is taken and released in turn). A retirement calls it after
  // turning writes under its versions away (KeyProvider::AcceptsWrites) and before counting
  // what they protect, so that a write which passed that check under a stripe has landed.
  void AwaitStripeHolders() const;

  // Reads `key` in `cf` (optionally at `snapshot`). NOT_FOUND-free: *found says whether it was
  // there.
  absl::Status Get(internal::Cf cf, std::string_view key, std::string* value, bool* found,
                   const rocksdb::Snapshot* snapshot = nullptr) const;
  // The same into a PinnableSlice, which pins the block cache entry instead of copying the value
  // (the hot read path).
  absl::Status Get(internal::Cf cf, std::string_view key, rocksdb::PinnableSlice* value,
                   bool* found, const rocksdb::Snapshot* snapshot = nullptr) const;
  // Reads `keys` in `cf` with RocksDB's MultiGet (one pass over the memtables and files for the
  // whole batch, at one implicit snapshot). (*found)[i] says whether keys[i] was there (its
  // value in (*values)[i]), or why it could not be read (DATA_DB_ERROR).
  void MultiGet(internal::Cf cf, const std::vector<std::string>& keys,
                std::vector<rocksdb::PinnableSlice>* values,
                std::vector<absl::StatusOr<bool>>* found) const;
  absl::Status Write(rocksdb::WriteBatch* batch) const;

  ScopedIterator NewIterator(internal::Cf cf, const rocksdb::ReadOptions& read_options = {});
  std::unique_ptr<ScopedSnapshot> NewSnapshot();

  // Makes deletions of dataset `handle` physical: flushes every column family, waits until no
  // view opened before this call is open, force-compacts the dataset's key range in every
  // column family down to the bottommost level, then waits for views opened before the
  // compaction ended (they pin the replaced files). When it returns OK, no live SST or WAL
  // holds a deleted value of the dataset.
  absl::Status PurgePhysically(uint64_t handle);

  // Number of PurgePhysically calls currently waiting for views (for tests and metrics).
  int purges_waiting() const;
  // Number of views currently open.
  size_t views_open() const;

 private:
  friend class ReadViewTicket;
  DataDb(std::string path, const DataDbOptions& options);
  ReadViewTicket Register();
  void Unregister(uint64_t id);
  // Blocks until no view with an id below `watermark` is open.
  void WaitForViewsBefore(uint64_t watermark);

  std::string path_;
  DataDbOptions options_;
  rocksdb::WriteOptions write_options_;
  std::shared_ptr<rocksdb::Cache> cache_;
  std::shared_ptr<rocksdb::WriteBufferManager> write_buffer_manager_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default first, then internal::kAllCfs
  std::unique_ptr<rocksdb::DB> db_;
  std::unique_ptr<std::mutex[]> stripes_;

  mutable std::mutex views_mu_;
  std::condition_variable views_cv_;
  std::set<uint64_t> open_views_;  // guarded by views_mu_
  uint64_t next_view_id_ = 1;      // guarded by views_mu_
  int purges_waiting_ = 0;         // guarded by views_mu_
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_DATA_DB_H_
