#include "storage/record_store.h"

#include <mutex>
#include <utility>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/bin_moves.h"
#include "storage/internal/envelope.h"
#include "storage/internal/id_pages.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

absl::Status RecordStore::Put(uint64_t handle, std::string_view id, std::string_view value) {
  if (value.size() > db_->options().max_value_bytes) {
    return MakeError(ErrorCode::kValueTooLarge, "record values are limited to " +
                                                    std::to_string(db_->options().max_value_bytes) +
                                                    " bytes");
  }
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, id));
  COFFER_ASSIGN_OR_RETURN(std::string entry,
                          internal::SealEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key,
                                              ToUnixMicros(clock_->Now()), {}, id, value));
  std::lock_guard<std::mutex> lock(db_->StripeFor(internal::MacOf(stored_key)));
  return FromRocks(
      db_->rocks()->Put(db_->write_options(), db_->cf(Cf::kRecords), stored_key, entry), "write");
}

absl::StatusOr<std::string> RecordStore::Get(uint64_t handle, std::string_view id) {
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, id));
  rocksdb::PinnableSlice value;  // no copy out of the block cache
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(Cf::kRecords, stored_key, &value, &found));
  if (!found) return MakeError(ErrorCode::kRecordNotFound, "no live record with this id");
  return internal::OpenEntryBodyFor(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key, id,
                                    value.ToStringView());
}

absl::StatusOr<bool> RecordStore::Exists(uint64_t handle, std::string_view id) {
  absl::StatusOr<std::string> value = Get(handle, id);
  if (value.ok()) return true;
  if (ErrorCodeOf(value.status()) == ErrorCode::kRecordNotFound) return false;
  return value.status();
}

absl::Status RecordStore::Delete(uint64_t handle, std::string_view id) {
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, id));
  return internal::MoveToBin(db_, policies_, clock_, Cf::kRecords, stored_key,
                             ErrorCode::kRecordNotFound);
}

absl::Status RecordStore::Restore(uint64_t handle, std::string_view id) {
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, id));
  return internal::RestoreFromBin(db_, Cf::kRecords, stored_key);
}

absl::StatusOr<RecordStore::IdPage> RecordStore::ListIds(uint64_t handle,
                                                         std::string_view page_token,
                                                         size_t max_ids) {
  COFFER_ASSIGN_OR_RETURN(internal::IdPage listed,
                          internal::ListIdPage(db_, keys_, Cf::kRecords, KeyPurpose::kRecords,
                                               handle, page_token, max_ids));
  return IdPage{std::move(listed.ids), std::move(listed.next_page_token)};
}

}  // namespace coffer::storage
