#include "kms/hooks/hook_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/api/framing.h"
#include "kms/hooks/hook_process.h"

namespace coffer::hooks {
namespace {

namespace pb = ::coffer::v1;

pb::HookRunResult Rejected(std::string message) {
  pb::HookRunResult result;
  result.set_outcome(pb::HookRunResult::REJECTED);
  result.set_exit_status(-1);
  result.set_message(std::move(message));
  return result;
}

}  // namespace

absl::StatusOr<std::unique_ptr<HookServer>> HookServer::Listen(HookServerOptions options) {
  if (options.argv.empty() || options.argv.front().empty() || options.argv.front()[0] != '/') {
    return MakeError(ErrorCode::kConfigInvalid, "the hook's argv[0] must be an absolute path");
  }
  server::SocketOptions socket_options;
  socket_options.path = options.socket_path;
  socket_options.mode = 0660;
  socket_options.group = options.socket_group;
  COFFER_ASSIGN_OR_RETURN(server::ListeningSocket socket,
                          server::ListeningSocket::Create(socket_options, 16));
  int wake[2];
  if (::pipe2(wake, O_CLOEXEC | O_NONBLOCK) != 0) {
    return MakeError(ErrorCode::kIoError, std::string("pipe: ") + std::strerror(errno));
  }
  return std::unique_ptr<HookServer>(
      new HookServer(std::move(options), std::move(socket), wake[0], wake[1]));
}

HookServer::HookServer(HookServerOptions options, server::ListeningSocket socket, int wake_read,
                       int wake_write)
    : options_(std::move(options)),
      socket_(std::move(socket)),
      wake_read_(wake_read),
      wake_write_(wake_write) {}

HookServer::~HookServer() {
  socket_.CloseAndRemove();
  ::close(wake_read_);
  ::close(wake_write_);
}

void HookServer::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

void HookServer::Stop() {
  stop_.store(true);
  const char byte = 1;
  // Non-blocking: a full pipe already holds a wake-up.
  [[maybe_unused]] ssize_t n = ::write(wake_write_, &byte, 1);
}

void HookServer::Serve() {
  while (!stop_.load()) {
    pollfd fds[2] = {{socket_.fd(), POLLIN, 0}, {wake_read_, POLLIN, 0}};
    int ready = ::poll(fds, 2, -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      Log(absl::StrCat("poll failed: ", std::strerror(errno)));
      return;
    }
    if (fds[1].revents != 0 || stop_.load()) return;
    int fd = ::accept4(socket_.fd(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
        Log(absl::StrCat("accept failed: ", std::strerror(errno)));
      }
      continue;
    }
    ServeConnection(fd);
    ::close(fd);
  }
}

void HookServer::ServeConnection(int fd) {
  ucred peer{};
  socklen_t length = sizeof(peer);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    Log(absl::StrCat("cannot read the peer's credentials: ", std::strerror(errno)));
    return;
  }
  if (peer.uid != options_.allowed_uid) {
    refused_.fetch_add(1);
    Log(absl::StrCat("refused a connection from uid ", peer.uid, " pid ", peer.pid, ": only uid ",
                     options_.allowed_uid, " may deliver events"));
    return;
  }
  api::FrameReader reader(fd, kMaxHookRequestBytes);
  pb::HookRunRequest request;
  bool end_of_stream = false;
  absl::Status read = reader.Read(
      &request, std::chrono::steady_clock::now() + options_.request_timeout, &end_of_stream);
  if (!read.ok() || end_of_stream) {
    Log(absl::StrCat("no request from pid ", peer.pid, ": ",
                     read.ok() ? "closed" : std::string(ErrorCodeName(ErrorCodeOf(read)))));
    return;
  }
  pb::HookRunResult result = Run(request);
  absl::Status written =
      api::WriteFrame(fd, result, std::chrono::steady_clock::now() + options_.request_timeout);
  if (!written.ok()) {
    Log(absl::StrCat("cannot answer pid ", peer.pid, ": ", written.message()));
  }
}

pb::HookRunResult HookServer::Run(const pb::HookRunRequest& request) {
  if (!request.has_event()) return Rejected("the request carries no event");
  if (request.timeout_millis() == 0 || request.timeout_millis() > kMaxHookTimeoutMillis) {
    return Rejected("timeout_millis must be 1 to 3600000");
  }
  const pb::Event& event = request.event();
  const std::string name = pb::EventKind_Name(event.kind());
  const std::string input = EventJsonLine(event);
  if (input.size() > kMaxHookInputBytes) {
    Log(absl::StrCat("event ", event.sequence(), " ", name, " is too large for the hook's stdin"));
    return Rejected("the event is too large for the hook's stdin");
  }
  runs_.fetch_add(1);
  absl::StatusOr<HookResult> run = RunHook(options_.argv, input, HookEnvironment(event),
                                           std::chrono::milliseconds(request.timeout_millis()));
  pb::HookRunResult result;
  if (!run.ok()) {
    Log(absl::StrCat("hook could not run for event ", event.sequence(), ": ",
                     run.status().message()));
    result.set_outcome(pb::HookRunResult::FAILED);
    result.set_exit_status(-1);
    result.set_message(std::string(run.status().message()));
    return result;
  }
  result.set_outcome(run->ok() ? pb::HookRunResult::DELIVERED : pb::HookRunResult::FAILED);
  result.set_exit_status(run->exit_status);
  result.set_killed(run->killed);
  result.set_pid(static_cast<uint32_t>(run->pid));
  if (run->killed) {
    Log(absl::StrCat("hook killed (SIGKILL to its process group, pid ", run->pid,
                     ") at its timeout of ", request.timeout_millis(), " ms; event ",
                     event.sequence(), " ", name));
  } else if (!run->ok()) {
    Log(absl::StrCat("hook exited with status ", run->exit_status, " for event ", event.sequence(),
                     " ", name));
  }
  return result;
}

}  // namespace coffer::hooks
