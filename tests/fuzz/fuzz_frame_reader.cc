// Fuzz target: partial reads through api::FrameReader over a socketpair.
//
// The input's first byte seeds the sizes of the writes; the rest is the byte stream a peer
// sends. A writer thread hands the stream to one end of a socketpair in small pieces of
// varying size and then closes it, so the reader meets size prefixes and payloads split at
// every kind of boundary; FrameReader::Read takes Requests from the other end until the
// stream ends or a frame is refused. A frame that was read must be the Request a one-shot
// parse of the same bytes gives (checked through DecodeFrameHeader).

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include "coffer/v1/service.pb.h"
#include "kms/api/framing.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

// Below the daemon's default, so that inputs reach FRAME_TOO_LARGE.
constexpr size_t kMaxFrameBytes = 4096;

void WriteInPieces(int fd, std::string_view bytes, uint8_t seed) {
  uint32_t state = seed | 0x100u;
  while (!bytes.empty()) {
    state = state * 1103515245u + 12345u;
    size_t piece = 1 + (state >> 16) % 7;
    if (piece > bytes.size()) piece = bytes.size();
    ssize_t written = send(fd, bytes.data(), piece, MSG_NOSIGNAL);
    if (written <= 0) break;  // the reader gave up and closed its end
    bytes.remove_prefix(static_cast<size_t>(written));
  }
  shutdown(fd, SHUT_WR);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using coffer::fuzz::Fail;
  if (size == 0) return 0;
  std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) Fail("socketpair");
  std::thread writer(WriteInPieces, fds[1], stream, data[0]);

  coffer::api::FrameReader reader(fds[0], kMaxFrameBytes);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::string_view expected = stream;  // what a one-shot decoder sees next
  for (;;) {
    coffer::v1::Request request;
    bool end_of_stream = false;
    absl::Status read = reader.Read(&request, deadline, &end_of_stream);
    if (!read.ok() || end_of_stream) break;
    size_t header_bytes = 0;
    size_t payload_bytes = 0;
    if (!coffer::api::DecodeFrameHeader(expected, kMaxFrameBytes, &header_bytes, &payload_bytes)
             .ok() ||
        header_bytes == 0 || payload_bytes > expected.size() - header_bytes) {
      Fail("FrameReader returned a frame the header decoder refuses");
    }
    coffer::v1::Request again;
    if (!again.ParseFromArray(expected.data() + header_bytes, static_cast<int>(payload_bytes)) ||
        again.SerializeAsString() != request.SerializeAsString()) {
      Fail("FrameReader's frame differs from a one-shot parse of the same bytes");
    }
    expected.remove_prefix(header_bytes + payload_bytes);
  }
  close(fds[0]);  // unblocks a writer still sending
  writer.join();
  close(fds[1]);
  return 0;
}
