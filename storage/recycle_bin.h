// RecycleBin: expiry, retention and purges of the data DB, on an injected clock
// (docs/formats.md#data-db-recycle-bin).
//
// Deletes (RecordStore::Delete, AttachmentStore::Delete) move items into the bin; this class
// takes them out for good:
//  - PurgeExpired: every bin entry older than its dataset's bin period (30 days by default).
//  - EnforceMaxAge: every live or binned item of a dataset older than its maximum age.
//  - PurgeRecord / PurgeAttachment / EmptyBin: an admin's purge, at once.
//  - ReplayPurges: a restore's replay of purges the journal recorded after the backup.
// Rules, checked under the item's lock stripe just before it is deleted: a legal hold blocks
// every purge of the dataset (LEGAL_HOLD for an explicit purge; the sweeps skip the dataset);
// the compliance lock (minimum retention since the item's last write) blocks deleting it
// (COMPLIANCE_LOCKED for an explicit purge; the sweeps leave it for a later pass).
//
// Physical: a purge is "done" only when DataDb::PurgePhysically has run for the dataset — the
// deletes, a flush of every column family, the wait for views that can see the data, a forced
// bottommost compaction of the dataset's range. Every method here returns only after that.
//
// Journal (storage/purge_journal.h): with one, every item is journaled (WillPurge) under its
// stripe just before its deletes are written; when the journal fails, that item is not purged
// and the method returns the journal's error (a sweep stops there). ReplayPurges journals
// nothing: it replays what a journal already holds.
//
// Thread safety: all methods may run concurrently with each other and with client writes.
// Ownership: borrows its arguments, which must outlive it. Failures: the codes above,
// NOT_IN_RECYCLE_BIN / RECORD_NOT_FOUND / ATTACHMENT_NOT_FOUND for an explicit purge of nothing,
// the policy source's codes, DATA_DB_ERROR. A sweep that fails part-way has purged some items
// and can simply be run again.

#ifndef COFFER_STORAGE_RECYCLE_BIN_H_
#define COFFER_STORAGE_RECYCLE_BIN_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"
#include "storage/purge_journal.h"

namespace coffer::storage {

struct PurgeReport {
  size_t records = 0;                  // record entries purged (live or binned)
  size_t attachments = 0;              // attachments purged (pointer and segments)
  size_t compliance_locked = 0;        // due, but kept by the compliance lock
  size_t datasets_on_hold = 0;         // datasets skipped for a legal hold
  size_t datasets_without_policy = 0;  // the policy source refused (unknown, destroyed)
};

// A client's move of one item between the live items and the bin, as a restore replays it
// (RecycleBin::ReplayBinMoves).
struct BinMove {
  crypto::HmacSha256Tag ref{};  // the item's stored-key MAC
  bool to_bin = true;           // a delete; false: a restore from the bin
  int64_t at_micros = 0;        // when it happened: a replayed delete's bin time
};
struct BinMoveReport {
  size_t to_bin = 0;     // deletes replayed: the item is in the bin again
  size_t from_bin = 0;   // restores from the bin replayed
  size_t not_found = 0;  // moves whose item the data DB does not hold where the move found it
};

// One item of a dataset's recycle bin (RecycleBin::List).
struct BinEntry {
  enum class Kind { kRecord, kAttachment };
  Kind kind = Kind::kRecord;
  std::string id;                  // the record id / attachment name (decrypted; never logged)
  int64_t deleted_micros = 0;      // when it was moved to the bin
  int64_t purge_after_micros = 0;  // deleted + the dataset's bin period; 0 if unknown
};
struct BinPage {
  std::vector<BinEntry> items;
  std::string next_page_token;  // empty on the last page
};

class RecycleBin {
 public:
  // `journal` may be null (no journal: purges are not replayable after a restore).
  RecycleBin(DataDb* db, KeyProvider* keys, DatasetPolicySource* policies, const Clock* clock,
             PurgeJournal* journal = nullptr)
      : db_(db), keys_(keys), policies_(policies), clock_(clock), journal_(journal) {}
  RecycleBin(const RecycleBin&) = delete;
  RecycleBin& operator=(const RecycleBin&) = delete;

  // One page of dataset `handle`'s recycle bin: records then attachments, each in stored-key
  // (HMAC) order; every entry is authenticated and its id decrypted. `max_items` 1..10000 (0
  // means 1000); `page_token` is "" for the first page, else the previous page's token (opaque,
  // valid across writes). INVALID_ARGUMENT for a malformed token or max_items > 10000; the key
  // provider's codes for an unknown/destroyed/disabled dataset; CIPHERTEXT_CORRUPT for a damaged
  // entry. purge_after_micros is 0 when the policy source refuses the dataset.
  absl::StatusOr<BinPage> List(uint64_t handle, std::string_view page_token, size_t max_items);

  // Purges every bin entry, of every dataset, whose bin period has passed.
  absl::StatusOr<PurgeReport> PurgeExpired();

  // Purges live and binned items of dataset `handle` older than its maximum age (a no-op
  // without one).
  absl::StatusOr<PurgeReport> EnforceMaxAge(uint64_t handle);

  // Purges record `id` / attachment `name` of dataset `handle` now, live or in the bin.
  // `journal`, when set, journals this purge instead of the bin's own journal (an admin's purge
  // is journaled under the admin who asked and the one who approved; kms/keys/
  // audited_purge_journal.h); it must be as durable as the bin's.
  absl::Status PurgeRecord(uint64_t handle, std::string_view id, PurgeJournal* journal = nullptr);
  absl::Status PurgeAttachment(uint64_t handle, std::string_view name,
                               PurgeJournal* journal = nullptr);

  // Purges the damaged item of dataset `handle` whose reference (storage/damaged_item.h) is
  // `ref` — live or binned, a record or an attachment (with its segments when its header still
  // parses) —, under the same rules and journal as PurgeRecord: the only way to act on an item
  // whose id cannot be decrypted. NOT_FOUND when no record, attachment or bin entry of the
  // dataset has that reference; FAILED_PRECONDITION when the item opens (purge it by its id);
  // COMPLIANCE_LOCKED inside the minimum retention, or under one at all when its write time
  // cannot be read. Returns which kind of item it purged.
  absl::StatusOr<PurgedItemKind> PurgeDamaged(uint64_t handle, std::string_view ref,
                                              PurgeJournal* journal = nullptr);

  // Purges everything in dataset `handle`'s bin now (items under the compliance lock stay and
  // are counted). `journal` as for PurgeRecord.
  absl::StatusOr<PurgeReport> EmptyBin(uint64_t handle, PurgeJournal* journal = nullptr);

  // Purges, in `db`, the items of dataset `handle` of `kind` whose stored keys end in `refs`
  // (the journal's refs): live and binned entries, and an attachment's segments, then runs the
  // physical purge. No rule is checked — each purge was allowed when it first ran — and
  // nothing is journaled. Refs with nothing stored are skipped. Returns the items deleted.
  static absl::StatusOr<size_t> ReplayPurges(DataDb* db, uint64_t handle, PurgedItemKind kind,
                                             std::span<const crypto::HmacSha256Tag> refs);

  // Replays, in `db` and in order, deletes and restores of items of dataset `handle` of `kind`
  // (a restore's replay of what the audit log recorded after the backup, so that an item
  // deleted since waits in the bin again instead of coming back live). A delete moves the live
  // entry at the ref into the bin with deleted_at = `at_micros` (replacing a binned one there,
  // with its segments); a restore moves the bin entry back unless a live entry is there. No
  // rule is checked — each move was allowed when it first ran — and nothing is journaled.
  // Moves with nothing to move are counted as not_found.
  static absl::StatusOr<BinMoveReport> ReplayBinMoves(DataDb* db, uint64_t handle,
                                                      PurgedItemKind kind,
                                                      std::span<const BinMove> moves);

  // How many distinct items `refs` name, and how many of those `db` holds for dataset `handle`
  // of `kind`, live or binned.
  struct StoredCount {
    size_t distinct = 0;
    size_t held = 0;
  };
  static absl::StatusOr<StoredCount> CountStored(DataDb* db, uint64_t handle, PurgedItemKind kind,
                                                 std::span<const crypto::HmacSha256Tag> refs);

 private:
  enum class Due { kBinExpired, kMaxAge, kNow };
  // Scans `cf` (live or bin) of `handle` and purges the entries `due` selects.
  absl::Status Sweep(uint64_t handle, const DatasetPolicy& policy, internal::Cf cf, Due due,
                     PurgeJournal* journal, PurgeReport* report);
  // Deletes the item (live entry and/or bin entry, with segments) if it is still `expected`
  // under its stripe and still due. Returns whether it purged.
  absl::StatusOr<bool> PurgeIfUnchanged(internal::Cf cf, std::string_view key,
                                        std::string_view expected, const DatasetPolicy& policy,
                                        Due due, PurgeJournal* journal, PurgeReport* report);
  absl::Status PurgeItem(internal::Cf cf, uint64_t handle, std::string_view name,
                         ErrorCode not_found, PurgeJournal* journal);

  DataDb* db_;
  KeyProvider* keys_;
  DatasetPolicySource* policies_;
  const Clock* clock_;
  PurgeJournal* journal_;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_RECYCLE_BIN_H_
