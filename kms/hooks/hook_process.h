// RunHook: starts the notification hook once for one event, inside coffer-hook-runner
// (docs/events.md, "The hook runner"). Never called by cofferd: the hook must not share the
// daemon's uid or environment, which reach the HSM PIN.
//
// The program is started with posix_spawn — no shell — in a process group of its own, with:
//  - stdin: a pipe holding `input` (the event as one JSON object and a newline), already written
//    and closed before the program starts, so the runner never blocks on a hook that does not
//    read (input is limited to kMaxHookInputBytes, less than a pipe's capacity);
//  - stdout and stderr: /dev/null;
//  - every other descriptor closed (posix_spawn_file_actions_addclosefrom_np(3)), whatever its
//    close-on-exec flag: a hook inherits no socket;
//  - an empty signal mask and default signal dispositions;
//  - exactly `environment` ("NAME=value" strings; HookEnvironment builds it) — nothing of the
//    runner's own environment.
// If it has not exited after `timeout`, its whole process group gets SIGKILL (a hook's own
// children die with it) and the result says so.
//
// Thread safety: any thread; each call waits for its own child only (waitpid on its pid).
// Failures: INVALID_ARGUMENT for an empty argv, oversized input or an environment entry without
// '=' or with a NUL byte; INTERNAL when the program cannot be started (the message names the
// program and the errno, never the input).

#ifndef COFFER_KMS_HOOKS_HOOK_PROCESS_H_
#define COFFER_KMS_HOOKS_HOOK_PROCESS_H_

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "coffer/v1/events.pb.h"

namespace coffer::hooks {

inline constexpr size_t kMaxHookInputBytes = 32 * 1024;
// The hook's PATH; the only variable it gets besides the event's.
inline constexpr std::string_view kHookPath = "/usr/bin:/bin";

struct HookResult {
  bool killed = false;   // still running at the timeout: its process group got SIGKILL
  int exit_status = -1;  // exit code when it exited; -1 if killed by any signal
  int pid = 0;
  bool ok() const { return !killed && exit_status == 0; }
};

absl::StatusOr<HookResult> RunHook(const std::vector<std::string>& argv, std::string_view input,
                                   const std::vector<std::string>& environment,
                                   std::chrono::milliseconds timeout);

// The hook's stdin: the event as one JSON object (protobuf's JSON mapping, field names as in
// events.proto; 64-bit integers are strings there) and a newline.
std::string EventJsonLine(const coffer::v1::Event& event);

// The hook's whole environment: PATH=kHookPath and the event's fields as COFFER_EVENT_* (see
// docs/events.md for the names): SEQUENCE, KIND (the enum name) and TIME_MICROS always, every
// other field only when set (not zero or empty). A text field holding a NUL byte is left out
// (an environment cannot carry it; the JSON on stdin has it).
std::vector<std::string> HookEnvironment(const coffer::v1::Event& event);

}  // namespace coffer::hooks

#endif  // COFFER_KMS_HOOKS_HOOK_PROCESS_H_
