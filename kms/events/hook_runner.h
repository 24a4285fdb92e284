// RunHook: starts the configured notification hook once for one event (docs/events.md).
//
// The program is started with posix_spawn — no shell — in a process group of its own, with:
//  - stdin: a pipe holding `input` (the event as one JSON object and a newline), already written
//    and closed before the program starts, so the daemon never blocks on a hook that does not
//    read (input is limited to kMaxHookInputBytes, less than a pipe's capacity);
//  - stdout and stderr: /dev/null;
//  - every other descriptor closed (posix_spawn_file_actions_addclosefrom_np(3)), whatever its
//    close-on-exec flag: a hook inherits no socket, database or token file;
//  - an empty signal mask and default signal dispositions;
//  - the daemon's environment.
// If it has not exited after `timeout`, its whole process group gets SIGKILL (a hook's own
// children die with it) and the result says so.
//
// Thread safety: any thread; each call waits for its own child only (waitpid on its pid).
// Failures: INVALID_ARGUMENT for an empty argv or oversized input; INTERNAL when the program
// cannot be started (the message names the errno, never the input).

#ifndef COFFER_KMS_EVENTS_HOOK_RUNNER_H_
#define COFFER_KMS_EVENTS_HOOK_RUNNER_H_

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace coffer::events {

inline constexpr size_t kMaxHookInputBytes = 32 * 1024;

struct HookResult {
  bool killed = false;   // still running at the timeout: its process group got SIGKILL
  int exit_status = -1;  // exit code when it exited; -1 if killed by any signal
  int pid = 0;
  bool ok() const { return !killed && exit_status == 0; }
};

absl::StatusOr<HookResult> RunHook(const std::vector<std::string>& argv, std::string_view input,
                                   std::chrono::milliseconds timeout);

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_HOOK_RUNNER_H_
