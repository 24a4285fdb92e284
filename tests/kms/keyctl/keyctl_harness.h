// The harness of the keyctl end-to-end suites: a real cofferd on a fresh temporary directory
// (fresh SoftHSM2 token, real RocksDB, real sockets; run as root, the daemon runs as `nobody`),
// keyctl run as a process (as the test's uid, or as another uid with MFA on), the TOTP codes of
// enrolled admins computed from their otpauth:// URIs, and recipient key pairs for exports.
// The suites differ only through CofferdOptions, so each keeps its own daemon configuration.
//
// Thread safety: none; one test thread. Failures: Cofferd::Create returns nullptr when the
// directory, token, configuration or daemon cannot be set up; keyctl runs report exit code -1
// when keyctl did not exit normally.

#ifndef COFFER_TESTS_KMS_KEYCTL_KEYCTL_HARNESS_H_
#define COFFER_TESTS_KMS_KEYCTL_KEYCTL_HARNESS_H_

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "nlohmann/json.hpp"

namespace coffer::testing {

// The admins of a cofferd with MFA on: root ("A"), nobody ("B") and uid 1 ("C").
inline constexpr uid_t kAdminA = 0;
inline constexpr uid_t kAdminB = 65534;
inline constexpr uid_t kAdminC = 1;
// The TOTP step of a cofferd with MFA on: 2 s, so tests wait for fresh codes instead of 30 s.
inline constexpr int64_t kTotpStepSeconds = 2;

struct CofferdOptions {
  // The temporary directory is /tmp/NAME-XXXXXX.
  std::string name = "keyctl-test";
  // false: development mode, the test's uid is the only admin and may read, write and delete
  // every dataset. true: MFA and dual control on (admins kAdminA/B/C, step kTotpStepSeconds),
  // the admin socket's group is nobody's and keyctl is copied into the directory (mode 0755) for
  // the other uids, since the build tree need not be reachable by them. MFA needs root.
  bool mfa = false;
  // jobs.rotation_check_seconds: how often the daemon's clock ticks (rotation, lifecycle);
  // unset leaves the daemon's default.
  std::optional<uint32_t> rotation_check_seconds;
  // Configuration text appended for the suite (grants, notifications...), given the directory.
  std::function<std::string(const std::string& dir)> extra_config;
  // Writes the suite's files into the directory before it is handed to the daemon's user.
  std::function<void(const std::string& dir)> prepare;
};

// A cofferd on a temporary directory that can be stopped and started again on the same state;
// the destructor stops it and removes the directory.
class Cofferd {
 public:
  static std::unique_ptr<Cofferd> Create(CofferdOptions options = {});
  ~Cofferd();
  Cofferd(const Cofferd&) = delete;
  Cofferd& operator=(const Cofferd&) = delete;

  // Starts the daemon (each run logging to its own file) and waits until a status request on
  // the admin socket answers (120 s: a safety net, not a measure). False if it exited first.
  bool Start();
  // SIGTERM and wait. True if the daemon exited cleanly (status 0).
  bool Stop();

  const std::string& dir() const { return dir_; }
  std::string admin_socket() const { return dir_ + "/admin.sock"; }
  std::string data_socket() const { return dir_ + "/data.sock"; }
  // The copy of keyctl the other uids run (MFA on only).
  std::string keyctl() const { return dir_ + "/keyctl"; }
  // Every run's log.
  std::string Logs() const;

 private:
  Cofferd() = default;
  std::string dir_;
  bool as_root_ = false;
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

// The secret of an otpauth://totp/...?secret=BASE32&... URI; "" without one.
std::string SecretOf(const std::string& uri);

// The RFC 6238 code (HMAC-SHA1, six digits) of `secret` at step `counter`.
std::string Totp(const std::string& secret, uint64_t counter);

// The current TOTP step (kTotpStepSeconds).
uint64_t CurrentTotpStep();

// The enrolled admins' secrets. Codes are single-use and monotonic per admin, so Next waits
// (bounded, 30 s; not a timing assertion) for a step newer than the last one it gave `uid`.
class TotpCodes {
 public:
  void SetSecret(uid_t uid, std::string secret) { secrets_[uid] = std::move(secret); }
  std::string Next(uid_t uid);
  // The code of `uid` at `step`, outside Next's bookkeeping (for codes meant to be wrong).
  std::string At(uid_t uid, uint64_t step) { return Totp(secrets_[uid], step); }

 private:
  std::map<uid_t, std::string> secrets_;
  std::map<uid_t, uint64_t> last_step_;
};

// Writes a fresh key pair of `type` ("RSA" 2048, "RSA1024", "X25519", "EC") as NAME.pem
// (private) and NAME.pub.pem in `dir`. Fails the test (fatally) if it cannot.
void WriteKeyPair(const std::string& dir, const std::string& name, const std::string& type);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_KMS_KEYCTL_KEYCTL_HARNESS_H_
