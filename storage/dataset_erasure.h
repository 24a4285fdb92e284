// Erasing a destroyed dataset's data from the data DB (docs/key-manager.md, "Deletion
// receipt"). Destroying a dataset's wrapping keys makes its ciphertext unreadable everywhere at
// once; erasing removes the ciphertext itself from the live data DB, so that the deletion
// receipt can say how much was purged and that the purge compaction finished. CountDatasetUsage
// is the quotas' census (storage/quota_meter.h), over the same scan.
//
// The caller (kms/keys/deletion_receipts.h) runs these only for DESTROYED datasets, which no
// request can write to any more, and counts before it erases, persisting the counts, so that an
// erase resumed after a crash reports what was there rather than zero. NewestItemWriteMicros
// serves the compliance lock's check before a destruction.
//
// Thread safety: these functions may run beside other datasets' traffic. Failure: DATA_DB_ERROR
// from RocksDB.

#ifndef COFFER_STORAGE_DATASET_ERASURE_H_
#define COFFER_STORAGE_DATASET_ERASURE_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/data_db.h"

namespace coffer::storage {

struct DatasetDataCounts {
  uint64_t records = 0;          // live records
  uint64_t attachments = 0;      // live attachments
  uint64_t bin_records = 0;      // records in the recycle bin
  uint64_t bin_attachments = 0;  // attachments in the recycle bin
  uint64_t uploads = 0;          // unfinished uploads
};

// Counts `handle`'s entries in every column family (one key scan each; no decryption).
absl::StatusOr<DatasetDataCounts> CountDatasetData(DataDb& db, uint64_t handle);

// What a dataset's quotas count (storage/quota_meter.h).
struct DatasetUsage {
  uint64_t records = 0;       // live records
  uint64_t stored_bytes = 0;  // keys and values of all the dataset's entries but its jobs
};

// One census of `handle` for its quotas (a scan of its entries; no decryption).
absl::StatusOr<DatasetUsage> CountDatasetUsage(DataDb& db, uint64_t handle);

// The newest write time of any item of `handle` — live records and attachments and those in the
// recycle bin (by when they were written, not deleted) — or nullopt when it holds none: what
// keeps the dataset from destruction under a minimum retention. One scan of those families with
// values, no decryption; CIPHERTEXT_CORRUPT when an entry's write time cannot be read (such an
// item may be inside the retention: purge it by its damaged-item reference first).
absl::StatusOr<std::optional<int64_t>> NewestItemWriteMicros(DataDb& db, uint64_t handle);

// Deletes every entry of `handle` in every column family (range deletions in one batch), then
// purges physically (DataDb::PurgePhysically: flush, wait for older readers, forced bottommost
// compaction, obsolete files deleted). Idempotent.
absl::Status EraseDatasetData(DataDb& db, uint64_t handle);

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_DATASET_ERASURE_H_
