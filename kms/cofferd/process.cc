#include "kms/cofferd/process.h"

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>
#include <vector>

#include "crypto/base/status.h"

namespace coffer::cofferd {
namespace {

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::Status DisableCoreDumps() {
  struct rlimit none {};
  if (setrlimit(RLIMIT_CORE, &none) != 0) {
    return MakeError(ErrorCode::kIoError, "setrlimit(RLIMIT_CORE, 0) failed: " + Errno());
  }
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) {
    return MakeError(ErrorCode::kIoError, "prctl(PR_SET_DUMPABLE, 0) failed: " + Errno());
  }
  return absl::OkStatus();
}

absl::Status DropPrivileges(const std::string& user) {
  const uid_t current = geteuid();
  if (user.empty()) {
    if (current == 0 || getuid() == 0) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "cofferd does not run as root; pass --user NAME (a dedicated system "
                       "user, e.g. coffer) and cofferd drops to it before opening anything");
    }
    return absl::OkStatus();
  }
  std::vector<char> buf(16384);
  struct passwd pw {};
  struct passwd* found = nullptr;
  int rc = getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &found);
  if (rc != 0 || found == nullptr) {
    return MakeError(
        ErrorCode::kConfigInvalid,
        "--user " + user + ": no such user (create it, e.g. useradd --system " + user + ")");
  }
  if (found->pw_uid == 0) {
    return MakeError(ErrorCode::kConfigInvalid,
                     "--user " + user + " is root; cofferd does not run as root");
  }
  if (current != 0) {
    if (current == found->pw_uid && getuid() == found->pw_uid) return absl::OkStatus();
    return MakeError(ErrorCode::kFailedPrecondition,
                     "--user " + user + " needs cofferd to be started as root (or as that user)");
  }
  int groups = 64;
  std::vector<gid_t> list(static_cast<size_t>(groups));
  while (getgrouplist(found->pw_name, found->pw_gid, list.data(), &groups) < 0) {
    list.resize(static_cast<size_t>(groups) * 2);
    groups = static_cast<int>(list.size());
  }
  list.resize(static_cast<size_t>(groups));
  if (setgroups(list.size(), list.data()) != 0) {
    return MakeError(ErrorCode::kIoError, "setgroups for " + user + " failed: " + Errno());
  }
  if (setresgid(found->pw_gid, found->pw_gid, found->pw_gid) != 0) {
    return MakeError(ErrorCode::kIoError, "setresgid for " + user + " failed: " + Errno());
  }
  if (setresuid(found->pw_uid, found->pw_uid, found->pw_uid) != 0) {
    return MakeError(ErrorCode::kIoError, "setresuid for " + user + " failed: " + Errno());
  }
  if (setuid(0) == 0 || geteuid() == 0) {
    return MakeError(ErrorCode::kInternal, "root could be regained after dropping privileges");
  }
  return absl::OkStatus();
}

absl::StatusOr<SignalWaiter> SignalWaiter::Create() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) {
    return MakeError(ErrorCode::kIoError, "pthread_sigmask failed");
  }
  if (signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
    return MakeError(ErrorCode::kIoError, "cannot ignore SIGPIPE: " + Errno());
  }
  int fd = signalfd(-1, &set, SFD_CLOEXEC);
  if (fd < 0) return MakeError(ErrorCode::kIoError, "signalfd failed: " + Errno());
  return SignalWaiter(fd);
}

SignalWaiter::SignalWaiter(SignalWaiter&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }

SignalWaiter::~SignalWaiter() {
  if (fd_ >= 0) close(fd_);
}

std::optional<DaemonSignal> SignalWaiter::Wait(std::chrono::milliseconds timeout) {
  struct pollfd p {};
  p.fd = fd_;
  p.events = POLLIN;
  int ready = poll(&p, 1, static_cast<int>(timeout.count()));
  if (ready <= 0) return std::nullopt;
  struct signalfd_siginfo info {};
  if (read(fd_, &info, sizeof(info)) != static_cast<ssize_t>(sizeof(info))) return std::nullopt;
  if (info.ssi_signo == SIGHUP) return DaemonSignal::kReload;
  return DaemonSignal::kTerminate;
}

}  // namespace coffer::cofferd
