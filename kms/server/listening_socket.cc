#include "kms/server/listening_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "crypto/base/status.h"

namespace coffer::server {
namespace {

absl::Status SystemError(const std::string& what) {
  return MakeError(ErrorCode::kIoError, what + ": " + std::strerror(errno));
}

absl::Status ConfigError(const std::string& what) {
  return MakeError(ErrorCode::kConfigInvalid, what);
}

std::string ParentDirectory(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Whether a process accepts connections on the socket at `address`: a stale socket file (its
// daemon died) refuses them.
absl::StatusOr<bool> SomeoneListens(const sockaddr_un& address) {
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0) return SystemError("socket(AF_UNIX)");
  int rc = ::connect(probe, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  int error = errno;
  ::close(probe);
  if (rc == 0) return true;
  if (error == ECONNREFUSED) return false;
  errno = error;
  return SystemError(std::string("probing existing socket ") + address.sun_path);
}

}  // namespace

absl::StatusOr<ListeningSocket> ListeningSocket::Create(const SocketOptions& options, int backlog) {
  const std::string& path = options.path;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty()) return ConfigError("socket path is empty");
  if (path.size() >= sizeof(address.sun_path)) {
    return ConfigError("socket path " + path + " is " + std::to_string(path.size()) +
                       " bytes; Unix sockets allow at most " +
                       std::to_string(sizeof(address.sun_path) - 1) + ": choose a shorter path");
  }
  std::memcpy(address.sun_path, path.data(), path.size());

  std::string directory = ParentDirectory(path);
  struct stat info {};
  if (::stat(directory.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    return ConfigError("directory " + directory + " of socket " + path +
                       " does not exist: create it first");
  }
  if (::lstat(path.c_str(), &info) == 0) {
    if (!S_ISSOCK(info.st_mode)) {
      return ConfigError(path + " exists and is not a socket: remove it or choose another path");
    }
    COFFER_ASSIGN_OR_RETURN(bool listening, SomeoneListens(address));
    if (listening) {
      return ConfigError("another process is listening on " + path +
                         ": is cofferd already running?");
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return SystemError("removing stale socket " + path);
    }
  } else if (errno != ENOENT) {
    return SystemError("lstat " + path);
  }

  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return SystemError("socket(AF_UNIX)");
  auto fail = [&](const std::string& what, bool unlink_path) {
    absl::Status status = SystemError(what);
    ::close(fd);
    if (unlink_path) ::unlink(path.c_str());
    return status;
  };
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return fail("bind " + path, false);
  }
  // Mode and group are set before listen(): until then every connect is refused, so no client
  // ever connects through the umask's permissions.
  if (options.group.has_value() &&
      ::chown(path.c_str(), static_cast<uid_t>(-1), *options.group) != 0) {
    return fail("chown " + path + " to gid " + std::to_string(*options.group), true);
  }
  if (::chmod(path.c_str(), options.mode) != 0) return fail("chmod " + path, true);
  if (::lstat(path.c_str(), &info) != 0) return fail("lstat " + path, true);
  if (::listen(fd, backlog) != 0) return fail("listen " + path, true);
  return ListeningSocket(fd, path, info.st_dev, info.st_ino);
}

ListeningSocket::ListeningSocket(ListeningSocket&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      dev_(other.dev_),
      ino_(other.ino_) {}

ListeningSocket& ListeningSocket::operator=(ListeningSocket&& other) noexcept {
  if (this != &other) {
    CloseAndRemove();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    dev_ = other.dev_;
    ino_ = other.ino_;
  }
  return *this;
}

ListeningSocket::~ListeningSocket() { CloseAndRemove(); }

void ListeningSocket::CloseAndRemove() {
  if (fd_ < 0) return;
  struct stat info {};
  if (::lstat(path_.c_str(), &info) == 0 && info.st_dev == dev_ && info.st_ino == ino_) {
    ::unlink(path_.c_str());
  }
  ::close(fd_);
  fd_ = -1;
}

}  // namespace coffer::server
