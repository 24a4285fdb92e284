#include "storage/record_store.h"

#include <mutex>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/bin_moves.h"
#include "storage/internal/envelope.h"
#include "storage/internal/id_locks.h"
#include "storage/internal/id_pages.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

absl::Status RecordStore::Put(uint64_t handle, std::string_view id, std::string_view value,
                              crypto::HmacSha256Tag* ref) {
  if (value.size() > db_->options().max_value_bytes) {
    return MakeError(ErrorCode::kValueTooLarge, "record values are limited to " +
                                                    std::to_string(db_->options().max_value_bytes) +
                                                    " bytes");
  }
  const int64_t written_at = ToUnixMicros(clock_->Now());
  std::string entry;
  internal::LockedId locked;
  // A retirement of the records version the entry was sealed under turns the write away under
  // the stripes (KeyProvider::AcceptsWrites): seal again, under the primary. Only a rotation and
  // a retirement between the seal and the stripes cause a second round.
  constexpr int kAttempts = 4;
  for (int attempt = 0;; ++attempt) {
    if (attempt == kAttempts) {
      return MakeError(ErrorCode::kUnavailable, "the dataset's record keys keep changing; retry");
    }
    // Sealed before the stripes are taken (its associated data binds the primary stored key).
    COFFER_ASSIGN_OR_RETURN(
        locked, internal::LockId(db_, keys_, handle, id, [&](const internal::IdStoredKeys& keys) {
          COFFER_ASSIGN_OR_RETURN(
              entry, internal::SealEntry(keys_, Cf::kRecords, KeyPurpose::kRecords,
                                         keys.stored_keys[0], written_at, {}, id, value));
          return absl::OkStatus();
        }));
    COFFER_ASSIGN_OR_RETURN(uint32_t version, internal::EntryKeyVersion(Cf::kRecords, entry));
    COFFER_ASSIGN_OR_RETURN(bool accepted,
                            keys_->AcceptsWrites(handle, KeyPurpose::kRecords, version));
    if (accepted) break;
    locked = {};  // let go of the stripes before sealing again
  }
  const std::vector<std::string>& stored_keys = locked.keys.stored_keys;
  // A record inside its minimum retention is not replaced (compliance lock), as it is not
  // deleted; re-encryption and re-index rewrite entries elsewhere and are not overwrites.
  COFFER_RETURN_IF_ERROR(
      internal::CheckOverwrite(db_, policies_, clock_, Cf::kRecords, handle, stored_keys));
  QuotaMeter::Ticket admitted;
  if (quota_ != nullptr) {
    COFFER_ASSIGN_OR_RETURN(admitted, AdmitPut(handle, stored_keys, entry));
  }
  if (ref != nullptr) *ref = internal::RefOf(stored_keys[0]);  // used only when OK is returned
  if (stored_keys.size() == 1) {
    return FromRocks(
        db_->rocks()->Put(db_->write_options(), db_->cf(Cf::kRecords), stored_keys[0], entry),
        "write");
  }
  // Not yet re-indexed: the id may still be stored under an older lookup version. The new value
  // replaces it in the same batch, so the id never has two live entries.
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(
      FromRocks(batch.Put(db_->cf(Cf::kRecords), stored_keys[0], entry), "batch"));
  for (size_t i = 1; i < stored_keys.size(); ++i) {
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(Cf::kRecords), stored_keys[i]), "batch"));
  }
  return db_->Write(&batch);
}

absl::StatusOr<QuotaMeter::Ticket> RecordStore::AdmitPut(
    uint64_t handle, const std::vector<std::string>& stored_keys, std::string_view entry) {
  COFFER_ASSIGN_OR_RETURN(bool limited, quota_->HasQuota(handle));
  if (!limited) return QuotaMeter::Ticket();
  // Under the id's stripes: whether the id is live (under any lookup version) and how many
  // bytes its entries hold, which the put replaces.
  bool live = false;
  uint64_t replaced = 0;
  for (const std::string& key : stored_keys) {
    std::string value;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db_->Get(Cf::kRecords, key, &value, &found));
    if (!found) continue;
    live = true;
    replaced += key.size() + value.size();
  }
  const uint64_t bytes = stored_keys[0].size() + entry.size();
  return quota_->Admit(handle, live ? 0 : 1, bytes > replaced ? bytes - replaced : 0);
}

absl::StatusOr<std::string> RecordStore::Get(uint64_t handle, std::string_view id) {
  return internal::ReadAgainIfRetired([&] { return GetOnce(handle, id); });
}

absl::StatusOr<std::string> RecordStore::GetOnce(uint64_t handle, std::string_view id) {
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, id));
  rocksdb::PinnableSlice value;  // no copy out of the block cache
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(Cf::kRecords, stored_key, &value, &found));
  if (!found) {
    // Not under the primary lookup version: under an older live one until the re-index moves
    // it. (Only a miss pays for this.) Every key is read again at one snapshot: the re-index
    // moves an entry in one batch, so at a snapshot it is under exactly one of them, while two
    // plain reads could straddle the move and miss it twice.
    COFFER_ASSIGN_OR_RETURN(internal::IdStoredKeys all, internal::StoredKeysFor(keys_, handle, id));
    std::unique_ptr<ScopedSnapshot> snapshot = db_->NewSnapshot();
    for (size_t i = 0; i < all.stored_keys.size() && !found; ++i) {
      value.Reset();
      COFFER_RETURN_IF_ERROR(
          db_->Get(Cf::kRecords, all.stored_keys[i], &value, &found, snapshot->get()));
      if (found) stored_key = all.stored_keys[i];
    }
  }
  if (!found) return MakeError(ErrorCode::kRecordNotFound, "no live record with this id");
  return internal::OpenEntryBodyFor(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key, id,
                                    value.ToStringView());
}

std::vector<absl::StatusOr<std::string>> RecordStore::GetMany(
    uint64_t handle, const std::vector<std::string_view>& ids) {
  std::vector<absl::StatusOr<std::string>> results(ids.size(), std::string());
  std::vector<std::string> stored_keys;
  std::vector<size_t> read;  // the index in `ids` of each stored key
  stored_keys.reserve(ids.size());
  read.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<std::string> stored_key = internal::StoredKeyFor(keys_, handle, ids[i]);
    if (!stored_key.ok()) {
      results[i] = stored_key.status();
      continue;
    }
    stored_keys.push_back(*std::move(stored_key));
    read.push_back(i);
  }
  std::vector<rocksdb::PinnableSlice> values;
  std::vector<absl::StatusOr<bool>> found;
  db_->MultiGet(Cf::kRecords, stored_keys, &values, &found);
  for (size_t k = 0; k < read.size(); ++k) {
    const size_t i = read[k];
    if (!found[k].ok()) {
      results[i] = found[k].status();
      continue;
    }
    if (*found[k]) {
      results[i] = internal::OpenEntryBodyFor(keys_, Cf::kRecords, KeyPurpose::kRecords,
                                              stored_keys[k], ids[i], values[k].ToStringView());
      values[k].Reset();
    }
    // Not under the primary lookup version, or a re-encryption and retirement landed between
    // the read and the open: Get's own path (older lookup versions at one snapshot, reads again).
    if (!*found[k] || ErrorCodeOf(results[i].status()) == ErrorCode::kKeyVersionRetired) {
      results[i] = Get(handle, ids[i]);
    }
  }
  return results;
}

absl::StatusOr<bool> RecordStore::Exists(uint64_t handle, std::string_view id) {
  absl::StatusOr<std::string> value = Get(handle, id);
  if (value.ok()) return true;
  if (ErrorCodeOf(value.status()) == ErrorCode::kRecordNotFound) return false;
  return value.status();
}

absl::Status RecordStore::Delete(uint64_t handle, std::string_view id, crypto::HmacSha256Tag* ref) {
  return internal::MoveToBin(db_, keys_, policies_, clock_, Cf::kRecords, handle, id,
                             ErrorCode::kRecordNotFound, ref);
}

absl::Status RecordStore::Restore(uint64_t handle, std::string_view id,
                                  crypto::HmacSha256Tag* ref) {
  // One more live record (its bytes were counted in the bin already).
  QuotaMeter::Ticket admitted;
  if (quota_ != nullptr) {
    COFFER_ASSIGN_OR_RETURN(admitted, quota_->Admit(handle, 1, 0));
  }
  return internal::RestoreFromBin(db_, keys_, Cf::kRecords, handle, id, ref);
}

absl::StatusOr<RecordStore::IdPage> RecordStore::ListIds(uint64_t handle,
                                                         std::string_view page_token,
                                                         size_t max_ids) {
  COFFER_ASSIGN_OR_RETURN(internal::IdPage listed,
                          internal::ListIdPage(db_, keys_, Cf::kRecords, KeyPurpose::kRecords,
                                               handle, page_token, max_ids));
  return IdPage{std::move(listed.ids), std::move(listed.next_page_token),
                std::move(listed.damaged)};
}

}  // namespace coffer::storage
