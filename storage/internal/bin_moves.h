// Moves between live column families and the recycle bin, shared by records and attachments
// (docs/formats.md#data-db-recycle-bin). Each move is one WriteBatch under the id's lock stripes
// (one per live lookup version: storage/internal/id_locks.h), so it never interleaves with a
// client write or a background job on the same id.
//
// Failures: `not_found` (RECORD_NOT_FOUND / ATTACHMENT_NOT_FOUND) when nothing is live;
// COMPLIANCE_LOCKED inside the minimum retention; NOT_IN_RECYCLE_BIN; ALREADY_EXISTS when a
// restore would overwrite a live item; the policy source's and DATA_DB_ERROR codes.

#ifndef COFFER_STORAGE_INTERNAL_BIN_MOVES_H_
#define COFFER_STORAGE_INTERNAL_BIN_MOVES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"

namespace coffer::storage::internal {

// COMPLIANCE_LOCKED when an item written at `written_at_us` is still inside `policy`'s minimum
// retention at `now`.
absl::Status CheckComplianceLock(const DatasetPolicy& policy, int64_t written_at_us,
                                 std::chrono::system_clock::time_point now);

// COMPLIANCE_LOCKED when writing a new value of an id would overwrite a live entry still inside
// the dataset's minimum retention at the clock's now; `stored_keys`: the id's stored keys under
// every live lookup version (as LockId gives them). Read under the id's stripes, so the answer
// holds for the write that follows. The policy source's errors pass through.
absl::Status CheckOverwrite(DataDb* db, DatasetPolicySource* policies, const Clock* clock, Cf cf,
                            uint64_t handle, const std::vector<std::string>& stored_keys);

// Moves the live entry of `id` — under whichever live lookup version it is (LockId) — into the
// bin at its own stored key's bin key. The bin keeps only the latest deletion of an id: a bin
// entry of the id under any other live version goes (with its segments). `ref`, when set, gets
// the moved item's stored-key MAC (what an audit entry names it by).
absl::Status MoveToBin(DataDb* db, KeyProvider* keys, DatasetPolicySource* policies,
                       const Clock* clock, Cf cf, uint64_t handle, std::string_view id,
                       ErrorCode not_found, crypto::HmacSha256Tag* ref = nullptr);

// Moves `id`'s bin entry, under whichever live lookup version it is, back to the live family
// under the same stored key (the re-index job moves it to the primary later). `ref` as for
// MoveToBin.
absl::Status RestoreFromBin(DataDb* db, KeyProvider* keys, Cf cf, uint64_t handle,
                            std::string_view id, crypto::HmacSha256Tag* ref = nullptr);

// An item's two places in the data DB: its live entry and its recycle-bin entry.
struct StoredItem {
  std::string stored_key;             // handle ‖ HMAC(id)
  std::string bin_key;                // BinKey(cf, stored_key)
  std::optional<std::string> live;    // the live entry, when there is one
  std::optional<std::string> binned;  // the bin value (deleted_at ‖ entry), when there is one
};

// Reads both places of the item stored under `stored_key` in `cf` (records or attachment
// pointers). A caller that writes after reading holds the key's lock stripe across both.
absl::StatusOr<StoredItem> ReadStoredItem(DataDb* db, Cf cf, std::string stored_key);

// Adds to `batch` the deletion of the segments an attachment-pointer entry refers to.
absl::Status DeleteSegmentsOf(DataDb* db, std::string_view stored_key,
                              std::string_view pointer_entry, rocksdb::WriteBatch* batch);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_BIN_MOVES_H_
