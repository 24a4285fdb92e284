// ReencryptionJob: moves every record and attachment of a dataset — live and in the recycle
// bin — onto the primary records / attachments key, so that an older version can be retired
// (docs/formats.md#data-db-jobs).
//
// The job walks the dataset's records, then its attachment pointers, then its bin entries, in
// key order. Each record not on the primary version is re-sealed under the primary key (same
// id, value, write time and, for bin entries, deletion time) outside any lock, from the value
// the walk read; groups of up to 64 are then written in one WriteBatch under their ids' lock
// stripes, each only if its entry still holds the value read — so a client write or delete on
// the same id either happens before (the job then leaves the client's value; a final census
// catches anything left on an old version) or after; no acknowledged write is overwritten by a
// stale copy and nothing deleted comes back. An attachment's stream is copied under a new pending
// upload id (AttachmentStore::ReencryptToPrimary) and its pointer flipped under the name's stripe
// only if the pointer is still the one copied; otherwise the copy is dropped and a later pass sees
// the new pointer. Progress (a cursor of stored keys — HMACs, never ids — and counters) is
// persisted in the jobs column family every batch of records and after every attachment, so a
// crashed or cancelled job resumes where it stopped; a stream copy cut short by a crash is an
// orphaned upload that AttachmentStore::CleanupOrphanedUploads removes. The job finishes only when
// a census finds nothing on a non-primary version. An optional rate limit bounds items per second.
//
// Thread safety: one Run per dataset at a time (a second concurrent Run on the same dataset is
// safe but wasteful); runs on different datasets and client writes may proceed concurrently.
// Ownership: borrows the DataDb, key provider and attachment store (the one clients write
// through, so that its orphan cleanup skips the job's copies). A damaged entry (its bytes do not
// open, or it names a missing key version: storage/damaged_item.h) is skipped and reported in the
// progress; it stays on its version, and the job finishes once nothing but damaged entries is
// left on another version. Failures: the key provider's other codes, CANCELLED when `cancel` was
// set, DATA_DB_ERROR.

#ifndef COFFER_STORAGE_REENCRYPTION_H_
#define COFFER_STORAGE_REENCRYPTION_H_

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
#include "storage/data_db.h"
#include "storage/job_progress.h"
#include "storage/key_provider.h"

namespace coffer::storage {
namespace internal {
class SavedWalk;
}  // namespace internal

// How many stored entries name each key version, live and in the bin, at one point in time
// (one snapshot across the column families: an entry moving between the bin and the live
// families is counted exactly once).
struct VersionCensus {
  std::map<uint32_t, uint64_t> records;      // records purpose
  std::map<uint32_t, uint64_t> attachments;  // attachments purpose (pointers; segments follow)
  uint64_t unreadable = 0;  // entries whose header names no version (damaged; not counted above)
};
absl::StatusOr<VersionCensus> CountKeyVersions(DataDb* db, uint64_t handle);

struct ReencryptionOptions {
  double max_items_per_second = 0;  // 0: unlimited
  size_t batch_size = 256;          // entries between progress saves
  // Tests only: called between copying an attachment's stream and flipping its pointer.
  std::function<void()> before_attachment_flip;
};

struct ReencryptionProgress : JobProgress {
  uint64_t reencrypted = 0;  // entries re-sealed, across resumes
};

class ReencryptionJob {
 public:
  ReencryptionJob(DataDb* db, KeyProvider* keys, AttachmentStore* attachments, uint64_t handle,
                  ReencryptionOptions options = {})
      : db_(db),
        keys_(keys),
        attachments_(attachments),
        handle_(handle),
        options_(std::move(options)) {}
  ReencryptionJob(const ReencryptionJob&) = delete;
  ReencryptionJob& operator=(const ReencryptionJob&) = delete;

  // Runs or resumes the job until every record and attachment is on the primary version (finished,
  // and the persisted state is cleared), `cancel` becomes true (CANCELLED; progress kept), or an
  // error. `on_progress`, if set, is called after every batch.
  absl::StatusOr<ReencryptionProgress> Run(
      const std::atomic<bool>* cancel = nullptr,
      const std::function<void(const ReencryptionProgress&)>& on_progress = {});

  // The persisted progress of an unfinished job (zeros when none is pending).
  absl::StatusOr<ReencryptionProgress> SavedProgress() const;

  // The datasets whose re-encryption a crash or a stop left unfinished (saved progress), in handle
  // order: cofferd resumes them at start-up.
  static absl::StatusOr<std::vector<uint64_t>> Unfinished(DataDb* db);

 private:
  struct Resealed {
    std::string key;   // in the column family being walked
    std::string seen;  // the value the walk read there
    std::string stored_key;
    std::string resealed;  // the value to write if `seen` is still there
    uint32_t version = 0;  // the records version `resealed` is sealed under
  };
  static constexpr size_t kWriteGroup = 64;  // records per WriteBatch
  // Writes the group's re-sealed values whose key still holds `seen` and whose version no
  // retirement is turning away (KeyProvider::AcceptsWrites), in one WriteBatch under their
  // stripes, adds their number to *reencrypted, and clears the group. The group must be in
  // key order: it is re-read, under the stripes, by one forward iterator pass.
  absl::Status WriteIfUnchanged(internal::Cf cf, std::vector<Resealed>* group,
                                uint64_t* reencrypted);

  // One run's walk state, progress and damaged items (reencryption.cc).
  struct RunState;
  // The walk met the end of its phase: the next phase, or a census — true once nothing is off
  // the primaries (then the saved state is cleared), else the walk starts over.
  absl::StatusOr<bool> EndOfPhase(RunState& run, const internal::SavedWalk& saved);
  // Copies the attachment whose pointer is under `key` to the primary (one stream; progress is
  // saved after it).
  absl::Status ReencryptAttachment(RunState& run, const std::string& key,
                                   const internal::SavedWalk& saved);
  // Re-seals the record entry `seen` under `key` for `group` unless it is on `primary` already
  // or damaged (then skipped and reported).
  absl::Status ResealRecord(RunState& run, const std::string& key, const std::string& seen,
                            uint32_t primary, std::vector<Resealed>* group);

  DataDb* db_;
  KeyProvider* keys_;
  AttachmentStore* attachments_;
  uint64_t handle_;
  ReencryptionOptions options_;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_REENCRYPTION_H_
