// Framing of the coffer.v1 socket protocol: protobuf messages, each preceded by its size as a
// base-128 varint — protobuf's standard delimited framing (Java writeDelimitedTo, C++
// google::protobuf::util::SerializeDelimitedToZeroCopyStream, Python
// `encoder._VarintBytes(len(b)) + b`). docs/api.md, "Framing".
//
// Writing uses protobuf's delimited-message utility. Reading decodes the size prefix here
// instead of calling ParseDelimitedFromZeroCopyStream, because the protocol needs the declared
// size checked against a maximum *before* anything is buffered or allocated for it, and a
// deadline on every read; the payload is then parsed with MessageLite::ParseFromArray.
//
// Sockets: the fd must be a connected stream socket, blocking or not; every wait is a poll()
// with the given deadline. Writes use MSG_NOSIGNAL (a closed peer is an error, not SIGPIPE).
//
// Thread safety: a FrameReader belongs to one reading thread; WriteFrame calls on one fd must be
// serialized by the caller. Failures (stable codes): FRAME_TOO_LARGE (declared size above the
// maximum; nothing of the payload was read), MALFORMED_REQUEST (bad varint, or a payload that
// does not parse), REQUEST_TIMEOUT (deadline passed), DAEMON_UNAVAILABLE (peer closed
// mid-frame, or a socket error; the message carries errno's text).

#ifndef COFFER_KMS_API_FRAMING_H_
#define COFFER_KMS_API_FRAMING_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace google::protobuf {
class MessageLite;
}  // namespace google::protobuf

namespace coffer::api {

// 4 MiB of payload plus room for a request's other fields.
inline constexpr size_t kDefaultMaxFrameBytes = (size_t{4} << 20) + (size_t{64} << 10);
// Attachment chunks the client library sends and the daemon streams back.
inline constexpr size_t kDefaultChunkBytes = size_t{1} << 20;

using Deadline = std::chrono::steady_clock::time_point;

class FrameReader {
 public:
  FrameReader(int fd, size_t max_frame_bytes);
  FrameReader(const FrameReader&) = delete;
  FrameReader& operator=(const FrameReader&) = delete;

  // Reads the next frame into *message (cleared first). Sets *end_of_stream and returns OK
  // when the peer closed the connection cleanly between frames (no byte of a new frame read).
  absl::Status Read(google::protobuf::MessageLite* message, Deadline deadline, bool* end_of_stream);

  // Bytes already received and not yet consumed (a pipelined next frame).
  size_t buffered() const { return end_ - begin_; }

 private:
  // Makes at least `want` bytes available in buf_[begin_, end_), reading from the fd.
  absl::Status Fill(size_t want, Deadline deadline, bool* closed);

  int fd_;
  size_t max_frame_bytes_;
  std::string buf_;
  size_t begin_ = 0;
  size_t end_ = 0;
};

// Decodes the size prefix at the start of `bytes` (the bytes received so far of a frame), for
// readers that cannot block, e.g. cofferd's epoll reactor. OK with *header_bytes == 0 when the
// prefix is not complete yet; otherwise *header_bytes is the prefix's length and *payload_bytes
// the declared payload size. FRAME_TOO_LARGE when the size exceeds `max_frame_bytes`;
// MALFORMED_REQUEST when the prefix is not a varint of at most 10 bytes.
absl::Status DecodeFrameHeader(std::string_view bytes, size_t max_frame_bytes, size_t* header_bytes,
                               size_t* payload_bytes);

// Writes `message` as one frame. OK only once every byte was handed to the kernel.
absl::Status WriteFrame(int fd, const google::protobuf::MessageLite& message, Deadline deadline);

// Serializes `message` as one frame (size prefix + payload) appended to *out.
void AppendFrame(const google::protobuf::MessageLite& message, std::string* out);

// Writes all of `bytes` to `fd` before `deadline`.
absl::Status WriteAll(int fd, const std::string& bytes, Deadline deadline);

// Connects a blocking, close-on-exec stream socket to the Unix socket at `path`, waiting at
// most `connect_timeout` for room in the listener's backlog (no send timeout is left set).
// Returns the fd, which the caller owns. INVALID_ARGUMENT for an empty or too long path;
// DAEMON_UNAVAILABLE when socket() or connect() fails. *connect_errno is connect's errno when
// connect failed and 0 otherwise, so that the caller can say what to check.
absl::StatusOr<int> DialUnixSocket(const std::string& path,
                                   std::chrono::milliseconds connect_timeout, int* connect_errno);

}  // namespace coffer::api

#endif  // COFFER_KMS_API_FRAMING_H_
