// Daemon: one running cofferd — everything built from a Config, in order, and torn down in
// reverse. main.cc owns the process (flags, privileges, signals); this class owns the parts.
//
// Start, in this order, each step failing with a message that says what to fix:
//   1. paths: the data, key-DB, audit and backup directories exist (created 0700 if missing),
//      are directories owned by cofferd's user and writable by it; no unfinished restore;
//   2. HSM: the PKCS#11 module file exists; for SoftHSM2 its configuration (SOFTHSM2_CONF, or
//      <hsm.token_directory>/softhsm2.conf, which is then exported as SOFTHSM2_CONF) is readable
//      and its token directory lies outside the data, key-DB, audit and backup directories; the
//      PIN file (or $CREDENTIALS_DIRECTORY/<hsm.pin_credential>) is a file only its owner may
//      read; HsmClient logs in to the token by label;
//   3. audit log (checkpoints signed by the token's ECDSA key, epoch keys derived in the token,
//      anchors to syslog) and the access-audit BatchingAuditWriter with the configured
//      crash-loss window;
//   4. data DB (durability from the config), key manager (key DB; rows verified in the HSM,
//      intents resumed), record and attachment stores, recycle bin (purges journaled in the
//      audit log), full backups; the datasets of DaemonOptions::ensure_datasets;
//   5. jobs: orphaned-upload cleanup (at start, then hourly), the rotation clock
//      (KeyManager::RunDueWork, also due destructions), bin expiry and retention
//      (RecycleBin::PurgeExpired, then EnforceMaxAge per dataset) and, when
//      jobs.backup_interval_seconds is set, a full backup followed by pruning; all in status;
//   6. services (grants from the config, SIGHUP-reloadable) and the two sockets.
//
// Stop drains in reverse: the server stops accepting and lets requests in flight finish (up to
// the request timeout), the jobs stop, the access-audit writer flushes and stops, the stores,
// key manager and data DB close, the audit log closes with a closing checkpoint, and the HSM
// client finalises the module (C_Finalize). Stop reports the first failure but always runs
// every step.
//
// Thread safety: Start, ReloadGrants and Stop from one thread (main); the parts run their own
// threads. Nothing secret is logged: paths, counts and error codes only.

#ifndef COFFER_KMS_COFFERD_DAEMON_H_
#define COFFER_KMS_COFFERD_DAEMON_H_

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "kms/config/config.h"

namespace coffer::cofferd {

inline constexpr char kCofferdVersion[] = "0.1.0";
// The name under which the configured PKCS#11 module is recorded in key-DB rows (a DWK's
// module). Fixed: changing it would orphan every existing row's reference.
inline constexpr char kPrimaryModuleName[] = "primary";
// Bytes of OpenSSL's secure heap: twice the key cache's bound (kms/keys/key_cache.h, 8 MiB), for
// the PIN, audit MAC keys and keys in flight beside the cache. LimitMEMLOCK must allow it.
inline constexpr size_t kSecureHeapBytes = size_t{16} << 20;

// What main adds to the configuration.
struct DaemonOptions {
  // The one wall clock of every part (audit times, rotation and lifecycle deadlines, TOTP steps,
  // recycle-bin expiry, events, job status). Required; borrowed for the daemon's lifetime. The
  // shipped cofferd passes SystemClock(); only test binaries pass another (tests/kms/cofferd).
  const Clock* clock = nullptr;
  // Datasets created at start-up when they do not exist yet (audited under the daemon's own
  // identity): the embedded default's "crm", so its first client command has a dataset.
  std::vector<std::string> ensure_datasets;
  // cofferd --restore-backup: before the stores open, full backup `restore_backup` from
  // `restore_backup_root` (empty: the configured backup_directory) is restored into the state
  // directory, replayed from the configured audit log (docs/daemon.md, "A new machine from a
  // backup"). Only onto empty data and key-DB directories: RESTORE_TARGET_NOT_EMPTY otherwise.
  std::optional<uint32_t> restore_backup;
  std::string restore_backup_root;
};

class Daemon {
 public:
  // `config` is a finished Config (kms/config/config.h). INVALID_ARGUMENT without a clock.
  static absl::StatusOr<std::unique_ptr<Daemon>> Start(const daemon::Config& config,
                                                       const DaemonOptions& options);

  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;
  // Stops if still running.
  ~Daemon();

  // Replaces the grants, admins and rate limits with those of `config` (SIGHUP). Other fields
  // need a restart; a changed one is reported in the log. CONFIG_INVALID leaves the old grants.
  absl::Status ReloadGrants(const daemon::Config& config);

  // See above. Idempotent.
  absl::Status Stop();

  const daemon::Config& config() const;

 private:
  struct Parts;
  explicit Daemon(std::unique_ptr<Parts> parts);
  std::unique_ptr<Parts> parts_;
};

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_DAEMON_H_
