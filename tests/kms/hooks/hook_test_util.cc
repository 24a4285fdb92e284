#include "tests/kms/hooks/hook_test_util.h"

#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include "crypto/base/status.h"
#include "kms/api/framing.h"

namespace coffer::hooks::testing {

absl::StatusOr<coffer::v1::HookRunResult> AskRunner(const std::string& socket,
                                                    const coffer::v1::HookRunRequest& request) {
  int connect_errno = 0;
  absl::StatusOr<int> fd = api::DialUnixSocket(socket, std::chrono::seconds(5), &connect_errno);
  if (!fd.ok()) return fd.status();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  absl::Status written = api::WriteFrame(*fd, request, deadline);
  coffer::v1::HookRunResult result;
  bool end_of_stream = false;
  absl::Status read = written;
  if (written.ok()) {
    api::FrameReader reader(*fd, 4096);
    read = reader.Read(&result, deadline, &end_of_stream);
  }
  ::close(*fd);
  if (!read.ok()) return read;
  if (end_of_stream) return MakeError(ErrorCode::kDaemonUnavailable, "no answer");
  return result;
}

int AskRunnerAs(uid_t uid, gid_t gid, const std::string& socket,
                const coffer::v1::HookRunRequest& request) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (::setgroups(1, &gid) != 0 || ::setresgid(gid, gid, gid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      _exit(100);
    }
    absl::StatusOr<coffer::v1::HookRunResult> result = AskRunner(socket, request);
    _exit(result.ok() ? static_cast<int>(result->outcome()) : 101);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -2;
  if (WEXITSTATUS(status) == 100) return -2;
  if (WEXITSTATUS(status) == 101) return -1;
  return WEXITSTATUS(status);
}

}  // namespace coffer::hooks::testing
