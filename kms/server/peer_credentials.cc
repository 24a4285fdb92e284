#include "kms/server/peer_credentials.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "crypto/base/status.h"

namespace coffer::server {
namespace {

absl::Status SocketOptionError(const char* option) {
  return MakeError(ErrorCode::kIoError,
                   std::string("getsockopt(") + option + ") failed: " + std::strerror(errno));
}

}  // namespace

absl::StatusOr<daemon::PeerIdentity> ReadPeerIdentity(int fd, daemon::SocketKind kind) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    return SocketOptionError("SO_PEERCRED");
  }
  daemon::PeerIdentity peer;
  peer.uid = cred.uid;
  peer.gid = cred.gid;
  peer.pid = cred.pid;
  peer.socket = kind;

  std::vector<gid_t> groups(32);
  for (;;) {
    auto bytes = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &bytes) == 0) {
      groups.resize(bytes / sizeof(gid_t));
      break;
    }
    // ERANGE: the kernel wrote the size it needs into `bytes`. Grow at least by half, in case
    // the answer was not larger (it cannot shrink, a connected peer's credentials are fixed).
    if (errno != ERANGE) return SocketOptionError("SO_PEERGROUPS");
    size_t needed = bytes / sizeof(gid_t);
    groups.resize(std::max(needed, groups.size() + groups.size() / 2 + 1));
  }
  groups.erase(std::remove(groups.begin(), groups.end(), peer.gid), groups.end());
  peer.groups = std::move(groups);
  return peer;
}

}  // namespace coffer::server
