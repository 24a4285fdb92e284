#include "kms/api/framing.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include "crypto/base/status.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/message_lite.h"
#include "google/protobuf/util/delimited_message_util.h"

namespace coffer::api {
namespace {

constexpr size_t kReadChunk = size_t{64} << 10;
constexpr size_t kMaxVarintBytes = 10;

int MillisUntil(Deadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline - std::chrono::steady_clock::now());
  if (left.count() <= 0) return 0;
  if (left.count() > 60'000) return 60'000;  // re-checked in the loop
  return static_cast<int>(left.count());
}

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitFor(int fd, short events, Deadline deadline) {
  for (;;) {
    pollfd pfd{fd, events, 0};
    int millis = MillisUntil(deadline);
    int ready = ::poll(&pfd, 1, millis);
    if (ready > 0) return absl::OkStatus();
    if (ready == 0) {
      if (std::chrono::steady_clock::now() >= deadline) {
        return MakeError(ErrorCode::kRequestTimeout, "socket: deadline passed");
      }
      continue;
    }
    if (errno == EINTR) continue;
    return MakeError(ErrorCode::kDaemonUnavailable,
                     std::string("socket poll failed: ") + std::strerror(errno));
  }
}

}  // namespace

FrameReader::FrameReader(int fd, size_t max_frame_bytes)
    : fd_(fd), max_frame_bytes_(max_frame_bytes) {}

absl::Status FrameReader::Fill(size_t want, Deadline deadline, bool* closed) {
  *closed = false;
  if (end_ - begin_ >= want) return absl::OkStatus();
  if (begin_ > 0) {  // compact: keep the unread bytes at the front
    std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
    end_ -= begin_;
    begin_ = 0;
  }
  size_t capacity = want > kReadChunk ? want : kReadChunk;
  if (buf_.size() < capacity) buf_.resize(capacity);
  while (end_ < want) {
    ssize_t n = ::recv(fd_, buf_.data() + end_, buf_.size() - end_, MSG_DONTWAIT);
    if (n > 0) {
      end_ += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      *closed = true;
      return absl::OkStatus();
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      COFFER_RETURN_IF_ERROR(WaitFor(fd_, POLLIN, deadline));
      continue;
    }
    return MakeError(ErrorCode::kDaemonUnavailable,
                     std::string("socket read failed: ") + std::strerror(errno));
  }
  return absl::OkStatus();
}

absl::Status FrameReader::Read(google::protobuf::MessageLite* message, Deadline deadline,
                               bool* end_of_stream) {
  *end_of_stream = false;
  message->Clear();
  // The size prefix: a varint of at most 10 bytes, decoded once per byte received.
  size_t prefix = 0;
  size_t size = 0;
  for (size_t have = 1;; ++have) {
    bool closed = false;
    COFFER_RETURN_IF_ERROR(Fill(have, deadline, &closed));
    if (closed) {
      if (end_ == begin_) {
        *end_of_stream = true;
        return absl::OkStatus();
      }
      return MakeError(ErrorCode::kDaemonUnavailable, "connection closed inside a frame");
    }
    COFFER_RETURN_IF_ERROR(DecodeFrameHeader(std::string_view(buf_.data() + begin_, end_ - begin_),
                                             max_frame_bytes_, &prefix, &size));
    if (prefix != 0) break;
    have = end_ - begin_;
  }
  bool closed = false;
  COFFER_RETURN_IF_ERROR(Fill(prefix + size, deadline, &closed));
  if (closed) return MakeError(ErrorCode::kDaemonUnavailable, "connection closed inside a frame");
  const char* payload = buf_.data() + begin_ + prefix;
  begin_ += prefix + size;
  if (begin_ == end_) begin_ = end_ = 0;
  if (!message->ParseFromArray(payload, static_cast<int>(size))) {
    return MakeError(ErrorCode::kMalformedRequest, "frame does not parse as the expected message");
  }
  // Do not keep a large buffer around for one large frame.
  if (buf_.size() > 4 * kReadChunk && end_ - begin_ < kReadChunk) {
    std::string smaller(buf_.data() + begin_, end_ - begin_);
    smaller.resize(kReadChunk);
    buf_.swap(smaller);
    end_ -= begin_;
    begin_ = 0;
  }
  return absl::OkStatus();
}

absl::Status DecodeFrameHeader(std::string_view bytes, size_t max_frame_bytes, size_t* header_bytes,
                               size_t* payload_bytes) {
  *header_bytes = 0;
  *payload_bytes = 0;
  uint64_t size = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    auto byte = static_cast<uint8_t>(bytes[i]);
    // The tenth byte may only carry the 64th bit.
    if (i == kMaxVarintBytes - 1 && byte > 1) {
      return MakeError(ErrorCode::kMalformedRequest, "frame size is not a valid varint");
    }
    size |= static_cast<uint64_t>(byte & 0x7f) << (7 * i);
    if ((byte & 0x80) != 0) continue;
    if (size > max_frame_bytes) {
      return MakeError(ErrorCode::kFrameTooLarge, "frame of " + std::to_string(size) +
                                                      " bytes exceeds the maximum of " +
                                                      std::to_string(max_frame_bytes));
    }
    *header_bytes = i + 1;
    *payload_bytes = static_cast<size_t>(size);
    return absl::OkStatus();
  }
  return absl::OkStatus();  // the prefix continues in bytes not received yet
}

void AppendFrame(const google::protobuf::MessageLite& message, std::string* out) {
  google::protobuf::io::StringOutputStream stream(out);
  // Serializing an initialized proto3 message into a string cannot fail.
  google::protobuf::util::SerializeDelimitedToZeroCopyStream(message, &stream);
}

absl::Status WriteAll(int fd, const std::string& bytes, Deadline deadline) {
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t n = ::send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      COFFER_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline));
      continue;
    }
    return MakeError(ErrorCode::kDaemonUnavailable,
                     std::string("socket write failed: ") + std::strerror(errno));
  }
  return absl::OkStatus();
}

absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message, Deadline deadline) {
  std::string frame;
  AppendFrame(message, &frame);
  return WriteAll(fd, frame, deadline);
}

absl::StatusOr<int> DialUnixSocket(const std::string& path,
                                   std::chrono::milliseconds connect_timeout, int* connect_errno) {
  *connect_errno = 0;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(address.sun_path)) {
    return MakeError(ErrorCode::kInvalidArgument, "socket path must be 1 to " +
                                                      std::to_string(sizeof(address.sun_path) - 1) +
                                                      " bytes: " + path);
  }
  std::memcpy(address.sun_path, path.data(), path.size());
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return MakeError(ErrorCode::kDaemonUnavailable,
                     std::string("cannot create a Unix socket: ") + std::strerror(errno));
  }
  // A blocking AF_UNIX connect waits for room in the accept backlog; SO_SNDTIMEO bounds that.
  timeval limit{};
  limit.tv_sec = static_cast<time_t>(connect_timeout.count() / 1000);
  limit.tv_usec = static_cast<suseconds_t>((connect_timeout.count() % 1000) * 1000);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof(limit));
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address));
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    *connect_errno = errno;
    ::close(fd);
    return MakeError(ErrorCode::kDaemonUnavailable,
                     "cannot connect to " + path + ": " + std::strerror(*connect_errno));
  }
  timeval none{};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &none, sizeof(none));
  return fd;
}

}  // namespace coffer::api
