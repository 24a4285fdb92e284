#include "kms/cofferd/daemon.h"

#include "kms/audit/anchor_check.h"
#include "kms/cofferd/internal/daemon_parts.h"

namespace coffer::cofferd {

namespace fs = std::filesystem;
using coffer::v1::JobKind;

namespace internal {

// Prefixes a failure with what was being done, keeping its code.
absl::Status Context(const absl::Status& status, const std::string& what) {
  if (status.ok()) return status;
  return MakeError(ErrorCodeOf(status), what + ": " + std::string(status.message()));
}

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

}  // namespace internal

namespace {

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

using internal::CompleteDestructionsAndLog;
using internal::Context;
using internal::InternalActor;

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
  options.key_db_generation = [this] { return KeyDbGeneration(); };
  if (!config.audit_anchor_file().empty()) {
    absl::StatusOr<std::optional<kms::audit::CheckpointAnchor>> newest =
        kms::audit::ReadNewestAnchor(config.audit_anchor_file());
    if (!newest.ok()) {
      return Context(newest.status(), "audit_anchor_file (create it empty on a new installation)");
    }
    options.minimum_anchor = *newest;
    LogInfo(options.minimum_anchor.has_value()
                ? "audit: the log must reach the newest anchor in " + config.audit_anchor_file() +
                      ", sequence " + std::to_string(options.minimum_anchor->sequence)
                : "audit: no anchor in " + config.audit_anchor_file() + " yet");
  }
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
  writer_options.on_batch_written = [this](size_t events,
                                           std::chrono::steady_clock::duration took) {
    metrics.AuditBatchWritten(events, took);
  };
  COFFER_ASSIGN_OR_RETURN(access_audit,
                          kms::audit::BatchingAuditWriter::Start(audit_log.get(), writer_options));
  LogInfo(
      "audit: access events through the batching writer, crash-loss window " +
      std::to_string(writer_options.crash_loss_window.count()) + " ms" +
      (writer_options.crash_loss_window.count() == 0 ? " (replies wait for the audit write)" : ""));
  purge_journal = std::make_unique<kms::AuditPurgeJournal>(audit_log.get(), InternalActor());
  return absl::OkStatus();
}

kms::KeyManagerOptions Daemon::Parts::KeyManagerBase() const {
  kms::KeyManagerOptions options;
  options.modules = {{kPrimaryModuleName, &hsm->wrapping_keys()}};
  options.default_module = kPrimaryModuleName;
  options.row_authenticator = &hsm->row_authenticator();
  options.signer = &hsm->signer();
  options.audit_log = audit_log.get();
  options.default_policy = daemon::DefaultDatasetPolicy(config);
  options.clock = clock;
  return options;
}

absl::Status Daemon::Parts::RestoreFromBackup(uint32_t id, const std::string& backup_root) {
  // A new machine's state only: nothing here replaces a key DB or a data DB.
  for (const auto& [what, path] : std::vector<std::pair<std::string, std::string>>{
           {"data_directory", config.data_directory()},
           {"key_db_directory", config.key_db_directory()}}) {
    std::error_code error;
    if (!fs::is_empty(path, error) || error) {
      return MakeError(ErrorCode::kRestoreTargetNotEmpty,
                       what + " " + path +
                           " is not empty: --restore-backup brings up a new machine's state "
                           "and never replaces a key DB or data DB (move it away first)");
    }
  }
  kms::FullBackupOptions backup_options;
  backup_options.directory = backup_root.empty() ? config.backup_directory() : backup_root;
  backup_options.clock = clock;
  backup_options.token = &hsm->row_authenticator();
  absl::StatusOr<std::unique_ptr<kms::FullBackups>> from = kms::FullBackups::Open(backup_options);
  if (!from.ok()) return Context(from.status(), "backup directory " + backup_options.directory);

  kms::RestoreRequest request;
  request.target_directory = config.state_directory() + "/restore-" + std::to_string(id);
  request.live_audit_directory = config.audit_directory();
  COFFER_ASSIGN_OR_RETURN(request.audit_public_key_pem, hsm->signer().PublicKeyPem());
  COFFER_ASSIGN_OR_RETURN(request.minimum_anchor,
                          kms::audit::ReadNewestAnchor(config.audit_anchor_file()));
  request.key_manager = KeyManagerBase();
  request.actor = InternalActor();
  LogInfo("restore: backup " + std::to_string(id) + " from " + backup_options.directory +
          ", replaying the audit log in " + config.audit_directory());
  absl::StatusOr<kms::RestoreReport> report = (*from)->RestoreInto(id, request, nullptr);
  if (!report.ok()) {
    return Context(report.status(),
                   "restore of backup " + std::to_string(id) + " into " + request.target_directory);
  }
  // The restored parts into place: the (empty) directories made at start-up give way.
  for (const auto& [restored, into] : std::vector<std::pair<std::string, std::string>>{
           {request.target_directory + "/" + kms::kRestoredDataDir, config.data_directory()},
           {request.target_directory + "/" + kms::kRestoredKeyDbDir, config.key_db_directory()}}) {
    std::error_code error;
    fs::remove(into, error);
    if (!error) fs::rename(restored, into, error);
    if (error) {
      return MakeError(ErrorCode::kIoError, "restore: cannot move " + restored + " to " + into +
                                                " (" + error.message() +
                                                "); move it there by hand and start cofferd");
    }
  }
  coffer::v1::BackupRestoreResponse wire;
  RestoreReportToWire(*report, &wire);
  if (wire.grants_added_since() + wire.grants_removed_since() > 0) {
    LogWarning("restore: " + std::to_string(wire.grants_added_since()) + " grants added and " +
               std::to_string(wire.grants_removed_since()) +
               " removed at run time after the backup are NOT replayed: the restored grants are "
               "the backup's; check keyctl grant list and redo them");
  }
  LogInfo("restore: backup " + std::to_string(id) + " restored (its audit copy stays in " +
          request.target_directory + "/" + kms::kRestoredAuditDir +
          " as evidence); replayed after sequence " + std::to_string(wire.audit_sequence()) + ": " +
          wire.ShortDebugString());
  return absl::OkStatus();
}

absl::Status Daemon::Parts::OpenStores() {
  storage::DataDbOptions data_options;
  data_options.durability = daemon::DurabilityOf(config);
  data_options.max_value_bytes = config.limits().max_value_bytes();
  data_options.block_cache_bytes = config.storage().block_cache_bytes();
  absl::StatusOr<std::unique_ptr<storage::DataDb>> db =
      storage::DataDb::Open(config.data_directory(), data_options);
  if (!db.ok()) return Context(db.status(), "data DB in " + config.data_directory());
  data_db = *std::move(db);

  COFFER_RETURN_IF_ERROR(kms::FullBackups::CheckNotASealedCopy(config.key_db_directory()));
  kms::KeyManagerOptions options = KeyManagerBase();
  options.key_db_directory = config.key_db_directory();
  // A key DB older than the log says is refused before anything writes to it (rolled back:
  // docs/threat-model.md, "Root who rolls files back").
  options.minimum_key_db_generation = audit_log->recorded_key_db_generation();
  const std::optional<uint64_t> minimum_generation = options.minimum_key_db_generation;
  kms::StoreGraphOptions graph_options;
  graph_options.data_db = data_db.get();
  graph_options.keys = std::move(options);
  graph_options.purge_journal = purge_journal.get();
  absl::StatusOr<std::unique_ptr<kms::StoreGraph>> graph =
      kms::StoreGraph::Open(std::move(graph_options));
  if (!graph.ok()) {
    if (ErrorCodeOf(graph.status()) == ErrorCode::kKeyDbRolledBack) {
      return graph.status();  // its message names the directory and what to do
    }
    return Context(graph.status(),
                   "key DB in " + config.key_db_directory() +
                       " (it must be the key DB made with this token; see docs/key-manager.md)");
  }
  store_graph = *std::move(graph);
  key_manager = &store_graph->key_manager();
  records = &store_graph->records();
  attachments = &store_graph->attachments();
  bin = &store_graph->bin();
  {
    std::lock_guard<std::mutex> lock(generation_mu);
    generation_source = key_manager;
  }
  LogInfo("key manager: key DB at generation " + std::to_string(key_manager->key_db_generation()) +
          (minimum_generation.has_value()
               ? " (the audit log recorded " + std::to_string(*minimum_generation) + ")"
               : " (the audit log recorded none yet)"));
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

  kms::FullBackupOptions backup_options;
  backup_options.directory = config.backup_directory();
  backup_options.max_age = std::chrono::hours(24) * config.jobs().backup_max_age_days();
  backup_options.clock = clock;
  backup_options.token = &hsm->row_authenticator();
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

absl::Status Daemon::Parts::Stop() {
  if (stopped) return absl::OkStatus();
  stopped = true;
  absl::Status first;
  auto note = [&first](const absl::Status& status, const std::string& what) {
    if (status.ok()) return;
    LogError("stop: " + what + ": " + DescribeStatus(status));
    if (first.ok()) first = Context(status, what);
  };
  metrics_endpoint.reset();  // its scrapes read the parts closed below
  if (server) {
    LogInfo("stop: draining requests in flight");
    server->Shutdown(std::chrono::seconds(config.limits().request_timeout_seconds()));
  }
  if (jobs) {
    LogInfo("stop: stopping background jobs");
    jobs->Stop();
  }
  if (services) {
    // Accesses served while the audit log was failing (SERVE_AND_COUNT) and not yet written.
    const uint64_t counted = services->unaudited_pending();
    absl::Status written = services->FlushUnaudited();
    if (!written.ok()) {
      LogError(
          "stop: " + std::to_string(counted) +
          " data accesses served while the audit log was failing could not be written to it: " +
          DescribeStatus(written));
    }
  }
  if (access_audit) note(access_audit->Stop(), "access-audit writer");
  if (event_log) event_log->Shutdown();  // wakes long-polling readers and the hook thread
  if (hook_delivery) hook_delivery->Stop();
  if (event_source) {
    if (hsm) hsm->token().SetHealthObserver(nullptr);  // it wakes the event source
    event_source->RunOnce().IgnoreError();  // events of the last moments, before the log closes
    event_source->Stop();
  }
  live_server.store(nullptr);  // no worker runs any more: Shutdown joined them
  server.reset();
  services.reset();
  hook_delivery.reset();
  event_source.reset();
  canaries.reset();
  anomalies.reset();
  if (damaged_events) damaged_events->Attach(nullptr).IgnoreError();
  event_log.reset();
  exports.reset();
  grants.reset();
  authorizer.reset();
  jobs.reset();
  backups.reset();
  {
    // Nothing writes the key DB any more (server and jobs stopped): its final generation goes
    // into the log's closing checkpoint.
    std::lock_guard<std::mutex> lock(generation_mu);
    if (generation_source != nullptr) closed_generation = generation_source->key_db_generation();
    generation_source = nullptr;
  }
  key_manager = nullptr;
  records = nullptr;
  attachments = nullptr;
  bin = nullptr;
  store_graph.reset();
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

uint64_t Daemon::Parts::KeyDbGeneration() {
  std::lock_guard<std::mutex> lock(generation_mu);
  return generation_source == nullptr ? closed_generation : generation_source->key_db_generation();
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
  COFFER_RETURN_IF_ERROR(CheckStateDirectory(c.state_directory()));
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
  if (started.ok() && options.restore_backup.has_value()) {
    started = parts->RestoreFromBackup(*options.restore_backup, options.restore_backup_root);
  }
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
  parts_->authorizer->Reload(std::move(table));  // the stored grants stay
  if (parts_->grants != nullptr) {
    // Their user and group names resolved again, as the configuration's were.
    absl::Status refreshed = parts_->grants->Refresh();
    if (!refreshed.ok()) {
      LogWarning("reload: the stored grants were kept as they were: " + DescribeStatus(refreshed));
    }
  }
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
