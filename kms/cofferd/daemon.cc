#include "kms/cofferd/daemon.h"

#include <google/protobuf/util/message_differencer.h>
#include <grp.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "hsm/hsm_client.h"
#include "hsm/pin.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/batching_writer.h"
#include "kms/cofferd/log.h"
#include "kms/cofferd/startup_checks.h"
#include "kms/events/event_log.h"
#include "kms/events/event_source.h"
#include "kms/events/hook_delivery.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/deletion_receipts.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/storage_bridge.h"
#include "kms/ops/admin_control.h"
#include "kms/ops/authz.h"
#include "kms/ops/backup_operations.h"
#include "kms/ops/canary.h"
#include "kms/ops/event_operations.h"
#include "kms/ops/export_operations.h"
#include "kms/ops/jobs.h"
#include "kms/ops/services.h"
#include "kms/server/server.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"

namespace coffer::cofferd {
namespace {

namespace fs = std::filesystem;
using coffer::v1::JobKind;

// Orphaned uploads are removed at start and then on this period (uploads in progress are
// skipped by the store, so running it while serving is safe).
constexpr std::chrono::seconds kUploadCleanupPeriod{3600};

// Prefixes a failure with what was being done, keeping its code.
absl::Status Context(const absl::Status& status, const std::string& what) {
  if (status.ok()) return status;
  return MakeError(ErrorCodeOf(status), what + ": " + std::string(status.message()));
}

kms::audit::AuditActor InternalActor();

// kms::CompleteDestructions, logged: each receipt issued, each failure (by handle; never a name).
absl::Status CompleteDestructionsAndLog(kms::KeyManager& keys, storage::DataDb& data) {
  kms::DestructionCompletion done = kms::CompleteDestructions(keys, data, InternalActor());
  for (uint64_t handle : done.receipts_issued) {
    LogInfo("destruction completed: data erased and deletion receipt issued for dataset handle " +
            std::to_string(handle));
  }
  for (const auto& [handle, failure] : done.failures) {
    LogWarning("completing the destruction of dataset handle " + std::to_string(handle) +
               " failed (retried on the next tick): " + DescribeStatus(failure));
  }
  return done.failures.empty() ? absl::OkStatus() : done.failures.front().second;
}

kms::audit::AuditActor InternalActor() {
  kms::audit::AuditActor actor;
  actor.uid = static_cast<uint32_t>(geteuid());
  actor.pid = static_cast<uint32_t>(getpid());
  actor.socket = kms::audit::v1::SOCKET_INTERNAL;
  return actor;
}

absl::StatusOr<std::optional<gid_t>> GroupId(const std::string& field, const std::string& name) {
  if (name.empty()) return std::optional<gid_t>();
  std::vector<char> buf(16384);
  struct group gr {};
  struct group* found = nullptr;
  if (getgrnam_r(name.c_str(), &gr, buf.data(), buf.size(), &found) != 0 || found == nullptr) {
    return MakeError(ErrorCode::kConfigInvalid,
                     field + ": no group named " + name + " (create it with groupadd)");
  }
  return std::optional<gid_t>(found->gr_gid);
}

// A hint for the HSM failures an operator can fix.
std::string HsmHint(ErrorCode code, const daemon::Config& config, const std::string& pin_file) {
  switch (code) {
    case ErrorCode::kHsmModuleNotFound:
    case ErrorCode::kHsmNotPkcs11Module:
      return "; install the module (apt-get install softhsm2) or set hsm.module_path";
    case ErrorCode::kHsmTokenNotFound:
      return "; create the token (scripts/softhsm-token DIR " + config.hsm().token_label() +
             ") or set hsm.token_label / SOFTHSM2_CONF";
    case ErrorCode::kHsmWrongPin:
      return "; put the token's user PIN in " + pin_file;
    case ErrorCode::kHsmPinUnavailable:
      return "; the PIN file must be a regular file readable only by cofferd's user (chmod 0600)";
    default:
      return "";
  }
}

}  // namespace

struct Daemon::Parts {
  daemon::Config config;
  const Clock* clock = nullptr;  // DaemonOptions::clock
  std::unique_ptr<hsm::HsmClient> hsm;
  std::unique_ptr<kms::HsmCheckpointSigner> checkpoint_signer;
  std::unique_ptr<kms::audit::SyslogAnchorSink> anchor_sink;
  std::unique_ptr<kms::audit::AuditLog> audit_log;
  std::unique_ptr<kms::audit::BatchingAuditWriter> access_audit;
  std::unique_ptr<kms::AuditPurgeJournal> purge_journal;
  std::unique_ptr<storage::DataDb> data_db;
  std::unique_ptr<kms::StoreDataCounter> data_counter;
  std::unique_ptr<kms::KeyManager> key_manager;
  std::unique_ptr<kms::KeyManagerPolicySource> policies;
  std::unique_ptr<storage::RecordStore> records;
  std::unique_ptr<storage::AttachmentStore> attachments;
  std::unique_ptr<storage::RecycleBin> bin;
  std::unique_ptr<kms::FullBackups> backups;
  std::unique_ptr<daemon::JobRegistry> jobs;
  std::unique_ptr<daemon::Authorizer> authorizer;
  std::unique_ptr<kms::admin::AdminRegistry> admin_registry;
  std::unique_ptr<daemon::AdminControl> admin_control;
  std::unique_ptr<events::EventLog> event_log;
  std::unique_ptr<daemon::CanaryRegistry> canaries;
  std::unique_ptr<events::EventSource> event_source;
  std::unique_ptr<events::HookDelivery> hook_delivery;
  std::unique_ptr<kms::dataset_export::ExportService> exports;
  std::unique_ptr<daemon::Services> services;
  std::unique_ptr<server::Server> server;
  bool stopped = false;

  absl::Status OpenHsm();
  absl::Status OpenAudit();
  absl::Status OpenStores();
  absl::Status EnsureDatasets(const std::vector<std::string>& names);
  absl::Status StartJobs();
  absl::Status StartEvents();
  absl::Status StartServing();
  absl::Status Stop();
};

absl::Status Daemon::Parts::OpenHsm() {
  const daemon::v1::Hsm& hsm_config = config.hsm();
  std::error_code ec;
  if (!fs::exists(hsm_config.module_path(), ec)) {
    return MakeError(ErrorCode::kHsmModuleNotFound,
                     "hsm.module_path " + hsm_config.module_path() +
                         " does not exist: install the PKCS#11 module (apt-get install softhsm2 "
                         "for SoftHSM2) or point hsm.module_path at it");
  }
  std::vector<std::pair<std::string, std::string>> stores = {
      {"data_directory", config.data_directory()},
      {"key_db_directory", config.key_db_directory()},
      {"audit_directory", config.audit_directory()},
      {"backup_directory", config.backup_directory()},
      {"admin_directory", config.admin_directory()},
  };
  if (IsSoftHsmModule(hsm_config.module_path())) {
    const char* env = std::getenv("SOFTHSM2_CONF");
    std::optional<std::string> conf =
        SoftHsmConfig(env == nullptr ? "" : env, hsm_config.token_directory());
    if (!conf) {
      return MakeError(ErrorCode::kConfigInvalid,
                       "SoftHSM2 has no configuration: set SOFTHSM2_CONF, or create the token "
                       "with scripts/softhsm-token " +
                           hsm_config.token_directory() + " " + hsm_config.token_label());
    }
    if (env == nullptr) {
      // Read by the module at C_Initialize; no other thread exists yet.
      setenv("SOFTHSM2_CONF", conf->c_str(), 1);
    }
    COFFER_ASSIGN_OR_RETURN(std::string token_dir, SoftHsmTokenDirectory(*conf));
    COFFER_RETURN_IF_ERROR(CheckTokenOutside(token_dir, stores));
    LogInfo("HSM: SoftHSM2 configuration " + *conf + ", token storage " + token_dir);
  }
  if (!hsm_config.token_directory().empty()) {
    COFFER_RETURN_IF_ERROR(CheckTokenOutside(hsm_config.token_directory(), stores));
  }
  const char* credentials = std::getenv("CREDENTIALS_DIRECTORY");
  COFFER_ASSIGN_OR_RETURN(std::string pin_file,
                          ResolvePinFile(hsm_config.pin_file(), hsm_config.pin_credential(),
                                         credentials == nullptr ? "" : credentials));

  hsm::HsmOptions options;
  options.module_path = hsm_config.module_path();
  options.token_label = hsm_config.token_label();
  options.pin = hsm::PinSource::FromFile(pin_file);
  options.session_pool_size = std::max<size_t>(4, config.limits().workers() / 2);
  absl::StatusOr<std::unique_ptr<hsm::HsmClient>> client = hsm::HsmClient::Open(options);
  if (!client.ok()) {
    ErrorCode code = ErrorCodeOf(client.status());
    return MakeError(code, "HSM (module " + hsm_config.module_path() + ", token \"" +
                               hsm_config.token_label() + "\", PIN from " + pin_file +
                               "): " + std::string(client.status().message()) +
                               HsmHint(code, config, pin_file));
  }
  hsm = *std::move(client);
  LogInfo("HSM: logged in to token \"" + hsm_config.token_label() + "\" (" +
          hsm->module_description() + ")");
  return absl::OkStatus();
}

absl::Status Daemon::Parts::OpenAudit() {
  checkpoint_signer = std::make_unique<kms::HsmCheckpointSigner>(hsm->signer());
  absl::StatusOr<std::unique_ptr<kms::audit::SyslogAnchorSink>> sink =
      kms::audit::SyslogAnchorSink::Create(LOG_AUTHPRIV);
  if (sink.ok()) {
    anchor_sink = *std::move(sink);
  } else {
    LogWarning("audit: no syslog anchor sink (" + DescribeStatus(sink.status()) +
               "); checkpoints are signed but not anchored outside the log");
  }
  kms::audit::AuditLogOptions options;
  options.directory = config.audit_directory();
  options.signer = checkpoint_signer.get();
  options.epoch_keys = kms::HsmEpochKeyProvider(hsm->row_authenticator());
  options.anchor_sink = anchor_sink.get();
  options.clock = clock;
  absl::StatusOr<std::unique_ptr<kms::audit::AuditLog>> log =
      kms::audit::AuditLog::Open(std::move(options));
  if (!log.ok()) {
    return Context(log.status(), "audit log in " + config.audit_directory() +
                                     " (check it with keyctl audit verify; never delete it)");
  }
  audit_log = *std::move(log);
  kms::audit::AuditLogStats stats = audit_log->stats();
  LogInfo("audit: log " + config.audit_directory() + " open at sequence " +
          std::to_string(stats.next_sequence) + ", epoch " + std::to_string(stats.epoch) +
          (stats.torn_bytes_dropped_at_open > 0
               ? ", a torn final write of " + std::to_string(stats.torn_bytes_dropped_at_open) +
                     " bytes dropped"
               : ""));

  kms::audit::BatchingAuditWriterOptions writer_options;
  writer_options.crash_loss_window = daemon::CrashLossWindow(config);
  COFFER_ASSIGN_OR_RETURN(access_audit,
                          kms::audit::BatchingAuditWriter::Start(audit_log.get(), writer_options));
  LogInfo(
      "audit: access events through the batching writer, crash-loss window " +
      std::to_string(writer_options.crash_loss_window.count()) + " ms" +
      (writer_options.crash_loss_window.count() == 0 ? " (replies wait for the audit write)" : ""));
  purge_journal = std::make_unique<kms::AuditPurgeJournal>(audit_log.get(), InternalActor());
  return absl::OkStatus();
}

absl::Status Daemon::Parts::OpenStores() {
  storage::DataDbOptions data_options;
  data_options.durability = daemon::DurabilityOf(config);
  data_options.max_value_bytes = config.limits().max_value_bytes();
  absl::StatusOr<std::unique_ptr<storage::DataDb>> db =
      storage::DataDb::Open(config.data_directory(), data_options);
  if (!db.ok()) return Context(db.status(), "data DB in " + config.data_directory());
  data_db = *std::move(db);
  data_counter = std::make_unique<kms::StoreDataCounter>(data_db.get());

  kms::KeyManagerOptions options;
  options.key_db_directory = config.key_db_directory();
  options.modules = {{kPrimaryModuleName, &hsm->wrapping_keys()}};
  options.default_module = kPrimaryModuleName;
  options.row_authenticator = &hsm->row_authenticator();
  options.signer = &hsm->signer();
  options.audit_log = audit_log.get();
  options.default_policy = daemon::DefaultDatasetPolicy(config);
  options.data_counter = data_counter.get();
  options.clock = clock;
  absl::StatusOr<std::unique_ptr<kms::KeyManager>> manager = kms::KeyManager::Open(options);
  if (!manager.ok()) {
    return Context(manager.status(),
                   "key DB in " + config.key_db_directory() +
                       " (it must be the key DB made with this token; see docs/key-manager.md)");
  }
  key_manager = *std::move(manager);
  const kms::RecoveryReport& recovery = key_manager->recovery_report();
  LogInfo("key manager: " + std::to_string(key_manager->ListDatasets().size()) +
          " datasets; recovery: " + std::to_string(recovery.creates_rolled_back.size()) +
          " creates rolled back, " + std::to_string(recovery.destroys_completed.size()) +
          " destructions and " + std::to_string(recovery.rewraps_completed.size()) +
          " re-wraps completed");
  if (!recovery.missing_wrapping_keys.empty()) {
    LogError("key manager: " + std::to_string(recovery.missing_wrapping_keys.size()) +
             " wrapping keys named by the key DB are missing from the token; their datasets "
             "answer WRAPPING_KEY_MISSING (is this the right token?)");
  }

  policies = std::make_unique<kms::KeyManagerPolicySource>(key_manager.get());
  records = std::make_unique<storage::RecordStore>(data_db.get(), key_manager.get(), policies.get(),
                                                   clock);
  attachments = std::make_unique<storage::AttachmentStore>(data_db.get(), key_manager.get(),
                                                           policies.get(), clock);
  bin = std::make_unique<storage::RecycleBin>(data_db.get(), key_manager.get(), policies.get(),
                                              clock, purge_journal.get());

  kms::FullBackupOptions backup_options;
  backup_options.directory = config.backup_directory();
  backup_options.max_age = std::chrono::hours(24) * config.jobs().backup_max_age_days();
  backup_options.clock = clock;
  absl::StatusOr<std::unique_ptr<kms::FullBackups>> opened_backups =
      kms::FullBackups::Open(backup_options);
  if (!opened_backups.ok()) {
    return Context(opened_backups.status(), "backup directory " + config.backup_directory());
  }
  backups = *std::move(opened_backups);
  return absl::OkStatus();
}

absl::Status Daemon::Parts::EnsureDatasets(const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    absl::StatusOr<uint64_t> found = key_manager->FindDataset(name);
    if (found.ok()) continue;
    if (ErrorCodeOf(found.status()) != ErrorCode::kDatasetNotFound) {
      return Context(found.status(), "--ensure-dataset");
    }
    absl::StatusOr<uint64_t> created =
        key_manager->CreateDataset(name, std::nullopt, InternalActor());
    if (!created.ok()) return Context(created.status(), "--ensure-dataset");
    LogInfo("created a dataset named by --ensure-dataset (handle " + std::to_string(*created) +
            ")");
  }
  return absl::OkStatus();
}

absl::Status Daemon::Parts::StartJobs() {
  daemon::JobRegistryDeps deps;
  deps.data_db = data_db.get();
  deps.keys = key_manager.get();
  deps.attachments = attachments.get();
  jobs = std::make_unique<daemon::JobRegistry>(deps, *clock);

  storage::AttachmentStore* store = attachments.get();
  COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
      "upload-cleanup", coffer::v1::JOB_UPLOAD_CLEANUP, kUploadCleanupPeriod,
      [store]() -> absl::Status {
        COFFER_ASSIGN_OR_RETURN(size_t removed, store->CleanupOrphanedUploads());
        if (removed > 0) {
          LogInfo("jobs: removed " + std::to_string(removed) + " orphaned uploads");
        }
        return absl::OkStatus();
      },
      /*run_at_start=*/true));

  kms::KeyManager* manager = key_manager.get();
  storage::DataDb* data = data_db.get();
  // Destroyed datasets whose data erase or receipt a previous run did not finish (a crash, or a
  // restore that replayed destructions) are completed before serving.
  if (!CompleteDestructionsAndLog(*manager, *data).ok()) {
    LogWarning("some destructions could not be completed at start; the rotation clock retries");
  }
  COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
      "rotation", coffer::v1::JOB_ROTATION,
      std::chrono::seconds(config.jobs().rotation_check_seconds()),
      [manager, data]() -> absl::Status {
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
        if (!report.rotated.empty() || !report.destroyed.empty() ||
            !report.compromised_retired.empty()) {
          LogInfo("jobs: rotation clock rotated " + std::to_string(report.rotated.size()) +
                  " keys, destroyed " + std::to_string(report.destroyed.size()) +
                  " datasets, retired " + std::to_string(report.compromised_retired.size()) +
                  " compromised versions");
        }
        for (const auto& [handle, failure] : report.failures) {
          LogWarning("jobs: rotation clock failed for dataset handle " + std::to_string(handle) +
                     ": " + DescribeStatus(failure));
        }
        if (!report.failures.empty()) return report.failures.front().second;
        return completed;
      }));

  storage::RecycleBin* recycle_bin = bin.get();
  COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
      "bin-retention", coffer::v1::JOB_BIN_RETENTION,
      std::chrono::seconds(config.jobs().retention_interval_seconds()),
      [recycle_bin, manager]() -> absl::Status {
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
      }));

  if (config.jobs().backup_interval_seconds() > 0) {
    kms::FullBackups* full_backups = backups.get();
    kms::FullBackupSources sources;
    sources.data_db = data_db.get();
    sources.key_manager = key_manager.get();
    sources.audit_log = audit_log.get();
    sources.audit_directory = config.audit_directory();
    sources.purge_journal = purge_journal.get();
    COFFER_RETURN_IF_ERROR(jobs->RegisterPeriodic(
        "backup", coffer::v1::JOB_BACKUP,
        std::chrono::seconds(config.jobs().backup_interval_seconds()),
        [full_backups, sources]() -> absl::Status {
          COFFER_ASSIGN_OR_RETURN(kms::FullBackupInfo info,
                                  full_backups->Create(sources, InternalActor()));
          COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> pruned, full_backups->PruneExpired());
          LogInfo("jobs: full backup " + std::to_string(info.id) + " made (" +
                  std::to_string(info.size_bytes) + " bytes); " + std::to_string(pruned.size()) +
                  " old backups pruned");
          return absl::OkStatus();
        }));
  }
  jobs->StartScheduler();
  return absl::OkStatus();
}

// Notifications and canaries (docs/events.md): the event log, the canary registry, the event
// source deriving events from the audit log, and the hook's delivery thread.
absl::Status Daemon::Parts::StartEvents() {
  events::EventLogOptions log_options;
  log_options.directory = config.events_directory();
  log_options.clock = clock;
  absl::StatusOr<std::unique_ptr<events::EventLog>> opened = events::EventLog::Open(log_options);
  if (!opened.ok()) {
    return Context(opened.status(), "events directory " + config.events_directory());
  }
  event_log = *std::move(opened);

  daemon::CanaryDeps canary_deps;
  canary_deps.log = event_log.get();
  canary_deps.keys = key_manager.get();
  canary_deps.records = records.get();
  canary_deps.attachments = attachments.get();
  canary_deps.bin = bin.get();
  canary_deps.audit_log = audit_log.get();
  canary_deps.clock = clock;
  canary_deps.on_read = [this] {
    if (event_source) event_source->Wake();
  };
  COFFER_ASSIGN_OR_RETURN(canaries, daemon::CanaryRegistry::Open(std::move(canary_deps)));

  const auto& n = config.notifications();
  events::EventSourceOptions source_options;
  source_options.log = event_log.get();
  source_options.audit_directory = config.audit_directory();
  source_options.audit_start = audit_log->stats().next_sequence;
  source_options.clock = clock;
  kms::KeyManager* manager = key_manager.get();
  source_options.datasets = [manager] {
    std::vector<events::DatasetView> views;
    for (const kms::DatasetSummary& summary : manager->ListDatasets()) {
      events::DatasetView view;
      view.handle = summary.handle;
      view.name = summary.name;
      if (summary.state == kms::DatasetState::kPendingDestruction) {
        absl::StatusOr<kms::DatasetInfo> info = manager->DescribeDataset(summary.handle);
        if (info.ok() && info->destroy_after) {
          view.pending_destruction = true;
          view.destruction_due_micros = coffer::ToUnixMicros(*info->destroy_after);
        }
      }
      views.push_back(std::move(view));
    }
    return views;
  };
  kms::audit::AuditLog* audit = audit_log.get();
  source_options.audit_failed = [audit] { return audit->stats().failed; };
  hsm::RowHmacKey* token = &hsm->row_authenticator();
  source_options.hsm_probe = [token]() -> absl::Status {
    return token->HmacRowKey("coffer.events.hsm-health-check").status();
  };
  daemon::CanaryRegistry* registry = canaries.get();
  source_options.canary_lookup = [registry](uint64_t number) { return registry->Lookup(number); };
  source_options.log_warning = [](const std::string& text) { LogWarning(text); };
  source_options.hsm_check_interval = std::chrono::seconds(n.hsm_check_seconds());
  source_options.destruction_warning = std::chrono::seconds(n.destruction_warning_seconds());
  source_options.retention = std::chrono::hours(24) * n.retention_days();
  source_options.max_age = std::chrono::hours(24) * n.max_age_days();
  COFFER_ASSIGN_OR_RETURN(event_source, events::EventSource::Create(std::move(source_options)));
  event_source->Start();

  if (n.hook_command_size() > 0) {
    events::HookDeliveryOptions hook_options;
    hook_options.log = event_log.get();
    hook_options.argv.assign(n.hook_command().begin(), n.hook_command().end());
    hook_options.timeout = std::chrono::seconds(n.hook_timeout_seconds());
    hook_options.attempts = n.hook_attempts();
    hook_options.log_info = [](const std::string& text) { LogInfo(text); };
    hook_options.log_warning = [](const std::string& text) { LogWarning(text); };
    hook_delivery = std::make_unique<events::HookDelivery>(std::move(hook_options));
    hook_delivery->Start();
  }
  return absl::OkStatus();
}

absl::Status Daemon::Parts::StartServing() {
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const daemon::GrantTable> table,
                          daemon::GrantTable::FromConfig(config));
  authorizer = std::make_unique<daemon::Authorizer>(std::move(table));

  COFFER_ASSIGN_OR_RETURN(std::string public_key, hsm->signer().PublicKeyPem());
  // Published for offline audit verification (keyctl audit verify --offline): the public half
  // only, so readable by all.
  {
    const std::string path = (fs::path(config.state_directory()) / "audit-public-key.pem").string();
    std::ofstream out(path, std::ios::trunc);
    out << public_key;
    out.close();
    if (!out || chmod(path.c_str(), 0644) != 0) {
      LogWarning("could not write the audit public key to " + path);
    }
  }

  kms::admin::AdminRegistry::Options admin_options;
  admin_options.directory = config.admin_directory();
  admin_options.totp = &hsm->totp_secrets();
  admin_options.rows = &hsm->row_authenticator();
  admin_options.clock = clock;
  admin_options.totp_settings.step_seconds = config.mfa().totp_step_seconds();
  admin_options.totp_settings.max_failures = config.mfa().max_failures();
  admin_options.totp_settings.lockout = std::chrono::seconds(config.mfa().lockout_seconds());
  absl::StatusOr<std::unique_ptr<kms::admin::AdminRegistry>> registry =
      kms::admin::AdminRegistry::Open(admin_options);
  if (!registry.ok()) {
    return Context(registry.status(), "admin directory " + config.admin_directory());
  }
  admin_registry = *std::move(registry);
  daemon::AdminControlOptions control_options;
  control_options.registry = admin_registry.get();
  control_options.audit_log = audit_log.get();
  control_options.clock = clock;
  control_options.mfa_required = config.mfa().required();
  control_options.session = std::chrono::seconds(config.mfa().session_seconds());
  control_options.approval_ttl = std::chrono::seconds(config.mfa().approval_ttl_seconds());
  control_options.invitation_ttl = std::chrono::seconds(config.mfa().invitation_ttl_seconds());
  COFFER_ASSIGN_OR_RETURN(admin_control, daemon::AdminControl::Create(std::move(control_options)));
  if (!config.mfa().required()) {
    LogWarning(
        "mfa.required is false: development mode, admin operations need no TOTP code and no "
        "second admin");
  }

  daemon::ServicesDeps deps;
  deps.keys = key_manager.get();
  deps.data_db = data_db.get();
  deps.records = records.get();
  deps.attachments = attachments.get();
  deps.bin = bin.get();
  deps.audit_log = audit_log.get();
  deps.access_audit = access_audit.get();
  deps.jobs = jobs.get();
  deps.authorizer = authorizer.get();
  deps.default_policy = daemon::DefaultDatasetPolicy(config);
  deps.audit_directory = config.audit_directory();
  deps.audit_public_key_pem = public_key;
  deps.audit_epoch_keys = kms::HsmEpochKeyProvider(hsm->row_authenticator());
  deps.version = kCofferdVersion;
  deps.durability = daemon::DurabilityOf(config) == storage::Durability::kSync ? "sync" : "wal";
  deps.data_socket = config.data_socket();
  deps.admin_socket = config.admin_socket();
  deps.admin_control = admin_control.get();
  deps.admin_registry = admin_registry.get();
  deps.canaries = canaries.get();
  deps.clock = clock;

  BackupOperationDeps backup_deps;
  backup_deps.backups = backups.get();
  backup_deps.sources.data_db = data_db.get();
  backup_deps.sources.key_manager = key_manager.get();
  backup_deps.sources.audit_log = audit_log.get();
  backup_deps.sources.audit_directory = config.audit_directory();
  backup_deps.sources.purge_journal = purge_journal.get();
  backup_deps.live_audit_directory = config.audit_directory();
  backup_deps.audit_public_key_pem = public_key;
  backup_deps.restore_key_manager.modules = {{kPrimaryModuleName, &hsm->wrapping_keys()}};
  backup_deps.restore_key_manager.default_module = kPrimaryModuleName;
  backup_deps.restore_key_manager.row_authenticator = &hsm->row_authenticator();
  backup_deps.restore_key_manager.signer = &hsm->signer();
  backup_deps.restore_key_manager.audit_log = audit_log.get();
  backup_deps.restore_key_manager.default_policy = daemon::DefaultDatasetPolicy(config);
  backup_deps.restore_key_manager.clock = clock;
  deps.extra_admin_ops = BackupOperations(std::move(backup_deps));
  daemon::AddEventOperations(event_log.get(), canaries.get(), deps.extra_admin_ops);

  kms::dataset_export::ExportServiceOptions export_options;
  export_options.keys = key_manager.get();
  export_options.data_db = data_db.get();
  export_options.signer = checkpoint_signer.get();
  export_options.audit_log = audit_log.get();
  export_options.registry = admin_registry.get();
  export_options.dual_control = config.mfa().required();
  export_options.clock = clock;
  COFFER_ASSIGN_OR_RETURN(exports,
                          kms::dataset_export::ExportService::Create(std::move(export_options)));
  deps.streaming_admin_ops[coffer::v1::Request::kDatasetExport] =
      [service = exports.get()](const coffer::v1::Request& request,
                                const kms::audit::AuditActor& actor, daemon::ResponseSink* sink) {
        return service->Serve(request, actor, sink);
      };
  COFFER_ASSIGN_OR_RETURN(services, daemon::Services::Create(std::move(deps)));

  server::ServerOptions options;
  options.data_socket.path = config.data_socket();
  options.admin_socket.path = config.admin_socket();
  COFFER_ASSIGN_OR_RETURN(options.data_socket.group,
                          GroupId("data_socket_group", config.data_socket_group()));
  COFFER_ASSIGN_OR_RETURN(options.admin_socket.group,
                          GroupId("admin_socket_group", config.admin_socket_group()));
  options.workers = config.limits().workers();
  options.max_connections = config.limits().max_connections();
  options.max_frame_bytes = config.limits().max_frame_bytes();
  options.idle_timeout = std::chrono::seconds(config.limits().idle_timeout_seconds());
  options.request_timeout = std::chrono::seconds(config.limits().request_timeout_seconds());
  options.default_drain_timeout = options.request_timeout;
  absl::StatusOr<std::unique_ptr<server::Server>> started =
      server::Server::Start(options, services.get());
  if (!started.ok()) return Context(started.status(), "sockets");
  server = *std::move(started);
  return absl::OkStatus();
}

absl::Status Daemon::Parts::Stop() {
  if (stopped) return absl::OkStatus();
  stopped = true;
  absl::Status first;
  auto note = [&first](const absl::Status& status, const std::string& what) {
    if (status.ok()) return;
    LogError("stop: " + what + ": " + DescribeStatus(status));
    if (first.ok()) first = Context(status, what);
  };
  if (server) {
    LogInfo("stop: draining requests in flight");
    server->Shutdown(std::chrono::seconds(config.limits().request_timeout_seconds()));
  }
  if (jobs) {
    LogInfo("stop: stopping background jobs");
    jobs->Stop();
  }
  if (access_audit) note(access_audit->Stop(), "access-audit writer");
  if (event_log) event_log->Shutdown();  // wakes long-polling readers and the hook thread
  if (hook_delivery) hook_delivery->Stop();
  if (event_source) {
    event_source->RunOnce().IgnoreError();  // events of the last moments, before the log closes
    event_source->Stop();
  }
  server.reset();
  services.reset();
  hook_delivery.reset();
  event_source.reset();
  canaries.reset();
  event_log.reset();
  exports.reset();
  authorizer.reset();
  jobs.reset();
  backups.reset();
  bin.reset();
  attachments.reset();
  records.reset();
  policies.reset();
  key_manager.reset();
  data_counter.reset();
  data_db.reset();
  access_audit.reset();
  purge_journal.reset();
  if (audit_log) {
    note(audit_log->Close(), "audit log close");
    if (first.ok()) LogInfo("stop: audit log closed with a closing checkpoint");
  }
  audit_log.reset();
  anchor_sink.reset();
  checkpoint_signer.reset();
  if (hsm) note(hsm->Close(), "HSM close");
  hsm.reset();
  return first;
}

Daemon::Daemon(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

Daemon::~Daemon() { Stop().IgnoreError(); }

const daemon::Config& Daemon::config() const { return parts_->config; }

absl::StatusOr<std::unique_ptr<Daemon>> Daemon::Start(const daemon::Config& config,
                                                      const DaemonOptions& options) {
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "DaemonOptions.clock is null");
  }
  auto parts = std::make_unique<Parts>();
  parts->config = config;
  parts->clock = options.clock;
  const daemon::Config& c = parts->config;

  // Paths first: nothing is opened on a directory that cannot be ours.
  COFFER_RETURN_IF_ERROR(kms::FullBackups::CheckRestoreComplete(c.state_directory()));
  for (const auto& [what, path] :
       std::vector<std::pair<std::string, std::string>>{{"data_directory", c.data_directory()},
                                                        {"key_db_directory", c.key_db_directory()},
                                                        {"audit_directory", c.audit_directory()},
                                                        {"backup_directory", c.backup_directory()},
                                                        {"admin_directory", c.admin_directory()}}) {
    bool tightened = false;
    COFFER_RETURN_IF_ERROR(PrepareStateDirectory(what, path, &tightened));
    if (tightened) {
      std::string message = what;
      message += " ";
      message += path;
      message += " was accessible to others; now mode 0700";
      LogWarning(message);
    }
  }

  // The event log's directory (docs/events.md), checked like the others.
  {
    bool tightened = false;
    COFFER_RETURN_IF_ERROR(
        PrepareStateDirectory("events_directory", c.events_directory(), &tightened));
    if (tightened) {
      LogWarning("events_directory " + c.events_directory() +
                 " was accessible to others; now mode 0700");
    }
  }

  absl::Status started = parts->OpenHsm();
  if (started.ok()) started = parts->OpenAudit();
  if (started.ok()) started = parts->OpenStores();
  if (started.ok()) started = parts->EnsureDatasets(options.ensure_datasets);
  if (started.ok()) started = parts->StartJobs();
  if (started.ok()) started = parts->StartEvents();
  if (started.ok()) started = parts->StartServing();
  if (!started.ok()) {
    // Whatever was opened closes cleanly: the audit log with its checkpoint, the HSM finalised.
    parts->Stop().IgnoreError();
    return started;
  }
  return std::unique_ptr<Daemon>(new Daemon(std::move(parts)));
}

absl::Status Daemon::ReloadGrants(const daemon::Config& config) {
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const daemon::GrantTable> table,
                          daemon::GrantTable::FromConfig(config));
  parts_->authorizer->Reload(std::move(table));
  daemon::Config before = parts_->config;
  daemon::Config after = config;
  for (daemon::Config* c : {&before, &after}) {
    c->clear_grants();
    c->clear_admins();
    c->clear_rate_limit();
  }
  if (!google::protobuf::util::MessageDifferencer::Equals(before, after)) {
    LogWarning(
        "reload: only grants, admins and rate limits are reloaded; other changed "
        "settings take effect at the next start");
  }
  parts_->config.mutable_grants()->CopyFrom(config.grants());
  parts_->config.mutable_admins()->CopyFrom(config.admins());
  parts_->config.mutable_rate_limit()->CopyFrom(config.rate_limit());
  return absl::OkStatus();
}

absl::Status Daemon::Stop() { return parts_->Stop(); }

}  // namespace coffer::cofferd
