#include "kms/hooks/hook_process.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "google/protobuf/util/json_util.h"

namespace coffer::hooks {
namespace {

// Owns a descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

absl::Status Errno(std::string_view what, int error) {
  return MakeError(ErrorCode::kInternal,
                   absl::StrCat("hook: ", std::string(what), ": ", std::strerror(error)));
}

// posix_spawn attributes and file actions, destroyed on every path.
struct SpawnSetup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  bool actions_ready = false;
  bool attr_ready = false;
  ~SpawnSetup() {
    if (actions_ready) posix_spawn_file_actions_destroy(&actions);
    if (attr_ready) posix_spawnattr_destroy(&attr);
  }
};

void AddText(std::vector<std::string>& env, const char* name, const std::string& value) {
  if (value.empty() || value.find('\0') != std::string::npos) return;
  env.push_back(absl::StrCat("COFFER_EVENT_", name, "=", value));
}

template <typename Number>
void AddNumber(std::vector<std::string>& env, const char* name, Number value) {
  if (value != 0) env.push_back(absl::StrCat("COFFER_EVENT_", name, "=", value));
}

}  // namespace

std::string EventJsonLine(const coffer::v1::Event& event) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(event, &json, options).ok()) {
    json = absl::StrCat("{\"sequence\":\"", event.sequence(), "\"}");
  }
  json += '\n';
  return json;
}

std::vector<std::string> HookEnvironment(const coffer::v1::Event& event) {
  std::vector<std::string> env;
  env.push_back(absl::StrCat("PATH=", std::string(kHookPath)));
  env.push_back(absl::StrCat("COFFER_EVENT_SEQUENCE=", event.sequence()));
  env.push_back(absl::StrCat("COFFER_EVENT_KIND=", coffer::v1::EventKind_Name(event.kind())));
  env.push_back(absl::StrCat("COFFER_EVENT_TIME_MICROS=", event.time_micros()));
  AddText(env, "DATASET", event.dataset());
  AddNumber(env, "DATASET_HANDLE", event.dataset_handle());
  AddText(env, "DETAIL", event.detail());
  AddNumber(env, "UID", event.uid());
  AddNumber(env, "PID", event.pid());
  AddNumber(env, "AUDIT_SEQUENCE", event.audit_sequence());
  if (event.purpose() != 0) {
    env.push_back(absl::StrCat("COFFER_EVENT_PURPOSE=", coffer::v1::Purpose_Name(event.purpose())));
  }
  AddNumber(env, "KEY_VERSION", event.key_version());
  AddNumber(env, "DESTRUCTION_DUE_MICROS", event.destruction_due_micros());
  if (event.canary_kind() != 0) {
    env.push_back(absl::StrCat("COFFER_EVENT_CANARY_KIND=",
                               coffer::v1::CanaryKind_Name(event.canary_kind())));
  }
  AddText(env, "CANARY", event.canary());
  AddNumber(env, "ERROR_CODE", event.error_code());
  return env;
}

namespace {

absl::Status CheckHookInput(const std::vector<std::string>& argv, std::string_view input,
                            const std::vector<std::string>& environment) {
  if (argv.empty() || argv.front().empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "hook: no program to run");
  }
  if (input.size() > kMaxHookInputBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "hook: the event is too large for stdin");
  }
  for (const std::string& entry : environment) {
    if (entry.find('=') == std::string::npos || entry.find('\0') != std::string::npos) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "hook: an environment entry is not NAME=value without NUL bytes");
    }
  }
  return absl::OkStatus();
}

// The read end of a pipe already holding the whole input (it fits in the pipe buffer), written
// before the hook starts.
absl::StatusOr<Fd> PipeHolding(std::string_view input) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return Errno("pipe", errno);
  Fd read_end(pipe_fds[0]);
  Fd write_end(pipe_fds[1]);
  size_t written = 0;
  while (written < input.size()) {
    ssize_t n = ::write(write_end.get(), input.data() + written, input.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("writing the event", errno);
    written += static_cast<size_t>(n);
  }
  return read_end;
}

// stdin from `stdin_fd`, stdout and stderr to /dev/null, nothing else open; a process group of
// its own (so that a timeout kills its children too), no blocked signals, default dispositions.
absl::Status PrepareSpawn(SpawnSetup& setup, int stdin_fd) {
  if (int e = posix_spawn_file_actions_init(&setup.actions); e != 0) return Errno("spawn", e);
  setup.actions_ready = true;
  if (int e = posix_spawnattr_init(&setup.attr); e != 0) return Errno("spawn", e);
  setup.attr_ready = true;
  int e = posix_spawn_file_actions_adddup2(&setup.actions, stdin_fd, STDIN_FILENO);
  if (e == 0) {
    e = posix_spawn_file_actions_addopen(&setup.actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  }
  if (e == 0) {
    e = posix_spawn_file_actions_addopen(&setup.actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  }
  if (e == 0) e = posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3);
  if (e != 0) return Errno("spawn file actions", e);
  sigset_t empty_mask;
  sigset_t all_signals;
  sigemptyset(&empty_mask);
  sigfillset(&all_signals);
  e = posix_spawnattr_setflags(
      &setup.attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (e == 0) e = posix_spawnattr_setpgroup(&setup.attr, 0);
  if (e == 0) e = posix_spawnattr_setsigmask(&setup.attr, &empty_mask);
  if (e == 0) e = posix_spawnattr_setsigdefault(&setup.attr, &all_signals);
  if (e != 0) return Errno("spawn attributes", e);
  return absl::OkStatus();
}

// Waits for the hook until `timeout`; then kills its whole group (the hook's children too) and
// reaps it.
absl::StatusOr<HookResult> WaitOrKill(pid_t pid, std::chrono::milliseconds timeout) {
  HookResult result;
  result.pid = pid;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    int status = 0;
    pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) {
      result.exit_status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      return result;
    }
    if (done < 0 && errno != EINTR) return Errno("waiting for the hook", errno);
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(50));
  }
  ::kill(-pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.killed = true;
  result.exit_status = -1;
  return result;
}

}  // namespace

absl::StatusOr<HookResult> RunHook(const std::vector<std::string>& argv, std::string_view input,
                                   const std::vector<std::string>& environment,
                                   std::chrono::milliseconds timeout) {
  COFFER_RETURN_IF_ERROR(CheckHookInput(argv, input, environment));
  COFFER_ASSIGN_OR_RETURN(Fd read_end, PipeHolding(input));
  SpawnSetup setup;
  COFFER_RETURN_IF_ERROR(PrepareSpawn(setup, read_end.get()));

  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  std::vector<char*> env;
  env.reserve(environment.size() + 1);
  for (const std::string& entry : environment) env.push_back(const_cast<char*>(entry.c_str()));
  env.push_back(nullptr);
  pid_t pid = 0;
  int e = posix_spawn(&pid, args[0], &setup.actions, &setup.attr, args.data(), env.data());
  if (e != 0) return Errno(absl::StrCat("starting ", argv.front()), e);
  read_end.Reset();
  return WaitOrKill(pid, timeout);
}

}  // namespace coffer::hooks
