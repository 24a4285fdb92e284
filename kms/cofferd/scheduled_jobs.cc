// Daemon::Parts: the background jobs (rotation clock, bin retention, scheduled scrub,
// re-encryption and backups, upload clean-up) and the resumption of interrupted ones.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "kms/cofferd/daemon.h"
#include "kms/cofferd/internal/daemon_parts.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"
#include "storage/scrub.h"

namespace coffer::cofferd {

using internal::CompleteDestructionsAndLog;
using internal::InternalActor;

namespace {

// Orphaned uploads are removed at start and then on this period (uploads in progress are
// skipped by the store, so running it while serving is safe).
constexpr std::chrono::seconds kUploadCleanupPeriod{3600};

// One tick of the rotation clock: due rotations, retirements and destructions, then the data
// erase and receipt of destroyed datasets (every tick: a failure is retried on the next).
absl::Status RotationTick(kms::KeyManager* manager, storage::DataDb* data) {
  COFFER_ASSIGN_OR_RETURN(kms::DueWorkReport report, manager->RunDueWork());
  // Erase destroyed datasets' data and issue their receipts (every tick: a failure is
  // retried on the next).
  absl::Status completed = CompleteDestructionsAndLog(*manager, *data);
  if (report.clock_went_backwards) {
    LogError(
        "jobs: the clock reads earlier than the key DB's high-water mark; nothing "
        "time-based ran (audited as CLOCK_WENT_BACKWARDS). Fix the system clock.");
    return MakeError(ErrorCode::kClockWentBackwards,
                     "the clock went backwards; nothing time-based ran");
  }
  if (!report.rotated.empty() || !report.destroyed.empty() || !report.compromised_retired.empty()) {
    LogInfo("jobs: rotation clock rotated " + std::to_string(report.rotated.size()) +
            " keys, destroyed " + std::to_string(report.destroyed.size()) + " datasets, retired " +
            std::to_string(report.compromised_retired.size()) + " compromised versions");
  }
  for (const auto& [handle, failure] : report.failures) {
    LogWarning("jobs: rotation clock failed for dataset handle " + std::to_string(handle) + ": " +
               DescribeStatus(failure));
  }
  if (!report.failures.empty()) return report.failures.front().second;
  return completed;
}

// One tick of bin retention: expired bin items, then each live dataset's maximum age.
absl::Status BinRetentionTick(storage::RecycleBin* recycle_bin, kms::KeyManager* manager) {
  COFFER_ASSIGN_OR_RETURN(storage::PurgeReport expired, recycle_bin->PurgeExpired());
  size_t purged = expired.records + expired.attachments;
  absl::Status first_failure;
  for (const kms::DatasetSummary& dataset : manager->ListDatasets()) {
    if (dataset.state != kms::DatasetState::kActive &&
        dataset.state != kms::DatasetState::kDisabled) {
      continue;
    }
    absl::StatusOr<storage::PurgeReport> aged = recycle_bin->EnforceMaxAge(dataset.handle);
    if (aged.ok()) {
      purged += aged->records + aged->attachments;
    } else if (first_failure.ok()) {
      first_failure = aged.status();
    }
  }
  if (purged > 0) {
    LogInfo("jobs: bin expiry and retention purged " + std::to_string(purged) + " items");
  }
  return first_failure;
}

// One run of the scheduled scrub: every dataset's items authenticated; each damaged item raises
// EVENT_DAMAGED_ITEM (once per reference, ever), and a finding that is not damage (a key store
// that does not answer, say) fails the run, which its job status shows.
absl::Status ScheduledScrub(storage::DataDb* data, kms::KeyManager* keys,
                            daemon::DamagedItemEvents* damaged_events) {
  COFFER_ASSIGN_OR_RETURN(storage::ScrubReport report, storage::Scrub(data, keys, std::nullopt));
  std::map<uint64_t, std::vector<storage::DamagedItem>> damaged;
  size_t unchecked = 0;
  std::string first_unchecked;
  for (const storage::ScrubFinding& finding : report.findings) {
    if (!storage::IsDamageCode(finding.code)) {
      if (unchecked++ == 0) first_unchecked = std::string(ErrorCodeName(finding.code));
      continue;
    }
    damaged[finding.dataset_handle].push_back({finding.ref, finding.code, finding.column_family});
  }
  size_t damaged_count = 0;
  for (const auto& [handle, items] : damaged) {
    absl::StatusOr<kms::DatasetInfo> info = keys->DescribeDataset(handle);
    damaged_events->Raise(handle, info.ok() ? info->name : std::string(), items).IgnoreError();
    damaged_count += items.size();
  }
  LogInfo("jobs: scheduled scrub checked " + std::to_string(report.entries_checked) +
          " entries: " + std::to_string(damaged_count) + " damaged, " + std::to_string(unchecked) +
          " could not be checked");
  if (unchecked > 0) {
    return MakeError(ErrorCode::kUnavailable,
                     "scheduled scrub: " + std::to_string(unchecked) +
                         " entries could not be checked (first: " + first_unchecked + ")");
  }
  return absl::OkStatus();
}

// Scheduled re-encryption: on each tick, starts a rate-limited re-encryption of every active
// dataset whose records or attachments keep a live version more than N versions behind the
// primary, N being the dataset's policy reencrypt_versions_back or, when it has none, the
// daemon's jobs.reencrypt_versions_back (0: never) — once per pair of primaries, remembered in
// memory (after a restart such a dataset is re-encrypted once more, which moves whatever is left).
// A dataset busy with another job is tried again on the next tick.
class ScheduledReencryption {
 public:
  ScheduledReencryption(kms::KeyManager* keys, daemon::JobRegistry* jobs,
                        uint32_t default_versions_back, double items_per_second)
      : keys_(keys),
        jobs_(jobs),
        default_versions_back_(default_versions_back),
        items_per_second_(items_per_second) {}

  absl::Status Tick() {
    std::lock_guard<std::mutex> lock(mu_);
    absl::Status first_failure;
    for (const kms::DatasetSummary& dataset : keys_->ListDatasets()) {
      if (dataset.state != kms::DatasetState::kActive) continue;
      absl::StatusOr<kms::DatasetInfo> info = keys_->DescribeDataset(dataset.handle);
      if (!info.ok()) continue;  // destroyed or disabled meanwhile
      const uint32_t versions_back =
          info->policy.reencrypt_versions_back.value_or(default_versions_back_);
      if (versions_back == 0) continue;  // never, for this dataset
      bool lagging = false;
      std::pair<uint32_t, uint32_t> primaries{0, 0};  // records, attachments
      for (const kms::PurposeInfo& purpose : info->purposes) {
        if (purpose.purpose == storage::KeyPurpose::kRecords) {
          primaries.first = purpose.primary_version;
        } else if (purpose.purpose == storage::KeyPurpose::kAttachments) {
          primaries.second = purpose.primary_version;
        } else {
          continue;
        }
        for (const kms::KeyVersionInfo& version : purpose.versions) {
          if (version.state != kms::KeyVersionState::kRetired &&
              version.version + versions_back < purpose.primary_version) {
            lagging = true;
          }
        }
      }
      if (!lagging) continue;
      auto done = started_.find(dataset.handle);
      if (done != started_.end() && done->second == primaries) continue;
      absl::StatusOr<coffer::v1::JobStatus> started =
          jobs_->StartReencryption(dataset.handle, dataset.name, items_per_second_);
      if (started.ok()) {
        started_[dataset.handle] = primaries;
        LogInfo("jobs: scheduled re-encryption of dataset handle " +
                std::to_string(dataset.handle) + " (job " + std::to_string(started->id()) +
                "): a live version is more than " + std::to_string(versions_back) +
                " versions behind the primary");
      } else if (ErrorCodeOf(started.status()) != ErrorCode::kAlreadyExists && first_failure.ok()) {
        first_failure = started.status();
      }
    }
    return first_failure;
  }

 private:
  kms::KeyManager* const keys_;
  daemon::JobRegistry* const jobs_;
  const uint32_t default_versions_back_;
  const double items_per_second_;
  std::mutex mu_;
  std::map<uint64_t, std::pair<uint32_t, uint32_t>> started_;  // guarded by mu_
};

// The scheduled backup: made, verified at once (every part re-read against the manifest: a
// backup that does not verify fails the job, whose failure status shows, and is not counted
// on), then the old ones pruned.
absl::Status ScheduledBackup(kms::FullBackups* full_backups,
                             const kms::FullBackupSources& sources) {
  COFFER_ASSIGN_OR_RETURN(kms::FullBackupInfo info, full_backups->Create(sources, InternalActor()));
  if (absl::Status verified = full_backups->Verify(info.id); !verified.ok()) {
    return MakeError(ErrorCodeOf(verified),
                     "full backup " + std::to_string(info.id) +
                         " was made but does not verify: " + std::string(verified.message()));
  }
  COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> pruned, full_backups->PruneExpired());
  LogInfo("jobs: full backup " + std::to_string(info.id) + " made and verified (" +
          std::to_string(info.size_bytes) + " bytes); " + std::to_string(pruned.size()) +
          " old backups pruned");
  return absl::OkStatus();
}

absl::Status UploadCleanupTick(storage::AttachmentStore* store) {
  COFFER_ASSIGN_OR_RETURN(size_t removed, store->CleanupOrphanedUploads());
  if (removed > 0) LogInfo("jobs: removed " + std::to_string(removed) + " orphaned uploads");
  return absl::OkStatus();
}

}  // namespace

absl::Status Daemon::Parts::StartJobs() {
  daemon::JobRegistryDeps deps;
  deps.data_db = data_db.get();
  deps.keys = key_manager;
  deps.attachments = attachments;
  damaged_events = std::make_unique<daemon::DamagedItemEvents>(
      [](const std::string& warning) { LogWarning(warning); });
  daemon::DamagedItemEvents* damaged = damaged_events.get();
  kms::KeyManager* names = key_manager;
  deps.on_damaged = [damaged, names](uint64_t handle,
                                     const std::vector<storage::DamagedItem>& items) {
    absl::StatusOr<kms::DatasetInfo> info = names->DescribeDataset(handle);
    damaged->Raise(handle, info.ok() ? info->name : std::string(), items).IgnoreError();
  };
  deps.retire_compromised = [names](uint64_t handle, const kms::audit::AuditActor& actor) {
    return names->RetireCompromised(handle, actor);
  };
  jobs = std::make_unique<daemon::JobRegistry>(deps, *clock);

  storage::AttachmentStore* store = attachments;
  COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
      "upload-cleanup", coffer::v1::JOB_UPLOAD_CLEANUP, kUploadCleanupPeriod,
      [store] { return UploadCleanupTick(store); }, /*run_at_start=*/true));

  kms::KeyManager* manager = key_manager;
  storage::DataDb* data = data_db.get();
  // Destroyed datasets whose data erase or receipt a previous run did not finish (a crash, or a
  // restore that replayed destructions) are completed before serving.
  if (!CompleteDestructionsAndLog(*manager, *data).ok()) {
    LogWarning("some destructions could not be completed at start; the rotation clock retries");
  }
  COFFER_RETURN_IF_ERROR(
      jobs->RegisterPeriodic("rotation", coffer::v1::JOB_ROTATION,
                             std::chrono::seconds(config.jobs().rotation_check_seconds()),
                             [manager, data] { return RotationTick(manager, data); }));

  storage::RecycleBin* recycle_bin = bin;
  COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
      "bin-retention", coffer::v1::JOB_BIN_RETENTION,
      std::chrono::seconds(config.jobs().retention_interval_seconds()),
      [recycle_bin, manager] { return BinRetentionTick(recycle_bin, manager); }));

  if (config.jobs().backup_interval_seconds() > 0) {
    kms::FullBackups* full_backups = backups.get();
    kms::FullBackupSources sources;
    sources.data_db = data_db.get();
    sources.key_manager = key_manager;
    sources.audit_log = audit_log.get();
    sources.audit_directory = config.audit_directory();
    sources.purge_journal = purge_journal.get();
    COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
        "backup", coffer::v1::JOB_BACKUP,
        std::chrono::seconds(config.jobs().backup_interval_seconds()),
        [full_backups, sources] { return ScheduledBackup(full_backups, sources); }));
  }
  if (config.jobs().scrub_interval_seconds() > 0) {
    storage::DataDb* scrubbed = data_db.get();
    kms::KeyManager* keys = key_manager;
    daemon::DamagedItemEvents* damaged_items = damaged_events.get();
    COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
        "scrub", coffer::v1::JOB_SCHEDULED_SCRUB,
        std::chrono::seconds(config.jobs().scrub_interval_seconds()),
        [scrubbed, keys, damaged_items] { return ScheduledScrub(scrubbed, keys, damaged_items); }));
  }
  {
    // Registered even when the daemon's setting is 0: a dataset's own policy may ask for it.
    auto scheduled = std::make_shared<ScheduledReencryption>(
        key_manager, jobs.get(), config.jobs().reencrypt_versions_back(),
        config.jobs().reencrypt_items_per_second());
    COFFER_RETURN_IF_ERROR(
        jobs->RegisterPeriodic("reencrypt", coffer::v1::JOB_SCHEDULED_REENCRYPT,
                               std::chrono::seconds(config.jobs().rotation_check_seconds()),
                               [scheduled] { return scheduled->Tick(); }));
  }
  jobs->StartScheduler();
  ResumeUnfinishedJobs();
  return absl::OkStatus();
}

// Re-encryptions and re-indexes that a stop or a crash interrupted carry on by themselves, from
// their saved progress and without a rate limit (the limit an admin gave is not saved), for
// active datasets; others stay saved until `keyctl reencrypt|reindex start` after the dataset is
// enabled again. Logged with the dataset's handle, as every job line.
void Daemon::Parts::ResumeUnfinishedJobs() {
  std::map<uint64_t, kms::DatasetSummary> datasets;
  for (kms::DatasetSummary& dataset : key_manager->ListDatasets()) {
    datasets[dataset.handle] = std::move(dataset);
  }
  struct Kind {
    const char* what;
    absl::StatusOr<std::vector<uint64_t>> handles;
    std::function<absl::StatusOr<coffer::v1::JobStatus>(uint64_t, std::string)> start;
  };
  Kind kinds[] = {
      {"re-encryption", storage::ReencryptionJob::Unfinished(data_db.get()),
       [this](uint64_t handle, std::string name) {
         return jobs->StartReencryption(handle, std::move(name));
       }},
      {"re-index", storage::ReindexJob::Unfinished(data_db.get()),
       [this](uint64_t handle, std::string name) {
         return jobs->StartReindex(handle, std::move(name));
       }},
  };
  for (Kind& kind : kinds) {
    if (!kind.handles.ok()) {
      LogWarning(std::string("jobs: cannot list unfinished ") + kind.what +
                 " jobs: " + DescribeStatus(kind.handles.status()));
      continue;
    }
    for (uint64_t handle : *kind.handles) {
      const std::string subject =
          std::string(kind.what) + " of dataset handle " + std::to_string(handle);
      auto dataset = datasets.find(handle);
      if (dataset == datasets.end() || dataset->second.state != kms::DatasetState::kActive) {
        LogInfo("jobs: the unfinished " + subject + " waits: the dataset is not active");
        continue;
      }
      absl::StatusOr<coffer::v1::JobStatus> started = kind.start(handle, dataset->second.name);
      if (started.ok()) {
        LogInfo("jobs: resumed the " + subject + " (job " + std::to_string(started->id()) + ")");
      } else {
        LogWarning("jobs: cannot resume the " + subject + ": " + DescribeStatus(started.status()));
      }
    }
  }
}

}  // namespace coffer::cofferd
