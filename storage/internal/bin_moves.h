// Moves between live column families and the recycle bin, shared by records and attachments
// (docs/formats.md#data-db-recycle-bin). Each move is one WriteBatch under the id's lock stripe,
// so it never interleaves with a client write or a background job on the same id.
//
// Failures: `not_found` (RECORD_NOT_FOUND / ATTACHMENT_NOT_FOUND) when nothing is live;
// COMPLIANCE_LOCKED inside the minimum retention; NOT_IN_RECYCLE_BIN; ALREADY_EXISTS when a
// restore would overwrite a live item; the policy source's and DATA_DB_ERROR codes.

#ifndef COFFER_STORAGE_INTERNAL_BIN_MOVES_H_
#define COFFER_STORAGE_INTERNAL_BIN_MOVES_H_

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"
#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"
#include "storage/internal/layout.h"

namespace coffer::storage::internal {

// COMPLIANCE_LOCKED when an item written at `written_at_us` is still inside `policy`'s minimum
// retention at `now`.
absl::Status CheckComplianceLock(const DatasetPolicy& policy, int64_t written_at_us,
                                 std::chrono::system_clock::time_point now);

absl::Status MoveToBin(DataDb* db, DatasetPolicySource* policies, const Clock* clock, Cf cf,
                       std::string_view stored_key, ErrorCode not_found);

absl::Status RestoreFromBin(DataDb* db, Cf cf, std::string_view stored_key);

// Adds to `batch` the deletion of the segments an attachment-pointer entry refers to.
absl::Status DeleteSegmentsOf(DataDb* db, std::string_view stored_key,
                              std::string_view pointer_entry, rocksdb::WriteBatch* batch);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_BIN_MOVES_H_
