// A connection to a running cofferd that speaks coffer.v1 frames by hand (kms/api/framing.h),
// for the suites that send what the client library never would: broken frames, unread replies,
// requests on the wrong socket. Every wait is bounded by kRawIoWait, a safety net for a hung
// daemon, never a measure.
//
// Thread safety: none; one connection per thread.

#ifndef COFFER_TESTS_KMS_COFFERD_RAW_CONNECTION_H_
#define COFFER_TESTS_KMS_COFFERD_RAW_CONNECTION_H_

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "kms/api/framing.h"

namespace coffer::testing {

inline constexpr std::chrono::seconds kRawIoWait{60};

inline api::Deadline RawDeadline() { return std::chrono::steady_clock::now() + kRawIoWait; }

// A connected socket to `path`, or -1.
inline int Dial(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// One connection speaking coffer.v1 frames by hand.
class RawConnection {
 public:
  explicit RawConnection(const std::string& path)
      : fd_(Dial(path)), reader_(fd_, size_t{64} << 20) {}
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;
  ~RawConnection() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  absl::Status Send(const ::coffer::v1::Request& request) {
    return api::WriteFrame(fd_, request, RawDeadline());
  }
  absl::Status SendBytes(const std::string& bytes) {
    return api::WriteAll(fd_, bytes, RawDeadline());
  }
  // The next response; DAEMON_UNAVAILABLE with *closed set when the daemon closed cleanly.
  absl::StatusOr<::coffer::v1::Response> Receive(bool* closed = nullptr) {
    ::coffer::v1::Response response;
    bool end = false;
    absl::Status read = reader_.Read(&response, RawDeadline(), &end);
    if (closed != nullptr) *closed = end;
    if (!read.ok()) return read;
    if (end) return MakeError(ErrorCode::kDaemonUnavailable, "closed");
    return response;
  }
  absl::StatusOr<::coffer::v1::Response> Call(const ::coffer::v1::Request& request) {
    COFFER_RETURN_IF_ERROR(Send(request));
    return Receive();
  }
  // Whether the daemon closed the connection (EOF or reset) within kIoWait, discarding any
  // bytes it sent first.
  bool ClosedByDaemon() {
    char buf[4096];
    auto deadline = RawDeadline();
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 1000) <= 0) continue;
      ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_;
  api::FrameReader reader_;
};

}  // namespace coffer::testing

#endif  // COFFER_TESTS_KMS_COFFERD_RAW_CONNECTION_H_
