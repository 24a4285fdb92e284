#include "storage/dataset_erasure.h"

#include <optional>
#include <string>
#include <string_view>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

namespace {

// Calls `visit(key, value)` for each of `handle`'s entries in `cf`.
template <typename Visit>
absl::Status ForEachEntry(DataDb& db, Cf cf, uint64_t handle, Visit visit) {
  const std::string begin = internal::DatasetBegin(handle);
  const std::string end = internal::DatasetEnd(handle);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  read_options.fill_cache = false;
  ScopedIterator it = db.NewIterator(cf, read_options);
  for (it->Seek(begin); it->Valid(); it->Next()) {
    visit(it->key().ToStringView(), it->value().ToStringView());
  }
  return FromRocks(it->status(), "read a dataset's entries");
}

// Calls `visit(key)` for each of `handle`'s keys in `cf`.
template <typename Visit>
absl::Status ForEachKey(DataDb& db, Cf cf, uint64_t handle, Visit visit) {
  return ForEachEntry(db, cf, handle, [&](std::string_view key, std::string_view) { visit(key); });
}

}  // namespace

absl::StatusOr<DatasetDataCounts> CountDatasetData(DataDb& db, uint64_t handle) {
  DatasetDataCounts counts;
  COFFER_RETURN_IF_ERROR(
      ForEachKey(db, Cf::kRecords, handle, [&](std::string_view) { ++counts.records; }));
  COFFER_RETURN_IF_ERROR(ForEachKey(db, Cf::kAttachmentPointers, handle,
                                    [&](std::string_view) { ++counts.attachments; }));
  COFFER_RETURN_IF_ERROR(
      ForEachKey(db, Cf::kUploads, handle, [&](std::string_view) { ++counts.uploads; }));
  absl::Status malformed;
  COFFER_RETURN_IF_ERROR(ForEachKey(db, Cf::kRecycleBin, handle, [&](std::string_view key) {
    absl::StatusOr<internal::BinKeyParts> parts = internal::ParseBinKey(key);
    if (!parts.ok()) {
      if (malformed.ok()) malformed = parts.status();
      return;
    }
    if (parts->cf == Cf::kRecords) ++counts.bin_records;
    if (parts->cf == Cf::kAttachmentPointers) ++counts.bin_attachments;
  }));
  COFFER_RETURN_IF_ERROR(malformed);
  return counts;
}

absl::StatusOr<DatasetUsage> CountDatasetUsage(DataDb& db, uint64_t handle) {
  DatasetUsage usage;
  for (Cf cf : internal::kAllCfs) {
    if (cf == Cf::kJobs) continue;  // the daemon's own bookkeeping, not the dataset's data
    COFFER_RETURN_IF_ERROR(
        ForEachEntry(db, cf, handle, [&](std::string_view key, std::string_view value) {
          if (cf == Cf::kRecords) ++usage.records;
          usage.stored_bytes += key.size() + value.size();
        }));
  }
  return usage;
}

absl::Status EraseDatasetData(DataDb& db, uint64_t handle) {
  const std::string begin = internal::DatasetBegin(handle);
  const std::string end = internal::DatasetEnd(handle);
  rocksdb::WriteBatch batch;
  for (Cf cf : internal::kAllCfs) {
    COFFER_RETURN_IF_ERROR(
        FromRocks(batch.DeleteRange(db.cf(cf), begin, end), "erase a dataset's entries"));
  }
  COFFER_RETURN_IF_ERROR(db.Write(&batch));
  return db.PurgePhysically(handle);
}

absl::StatusOr<std::optional<int64_t>> NewestItemWriteMicros(DataDb& db, uint64_t handle) {
  std::optional<int64_t> newest;
  absl::Status malformed;
  const auto write_time = [](Cf cf, std::string_view key,
                             std::string_view value) -> absl::StatusOr<int64_t> {
    COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts item, internal::ItemKeyOf(cf, key));
    COFFER_ASSIGN_OR_RETURN(std::string_view entry, internal::EntryOf(cf, value));
    COFFER_ASSIGN_OR_RETURN(internal::Entry parsed, internal::ParseEntry(item.cf, entry));
    return parsed.written_at_us;
  };
  const auto visit = [&](Cf cf, std::string_view key, std::string_view value) {
    absl::StatusOr<int64_t> written = write_time(cf, key, value);
    if (!written.ok()) {
      if (malformed.ok()) malformed = written.status();
      return;
    }
    if (!newest || *written > *newest) newest = *written;
  };
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    COFFER_RETURN_IF_ERROR(ForEachEntry(
        db, cf, handle, [&](std::string_view k, std::string_view v) { visit(cf, k, v); }));
  }
  // An item whose write time cannot be read might be inside the retention: not "none".
  COFFER_RETURN_IF_ERROR(malformed);
  return newest;
}

}  // namespace coffer::storage
