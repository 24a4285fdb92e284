#include "kms/cofferd/cofferd_main.h"

#include <google/protobuf/stubs/logging.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/secret_bytes.h"
#include "kms/cofferd/daemon.h"
#include "kms/cofferd/log.h"
#include "kms/cofferd/process.h"
#include "kms/config/config.h"

namespace coffer::cofferd {
namespace {

struct Flags {
  std::string config_file;
  std::string state_directory;
  std::string data_socket;
  std::string admin_socket;
  std::string durability;
  std::string hsm_module;
  std::string token_label;
  std::string pin_file;
  int64_t crash_loss_window_ms = -1;  // -1: keep the file's
  std::string user;
  std::string log_level = "info";
  std::vector<std::string> ensure_datasets;
  std::optional<uint32_t> restore_backup;
  std::string backup_root;
};

// The configuration file (or none), parsed once, with the flags applied over it, finished once
// (defaults, paths resolved against the state directory, validated). Read again on SIGHUP.
absl::StatusOr<daemon::Config> LoadConfig(const Flags& flags) {
  daemon::Config raw;
  if (!flags.config_file.empty()) {
    std::ifstream in(flags.config_file);
    if (!in) {
      return MakeError(ErrorCode::kConfigInvalid,
                       "--config " + flags.config_file +
                           " cannot be read by cofferd's user; check its path and permissions");
    }
    std::stringstream text;
    text << in.rdbuf();
    COFFER_ASSIGN_OR_RETURN(raw, daemon::ParseConfigText(text.str(), flags.config_file));
  }
  daemon::ConfigOverrides overrides;
  overrides.state_directory = flags.state_directory;
  overrides.data_socket = flags.data_socket;
  overrides.admin_socket = flags.admin_socket;
  overrides.hsm_module_path = flags.hsm_module;
  overrides.hsm_token_label = flags.token_label;
  overrides.hsm_pin_file = flags.pin_file;
  if (flags.crash_loss_window_ms >= 0) {
    overrides.crash_loss_window_millis = static_cast<uint32_t>(flags.crash_loss_window_ms);
  }
  if (flags.durability == "wal") overrides.durability = daemon::Config::WAL;
  if (flags.durability == "sync") overrides.durability = daemon::Config::SYNC;
  daemon::ApplyOverrides(overrides, raw);
  return daemon::FinishConfig(std::move(raw));
}

std::string Describe(const daemon::Config& config) {
  return "state " + config.state_directory() + ", durability " +
         (daemon::DurabilityOf(config) == storage::Durability::kSync ? "sync" : "wal") +
         ", access-audit crash-loss window " +
         std::to_string(daemon::CrashLossWindow(config).count()) + " ms";
}

// libprotobuf's own warnings (e.g. a field that failed UTF-8 validation; they name fields,
// never values) in cofferd's log format rather than its own.
void ProtobufLog(google::protobuf::LogLevel level, const char* /*filename*/, int /*line*/,
                 const std::string& message) {
  Log(level >= google::protobuf::LOGLEVEL_ERROR ? LogLevel::kError : LogLevel::kWarning,
      "protobuf: " + message);
}

// Core dumps off, the secure heap set up (before dropping root, so that its pages can be locked
// even under a small RLIMIT_MEMLOCK), then the configured user. False after logging a failure.
bool HardenProcess(const std::string& user, bool* locked) {
  absl::Status status = DisableCoreDumps();
  if (!status.ok()) {
    LogError("cannot disable core dumps: " + DescribeStatus(status));
    return false;
  }
  status = crypto::InitializeSecureHeap(kSecureHeapBytes, locked);
  if (!status.ok()) {
    LogError("cannot set up the secure heap: " + DescribeStatus(status));
    return false;
  }
  status = DropPrivileges(user);
  if (!status.ok()) {
    LogError(std::string(status.message()));
    return false;
  }
  // Changing credentials resets the dumpable flag; set it again as the final identity.
  status = DisableCoreDumps();
  if (!status.ok()) {
    LogError("cannot disable core dumps: " + DescribeStatus(status));
    return false;
  }
  return true;
}

// Serves until SIGTERM or SIGINT (SIGHUP reloads grants); the exit code.
int ServeUntilStopped(const Flags& flags, SignalWaiter& signals, Daemon& daemon) {
  for (;;) {
    std::optional<DaemonSignal> signal = signals.Wait(std::chrono::seconds(60));
    if (!signal) continue;
    if (*signal == DaemonSignal::kReload) {
      LogInfo("SIGHUP: reloading grants from " +
              (flags.config_file.empty() ? std::string("the flags") : flags.config_file));
      absl::StatusOr<daemon::Config> reloaded = LoadConfig(flags);
      absl::Status applied = reloaded.ok() ? daemon.ReloadGrants(*reloaded) : reloaded.status();
      if (applied.ok()) {
        LogInfo("SIGHUP: grants, admins and rate limits reloaded");
      } else {
        LogError("SIGHUP: kept the previous grants: " + DescribeStatus(applied));
      }
      continue;
    }
    absl::Status stopped = daemon.Stop();
    if (!stopped.ok()) {
      LogError("stopped with an error: " + DescribeStatus(stopped));
      return 1;
    }
    LogInfo("stopped cleanly");
    return 0;
  }
}

int Run(const Flags& flags, const Clock& clock) {
  google::protobuf::SetLogHandler(&ProtobufLog);
  // Signals first, before any thread exists, so that every thread inherits the mask.
  absl::StatusOr<SignalWaiter> signals = SignalWaiter::Create();
  if (!signals.ok()) {
    LogError("cannot set up signal handling: " + DescribeStatus(signals.status()));
    return 1;
  }
  bool locked = false;
  if (!HardenProcess(flags.user, &locked)) return 1;
  umask(077);
  LogInfo(std::string("cofferd ") + kCofferdVersion + " starting as uid " +
          std::to_string(getuid()) + ", pid " + std::to_string(getpid()) + "; secure heap " +
          std::to_string(kSecureHeapBytes >> 20) + " MiB" +
          (locked ? " (locked)"
                  : " (NOT locked in memory: raise LimitMEMLOCK / ulimit -l; keys are still "
                    "wiped and kept out of core dumps)"));

  absl::StatusOr<daemon::Config> config = LoadConfig(flags);
  if (!config.ok()) {
    LogError("configuration: " + DescribeStatus(config.status()));
    return 1;
  }
  LogInfo(
      "configuration: " + (flags.config_file.empty() ? "built-in defaults" : flags.config_file) +
      "; " + Describe(*config));

  DaemonOptions options;
  options.ensure_datasets = flags.ensure_datasets;
  options.clock = &clock;
  options.restore_backup = flags.restore_backup;
  options.restore_backup_root = flags.backup_root;
  absl::StatusOr<std::unique_ptr<Daemon>> daemon = Daemon::Start(*config, options);
  if (!daemon.ok()) {
    LogError("cofferd cannot start: " + DescribeStatus(daemon.status()));
    return 1;
  }
  LogInfo("serving: data socket " + config->data_socket() + ", admin socket " +
          config->admin_socket());
  std::string first_command = "try: coffer-client-example " + config->data_socket();
  // Dataset names stay out of the log, even the operator's own.
  first_command += flags.ensure_datasets.empty()
                       ? " DATASET (a dataset an admin created, with a grant for you)"
                       : " DATASET (the dataset named by --ensure-dataset)";
  LogInfo(first_command + "; SIGTERM or Ctrl-C stops, SIGHUP reloads grants");

  return ServeUntilStopped(flags, *signals, **daemon);
}

int ParseFlagsAndRun(int argc, char** argv, const Clock& clock) {
  Flags flags;
  CLI::App app{
      "cofferd: coffer's encrypted storage and key-management daemon.\n"
      "Serves the coffer.v1 API on two Unix sockets (data: records and attachments for the "
      "CRM's uids; admin: datasets, keys, lifecycle, audit, backups for enrolled admins). "
      "Configuration: a protobuf text-format file (annotated example: "
      "kms/config/cofferd.example.conf; reference: docs/daemon.md); the flags below override "
      "its fields. Logs go to stderr. SIGTERM or SIGINT drains requests in flight and exits 0; "
      "SIGHUP reloads grants, admins and rate limits from the file.",
      "cofferd"};
  app.add_option("--config", flags.config_file,
                 "Configuration file (coffer.daemon.v1.Config in protobuf text format). Without "
                 "one, every field takes its default (state directory ./var).")
      ->check(CLI::ExistingFile);
  app.add_option("--state-dir", flags.state_directory,
                 "Overrides state_directory: the directory every relative path of the "
                 "configuration resolves against (sockets, hsm/, keys/, data/, audit/, "
                 "backups/).");
  app.add_option("--data-socket", flags.data_socket,
                 "Overrides data_socket: the Unix socket CRM clients connect to (records, "
                 "attachments).");
  app.add_option("--admin-socket", flags.admin_socket,
                 "Overrides admin_socket: the Unix socket for admin operations (keyctl).");
  app.add_option("--durability", flags.durability,
                 "Overrides durability: 'wal' acknowledges writes once in the RocksDB WAL "
                 "(survives a daemon crash); 'sync' also fsyncs (survives power loss).")
      ->check(CLI::IsMember({"wal", "sync"}));
  app.add_option("--crash-loss-window-ms", flags.crash_loss_window_ms,
                 "Overrides access_audit.crash_loss_window_millis: how many milliseconds of "
                 "access-audit events a crash may lose; 0 makes every reply wait for its "
                 "audit entry to be durable.")
      ->check(CLI::Range(int64_t{0}, int64_t{60000}));
  app.add_option("--hsm-module", flags.hsm_module,
                 "Overrides hsm.module_path: the PKCS#11 module (default SoftHSM2's).");
  app.add_option("--token-label", flags.token_label,
                 "Overrides hsm.token_label: the label of the token holding coffer's keys.");
  app.add_option("--pin-file", flags.pin_file,
                 "Overrides hsm.pin_file: a file of mode 0600 holding the token's user PIN "
                 "(never pass a PIN itself; under systemd use hsm.pin_credential).");
  app.add_option("--user", flags.user,
                 "When started as root: the user to run as (supplementary groups, gid and uid "
                 "are all switched before anything is opened). cofferd refuses to run as root "
                 "without it.");
  app.add_option("--log-level", flags.log_level, "debug, info, warning or error (default info).")
      ->check(CLI::IsMember({"debug", "info", "warning", "warn", "error"}));
  app.add_option("--ensure-dataset", flags.ensure_datasets,
                 "Creates this dataset at start-up if it does not exist (repeatable; the "
                 "embedded default uses it for 'crm'). Datasets are otherwise created on the "
                 "admin socket.");
  app.add_option("--restore-backup", flags.restore_backup,
                 "Brings up a new machine from full backup ID, then serves: restores it into "
                 "the empty data and key-DB directories, replaying the configured audit log "
                 "(a copy of the old machine's) and keeping every purge, destruction and delete "
                 "made after the backup; the token directory must be a copy of the old one. "
                 "Refused when those directories hold anything. Run once; later starts go "
                 "without it (docs/daemon.md, \"A new machine from a backup\").");
  app.add_option("--backup-root", flags.backup_root,
                 "With --restore-backup: the backup directory to restore from (default: the "
                 "configuration's backup_directory).")
      ->check(CLI::ExistingDirectory);
  app.set_version_flag("--version", kCofferdVersion);
  CLI11_PARSE(app, argc, argv);
  SetLogLevel(*ParseLogLevel(flags.log_level));
  return Run(flags, clock);
}

}  // namespace

int CofferdMain(int argc, char** argv, const Clock& clock) {
  try {
    return ParseFlagsAndRun(argc, argv, clock);
  } catch (const std::exception& e) {
    // Only flag parsing can throw (CLI11); the daemon itself reports failures as statuses.
    LogError(std::string("cofferd: ") + e.what());
  } catch (...) {
    LogError("cofferd: unexpected exception");
  }
  return 1;
}

}  // namespace coffer::cofferd
