#include "storage/internal/bin_moves.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "rocksdb/write_batch.h"
#include "storage/internal/id_locks.h"

namespace coffer::storage::internal {

absl::Status CheckComplianceLock(const DatasetPolicy& policy, int64_t written_at_us,
                                 std::chrono::system_clock::time_point now) {
  if (policy.min_retention.count() <= 0) return absl::OkStatus();
  auto locked_until = FromUnixMicros(written_at_us) + policy.min_retention;
  if (now >= locked_until) return absl::OkStatus();
  auto remaining = std::chrono::duration_cast<std::chrono::seconds>(locked_until - now);
  return MakeError(ErrorCode::kComplianceLocked,
                   "the dataset's minimum retention keeps this item for another " +
                       std::to_string(remaining.count()) + " s");
}

absl::Status CheckOverwrite(DataDb* db, DatasetPolicySource* policies, const Clock* clock, Cf cf,
                            uint64_t handle, const std::vector<std::string>& stored_keys) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies->PolicyFor(handle));
  if (policy.min_retention.count() <= 0) return absl::OkStatus();  // the common case: no read
  const auto now = clock->Now();
  for (const std::string& stored_key : stored_keys) {
    std::string value;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db->Get(cf, stored_key, &value, &found));
    if (!found) continue;
    COFFER_ASSIGN_OR_RETURN(Entry entry, ParseEntry(cf, value));
    absl::Status locked = CheckComplianceLock(policy, entry.written_at_us, now);
    if (!locked.ok()) {
      return MakeError(ErrorCode::kComplianceLocked,
                       std::string(locked.message()) + "; it cannot be overwritten before then");
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<StoredItem> ReadStoredItem(DataDb* db, Cf cf, std::string stored_key) {
  StoredItem item;
  item.bin_key = BinKey(cf, stored_key);
  item.stored_key = std::move(stored_key);
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db->Get(cf, item.stored_key, &value, &found));
  if (found) item.live = std::move(value);
  value.clear();
  COFFER_RETURN_IF_ERROR(db->Get(Cf::kRecycleBin, item.bin_key, &value, &found));
  if (found) item.binned = std::move(value);
  return item;
}

absl::Status DeleteSegmentsOf(DataDb* db, std::string_view stored_key,
                              std::string_view pointer_entry, rocksdb::WriteBatch* batch) {
  COFFER_ASSIGN_OR_RETURN(Entry entry, ParseEntry(Cf::kAttachmentPointers, pointer_entry));
  UploadId upload{};
  std::copy_n(entry.upload_id.begin(), kUploadIdSize, upload.begin());
  uint64_t handle = HandleOf(stored_key);
  return FromRocks(batch->DeleteRange(db->cf(Cf::kAttachmentSegments),
                                      SegmentsBegin(handle, upload), SegmentsEnd(handle, upload)),
                   "batch");
}

absl::Status MoveToBin(DataDb* db, KeyProvider* keys, DatasetPolicySource* policies,
                       const Clock* clock, Cf cf, uint64_t handle, std::string_view id,
                       ErrorCode not_found, crypto::HmacSha256Tag* ref) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies->PolicyFor(handle));
  COFFER_ASSIGN_OR_RETURN(LockedId locked, LockId(db, keys, handle, id));
  const std::vector<std::string>& stored_keys = locked.keys.stored_keys;
  std::string value;
  bool found = false;
  size_t live_at = 0;
  for (; live_at < stored_keys.size(); ++live_at) {
    COFFER_RETURN_IF_ERROR(db->Get(cf, stored_keys[live_at], &value, &found));
    if (found) break;
  }
  if (!found) return MakeError(not_found, "nothing live under this id or name");
  const std::string& stored_key = stored_keys[live_at];
  COFFER_ASSIGN_OR_RETURN(Entry entry, ParseEntry(cf, value));
  auto now = clock->Now();
  COFFER_RETURN_IF_ERROR(CheckComplianceLock(policy, entry.written_at_us, now));

  rocksdb::WriteBatch batch;
  // The bin keeps the latest deletion of an id, under any lookup version; an older binned
  // attachment's segments go with the entry they belonged to.
  for (const std::string& key : stored_keys) {
    const std::string bin_key = BinKey(cf, key);
    std::string previous;
    bool had_previous = false;
    COFFER_RETURN_IF_ERROR(db->Get(Cf::kRecycleBin, bin_key, &previous, &had_previous));
    if (!had_previous) continue;
    if (cf == Cf::kAttachmentPointers) {
      COFFER_ASSIGN_OR_RETURN(BinValue old, ParseBinValue(previous));
      COFFER_RETURN_IF_ERROR(DeleteSegmentsOf(db, key, old.entry, &batch));
    }
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db->cf(Cf::kRecycleBin), bin_key), "batch"));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db->cf(cf), stored_key), "batch"));
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db->cf(Cf::kRecycleBin), BinKey(cf, stored_key),
                                             EncodeBinValue(ToUnixMicros(now), value)),
                                   "batch"));
  COFFER_RETURN_IF_ERROR(db->Write(&batch));
  if (ref != nullptr) *ref = RefOf(stored_key);
  return absl::OkStatus();
}

absl::Status RestoreFromBin(DataDb* db, KeyProvider* keys, Cf cf, uint64_t handle,
                            std::string_view id, crypto::HmacSha256Tag* ref) {
  COFFER_ASSIGN_OR_RETURN(LockedId locked, LockId(db, keys, handle, id));
  std::string value;
  bool found = false;
  bool live_found = false;
  std::string stored_key;
  for (const std::string& key : locked.keys.stored_keys) {
    std::string live;
    bool live_here = false;
    COFFER_RETURN_IF_ERROR(db->Get(cf, key, &live, &live_here));
    live_found = live_found || live_here;
    if (!found) {
      COFFER_RETURN_IF_ERROR(db->Get(Cf::kRecycleBin, BinKey(cf, key), &value, &found));
      if (found) stored_key = key;
    }
  }
  if (!found) return MakeError(ErrorCode::kNotInRecycleBin, "nothing in the recycle bin");
  if (live_found) {
    return MakeError(ErrorCode::kAlreadyExists,
                     "a live item has this id or name; delete it before restoring");
  }
  COFFER_ASSIGN_OR_RETURN(BinValue bin, ParseBinValue(value));
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db->cf(cf), stored_key, bin.entry), "batch"));
  COFFER_RETURN_IF_ERROR(
      FromRocks(batch.Delete(db->cf(Cf::kRecycleBin), BinKey(cf, stored_key)), "batch"));
  COFFER_RETURN_IF_ERROR(db->Write(&batch));
  if (ref != nullptr) *ref = RefOf(stored_key);
  return absl::OkStatus();
}

}  // namespace coffer::storage::internal
