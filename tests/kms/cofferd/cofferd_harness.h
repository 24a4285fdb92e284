// The harness of every suite that runs cofferd as a process (tests/kms/cofferd, tests/kms/keyctl):
// a daemon on a fresh temporary directory (fresh SoftHSM2 token, real RocksDB, real sockets; run
// as root, the daemon runs as `nobody`), keyctl run as a process (as the test's uid, or as
// another uid with MFA on), the TOTP codes of enrolled admins computed from their otpauth://
// URIs, and recipient key pairs for exports.
//
// Two binaries, one harness. By default the daemon is test-cofferd (tests/kms/cofferd/
// test_cofferd.cc: the shipped program on a MappedClock): its wall clock stands still until the
// test calls AdvanceClock, so TOTP steps, rotation and lifecycle deadlines are reached by
// advancing the clock and then running the job that reacts (`keyctl job run rotation`) or
// waiting, bounded, for the daemon's reaction — never by sleeping through real time. With
// `controlled_clock = false` it is the shipped cofferd on the system clock, for the real-time smoke
// tests. The suites differ only through CofferdOptions.
//
// Thread safety: none; one test thread (AdvanceClock and Now may be called from any). Failures:
// Cofferd::Create returns nullptr when the directory, token, clock, configuration or daemon
// cannot be set up; keyctl runs report exit code -1 when keyctl did not exit normally.

#ifndef COFFER_TESTS_KMS_COFFERD_COFFERD_HARNESS_H_
#define COFFER_TESTS_KMS_COFFERD_COFFERD_HARNESS_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/mapped_clock.h"

namespace coffer::testing {

// The admins of a cofferd with MFA on: root ("A"), nobody ("B") and uid 1 ("C").
inline constexpr uid_t kAdminA = 0;
inline constexpr uid_t kAdminB = 65534;
inline constexpr uid_t kAdminC = 1;
// The TOTP step of a cofferd with MFA on: 2 s, so that a real-clock daemon's tests wait for
// fresh codes for 2 s rather than 30 (a controlled clock advances one step instead).
inline constexpr int64_t kTotpStepSeconds = 2;

struct CofferdOptions {
  // The temporary directory is /tmp/NAME-XXXXXX.
  std::string name = "cofferd-test";
  // true: test-cofferd on a clock the test advances; false: the shipped cofferd, real time.
  bool controlled_clock = true;
  // false: development mode, the test's uid is the only admin and may read, write and delete
  // every dataset. true: MFA and dual control on (admins kAdminA/B/C, step kTotpStepSeconds),
  // the admin socket's group is nobody's and keyctl is copied into the directory (mode 0755) for
  // the other uids, since the build tree need not be reachable by them. MFA needs root.
  bool mfa = false;
  // jobs.rotation_check_seconds: how often the daemon's jobs tick (rotation, lifecycle);
  // unset leaves the daemon's default.
  std::optional<uint32_t> rotation_check_seconds;
  // The configuration after state_directory, sockets, token and durability, given the
  // directory and the daemon's group ("" when not run as root); unset, the keyctl suites'
  // (grants and admins for `mfa`, jobs, mfa).
  std::function<std::string(const std::string& dir, const std::string& group)> config_body;
  // Configuration text appended for the suite (grants, notifications...), given the directory.
  std::function<std::string(const std::string& dir)> extra_config;
  // Writes the suite's files into the directory before it is handed to the daemon's user.
  std::function<void(const std::string& dir)> prepare;
  // hsm.module_path, given the directory; unset: SoftHSM2's.
  std::function<std::string(const std::string& dir)> hsm_module;
  // Words run before the daemon's command line, by Start and RunToExit (e.g.
  // {"/usr/bin/prlimit", "--nofile=200:200", "--"}).
  std::vector<std::string> launcher;
  // Whether Create starts the daemon (the start-up tests run it themselves, with RunToExit).
  bool start = true;
};

// A cofferd on a temporary directory that can be stopped and started again on the same state
// (and the same clock); the destructor stops it and removes the directory.
struct KeyctlResult;

class Cofferd {
 public:
  static std::unique_ptr<Cofferd> Create(CofferdOptions options = {});
  ~Cofferd();
  Cofferd(const Cofferd&) = delete;
  Cofferd& operator=(const Cofferd&) = delete;

  // Starts the daemon (each run logging to its own file) and waits until a status request on
  // the admin socket answers (120 s: a safety net, not a measure). Fails, with the log, if it
  // exited first. `extra_args` go after the configuration (e.g. {"--restore-backup", "3"}).
  ::testing::AssertionResult Start(const std::vector<std::string>& extra_args = {});
  // SIGTERM and wait. True if the daemon exited cleanly (status 0).
  bool Stop();
  // Sends `signal`, waits, and returns the exit status (-1 if it did not exit normally).
  int SignalAndWait(int signal);
  // Runs the binary on this directory's configuration with `extra_args` in the foreground and
  // returns its exit status and output. `env` goes to env(1) (default: no SOFTHSM2_CONF, so the
  // daemon finds hsm/softhsm2.conf).
  std::pair<int, std::string> RunToExit(const std::vector<std::string>& extra_args,
                                        const std::string& env = "-u SOFTHSM2_CONF");
  // "--user nobody" when run as root, "" otherwise.
  std::string UserArg() const;
  // Rewrites the configuration (SIGHUP re-reads it) with `extra` appended.
  void WriteConfig(const std::string& extra = "");

  // The daemon's wall clock: the controlled one, or the system's.
  std::chrono::system_clock::time_point Now() const;
  // Moves a controlled clock forward (at once visible to the daemon). Fails the test on a
  // real-clock daemon.
  void AdvanceClock(std::chrono::seconds by);
  bool controlled_clock() const { return clock_ != nullptr; }
  // Advances the clock by `by`, then has the daemon run periodic job `job` at once (`keyctl job
  // run JOB` as the test's uid, development mode) and returns that run of keyctl: what the
  // job's next tick would do, with no waiting for the tick.
  KeyctlResult RunJobAfter(std::chrono::seconds by, const std::string& job);
  // The TOTP step (kTotpStepSeconds) at Now().
  uint64_t TotpStep() const;

  // Polls `done` every 20 ms until it holds (60 s: a safety net, not a measure).
  static bool WaitUntil(const std::function<bool()>& done);
  // Waits until the logs contain `text` after their first `from` bytes.
  bool WaitForLog(const std::string& text, size_t from) const;

  pid_t pid() const { return pid_; }
  bool as_root() const { return as_root_; }
  gid_t daemon_gid() const { return daemon_gid_; }
  const std::string& dir() const { return dir_; }
  std::string admin_socket() const { return dir_ + "/admin.sock"; }
  std::string data_socket() const { return dir_ + "/data.sock"; }
  // The copy of keyctl the other uids run (MFA on only).
  std::string keyctl() const { return dir_ + "/keyctl"; }
  // Every run's log, in order.
  std::string Logs() const;

 private:
  Cofferd() = default;
  std::string Binary() const;
  CofferdOptions options_;
  std::string dir_;
  std::string group_;
  bool as_root_ = false;
  uid_t daemon_uid_ = 0;
  gid_t daemon_gid_ = 0;
  std::unique_ptr<MappedClock> clock_;
  pid_t pid_ = -1;
  int starts_ = 0;
};

// What a keyctl run printed and how it exited.
struct KeyctlResult {
  int exit_code = -1;
  std::string out;
  std::string err;
  // The standard output as JSON; throws when it is not JSON.
  nlohmann::json Json() const { return nlohmann::json::parse(out); }
  // The standard output as JSON, or an empty object when it is not JSON.
  nlohmann::json JsonOrEmpty() const;
  // error.code_name of a --json error document; "" otherwise.
  std::string CodeName() const;
};

// Runs keyctl (the build's) with `args` (words without shell metacharacters) against `socket`
// as the test's uid; stdin, stdout and stderr are not terminals.
KeyctlResult Keyctl(const std::string& socket, const std::string& args);

// Runs `keyctl` as `uid` (group: nobody's) with `args` split at spaces; stdin is /dev/null.
// With `terminal_input`, keyctl runs under script(1) on a pseudo-terminal fed that text.
KeyctlResult KeyctlAs(uid_t uid, const std::string& keyctl, const std::string& socket,
                      const std::string& args, const std::string* terminal_input = nullptr);

// Runs `body` in a child process as `uid` with `group` as its only group (the daemon's group
// may use both sockets) and returns what it returned; "child failed" when the child could not
// become the uid or did not exit normally. Needs root.
std::string RunAsUid(uid_t uid, gid_t group, const std::function<std::string()>& body);

// The secret of an otpauth://totp/...?secret=BASE32&... URI; "" without one.
std::string SecretOf(const std::string& uri);

// The RFC 6238 code (HMAC-SHA1, six digits) of `secret` at step `counter`.
std::string Totp(const std::string& secret, uint64_t counter);

// The enrolled admins' secrets and codes, at `daemon`'s clock. Codes are single-use and
// monotonic per admin, so Next gives a step newer than the last one it gave `uid`: on a
// controlled clock by advancing it one step, on the real clock by waiting for it (bounded,
// 30 s; not a timing assertion).
class TotpCodes {
 public:
  TotpCodes() = default;
  explicit TotpCodes(Cofferd* daemon) : daemon_(daemon) {}
  void SetSecret(uid_t uid, std::string secret) { secrets_[uid] = std::move(secret); }
  std::string Next(uid_t uid);
  // The code of `uid` at `step`, outside Next's bookkeeping (for codes meant to be wrong).
  std::string At(uid_t uid, uint64_t step) { return Totp(secrets_[uid], step); }

 private:
  Cofferd* daemon_ = nullptr;
  std::map<uid_t, std::string> secrets_;
  std::map<uid_t, uint64_t> last_step_;
};

// Writes a fresh key pair of `type` ("RSA" 2048, "RSA1024", "X25519", "EC") as NAME.pem
// (private) and NAME.pub.pem in `dir`. Fails the test (fatally) if it cannot.
void WriteKeyPair(const std::string& dir, const std::string& name, const std::string& type);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_KMS_COFFERD_COFFERD_HARNESS_H_
