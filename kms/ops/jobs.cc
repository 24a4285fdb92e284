#include "kms/ops/jobs.h"

#include <limits>
#include <map>
#include <utility>

#include "crypto/base/status.h"
#include "kms/ops/damaged_events.h"
#include "storage/job_progress.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"
#include "storage/scrub.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;

// The busy key of a whole-DB scrub: no dataset handle is all ones.
constexpr uint64_t kEveryDataset = std::numeric_limits<uint64_t>::max();

void SetError(pb::JobStatus* status, const absl::Status& error) {
  ErrorCode code = ErrorCodeOf(error);
  status->mutable_error()->set_code(static_cast<int32_t>(code));
  status->mutable_error()->set_code_name(std::string(ErrorCodeName(code)));
  // Component messages can name paths; job errors reach admins only, and storage and key
  // manager messages never carry ids, values or keys (their contracts).
  status->mutable_error()->set_message(std::string(error.message()));
}

// A dataset job's progress into its status: while it runs the ETA is -1 until a rate is known;
// once finished it is 0.
void SetProgress(const storage::JobProgress& progress, bool finished, pb::JobStatus* status) {
  status->set_done(progress.done);
  status->set_total(progress.total);
  status->set_rate_per_second(progress.items_per_second);
  if (finished) {
    status->set_eta_seconds(0);
  } else {
    status->set_eta_seconds(progress.items_per_second > 0 ? progress.eta.count() : -1);
  }
  status->set_damaged(progress.damaged);
  status->clear_damaged_items();
  AppendWire(progress.damaged_items, status->mutable_damaged_items());
}

}  // namespace

JobRegistry::JobRegistry(JobRegistryDeps deps, const coffer::Clock& clock)
    : deps_(deps), clock_(&clock) {}

JobRegistry::~JobRegistry() { Stop(); }

int64_t JobRegistry::NowMicros() const { return coffer::ToUnixMicros(clock_->Now()); }

absl::StatusOr<JobRegistry::OnDemand*> JobRegistry::Reserve(uint64_t busy_key, pb::JobKind kind,
                                                            std::string dataset) {
  // mu_ held by the caller.
  if (stopped_) return MakeError(ErrorCode::kFailedPrecondition, "the job registry is stopped");
  if (deps_.data_db == nullptr || deps_.keys == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "the job registry has no data DB or keys");
  }
  ReapFinishedLocked();
  if (busy_.count(busy_key) != 0) {
    return MakeError(ErrorCode::kAlreadyExists,
                     "a job is already running on this dataset; see job_status");
  }
  auto job = std::make_unique<OnDemand>();
  uint64_t id = next_id_++;
  job->status.set_id(id);
  job->status.set_kind(kind);
  job->status.set_state(pb::JOB_PENDING);
  job->status.set_dataset(std::move(dataset));
  job->status.set_eta_seconds(-1);
  job->status.set_started_micros(NowMicros());
  job->busy_key = busy_key;
  busy_[busy_key] = id;
  OnDemand* raw = job.get();
  jobs_[id] = std::move(job);
  return raw;
}

void JobRegistry::ReapFinishedLocked() {
  size_t finished = 0;
  for (const auto& [id, job] : jobs_) {
    if (job->finished) ++finished;
  }
  for (auto it = jobs_.begin(); it != jobs_.end();) {
    OnDemand& job = *it->second;
    if (!job.finished) {
      ++it;
      continue;
    }
    // Finish was the thread's last step under mu_, so this join does not wait on mu_.
    if (job.thread.joinable()) job.thread.join();
    if (finished > kFinishedJobsKept) {
      --finished;
      it = jobs_.erase(it);  // the oldest first: ids grow with start order
    } else {
      ++it;
    }
  }
}

absl::StatusOr<pb::JobStatus> JobRegistry::StartReencryption(uint64_t handle, std::string dataset,
                                                             double max_items_per_second) {
  if (deps_.attachments == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "re-encryption needs the attachment store");
  }
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(OnDemand * job, Reserve(handle, pb::JOB_REENCRYPT, std::move(dataset)));
  job->thread = std::thread([this, job, handle, max_items_per_second] {
    RunReencryption(job, handle, max_items_per_second);
  });
  return job->status;
}

absl::StatusOr<pb::JobStatus> JobRegistry::StartReindex(uint64_t handle, std::string dataset,
                                                        double max_items_per_second) {
  if (deps_.attachments == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "re-index needs the attachment store");
  }
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(OnDemand * job, Reserve(handle, pb::JOB_REINDEX, std::move(dataset)));
  job->thread = std::thread(
      [this, job, handle, max_items_per_second] { RunReindex(job, handle, max_items_per_second); });
  return job->status;
}

absl::StatusOr<pb::JobStatus> JobRegistry::StartEmergencyFollowUp(uint64_t handle,
                                                                  std::string dataset,
                                                                  kms::audit::AuditActor actor) {
  if (deps_.attachments == nullptr || !deps_.retire_compromised) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "an emergency rotation's follow-up needs the attachment store and the key "
                     "manager's retirement");
  }
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(OnDemand * job,
                          Reserve(handle, pb::JOB_EMERGENCY_ROTATION, std::move(dataset)));
  job->thread = std::thread([this, job, handle, actor = std::move(actor)] {
    MarkRunning(job);
    // One job, three steps: each starts where the one before left the data.
    absl::Status result = ReencryptStep(job, handle, 0);
    if (result.ok()) result = ReindexStep(job, handle, 0);
    if (result.ok()) result = deps_.retire_compromised(handle, actor);
    Finish(job, result);
  });
  return job->status;
}

absl::StatusOr<pb::JobStatus> JobRegistry::StartScrub(std::optional<uint64_t> handle,
                                                      std::string dataset) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(OnDemand * job, Reserve(handle.value_or(kEveryDataset), pb::JOB_SCRUB,
                                                  handle ? std::move(dataset) : std::string()));
  job->thread = std::thread([this, job, handle] { RunScrub(job, handle); });
  return job->status;
}

void JobRegistry::MarkRunning(OnDemand* job) {
  std::lock_guard<std::mutex> lock(mu_);
  job->status.set_state(pb::JOB_RUNNING);
}

void JobRegistry::RunReencryption(OnDemand* job, uint64_t handle, double max_items_per_second) {
  MarkRunning(job);
  Finish(job, ReencryptStep(job, handle, max_items_per_second));
}

absl::Status JobRegistry::ReencryptStep(OnDemand* job, uint64_t handle,
                                        double max_items_per_second) {
  storage::ReencryptionOptions options;
  options.max_items_per_second = max_items_per_second;
  storage::ReencryptionJob reencryption(deps_.data_db, deps_.keys, deps_.attachments, handle,
                                        options);
  std::vector<storage::DamagedItem> damaged;
  auto progress = reencryption.Run(&cancel_, [&](const storage::ReencryptionProgress& p) {
    damaged = p.damaged_items;
    std::lock_guard<std::mutex> lock(mu_);
    SetProgress(p, /*finished=*/false, &job->status);
  });
  absl::Status result = progress.status();
  if (progress.ok()) {
    damaged = progress->damaged_items;
    std::lock_guard<std::mutex> lock(mu_);
    SetProgress(*progress, /*finished=*/true, &job->status);
  }
  ReportDamaged(handle, damaged);
  // The census after the run: what each version still protects (records, attachments).
  auto census = storage::CountKeyVersions(deps_.data_db, handle);
  if (census.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    job->status.clear_version_counts();
    for (const auto& [version, items] : census->records) {
      auto* count = job->status.add_version_counts();
      count->set_purpose(pb::PURPOSE_RECORDS);
      count->set_version(version);
      count->set_items(items);
    }
    for (const auto& [version, items] : census->attachments) {
      auto* count = job->status.add_version_counts();
      count->set_purpose(pb::PURPOSE_ATTACHMENTS);
      count->set_version(version);
      count->set_items(items);
    }
  } else if (result.ok()) {
    result = census.status();
  }
  return result;
}

void JobRegistry::RunReindex(OnDemand* job, uint64_t handle, double max_items_per_second) {
  MarkRunning(job);
  Finish(job, ReindexStep(job, handle, max_items_per_second));
}

absl::Status JobRegistry::ReindexStep(OnDemand* job, uint64_t handle, double max_items_per_second) {
  storage::ReindexOptions options;
  options.max_items_per_second = max_items_per_second;
  storage::ReindexJob reindex(deps_.data_db, deps_.keys, deps_.attachments, handle, options);
  std::vector<storage::DamagedItem> damaged;
  auto progress = reindex.Run(&cancel_, [&](const storage::ReindexProgress& p) {
    damaged = p.damaged_items;
    std::lock_guard<std::mutex> lock(mu_);
    SetProgress(p, /*finished=*/false, &job->status);
  });
  absl::Status result = progress.status();
  if (progress.ok()) {
    damaged = progress->damaged_items;
    std::lock_guard<std::mutex> lock(mu_);
    SetProgress(*progress, /*finished=*/true, &job->status);
  }
  ReportDamaged(handle, damaged);
  // The census after the run: the items still stored under each lookup version (damaged ones,
  // whose version cannot be known, are in the job's damaged items instead).
  storage::DamagedItems uncounted;
  auto census = storage::CountLookupVersions(deps_.data_db, deps_.keys, handle, &uncounted);
  if (census.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    job->status.clear_version_counts();
    for (const auto& [version, items] : *census) {
      auto* count = job->status.add_version_counts();
      count->set_purpose(pb::PURPOSE_LOOKUP);
      count->set_version(version);
      count->set_items(items);
    }
  } else if (result.ok()) {
    result = census.status();
  }
  return result;
}

void JobRegistry::RunScrub(OnDemand* job, std::optional<uint64_t> handle) {
  MarkRunning(job);
  auto report =
      storage::Scrub(deps_.data_db, deps_.keys, handle, [&](const storage::ScrubReport& so_far) {
        std::lock_guard<std::mutex> lock(mu_);
        job->status.set_done(so_far.entries_checked);
        job->status.set_failures(so_far.findings.size());
      });
  if (report.ok()) {
    // The findings that are damaged items (not, say, an unreachable key store), per dataset.
    std::map<uint64_t, std::vector<storage::DamagedItem>> damaged;
    uint64_t damaged_count = 0;
    std::vector<storage::DamagedItem> listed;
    for (const storage::ScrubFinding& finding : report->findings) {
      if (!storage::IsDamageCode(finding.code)) continue;
      storage::DamagedItem item{finding.ref, finding.code, finding.column_family};
      ++damaged_count;
      if (listed.size() < storage::DamagedItems::kMaxListed) listed.push_back(item);
      damaged[finding.dataset_handle].push_back(std::move(item));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      job->status.set_done(report->entries_checked);
      job->status.set_total(report->entries_checked);
      job->status.set_failures(report->findings.size());
      job->status.set_eta_seconds(0);
      job->status.set_damaged(damaged_count);
      job->status.clear_damaged_items();
      AppendWire(listed, job->status.mutable_damaged_items());
    }
    for (const auto& [dataset, items] : damaged) ReportDamaged(dataset, items);
  }
  Finish(job, report.status());
}

void JobRegistry::ReportDamaged(uint64_t handle, const std::vector<storage::DamagedItem>& items) {
  if (!items.empty() && deps_.on_damaged) deps_.on_damaged(handle, items);
}

void JobRegistry::Finish(OnDemand* job, const absl::Status& result) {
  std::lock_guard<std::mutex> lock(mu_);
  job->status.set_finished_micros(NowMicros());
  if (result.ok()) {
    job->status.set_state(pb::JOB_DONE);
  } else {
    job->status.set_state(pb::JOB_FAILED);
    SetError(&job->status, result);
  }
  if (job->busy_key) busy_.erase(*job->busy_key);
  job->finished = true;
  changed_.notify_all();
}

absl::Status JobRegistry::RegisterPeriodic(std::string name, pb::JobKind kind,
                                           std::chrono::seconds period, PeriodicFunction function,
                                           bool run_at_start) {
  if (period.count() <= 0 || !function || name.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a periodic job needs a name, a positive period and a function");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_) return MakeError(ErrorCode::kFailedPrecondition, "the job registry is stopped");
  for (const auto& [id, existing] : periodic_) {
    if (existing->name == name) {
      return MakeError(ErrorCode::kAlreadyExists, "a periodic job with this name exists");
    }
  }
  auto job = std::make_unique<Periodic>();
  uint64_t id = next_id_++;
  job->name = name;
  job->period = period;
  job->function = std::move(function);
  job->next = std::chrono::steady_clock::now() + (run_at_start ? std::chrono::seconds(0) : period);
  job->status.set_id(id);
  job->status.set_kind(kind);
  job->status.set_state(pb::JOB_PENDING);
  job->status.set_name(std::move(name));
  job->status.set_eta_seconds(-1);
  job->status.set_next_run_micros(NowMicros() +
                                  (run_at_start ? 0 : std::chrono::microseconds(period).count()));
  periodic_[id] = std::move(job);
  changed_.notify_all();
  return absl::OkStatus();
}

void JobRegistry::StartScheduler() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopped_ || scheduler_.joinable()) return;
  scheduler_ = std::thread([this] { SchedulerLoop(); });
}

absl::Status JobRegistry::RunPeriodic(Periodic* job, bool* busy) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (job->running) {
      if (busy != nullptr) *busy = true;
      return MakeError(ErrorCode::kAlreadyExists, "this periodic job is running now");
    }
    job->running = true;
    job->status.set_state(pb::JOB_RUNNING);
    job->status.set_started_micros(NowMicros());
  }
  absl::Status result = job->function();
  std::lock_guard<std::mutex> lock(mu_);
  job->running = false;
  job->status.set_finished_micros(NowMicros());
  job->status.set_done(job->status.done() + 1);  // runs completed
  job->next = std::chrono::steady_clock::now() + job->period;
  job->status.set_next_run_micros(NowMicros() + std::chrono::microseconds(job->period).count());
  if (result.ok()) {
    job->status.set_state(pb::JOB_PENDING);
    job->status.clear_error();
  } else {
    job->status.set_state(pb::JOB_FAILED);
    job->status.set_failures(job->status.failures() + 1);
    SetError(&job->status, result);
  }
  changed_.notify_all();
  return result;
}

absl::Status JobRegistry::RunNow(std::string_view name) {
  Periodic* found = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, job] : periodic_) {
      if (job->name == name) found = job.get();
    }
  }
  if (found == nullptr) return MakeError(ErrorCode::kNotFound, "no periodic job by that name");
  return RunPeriodic(found);
}

absl::StatusOr<pb::JobStatus> JobRegistry::RunNow(pb::JobKind kind) {
  Periodic* found = nullptr;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [id, job] : periodic_) {
      if (job->status.kind() == kind) found = job.get();
    }
  }
  if (found == nullptr) {
    return MakeError(ErrorCode::kNotFound, "no periodic job of this kind runs in this daemon");
  }
  bool busy = false;
  absl::Status result = RunPeriodic(found, &busy);
  if (busy) return result;  // not run
  std::lock_guard<std::mutex> lock(mu_);
  return found->status;
}

void JobRegistry::SchedulerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopped_) {
    Periodic* due = nullptr;
    auto wake = std::chrono::steady_clock::now() + std::chrono::hours(1);
    for (const auto& [id, job] : periodic_) {
      if (job->running) continue;
      if (job->next <= std::chrono::steady_clock::now()) {
        due = job.get();
        break;
      }
      wake = std::min(wake, job->next);
    }
    if (due == nullptr) {
      changed_.wait_until(lock, wake);
      continue;
    }
    lock.unlock();
    RunPeriodic(due).IgnoreError();  // recorded in the job's status
    lock.lock();
  }
}

absl::StatusOr<pb::JobStatus> JobRegistry::Status(uint64_t id) const {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = jobs_.find(id); it != jobs_.end()) return it->second->status;
  if (auto it = periodic_.find(id); it != periodic_.end()) return it->second->status;
  return MakeError(ErrorCode::kNotFound, "no job with this id");
}

std::vector<pb::JobStatus> JobRegistry::AllStatus() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pb::JobStatus> all;
  for (const auto& [id, job] : periodic_) all.push_back(job->status);
  for (const auto& [id, job] : jobs_) all.push_back(job->status);
  return all;
}

absl::StatusOr<pb::JobStatus> JobRegistry::Wait(uint64_t id) const {
  std::unique_lock<std::mutex> lock(mu_);
  // Looked up afresh each time: a finished job may be dropped while this waits for mu_.
  auto finished = [this, id]() -> const OnDemand* {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) return nullptr;
    return it->second->finished ? it->second.get() : nullptr;
  };
  if (jobs_.count(id) == 0) return MakeError(ErrorCode::kNotFound, "no on-demand job with this id");
  changed_.wait(lock, [&] { return jobs_.count(id) == 0 || finished() != nullptr; });
  const OnDemand* job = finished();
  if (job == nullptr) return MakeError(ErrorCode::kNotFound, "the job's status was dropped");
  return job->status;
}

void JobRegistry::Stop() {
  std::vector<std::thread*> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    cancel_ = true;
    changed_.notify_all();
    for (auto& [id, job] : jobs_) {
      if (job->thread.joinable()) threads.push_back(&job->thread);
    }
  }
  if (scheduler_.joinable()) scheduler_.join();
  for (std::thread* thread : threads) thread->join();
}

}  // namespace coffer::daemon
