// The walk both dataset jobs make — ReencryptionJob (storage/reencryption.h) and ReindexJob
// (storage/reindex.h): over a dataset's records, then its attachment pointers, then its recycle
// bin, in key order, in batches read without a lock, with its state saved in the jobs column
// family after every batch so that a crashed or cancelled run resumes where it stopped.
//
// Thread safety: WalkState and WalkPace are plain values of one run; SavedWalk is as safe as
// DataDb. Failures: DATA_DB_ERROR from RocksDB, DATA_LOSS for a malformed saved state.

#ifndef COFFER_STORAGE_INTERNAL_JOB_WALK_H_
#define COFFER_STORAGE_INTERNAL_JOB_WALK_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storage/data_db.h"
#include "storage/internal/layout.h"
#include "storage/job_progress.h"
#include "storage/key_provider.h"

namespace coffer::storage::internal {

// Where a walk stands (docs/formats.md#data-db-jobs).
struct WalkState {
  Cf phase = Cf::kRecords;
  std::string cursor;    // the last key done in `phase`; empty: from the start of the phase
  uint64_t done = 0;     // entries examined, across resumes
  uint64_t changed = 0;  // entries re-sealed or moved, across resumes
};

// One job's saved state: the row `prefix` ‖ handle of the jobs column family, whose value is
// phase (u8) ‖ cursor length (u16) ‖ cursor ‖ done (u64) ‖ changed (u64).
class SavedWalk {
 public:
  // `prefix` is the job's key prefix ("reencrypt/"); `label` names the job in the message of a
  // malformed row ("re-encryption").
  SavedWalk(DataDb* db, std::string_view prefix, std::string_view label, uint64_t handle);

  // The saved state; a fresh WalkState when none is saved.
  absl::StatusOr<WalkState> Load() const;
  absl::Status Save(const WalkState& state) const;
  absl::Status Clear() const;

 private:
  DataDb* db_;
  std::string key_;
  std::string_view label_;
};

// The datasets with a saved walk under `prefix` (unfinished jobs), in handle order.
absl::StatusOr<std::vector<uint64_t>> SavedWalkHandles(DataDb* db, std::string_view prefix);

// Moves `state` to the start of the next phase (records, attachment pointers, recycle bin);
// false, leaving it alone, when the recycle bin was the last.
bool AdvancePhase(WalkState* state);

// Replaces *batch with up to `max` (key, value) pairs of `state.phase` after `state.cursor`
// within dataset `handle`, read without holding any lock.
absl::Status ReadWalkBatch(DataDb* db, uint64_t handle, const WalkState& state, size_t max,
                           std::vector<std::pair<std::string, std::string>>* batch);

// KeyProvider::AcceptsWrites for one write group, asked once per (purpose, version). Used
// under the group's stripes, just before its WriteBatch.
class GroupVersions {
 public:
  GroupVersions(KeyProvider* keys, uint64_t handle) : keys_(keys), handle_(handle) {}
  absl::StatusOr<bool> Accepts(KeyPurpose purpose, uint32_t version);

 private:
  KeyProvider* keys_;
  uint64_t handle_;
  std::vector<std::tuple<KeyPurpose, uint32_t, bool>> answers_;
};

// The pace of one run: its rate and ETA, and the throttle to a maximum rate.
class WalkPace {
 public:
  WalkPace() : started_(std::chrono::steady_clock::now()) {}

  void CountOne() { ++done_this_run_; }
  // Sets progress->done from `state`, and this run's rate and the ETA to progress->total.
  void Fill(const WalkState& state, JobProgress* progress) const;
  // Sleeps until this run's rate is at most `max_items_per_second` (0: no limit), or until
  // *cancel (if set) becomes true, checked every 50 ms; returns false when cancelled.
  bool Throttle(double max_items_per_second, const std::atomic<bool>* cancel) const;

 private:
  std::chrono::steady_clock::time_point started_;
  uint64_t done_this_run_ = 0;
};

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_JOB_WALK_H_
