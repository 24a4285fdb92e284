// RecordStore: encrypted records of the data DB (docs/formats.md#data-db-records).
//
// A record is (dataset handle, id) → value. The RocksDB key is handle ‖ HMAC-SHA256(lookup key,
// id); the value seals u32 id length ‖ id ‖ value under the dataset's primary records key, with
// associated data binding the column family, dataset, purpose, stored key and write time (the
// record-v1 header binds the format and key version). A get checks the tag and that
// HMAC(decrypted id) equals the stored key, so a value copied to another id, dataset, purpose or
// column family fails. No plaintext id or value ever reaches RocksDB.
//
// Deleting moves a record to the recycle bin (restorable until the dataset's bin period ends;
// storage/recycle_bin.h purges). Every write holds the id's lock stripe (storage/data_db.h), so
// client writes and background jobs on one id never interleave. A write is acknowledged once in
// the WAL (or fsynced under Durability::kSync); a failed call writes nothing.
//
// Thread safety: all methods may be called concurrently. Ownership: borrows the DataDb, key
// provider, policy source and clock, which must outlive it.
//
// Failures (stable codes, docs/errors.md): INVALID_ARGUMENT (empty id, bad page token);
// ID_TOO_LONG (> 1 KiB); VALUE_TOO_LARGE (> DataDbOptions::max_value_bytes); RECORD_NOT_FOUND;
// NOT_IN_RECYCLE_BIN; ALREADY_EXISTS (restore over a live record); COMPLIANCE_LOCKED; the key
// provider's NOT_FOUND (unknown dataset), KEY_DESTROYED and FAILED_PRECONDITION (disabled);
// QUOTA_EXCEEDED (a quota meter is set and the put would exceed the dataset's quota);
// CIPHERTEXT_CORRUPT for a damaged or moved value; DATA_DB_ERROR.

#ifndef COFFER_STORAGE_RECORD_STORE_H_
#define COFFER_STORAGE_RECORD_STORE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/hmac.h"
#include "storage/damaged_item.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"
#include "storage/key_provider.h"
#include "storage/quota_meter.h"

namespace coffer::storage {

class RecordStore {
 public:
  RecordStore(DataDb* db, KeyProvider* keys, DatasetPolicySource* policies, const Clock* clock)
      : db_(db), keys_(keys), policies_(policies), clock_(clock) {}
  RecordStore(const RecordStore&) = delete;
  RecordStore& operator=(const RecordStore&) = delete;

  // Quotas: each put is admitted by `quota` first — as one more live record unless the id is
  // live already, and as its stored bytes less those of the value it replaces — and so is each
  // restore, as one more live record. Null (the default): no quotas. Set before any write.
  void set_quota_meter(QuotaMeter* quota) { quota_ = quota; }

  // Creates or replaces record `id` of dataset `handle`; COMPLIANCE_LOCKED when the live value
  // is still inside the dataset's minimum retention. Put, Delete and Restore set `ref`, when
  // given and the call succeeds, to the record's stored-key MAC: the ref an audit entry names it
  // by (a restore replays moves by it: kms/keys/full_backup.h).
  absl::Status Put(uint64_t handle, std::string_view id, std::string_view value,
                   crypto::HmacSha256Tag* ref = nullptr);

  // The value of record `id`; RECORD_NOT_FOUND if none is live.
  absl::StatusOr<std::string> Get(uint64_t handle, std::string_view id);

  // The values of records `ids` of dataset `handle`, one result per id in order: what Get would
  // answer for it. The ids' entries are read with one MultiGet; an id that is not under the
  // primary lookup version, or whose key version was retired meanwhile, is read again as Get
  // reads it.
  std::vector<absl::StatusOr<std::string>> GetMany(uint64_t handle,
                                                   const std::vector<std::string_view>& ids);

  // Whether record `id` is live (and authentic).
  absl::StatusOr<bool> Exists(uint64_t handle, std::string_view id);

  // Moves record `id` to the recycle bin.
  absl::Status Delete(uint64_t handle, std::string_view id, crypto::HmacSha256Tag* ref = nullptr);

  // Moves record `id` back from the recycle bin.
  absl::Status Restore(uint64_t handle, std::string_view id, crypto::HmacSha256Tag* ref = nullptr);

  struct IdPage {
    std::vector<std::string> ids;  // in stored-key order (HMAC order, not id order)
    std::string next_page_token;   // empty when this is the last page
    DamagedItems damaged;          // records on this page whose stored bytes do not open
  };
  // Up to `max_ids` (≥ 1) live ids of dataset `handle`, after `page_token` (empty: the first
  // page). Tokens are opaque and stay valid across writes. A damaged record
  // (storage/damaged_item.h) is skipped and reported in `damaged`, never failing the page; a
  // Get of its id keeps failing with its error.
  absl::StatusOr<IdPage> ListIds(uint64_t handle, std::string_view page_token, size_t max_ids);

 private:
  // The quota's admission of a put of `entry` under `stored_keys` (stripes held).
  absl::StatusOr<QuotaMeter::Ticket> AdmitPut(uint64_t handle,
                                              const std::vector<std::string>& stored_keys,
                                              std::string_view entry);
  // One read and open; Get repeats it through internal::ReadAgainIfRetired.
  absl::StatusOr<std::string> GetOnce(uint64_t handle, std::string_view id);
  DataDb* db_;
  KeyProvider* keys_;
  DatasetPolicySource* policies_;
  const Clock* clock_;
  QuotaMeter* quota_ = nullptr;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_RECORD_STORE_H_
