// JobRegistry: cofferd's background work, visible in job_status and status.
//
// On-demand jobs: re-encryption (storage::ReencryptionJob: moves a dataset's data onto its
// primary key versions), re-index (storage::ReindexJob: moves its items onto the primary lookup
// version) and scrub (storage::Scrub: authenticates every entry), each on its own
// thread, at most one at a time per dataset (a second start while one runs is ALREADY_EXISTS;
// a whole-DB scrub counts as its own "dataset"). Status carries done/total/rate/ETA, the
// per-version census after a re-encryption, the scrub's failures, the damaged items each skipped
// (reported to JobRegistryDeps::on_damaged too), and the state. Re-encryption
// and re-index are resumable: they persist progress in the data DB, so a job stopped by Stop() or a
// crash continues where it stopped when started again (cofferd starts the unfinished ones at
// start-up: kms/cofferd/scheduled_jobs.cc, ResumeUnfinishedJobs).
//
// Periodic jobs: the wiring registers named functions with a period (rotation clock =
// KeyManager::RunDueWork, bin expiry/retention, backups and pruning, upload cleanup); one
// scheduler thread runs each when due, one at a time, and records its last run, next run and
// last error. RunNow runs one immediately on the caller's thread (job_start of a periodic kind:
// `keyctl job run NAME`).
//
// Thread safety: every method may be called from any thread. Ownership: borrows the deps,
// which must outlive the registry; the destructor calls Stop(). Failures: ALREADY_EXISTS (busy
// dataset, duplicate periodic name), NOT_FOUND (unknown job id or name), FAILED_PRECONDITION
// (after Stop), INVALID_ARGUMENT (zero period, missing function). A scrub cannot be cancelled:
// Stop() waits for a running one to finish. The last 64 finished on-demand jobs stay visible.

#ifndef COFFER_KMS_OPS_JOBS_H_
#define COFFER_KMS_OPS_JOBS_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/admin.pb.h"
#include "crypto/base/clock.h"
#include "kms/audit/audit_event.h"
#include "storage/attachment_store.h"
#include "storage/damaged_item.h"
#include "storage/data_db.h"
#include "storage/key_provider.h"

namespace coffer::daemon {

struct JobRegistryDeps {
  storage::DataDb* data_db = nullptr;
  storage::KeyProvider* keys = nullptr;             // the KeyManager
  storage::AttachmentStore* attachments = nullptr;  // the one clients write through
  // Called once a re-encryption, re-index or scrub ends, with the damaged items it skipped in
  // dataset `handle` (storage/damaged_item.h), to raise their events (optional).
  std::function<void(uint64_t handle, const std::vector<storage::DamagedItem>& items)> on_damaged;
  // Retires dataset `handle`'s COMPROMISED versions that no data uses any more
  // (KeyManager::RetireCompromised); needed by StartEmergencyFollowUp.
  std::function<absl::Status(uint64_t handle, const kms::audit::AuditActor& actor)>
      retire_compromised;
};

class JobRegistry {
 public:
  using PeriodicFunction = std::function<absl::Status()>;

  // `clock` gives the times in status (wall clock); periods are measured on the steady clock.
  JobRegistry(JobRegistryDeps deps, const coffer::Clock& clock);
  JobRegistry(const JobRegistry&) = delete;
  JobRegistry& operator=(const JobRegistry&) = delete;
  ~JobRegistry();

  // Starts re-encrypting dataset `handle` (`dataset` is its name, for status only). Returns the
  // new job's status (PENDING or RUNNING).
  absl::StatusOr<coffer::v1::JobStatus> StartReencryption(uint64_t handle, std::string dataset,
                                                          double max_items_per_second = 0);
  // Starts re-indexing dataset `handle` (storage::ReindexJob: moves its items onto the primary
  // lookup version). Resumable like re-encryption; its status carries the items per lookup
  // version after the run.
  absl::StatusOr<coffer::v1::JobStatus> StartReindex(uint64_t handle, std::string dataset,
                                                     double max_items_per_second = 0);
  // After an emergency rotation of dataset `handle` (KeyManager::EmergencyRotate): one job that
  // re-encrypts, re-indexes, then retires the COMPROMISED versions nothing uses any more
  // (deps.retire_compromised). Its status shows the step under way (done/total and the census of
  // the step); a failed step ends it (the periodic rotation job retires what is due later).
  // `actor`: the admin who asked for the rotation; the retirement is audited as theirs.
  absl::StatusOr<coffer::v1::JobStatus> StartEmergencyFollowUp(uint64_t handle, std::string dataset,
                                                               kms::audit::AuditActor actor);
  // Scrubs dataset `handle`, or every dataset when nullopt (then `dataset` is empty).
  absl::StatusOr<coffer::v1::JobStatus> StartScrub(std::optional<uint64_t> handle,
                                                   std::string dataset);

  // Registers periodic job `name` (unique), first run one period after StartScheduler (or at
  // once with `run_at_start`).
  absl::Status RegisterPeriodic(std::string name, coffer::v1::JobKind kind,
                                std::chrono::seconds period, PeriodicFunction function,
                                bool run_at_start = false);
  // Starts the scheduler thread (idempotent).
  void StartScheduler();
  // Runs periodic job `name` now on this thread and records the run; returns its result.
  absl::Status RunNow(std::string_view name);
  // Runs the periodic job registered under `kind` now on this thread, as the scheduler would,
  // and returns its status after the run: JOB_PENDING, or JOB_FAILED with the run's error.
  // NOT_FOUND when no periodic job of that kind is registered (e.g. backups are off),
  // ALREADY_EXISTS while it is running.
  absl::StatusOr<coffer::v1::JobStatus> RunNow(coffer::v1::JobKind kind);

  // Status of job `id` (on-demand or periodic); NOT_FOUND if unknown.
  absl::StatusOr<coffer::v1::JobStatus> Status(uint64_t id) const;
  // Every job: periodic ones first, then on-demand ones in start order.
  std::vector<coffer::v1::JobStatus> AllStatus() const;
  // Blocks until on-demand job `id` is DONE or FAILED and returns its status.
  absl::StatusOr<coffer::v1::JobStatus> Wait(uint64_t id) const;

  // Cancels running jobs (re-encryption keeps its progress), stops the scheduler, joins every
  // thread. Idempotent; later starts are FAILED_PRECONDITION.
  void Stop();

 private:
  struct OnDemand {
    coffer::v1::JobStatus status;  // guarded by mu_
    std::optional<uint64_t> busy_key;
    bool finished = false;  // guarded by mu_; set by the thread's last locked step
    std::thread thread;
  };
  // Finished on-demand jobs kept for job_status; older ones are dropped at the next start.
  static constexpr size_t kFinishedJobsKept = 64;
  struct Periodic {
    std::string name;
    coffer::v1::JobStatus status;  // guarded by mu_
    std::chrono::seconds period{0};
    PeriodicFunction function;
    std::chrono::steady_clock::time_point next;
    bool running = false;
  };

  int64_t NowMicros() const;
  // Joins the threads of finished jobs and drops the oldest beyond kFinishedJobsKept (mu_ held).
  void ReapFinishedLocked();
  absl::StatusOr<OnDemand*> Reserve(uint64_t busy_key, coffer::v1::JobKind kind,
                                    std::string dataset);
  void MarkRunning(OnDemand* job);
  void RunReencryption(OnDemand* job, uint64_t handle, double max_items_per_second);
  void RunReindex(OnDemand* job, uint64_t handle, double max_items_per_second);
  // The runs' work without their end: progress, damaged items and census into job->status.
  absl::Status ReencryptStep(OnDemand* job, uint64_t handle, double max_items_per_second);
  absl::Status ReindexStep(OnDemand* job, uint64_t handle, double max_items_per_second);
  void RunScrub(OnDemand* job, std::optional<uint64_t> handle);
  // Passes `items` of dataset `handle` to deps_.on_damaged, if any and set.
  void ReportDamaged(uint64_t handle, const std::vector<storage::DamagedItem>& items);
  void Finish(OnDemand* job, const absl::Status& result);
  void SchedulerLoop();
  // Runs `job` unless it is running (then ALREADY_EXISTS and *busy, when given, is set).
  absl::Status RunPeriodic(Periodic* job, bool* busy = nullptr);

  JobRegistryDeps deps_;
  const coffer::Clock* clock_;
  std::atomic<bool> cancel_{false};

  mutable std::mutex mu_;
  mutable std::condition_variable changed_;  // a job finished, a periodic was added, stopping
  uint64_t next_id_ = 1;                     // guarded by mu_
  bool stopped_ = false;                     // guarded by mu_
  std::map<uint64_t, std::unique_ptr<OnDemand>> jobs_;      // by id; guarded by mu_
  std::map<uint64_t, uint64_t> busy_;                       // busy key -> job id; guarded by mu_
  std::map<uint64_t, std::unique_ptr<Periodic>> periodic_;  // by id; guarded by mu_
  std::thread scheduler_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_JOBS_H_
