#include "storage/internal/bin_moves.h"

#include <algorithm>
#include <mutex>
#include <string>

#include "rocksdb/write_batch.h"

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

absl::Status MoveToBin(DataDb* db, DatasetPolicySource* policies, const Clock* clock, Cf cf,
                       std::string_view stored_key, ErrorCode not_found) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies->PolicyFor(HandleOf(stored_key)));
  std::string bin_key = BinKey(cf, stored_key);
  std::lock_guard<std::mutex> lock(db->StripeFor(MacOf(stored_key)));
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db->Get(cf, stored_key, &value, &found));
  if (!found) return MakeError(not_found, "nothing live under this id or name");
  COFFER_ASSIGN_OR_RETURN(Entry entry, ParseEntry(cf, value));
  auto now = clock->Now();
  COFFER_RETURN_IF_ERROR(CheckComplianceLock(policy, entry.written_at_us, now));

  rocksdb::WriteBatch batch;
  // The bin keeps the latest deletion of an id; an older binned attachment's segments go with
  // the entry they belonged to.
  std::string previous;
  bool had_previous = false;
  COFFER_RETURN_IF_ERROR(db->Get(Cf::kRecycleBin, bin_key, &previous, &had_previous));
  if (had_previous && cf == Cf::kAttachmentPointers) {
    COFFER_ASSIGN_OR_RETURN(BinValue old, ParseBinValue(previous));
    COFFER_RETURN_IF_ERROR(DeleteSegmentsOf(db, stored_key, old.entry, &batch));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db->cf(cf), stored_key), "batch"));
  COFFER_RETURN_IF_ERROR(FromRocks(
      batch.Put(db->cf(Cf::kRecycleBin), bin_key, EncodeBinValue(ToUnixMicros(now), value)),
      "batch"));
  return db->Write(&batch);
}

absl::Status RestoreFromBin(DataDb* db, Cf cf, std::string_view stored_key) {
  std::string bin_key = BinKey(cf, stored_key);
  std::lock_guard<std::mutex> lock(db->StripeFor(MacOf(stored_key)));
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db->Get(Cf::kRecycleBin, bin_key, &value, &found));
  if (!found) return MakeError(ErrorCode::kNotInRecycleBin, "nothing in the recycle bin");
  std::string live;
  bool live_found = false;
  COFFER_RETURN_IF_ERROR(db->Get(cf, stored_key, &live, &live_found));
  if (live_found) {
    return MakeError(ErrorCode::kAlreadyExists,
                     "a live item has this id or name; delete it before restoring");
  }
  COFFER_ASSIGN_OR_RETURN(BinValue bin, ParseBinValue(value));
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db->cf(cf), stored_key, bin.entry), "batch"));
  COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db->cf(Cf::kRecycleBin), bin_key), "batch"));
  return db->Write(&batch);
}

}  // namespace coffer::storage::internal
