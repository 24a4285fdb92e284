// Process set-up for cofferd, done in main before anything is opened: no core dumps, an
// unprivileged identity, and the signals the daemon reacts to delivered to one thread.
//
//  - DisableCoreDumps: RLIMIT_CORE 0 and PR_SET_DUMPABLE 0 (no core file, no ptrace attach by
//    the same uid, /proc/<pid>/mem closed), so key material cannot leave through a dump.
//  - DropPrivileges: started as root, cofferd becomes `user` (supplementary groups from the
//    group database, then setresgid, then setresuid, all three ids) and checks that root
//    cannot be regained. Started as another user, it stays that user (and `user`, if given,
//    must be that user).
//  - SignalWaiter: blocks SIGTERM, SIGINT and SIGHUP in the calling thread (call it before any
//    thread is created, so every thread inherits the mask) and reads them from a signalfd:
//    no work ever runs in a signal handler. SIGPIPE is ignored (sockets use MSG_NOSIGNAL, but
//    a library writing to a closed pipe must not kill the daemon).
//
// Failures: IO_ERROR / FAILED_PRECONDITION / CONFIG_INVALID with a message that says what to
// fix. Not thread-safe: call from main, once.

#ifndef COFFER_KMS_COFFERD_PROCESS_H_
#define COFFER_KMS_COFFERD_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace coffer::cofferd {

absl::Status DisableCoreDumps();

// See above. When the process runs as root and `user` is empty: FAILED_PRECONDITION
// ("cofferd does not run as root; pass --user"). Unknown user: CONFIG_INVALID.
absl::Status DropPrivileges(const std::string& user);

enum class DaemonSignal { kTerminate, kReload };

class SignalWaiter {
 public:
  static absl::StatusOr<SignalWaiter> Create();
  SignalWaiter(SignalWaiter&& other) noexcept;
  SignalWaiter& operator=(SignalWaiter&&) = delete;
  SignalWaiter(const SignalWaiter&) = delete;
  ~SignalWaiter();

  // Waits for the next signal: kTerminate for SIGTERM or SIGINT, kReload for SIGHUP. Returns
  // nullopt when `timeout` passes first.
  std::optional<DaemonSignal> Wait(std::chrono::milliseconds timeout);

 private:
  explicit SignalWaiter(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_PROCESS_H_
