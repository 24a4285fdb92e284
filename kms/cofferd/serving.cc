// Daemon::Parts: the notifications (event log, source, hook), the admin control, the exports and
// the sockets (operations, transport). The background jobs start in scheduled_jobs.cc.

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/secret_bytes.h"
#include "kms/cofferd/daemon.h"
#include "kms/cofferd/internal/daemon_parts.h"

namespace coffer::cofferd {

namespace fs = std::filesystem;
using internal::Context;

namespace {

// The gid of group `name` (config field `field`); nullopt for an empty name.
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

// Replaces `directory`/`name` with `content` (mode `mode`) atomically, never through a symlink:
// a temporary file created O_CREAT|O_EXCL|O_NOFOLLOW in `directory` (a stale one from a crash is
// unlinked first: unlink removes a symlink itself), synced, then renamed over `name` (rename
// replaces a symlink there rather than following it).
absl::Status PublishFile(const std::string& directory, const std::string& name,
                         const std::string& content, mode_t mode) {
  const std::string path = (fs::path(directory) / name).string();
  const std::string temp = path + ".tmp";
  auto failed = [](const std::string& what, const std::string& file) {
    return MakeError(ErrorCode::kIoError, what + " " + file + ": " + std::strerror(errno));
  };
  if (unlink(temp.c_str()) != 0 && errno != ENOENT) return failed("cannot remove", temp);
  const int fd = open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return failed("cannot create", temp);
  size_t done = 0;
  absl::Status result;
  while (result.ok() && done < content.size()) {
    const ssize_t n = write(fd, content.data() + done, content.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) result = failed("cannot write", temp);
    if (n > 0) done += static_cast<size_t>(n);
  }
  if (result.ok() && fchmod(fd, mode) != 0) result = failed("cannot chmod", temp);
  if (result.ok() && fsync(fd) != 0) result = failed("cannot sync", temp);
  if (close(fd) != 0 && result.ok()) result = failed("cannot close", temp);
  if (result.ok() && rename(temp.c_str(), path.c_str()) != 0)
    result = failed("cannot rename", temp);
  if (!result.ok()) unlink(temp.c_str());
  return result;
}

// What the event source needs to know of each dataset (names, and when a pending destruction
// is due).
std::vector<events::DatasetView> DatasetViews(kms::KeyManager* manager) {
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
}

// The thread handing events to coffer-hook-runner.
std::unique_ptr<events::HookDelivery> StartHookDelivery(events::EventLog* log,
                                                        const daemon::v1::Notifications& n) {
  events::HookDeliveryOptions hook_options;
  hook_options.log = log;
  hook_options.socket_path = n.hook_socket();
  hook_options.timeout = std::chrono::seconds(n.hook_timeout_seconds());
  hook_options.attempts = n.hook_attempts();
  hook_options.log_info = [](const std::string& text) { LogInfo(text); };
  hook_options.log_warning = [](const std::string& text) { LogWarning(text); };
  auto delivery = std::make_unique<events::HookDelivery>(std::move(hook_options));
  delivery->Start();
  return delivery;
}

// The transport's options, from the config's sockets and limits.
absl::StatusOr<server::ServerOptions> TransportOptions(const daemon::Config& config) {
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
  options.admin_reserved_connections = config.limits().admin_reserved_connections();
  options.admin_reserved_workers = config.limits().admin_reserved_workers();
  options.max_connections_per_uid = config.limits().max_connections_per_uid();
  options.max_requests_per_uid = config.limits().max_requests_per_uid();
  options.max_buffered_bytes_per_uid = config.limits().max_buffered_bytes_per_uid();
  options.max_buffered_bytes = config.limits().max_buffered_bytes();
  options.max_output_bytes_per_connection = config.limits().max_output_bytes_per_connection();
  options.max_refusals_in_a_row = config.limits().max_refusals_in_a_row();
  options.run_inline = !config.limits().workers_only();
  return options;
}

// Descriptors cofferd keeps for itself beyond its connections: the data and key databases'
// files (a flush or compaction opens new ones), the HSM module (SoftHSM2 opens a file for each
// object it touches), audit segments, the event log, backups, hooks, a connection accepted only
// to be told SERVER_BUSY.
constexpr rlim_t kReservedDescriptors = 128;

// Raises the soft descriptor limit to the hard one and lowers the transport's connection limits
// until its connections can never take the descriptors the daemon itself needs: a process out of
// descriptors fails its own writes, and SoftHSM2 loses the token's objects for the rest of the
// process (every key operation then fails until a restart). A limit too low to serve at all
// refuses to start.
absl::Status FitConnectionsToDescriptors(server::ServerOptions* options) {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return absl::OkStatus();
  if (limit.rlim_cur < limit.rlim_max) {
    rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  if (limit.rlim_cur == RLIM_INFINITY) return absl::OkStatus();
  rlim_t open = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/self/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
    ++open;
  }
  constexpr size_t kFewest = 4;
  const rlim_t needed = open + kReservedDescriptors;
  const size_t budget = limit.rlim_cur > needed ? static_cast<size_t>(limit.rlim_cur - needed) : 0;
  if (budget < kFewest) {
    return MakeError(ErrorCode::kConfigInvalid,
                     "the open-file limit (RLIMIT_NOFILE " + std::to_string(limit.rlim_cur) +
                         ") leaves no room for connections: cofferd holds " + std::to_string(open) +
                         " descriptors and keeps " + std::to_string(kReservedDescriptors) +
                         " for itself; raise LimitNOFILE (systemd) or ulimit -n");
  }
  if (options->max_connections <= budget) return absl::OkStatus();
  LogWarning("limits.max_connections " + std::to_string(options->max_connections) + " lowered to " +
             std::to_string(budget) + ": the open-file limit (RLIMIT_NOFILE " +
             std::to_string(limit.rlim_cur) + ") must also cover " + std::to_string(open) +
             " open descriptors and " + std::to_string(kReservedDescriptors) +
             " kept for the databases, the HSM and the audit log; raise LimitNOFILE");
  options->max_connections = budget;
  options->admin_reserved_connections =
      std::min(options->admin_reserved_connections, std::max<size_t>(1, budget / 4));
  options->max_connections_per_uid = std::min(options->max_connections_per_uid, budget);
  return absl::OkStatus();
}

// Whether the disks cofferd writes have limits.min_free_bytes free (docs/daemon.md, "Disk
// space"). A full disk must never be met by a write: RocksDB 7.8 aborts the process on a write
// after a failed WAL write (an assertion in WritableFileWriter, fixed upstream in RocksDB 9), and
// the audit log refuses appends after a failed write until it is reopened. While there is room
// the disks are looked at every kRecheck at most; while there is not, at every request, so
// writes resume with the first request after space returns.
class DiskGuard {
 public:
  DiskGuard(std::vector<std::string> directories, uint64_t min_free)
      : directories_(std::move(directories)), min_free_(min_free) {}

  absl::Status Room() {
    const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now().time_since_epoch())
                            .count();
    if (!low_.load(std::memory_order_relaxed) &&
        now < next_check_.load(std::memory_order_relaxed)) {
      return absl::OkStatus();
    }
    std::lock_guard<std::mutex> lock(mu_);
    uint64_t least = UINT64_MAX;
    std::string where;
    for (const std::string& directory : directories_) {
      struct statvfs fs {};
      if (statvfs(directory.c_str(), &fs) != 0) continue;
      const uint64_t free_bytes = static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize;
      if (free_bytes < least) {
        least = free_bytes;
        where = directory;
      }
    }
    const bool low = least < min_free_;
    next_check_.store(now + std::chrono::nanoseconds(kRecheck).count());
    if (low != low_.exchange(low)) {
      if (low) {
        LogWarning("disk: " + where + " has " + std::to_string(least >> 20) +
                   " MiB free, below limits.min_free_bytes (" + std::to_string(min_free_ >> 20) +
                   " MiB): requests that change state are refused until space returns");
      } else {
        LogInfo("disk: space returned (" + std::to_string(least >> 20) +
                " MiB free at the fullest disk): requests that change state are served again");
      }
    }
    if (!low) return absl::OkStatus();
    return MakeError(ErrorCode::kResourceExhausted,
                     "the disk holding cofferd's " + where + " has " + std::to_string(least >> 20) +
                         " MiB free, below limits.min_free_bytes (" +
                         std::to_string(min_free_ >> 20) +
                         " MiB): writes are refused until space returns; reads are served");
  }

 private:
  static constexpr std::chrono::milliseconds kRecheck{50};
  const std::vector<std::string> directories_;
  const uint64_t min_free_;
  std::mutex mu_;
  std::atomic<bool> low_{false};
  std::atomic<int64_t> next_check_{0};
};

// The access anomaly rules as configured (kms/config/config.proto AccessAnomalies).
daemon::AccessAnomalyOptions AnomalyOptions(const daemon::v1::AccessAnomalies& a) {
  daemon::AccessAnomalyOptions options;
  options.first_read = a.first_read();
  options.recent_half_life = std::chrono::seconds(a.recent_half_life_seconds());
  options.baseline_half_life = std::chrono::seconds(a.baseline_half_life_seconds());
  options.warm_up = std::chrono::seconds(a.warm_up_seconds());
  options.rate_factor = a.rate_factor();
  options.min_reads_per_second = a.min_reads_per_second();
  options.locked_reads = a.locked_reads();
  options.cooldown = std::chrono::seconds(a.cooldown_seconds());
  options.max_pairs = a.max_pairs();
  return options;
}

// For status: the HSM token's connection.
std::function<void(::coffer::v1::HsmStatus*)> HsmStatusHook(hsm::HsmClient* hsm) {
  return [hsm](::coffer::v1::HsmStatus* out) {
    const hsm::TokenHealth health = hsm->token().health();
    out->set_connected(health.connected);
    out->set_module(hsm->token().module_description());
    out->set_reconnects(health.reconnects);
    out->set_reinitializations(health.reinitializations);
    out->set_failed_reconnects(health.failed_reconnects);
    out->set_last_error(health.last_error);
  };
}

// The disk guard over every directory cofferd writes; empty when limits.min_free_bytes is 0.
std::function<absl::Status()> DiskRoomHook(const daemon::Config& config) {
  if (config.limits().min_free_bytes() == 0) return {};
  auto guard = std::make_shared<DiskGuard>(
      std::vector<std::string>{config.state_directory(), config.key_db_directory(),
                               config.data_directory(), config.audit_directory(),
                               config.events_directory(), config.admin_directory()},
      config.limits().min_free_bytes());
  return [guard] { return guard->Room(); };
}

}  // namespace

// Notifications and canaries (docs/events.md): the event log, the canary registry, the event
// source deriving events from the audit log, and the thread delivering events to the hook runner.
absl::Status Daemon::Parts::StartEvents() {
  events::EventLogOptions log_options;
  log_options.directory = config.events_directory();
  log_options.clock = clock;
  // The event log's values are sealed under a key derived in the token from its row key (the
  // label is part of the stored format): a thief of the events directory learns no dataset
  // name or canary.
  absl::StatusOr<crypto::SecretBytes> value_key =
      kms::DeriveTokenKey(hsm->row_authenticator(), "coffer-event-log-value-key-v2");
  if (!value_key.ok()) return Context(value_key.status(), "deriving the event log's key");
  log_options.value_key = &*value_key;
  absl::StatusOr<std::unique_ptr<events::EventLog>> opened = events::EventLog::Open(log_options);
  if (!opened.ok()) {
    return Context(opened.status(), "events directory " + config.events_directory());
  }
  event_log = *std::move(opened);
  COFFER_RETURN_IF_ERROR(damaged_events->Attach(event_log.get()));

  anomalies = std::make_unique<daemon::AccessAnomalies>(
      AnomalyOptions(config.anomalies()), event_log.get(), clock,
      [](const std::string& message) { LogWarning(message); });

  daemon::CanaryDeps canary_deps;
  canary_deps.log = event_log.get();
  canary_deps.keys = key_manager;
  canary_deps.records = records;
  canary_deps.attachments = attachments;
  canary_deps.bin = bin;
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
  kms::KeyManager* manager = key_manager;
  source_options.datasets = [manager] { return DatasetViews(manager); };
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
  // A change of the token's connection is checked at once, not at the next scheduled check.
  events::EventSource* source = event_source.get();
  hsm->token().SetHealthObserver([source] { source->CheckHsmSoon(); });

  // The hook itself runs in coffer-hook-runner, under a user of its own: cofferd only hands
  // the events over (a hook started here would share cofferd's uid and environment, and so
  // reach the HSM PIN).
  if (!n.hook_socket().empty()) hook_delivery = StartHookDelivery(event_log.get(), n);
  return absl::OkStatus();
}

// The admin registry (enrolled admins and their TOTP secrets) and the MFA and dual-control
// rules over it.
absl::Status Daemon::Parts::OpenAdminControl() {
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
  // Grant changes are checked and described by the run-time grants, opened just after this.
  control_options.grant_change =
      [this](const coffer::v1::Request& request) -> absl::StatusOr<std::string> {
    if (grants == nullptr) return MakeError(ErrorCode::kUnavailable, "grants are not open yet");
    return grants->DescribeChange(request);
  };
  COFFER_ASSIGN_OR_RETURN(admin_control, daemon::AdminControl::Create(std::move(control_options)));
  if (!config.mfa().required()) {
    LogWarning(
        "mfa.required is false: development mode, admin operations need no TOTP code and no "
        "second admin");
  }
  return absl::OkStatus();
}

// What the backup operations (create, list, verify, restore) reach.
BackupOperationDeps Daemon::Parts::BackupDeps(const std::string& audit_public_key_pem) {
  BackupOperationDeps backup_deps;
  backup_deps.backups = backups.get();
  backup_deps.sources.data_db = data_db.get();
  backup_deps.sources.key_manager = key_manager;
  backup_deps.sources.audit_log = audit_log.get();
  backup_deps.sources.audit_directory = config.audit_directory();
  backup_deps.sources.purge_journal = purge_journal.get();
  backup_deps.live_audit_directory = config.audit_directory();
  backup_deps.audit_anchor_file = config.audit_anchor_file();
  backup_deps.audit_public_key_pem = audit_public_key_pem;
  backup_deps.restore_key_manager = KeyManagerBase();
  return backup_deps;
}

absl::Status Daemon::Parts::OpenExports() {
  kms::dataset_export::ExportServiceOptions export_options;
  export_options.keys = key_manager;
  export_options.data_db = data_db.get();
  export_options.signer = checkpoint_signer.get();
  export_options.audit_log = audit_log.get();
  export_options.registry = admin_registry.get();
  export_options.dual_control = config.mfa().required();
  export_options.clock = clock;
  export_options.damaged_events = damaged_events.get();
  COFFER_ASSIGN_OR_RETURN(exports,
                          kms::dataset_export::ExportService::Create(std::move(export_options)));
  return absl::OkStatus();
}

absl::Status Daemon::Parts::StartMetrics(daemon::ServicesDeps& deps) {
  MetricsSources sources;
  sources.transport = [this] {
    server::Server* live = live_server.load();
    return live != nullptr ? live->Stats() : server::ServerStats{};
  };
  sources.key_cache = [keys = key_manager] { return keys->cache_stats(); };
  sources.hsm = [client = hsm.get()] { return client->token().health(); };
  sources.audit_log = [log = audit_log.get()] { return log->stats(); };
  sources.jobs = [registry = jobs.get()] { return registry->AllStatus(); };
  metrics.SetSources(std::move(sources));
  deps.request_observer = &metrics;
  deps.extra_admin_ops[coffer::v1::Request::kMetrics] =
      [this](const coffer::v1::Request&, const kms::audit::AuditActor&, const coffer::ProgressFn&,
             coffer::v1::Response* response) {
        response->mutable_metrics()->set_text(metrics.Text());
        return absl::OkStatus();
      };
  if (config.metrics_listen().empty()) return absl::OkStatus();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint =
      MetricsEndpoint::Start(config.metrics_listen(), metrics);
  if (!endpoint.ok()) return Context(endpoint.status(), "metrics endpoint");
  metrics_endpoint = *std::move(endpoint);
  deps.metrics_endpoint = metrics_endpoint->endpoint();
  LogInfo("metrics: Prometheus endpoint on http://" + deps.metrics_endpoint + "/metrics");
  return absl::OkStatus();
}

absl::Status Daemon::Parts::StartServing() {
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const daemon::GrantTable> table,
                          daemon::GrantTable::FromConfig(config));
  authorizer = std::make_unique<daemon::Authorizer>(std::move(table));

  COFFER_ASSIGN_OR_RETURN(std::string public_key, hsm->signer().PublicKeyPem());
  // Published for offline audit verification (keyctl audit verify --offline): the public half
  // only, so readable by all. Written without following a symlink (a temporary file created
  // O_EXCL|O_NOFOLLOW, then renamed over the old one).
  {
    absl::Status published =
        PublishFile(config.state_directory(), "audit-public-key.pem", public_key, 0644);
    if (!published.ok()) {
      LogWarning("could not write the audit public key: " + DescribeStatus(published));
    }
  }

  COFFER_RETURN_IF_ERROR(OpenAdminControl());
  daemon::RuntimeGrantsDeps grant_deps;
  grant_deps.keys = key_manager;
  grant_deps.authorizer = authorizer.get();
  grant_deps.registry = admin_registry.get();
  grant_deps.audit_log = audit_log.get();
  absl::StatusOr<std::unique_ptr<daemon::RuntimeGrants>> opened_grants =
      daemon::RuntimeGrants::Create(std::move(grant_deps));
  if (!opened_grants.ok()) return Context(opened_grants.status(), "stored grants");
  grants = *std::move(opened_grants);

  daemon::ServicesDeps deps;
  deps.keys = key_manager;
  deps.data_db = data_db.get();
  deps.records = records;
  deps.attachments = attachments;
  deps.bin = bin;
  deps.audit_log = audit_log.get();
  deps.access_audit = access_audit.get();
  deps.jobs = jobs.get();
  deps.authorizer = authorizer.get();
  deps.default_policy = daemon::DefaultDatasetPolicy(config);
  deps.audit_directory = config.audit_directory();
  deps.audit_public_key_pem = public_key;
  deps.audit_epoch_keys = kms::HsmEpochKeyProvider(hsm->row_authenticator());
  deps.transport_stats = [this] {
    server::Server* live = live_server.load();
    return live != nullptr ? live->Stats() : server::ServerStats{};
  };
  deps.hsm_status = HsmStatusHook(hsm.get());
  deps.disk_room = DiskRoomHook(config);
  deps.version = kCofferdVersion;
  deps.durability = daemon::DurabilityOf(config) == storage::Durability::kSync ? "sync" : "wal";
  deps.data_socket = config.data_socket();
  deps.admin_socket = config.admin_socket();
  deps.admin_control = admin_control.get();
  deps.admin_registry = admin_registry.get();
  deps.purge_journal = purge_journal.get();
  deps.canaries = canaries.get();
  deps.anomalies = anomalies.get();
  deps.max_frame_bytes = config.limits().max_frame_bytes();
  deps.damaged_events = damaged_events.get();
  deps.grants = grants.get();
  deps.clock = clock;

  deps.extra_admin_ops = BackupOperations(BackupDeps(public_key));
  daemon::AddEventOperations(event_log.get(), canaries.get(), audit_log.get(),
                             deps.extra_admin_ops);

  COFFER_RETURN_IF_ERROR(OpenExports());
  COFFER_RETURN_IF_ERROR(StartMetrics(deps));
  deps.streaming_admin_ops[coffer::v1::Request::kDatasetExport] =
      [service = exports.get()](const coffer::v1::Request& request,
                                const kms::audit::AuditActor& actor, daemon::ResponseSink* sink) {
        return service->Serve(request, actor, sink);
      };
  COFFER_ASSIGN_OR_RETURN(services, daemon::Services::Create(std::move(deps)));

  COFFER_ASSIGN_OR_RETURN(server::ServerOptions options, TransportOptions(config));
  COFFER_RETURN_IF_ERROR(FitConnectionsToDescriptors(&options));
  absl::StatusOr<std::unique_ptr<server::Server>> started =
      server::Server::Start(options, services.get());
  if (!started.ok()) return Context(started.status(), "sockets");
  server = *std::move(started);
  live_server.store(server.get());
  return absl::OkStatus();
}

}  // namespace coffer::cofferd
