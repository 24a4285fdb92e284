// ReindexJob: moves every record and attachment of a dataset — live and in the recycle bin —
// from older lookup versions onto the primary lookup version, so that the older versions can be
// retired (docs/formats.md#data-db-lookup-versions, #data-db-jobs).
//
// A data-DB key is handle ‖ HMAC(lookup key, id). After a lookup rotation, items stay under the
// version that was primary when they were written, and every lookup by id tries each live
// version (storage/internal/id_locks.h); this job makes the primary the only one in use. It walks
// the dataset's records, then its attachment pointers, then its bin entries, in key order, as
// ReencryptionJob does (storage/reencryption.h). Each entry is opened (which tells which live
// lookup version's HMAC of the decrypted id is its stored key); one under an older version is
// re-sealed under the id's primary stored key — the associated data binds the stored key — with
// the primary records key and the same id, value, write time and, for bin entries, deletion
// time, outside any lock. Groups of up to 64 are then written in one WriteBatch under the stripes
// of their old and new stored keys: the new entry put and the old one deleted, each only if the
// old key still holds the value read. If the new key already holds an entry, that is a later
// write of the id (writes go to the primary and delete the older versions' entries), so the old
// entry is only deleted. An attachment's stream is copied under a new upload id bound to the new
// stored key (AttachmentStore::MoveToStoredKey) and its pointer moved the same way. A client
// write of the id holds the same stripes (LockId), so it happens either before (the job then
// leaves it) or after; no acknowledged write is overwritten and nothing deleted comes back.
//
// Progress (phase, a cursor of stored keys — HMACs, never ids — and counters) is persisted in the
// jobs column family after every batch and every attachment, so a crashed or cancelled job
// resumes where it stopped. The job finishes only when a census (CountLookupVersions) finds no
// entry under a version other than the primary; otherwise it walks again.
//
// Thread safety: one Run per dataset at a time (a second concurrent Run is safe but wasteful);
// client writes may proceed concurrently. Ownership: borrows the DataDb, key provider and the
// attachment store clients write through. A damaged entry (storage/damaged_item.h: it opens
// under no live version, or its bytes or key version are gone) is skipped, stays where it is and
// is reported in the progress. Failures: the key provider's other codes, CANCELLED when `cancel`
// was set, DATA_DB_ERROR.

#ifndef COFFER_STORAGE_REINDEX_H_
#define COFFER_STORAGE_REINDEX_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/attachment_store.h"
#include "storage/damaged_item.h"
#include "storage/data_db.h"
#include "storage/job_progress.h"
#include "storage/key_provider.h"

namespace coffer::storage {
namespace internal {
class SavedWalk;
}  // namespace internal

// How many records, attachments and bin entries of dataset `handle` are stored under each lookup
// version, at one snapshot. Every entry is opened (decrypted and its id hashed): the lookup
// version is not in the stored key. A damaged entry (storage/damaged_item.h) has no known lookup
// version: with `damaged` set it is added there and not counted; without, it fails the census
// with its code (a retirement then stays refused rather than guess). The key provider's codes.
absl::StatusOr<std::map<uint32_t, uint64_t>> CountLookupVersions(DataDb* db, KeyProvider* keys,
                                                                 uint64_t handle,
                                                                 DamagedItems* damaged = nullptr);

struct ReindexOptions {
  double max_items_per_second = 0;  // 0: unlimited
  size_t batch_size = 256;          // entries between progress saves
  // Tests only: called after a group of records was re-sealed, before it is written; and between
  // copying an attachment's stream and moving its pointer.
  std::function<void()> before_record_write;
  std::function<void()> before_attachment_flip;
};

struct ReindexProgress : JobProgress {
  uint64_t moved = 0;  // entries moved to the primary lookup version, across resumes
};

class ReindexJob {
 public:
  ReindexJob(DataDb* db, KeyProvider* keys, AttachmentStore* attachments, uint64_t handle,
             ReindexOptions options = {})
      : db_(db),
        keys_(keys),
        attachments_(attachments),
        handle_(handle),
        options_(std::move(options)) {}
  ReindexJob(const ReindexJob&) = delete;
  ReindexJob& operator=(const ReindexJob&) = delete;

  // Runs or resumes the job until every entry is under the primary lookup version (finished, and
  // the persisted state is cleared), `cancel` becomes true (CANCELLED; progress kept), or an
  // error. `on_progress`, if set, is called after every batch.
  absl::StatusOr<ReindexProgress> Run(
      const std::atomic<bool>* cancel = nullptr,
      const std::function<void(const ReindexProgress&)>& on_progress = {});

  // The persisted progress of an unfinished job (zeros when none is pending).
  absl::StatusOr<ReindexProgress> SavedProgress() const;

  // The datasets whose re-index a crash or a stop left unfinished (saved progress), in handle
  // order: cofferd resumes them at start-up.
  static absl::StatusOr<std::vector<uint64_t>> Unfinished(DataDb* db);

 private:
  struct Moved {
    std::string key;             // the old key in the column family being walked
    std::string seen;            // the value the walk read there
    std::string new_key;         // the key under the primary lookup version
    std::string resealed;        // the value to put there
    std::string old_stored_key;  // for the stripes
    std::string new_stored_key;
    uint32_t records_version = 0;  // what `resealed` is sealed under
    uint32_t lookup_version = 0;   // what new_stored_key is hashed under
  };
  static constexpr size_t kWriteGroup = 64;
  // Writes the group (see the header comment) in one WriteBatch under the stripes of every old
  // and new stored key, adds the entries moved to *moved, and clears the group.
  absl::Status WriteIfUnchanged(internal::Cf cf, std::vector<Moved>* group, uint64_t* moved);

  // One run's walk state, progress and damaged items (reindex.cc).
  struct RunState;
  // The walk met the end of its phase: the next phase, or a census — true once nothing is under
  // another lookup version (then the saved state is cleared), else the walk starts over.
  absl::StatusOr<bool> EndOfPhase(RunState& run, const internal::SavedWalk& saved);
  // Moves the entry `seen` under `key` to its stored key under `lookup`: a record into `group`,
  // an attachment at once (one stream; progress is saved after it). A damaged entry is skipped
  // and reported.
  absl::Status MoveEntry(RunState& run, const DataKey& lookup, const std::string& key,
                         const std::string& seen, std::vector<Moved>* group,
                         const internal::SavedWalk& saved);

  DataDb* db_;
  KeyProvider* keys_;
  AttachmentStore* attachments_;
  uint64_t handle_;
  ReindexOptions options_;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_REINDEX_H_
