// Scrub: authenticates every stored record, attachment pointer, attachment segment and bin
// entry of one dataset (or all) and reports the ones that fail — damaged bytes, entries moved
// to another key, or entries naming a key version the key provider no longer has. It reads
// through a snapshot and never writes.
//
// Thread safety: may run concurrently with anything. Ownership: borrows its arguments.
// Every finding carries the item's reference (storage/damaged_item.h), the one record listing,
// re-encryption, re-index and export report for the same item.
// Failures: DATA_DB_ERROR when RocksDB cannot be read; everything wrong with an entry is a
// finding, not an error.

#ifndef COFFER_STORAGE_SCRUB_H_
#define COFFER_STORAGE_SCRUB_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/base/status.h"
#include "storage/data_db.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"

namespace coffer::storage {

struct ScrubFinding {
  std::string column_family;  // "records", "attachment_pointers", "recycle_bin", …
  uint64_t dataset_handle = 0;
  std::string key_hex;  // the RocksDB key (HMACs and ids of random uploads only)
  std::string ref;      // the item's damaged-item reference (storage/damaged_item.h)
  ErrorCode code = ErrorCode::kOk;
  std::string message;
};

struct ScrubReport {
  uint64_t entries_checked = 0;   // records, pointers and bin entries
  uint64_t segments_checked = 0;  // attachment segments
  std::vector<ScrubFinding> findings;
};

// Scrubs dataset `handle`, or every dataset when nullopt. `on_progress` (optional) is called
// every 1,024 entries with the report so far.
// Opens the item stored under `key` in `cf` (records, attachment pointers or the recycle bin)
// the way Scrub does: the entry, and every segment of an attachment. OK when it opens; otherwise
// its damage (IsItemDamage) or the environment's failure (I/O, keys). Reads at `snapshot` when
// given; counts segments into `segments_checked` when given.
absl::Status CheckItem(DataDb* db, KeyProvider* keys, internal::Cf cf, std::string_view key,
                       std::string_view value, const rocksdb::Snapshot* snapshot = nullptr,
                       uint64_t* segments_checked = nullptr);

absl::StatusOr<ScrubReport> Scrub(DataDb* db, KeyProvider* keys, std::optional<uint64_t> handle,
                                  const std::function<void(const ScrubReport&)>& on_progress = {});

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_SCRUB_H_
