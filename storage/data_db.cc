#include "storage/data_db.h"

#include <algorithm>
#include <functional>
#include <utility>

#include "crypto/base/status.h"
#include "rocksdb/cache.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/table.h"
#include "rocksdb/write_batch.h"
#include "rocksdb/write_buffer_manager.h"

namespace coffer::storage {

using internal::Cf;

rocksdb::Options DataDbRocksOptions(const DataDbOptions& options,
                                    std::shared_ptr<rocksdb::Cache> cache,
                                    std::shared_ptr<rocksdb::WriteBufferManager> wbm) {
  rocksdb::Options rocks;
  rocks.create_if_missing = options.create_if_missing;
  rocks.create_missing_column_families = true;
  // Values are ciphertexts: compression costs CPU and gains nothing.
  rocks.compression = rocksdb::kNoCompression;
  rocks.write_buffer_manager = std::move(wbm);
  rocks.write_buffer_size = 16 << 20;
  rocks.max_write_buffer_number = 2;
  // Purged values must leave the disk: never keep or recycle obsolete WAL files.
  rocks.recycle_log_file_num = 0;
  rocks.WAL_ttl_seconds = 0;
  rocks.WAL_size_limit_MB = 0;
  rocks.max_background_jobs = 2;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = std::move(cache);
  table.cache_index_and_filter_blocks = true;
  // A whole-key bloom filter (10 bits a key, ~1% false positives) lets a get skip every SST
  // whose filter says the stored key is absent: a miss (an unknown id, or an id not under an
  // older lookup version) reads no data block at all, and a hit reads one. Filters are kept on
  // the bottommost level too (no optimize_filters_for_hits), so gets of missing ids stay as
  // cheap as hits. The filter is RocksDB's own SST metadata: files written with or without it
  // open either way (a file without one is simply searched), so coffer's stored formats do
  // not change.
  table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  table.whole_key_filtering = true;
  rocks.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return rocks;
}

absl::Status FromRocks(const rocksdb::Status& status, std::string_view what) {
  return FromRocks(status, ErrorCode::kDataDbError, std::string("data DB ") + std::string(what));
}

ReadViewTicket::ReadViewTicket(ReadViewTicket&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)), id_(other.id_) {}

ReadViewTicket& ReadViewTicket::operator=(ReadViewTicket&& other) noexcept {
  if (this != &other) {
    if (db_ != nullptr) db_->Unregister(id_);
    db_ = std::exchange(other.db_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

ReadViewTicket::~ReadViewTicket() {
  if (db_ != nullptr) db_->Unregister(id_);
}

ScopedSnapshot::~ScopedSnapshot() { db_->ReleaseSnapshot(snapshot_); }

DataDb::DataDb(std::string path, const DataDbOptions& options)
    : path_(std::move(path)),
      options_(options),
      stripes_(new std::mutex[options.lock_stripes == 0 ? 1 : options.lock_stripes]) {
  if (options_.lock_stripes == 0) options_.lock_stripes = 1;
  write_options_.sync = options.durability == Durability::kSync;
  write_options_.disableWAL = false;
}

absl::StatusOr<std::unique_ptr<DataDb>> DataDb::Open(const std::string& path,
                                                     const DataDbOptions& options) {
  std::unique_ptr<DataDb> data_db(new DataDb(path, options));
  data_db->cache_ = rocksdb::NewLRUCache(options.block_cache_bytes);
  data_db->write_buffer_manager_ = std::make_shared<rocksdb::WriteBufferManager>(
      options.memtable_budget_bytes, data_db->cache_, /*allow_stall=*/true);
  rocksdb::Options rocks =
      DataDbRocksOptions(options, data_db->cache_, data_db->write_buffer_manager_);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.emplace_back(rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions(rocks));
  for (Cf cf : internal::kAllCfs) {
    descriptors.emplace_back(std::string(internal::CfName(cf)),
                             rocksdb::ColumnFamilyOptions(rocks));
  }
  rocksdb::DB* raw = nullptr;
  COFFER_RETURN_IF_ERROR(FromRocks(
      rocksdb::DB::Open(rocksdb::DBOptions(rocks), path, descriptors, &data_db->handles_, &raw),
      "open"));
  data_db->db_.reset(raw);
  return data_db;
}

DataDb::~DataDb() {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  db_->Close().PermitUncheckedError();
}

rocksdb::ColumnFamilyHandle* DataDb::cf(Cf cf) const {
  return handles_[static_cast<size_t>(cf)];  // kAllCfs are numbered 1.. in order
}

std::mutex& DataDb::StripeFor(std::string_view mac) const {
  // The key is an HMAC: any 8 of its bytes are uniformly distributed.
  uint64_t bits = mac.size() >= 8 ? internal::ReadU64(mac.substr(mac.size() - 8))
                                  : std::hash<std::string_view>{}(mac);
  return stripes_[bits % options_.lock_stripes];
}

DataDb::StripeLocks DataDb::LockStripes(const std::vector<std::string_view>& macs) const {
  std::vector<std::mutex*> stripes;
  stripes.reserve(macs.size());
  for (std::string_view mac : macs) stripes.push_back(&StripeFor(mac));
  std::sort(stripes.begin(), stripes.end());
  stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
  StripeLocks locks;
  locks.reserve(stripes.size());
  for (std::mutex* stripe : stripes) locks.emplace_back(*stripe);
  return locks;
}

void DataDb::AwaitStripeHolders() const {
  for (size_t i = 0; i < options_.lock_stripes; ++i) {
    std::lock_guard<std::mutex> lock(stripes_[i]);
  }
}

absl::Status DataDb::Get(Cf cf, std::string_view key, std::string* value, bool* found,
                         const rocksdb::Snapshot* snapshot) const {
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  rocksdb::Status status =
      db_->Get(read_options, this->cf(cf), rocksdb::Slice(key.data(), key.size()), value);
  *found = status.ok();
  if (status.IsNotFound()) return absl::OkStatus();
  return FromRocks(status, "read");
}

absl::Status DataDb::Get(Cf cf, std::string_view key, rocksdb::PinnableSlice* value, bool* found,
                         const rocksdb::Snapshot* snapshot) const {
  rocksdb::ReadOptions read_options;
  read_options.snapshot = snapshot;
  rocksdb::Status status =
      db_->Get(read_options, this->cf(cf), rocksdb::Slice(key.data(), key.size()), value);
  *found = status.ok();
  if (status.IsNotFound()) return absl::OkStatus();
  return FromRocks(status, "read");
}

void DataDb::MultiGet(Cf cf, const std::vector<std::string>& keys,
                      std::vector<rocksdb::PinnableSlice>* values,
                      std::vector<absl::StatusOr<bool>>* found) const {
  std::vector<rocksdb::Slice> slices;
  slices.reserve(keys.size());
  for (const std::string& key : keys) slices.emplace_back(key.data(), key.size());
  *values = std::vector<rocksdb::PinnableSlice>(keys.size());
  std::vector<rocksdb::Status> statuses(keys.size());
  db_->MultiGet(rocksdb::ReadOptions(), this->cf(cf), slices.size(), slices.data(), values->data(),
                statuses.data());
  found->clear();
  found->reserve(keys.size());
  for (const rocksdb::Status& status : statuses) {
    if (status.ok() || status.IsNotFound()) {
      found->emplace_back(status.ok());
    } else {
      found->emplace_back(FromRocks(status, "read"));
    }
  }
}

absl::Status DataDb::Write(rocksdb::WriteBatch* batch) const {
  return FromRocks(db_->Write(write_options_, batch), "write");
}

ReadViewTicket DataDb::Register() {
  std::lock_guard<std::mutex> lock(views_mu_);
  uint64_t id = next_view_id_++;
  open_views_.insert(id);
  return {this, id};
}

void DataDb::Unregister(uint64_t id) {
  std::lock_guard<std::mutex> lock(views_mu_);
  open_views_.erase(id);
  views_cv_.notify_all();
}

ScopedIterator DataDb::NewIterator(Cf cf, const rocksdb::ReadOptions& read_options) {
  ReadViewTicket ticket = Register();  // before the iterator exists: see WaitForViewsBefore
  return {std::move(ticket),
          std::unique_ptr<rocksdb::Iterator>(db_->NewIterator(read_options, this->cf(cf)))};
}

std::unique_ptr<ScopedSnapshot> DataDb::NewSnapshot() {
  ReadViewTicket ticket = Register();
  return std::unique_ptr<ScopedSnapshot>(
      new ScopedSnapshot(std::move(ticket), db_.get(), db_->GetSnapshot()));
}

void DataDb::WaitForViewsBefore(uint64_t watermark) {
  std::unique_lock<std::mutex> lock(views_mu_);
  ++purges_waiting_;
  views_cv_.wait(lock, [&] { return open_views_.empty() || *open_views_.begin() >= watermark; });
  --purges_waiting_;
}

int DataDb::purges_waiting() const {
  std::lock_guard<std::mutex> lock(views_mu_);
  return purges_waiting_;
}

size_t DataDb::views_open() const {
  std::lock_guard<std::mutex> lock(views_mu_);
  return open_views_.size();
}

absl::Status DataDb::PurgePhysically(uint64_t handle) {
  uint64_t before_flush = 0;
  {
    std::lock_guard<std::mutex> lock(views_mu_);
    before_flush = next_view_id_;
  }
  rocksdb::FlushOptions flush;
  flush.wait = true;
  flush.allow_write_stall = true;
  std::vector<rocksdb::ColumnFamilyHandle*> all(handles_.begin(), handles_.end());
  COFFER_RETURN_IF_ERROR(FromRocks(db_->Flush(flush, all), "flush"));
  WaitForViewsBefore(before_flush);

  std::string begin = internal::DatasetBegin(handle);
  std::string end = internal::DatasetEnd(handle);
  rocksdb::Slice begin_slice(begin);
  rocksdb::Slice end_slice(end);
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  for (Cf cf : internal::kAllCfs) {
    COFFER_RETURN_IF_ERROR(
        FromRocks(db_->CompactRange(compact, this->cf(cf), &begin_slice, &end_slice), "compact"));
  }
  uint64_t after_compaction = 0;
  {
    std::lock_guard<std::mutex> lock(views_mu_);
    after_compaction = next_view_id_;
  }
  WaitForViewsBefore(after_compaction);
  // Files the released views pinned are deleted when their last reference goes. A disable and
  // re-enable pair (net zero, so a running backup's own disable stays in force) makes RocksDB
  // scan for and delete every obsolete file now, before we report done.
  COFFER_RETURN_IF_ERROR(FromRocks(db_->DisableFileDeletions(), "pause file deletions"));
  return FromRocks(db_->EnableFileDeletions(/*force=*/false), "delete obsolete files");
}

}  // namespace coffer::storage
