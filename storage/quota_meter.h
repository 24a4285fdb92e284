// QuotaMeter: per-dataset quotas on live records and stored bytes (docs/daemon.md, "Quotas";
// the limits are the dataset's policy: DatasetPolicy::max_records, max_stored_bytes).
//
// What counts:
//  - records: live records (not those in the recycle bin, not attachments);
//  - stored bytes: every byte the dataset occupies in the data DB, keys and encrypted values of
//    live records and attachments (pointers and segments), of unfinished uploads and of the
//    recycle bin — disk is disk, so a deleted item counts until it is purged.
//
// How: a census (one scan of the dataset's entries, no decryption) gives exact figures; every
// write admitted since the census began is added on top, whether it landed or not, and so is
// every write in flight when it began (the scan may have passed its key before it landed). So
// the estimate is never below the truth, and a quota is never exceeded.
// It may be above (an overwrite, a delete or a purge since the census): a write the estimate
// would refuse first takes a new census — at most one per dataset per `min_census_interval`
// (on the meter's clock), and no sooner than ten times the last census took — and is refused
// only if that one agrees. A write to a dataset without a quota drops its figures, so a quota
// set again later starts from a census.
// A census runs without holding the writers of the dataset back; those that would be refused
// meanwhile wait for it. A dataset without a quota is not tracked at all (no census).
//
// Cost: a write to a dataset with a quota takes the meter's mutex twice (admit, done). A write
// to one without asks the policy source, and takes that mutex once (to drop stale figures) only
// after some dataset has had a quota in this process: until then it reads one atomic. A census
// reads the dataset's entries once, about as long as reading its bytes.
//
// Thread safety: all methods may be called concurrently. Ownership: borrows the DataDb, policy
// source and clock. Failures: QUOTA_EXCEEDED (the message names the quota and its limit, never
// an id), the policy source's codes, DATA_DB_ERROR from a census.

#ifndef COFFER_STORAGE_QUOTA_METER_H_
#define COFFER_STORAGE_QUOTA_METER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "storage/data_db.h"
#include "storage/dataset_erasure.h"
#include "storage/dataset_policy.h"

namespace coffer::storage {

class QuotaMeter {
 public:
  struct Options {
    std::chrono::seconds min_census_interval{5};
  };
  QuotaMeter(DataDb* db, DatasetPolicySource* policies, const Clock* clock, Options options);
  QuotaMeter(DataDb* db, DatasetPolicySource* policies, const Clock* clock)
      : QuotaMeter(db, policies, clock, Options()) {}
  QuotaMeter(const QuotaMeter&) = delete;
  QuotaMeter& operator=(const QuotaMeter&) = delete;

  // An admitted write: counted as in flight until Done or destruction. Move-only.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept;
    Ticket& operator=(Ticket&& other) noexcept;
    Ticket(const Ticket&) = delete;
    Ticket& operator=(const Ticket&) = delete;
    ~Ticket() { Done(); }
    // The write ended (landed or not: either way it counts until the next census).
    void Done();

   private:
    friend class QuotaMeter;
    QuotaMeter* meter_ = nullptr;
    uint64_t handle_ = 0;
    uint64_t records_ = 0;
    uint64_t bytes_ = 0;
  };

  // Whether `handle` has a quota (a writer then finds out what its write adds).
  absl::StatusOr<bool> HasQuota(uint64_t handle);

  // Admits a write that adds `records` live records and `bytes` stored bytes to `handle`, or
  // QUOTA_EXCEEDED. An empty ticket when the dataset has no quota.
  absl::StatusOr<Ticket> Admit(uint64_t handle, uint64_t records, uint64_t bytes);

  // The dataset's usage from a census taken now (for describing it; counts nothing).
  absl::StatusOr<DatasetUsage> Usage(uint64_t handle) { return CountDatasetUsage(*db_, handle); }

 private:
  struct Tracked {
    bool counted = false;  // a census has finished
    bool census_running = false;
    DatasetUsage census;    // the last census
    DatasetUsage before;    // `since` when the running census began (counted until it ends)
    DatasetUsage since;     // admitted since the last census began, plus what was then in flight
    DatasetUsage inflight;  // admitted and not yet done
    std::chrono::system_clock::time_point last_census{};  // on the meter's clock
    std::chrono::system_clock::duration census_took{};
  };
  DatasetUsage Estimate(const Tracked& t) const;
  // Runs a census of `handle` with `lock` released meanwhile; `t` stays valid (never erased
  // while a census runs).
  absl::Status Census(std::unique_lock<std::mutex>& lock, uint64_t handle, Tracked& t);
  void Release(uint64_t handle, uint64_t records, uint64_t bytes);
  // No quota on `handle` (any more): its figures are dropped. Needs mu_.
  void Untrack(uint64_t handle);
  // Untrack under mu_, skipped (no lock) while tracked_ has never held an entry.
  void UntrackIfTracked(uint64_t handle);
  // tracked_[handle], counting a new entry in ever_tracked_. Needs mu_.
  Tracked& Track(uint64_t handle);

  DataDb* const db_;
  DatasetPolicySource* const policies_;
  const Clock* const clock_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable census_done_;
  std::map<uint64_t, Tracked> tracked_;  // guarded by mu_; entries are never erased
  // Whether tracked_ has an entry: set under mu_ before the entry is made, read without it. A
  // writer that reads false while another thread makes an entry acts as if it came first.
  std::atomic<bool> ever_tracked_{false};
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_QUOTA_METER_H_
