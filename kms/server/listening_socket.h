// The server's listening Unix stream sockets: checked, created with the configured mode and
// group before listen(), and removed again only while the path still names this socket.

#ifndef COFFER_KMS_SERVER_LISTENING_SOCKET_H_
#define COFFER_KMS_SERVER_LISTENING_SOCKET_H_

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "kms/server/server.h"

namespace coffer::server {

class ListeningSocket {
 public:
  // Refuses (CONFIG_INVALID) a path too long for sun_path, a missing parent directory, a
  // non-socket file at the path, or a socket something still listens on; unlinks a stale
  // socket. The fd is non-blocking and close-on-exec. IO_ERROR when a system call fails.
  static absl::StatusOr<ListeningSocket> Create(const SocketOptions& options, int backlog);

  ListeningSocket(ListeningSocket&& other) noexcept;
  ListeningSocket& operator=(ListeningSocket&& other) noexcept;
  ListeningSocket(const ListeningSocket&) = delete;
  ListeningSocket& operator=(const ListeningSocket&) = delete;
  ~ListeningSocket();

  int fd() const { return fd_; }

  // Closes the fd and unlinks the path if it is still the socket created here. Idempotent.
  void CloseAndRemove();

 private:
  ListeningSocket(int fd, std::string path, dev_t dev, ino_t ino)
      : fd_(fd), path_(std::move(path)), dev_(dev), ino_(ino) {}

  int fd_ = -1;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace coffer::server

#endif  // COFFER_KMS_SERVER_LISTENING_SOCKET_H_
