// kms/api/framing: FrameReader, WriteFrame and DecodeFrameHeader over a socketpair.

#include "kms/api/framing.h"

#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"

namespace coffer::api {
namespace {

using std::chrono::milliseconds;

Deadline In(milliseconds ms) { return std::chrono::steady_clock::now() + ms; }

// A message whose serialized size is exactly `size` (>= 3): Error with a padded `message`.
coffer::v1::Error MessageOfSize(size_t size) {
  coffer::v1::Error error;
  for (size_t length = size; length > 0; --length) {
    error.set_message(std::string(length, 'm'));
    if (error.ByteSizeLong() == size) return error;
  }
  ADD_FAILURE() << "no message of size " << size;
  return error;
}

class FramingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds_), 0);
  }
  void TearDown() override {
    CloseWriter();
    ::close(fds_[0]);
  }
  void CloseWriter() {
    if (fds_[1] >= 0) ::close(fds_[1]);
    fds_[1] = -1;
  }
  void WriteRaw(const std::string& bytes) {
    ASSERT_TRUE(WriteAll(fds_[1], bytes, In(milliseconds(5000))).ok());
  }

  int reader_fd() const { return fds_[0]; }
  int writer_fd() const { return fds_[1]; }

  int fds_[2] = {-1, -1};
};

TEST_F(FramingTest, RoundTrip) {
  coffer::v1::Request request;
  request.set_request_id(12345);
  request.mutable_record_get()->set_dataset("crm");
  ASSERT_TRUE(WriteFrame(writer_fd(), request, In(milliseconds(1000))).ok());
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = true;
  ASSERT_TRUE(reader.Read(&read, In(milliseconds(1000)), &eos).ok());
  EXPECT_FALSE(eos);
  EXPECT_EQ(read.SerializeAsString(), request.SerializeAsString());
  CloseWriter();
  ASSERT_TRUE(reader.Read(&read, In(milliseconds(1000)), &eos).ok());
  EXPECT_TRUE(eos);
}

TEST_F(FramingTest, EmptyMessageIsAOneByteFrame) {
  std::string frame;
  AppendFrame(coffer::v1::Request(), &frame);
  EXPECT_EQ(frame, std::string(1, '\0'));
  WriteRaw(frame);
  FrameReader reader(reader_fd(), 16);
  coffer::v1::Request read;
  bool eos = true;
  ASSERT_TRUE(reader.Read(&read, In(milliseconds(1000)), &eos).ok());
  EXPECT_FALSE(eos);
}

TEST_F(FramingTest, PipelinedFramesInOneWrite) {
  std::string frames;
  for (uint64_t id = 1; id <= 100; ++id) {
    coffer::v1::Request request;
    request.set_request_id(id);
    AppendFrame(request, &frames);
  }
  frames += std::string(1, '\x03');  // the first byte of a frame still to come
  WriteRaw(frames);
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  for (uint64_t id = 1; id <= 100; ++id) {
    coffer::v1::Request read;
    bool eos = true;
    ASSERT_TRUE(reader.Read(&read, In(milliseconds(1000)), &eos).ok());
    ASSERT_FALSE(eos);
    EXPECT_EQ(read.request_id(), id);
    EXPECT_GT(reader.buffered(), 0u);
  }
  EXPECT_EQ(reader.buffered(), 1u);
}

TEST_F(FramingTest, ExactlyMaxAcceptedMaxPlusOneRefusedUnread) {
  constexpr size_t kMax = 300'000;  // a two-varint-byte... three-byte prefix, several reads
  coffer::v1::Error at_max = MessageOfSize(kMax);
  coffer::v1::Error over = MessageOfSize(kMax + 1);
  std::thread writer([&] {
    EXPECT_TRUE(WriteFrame(writer_fd(), at_max, In(milliseconds(5000))).ok());
    // Only the prefix and a little of the payload: the reader must refuse before reading more.
    std::string frame;
    AppendFrame(over, &frame);
    EXPECT_TRUE(WriteAll(writer_fd(), frame.substr(0, 10), In(milliseconds(5000))).ok());
  });
  FrameReader reader(reader_fd(), kMax);
  coffer::v1::Error read;
  bool eos = true;
  ASSERT_TRUE(reader.Read(&read, In(milliseconds(5000)), &eos).ok());
  EXPECT_EQ(read.message().size(), at_max.message().size());
  writer.join();
  absl::Status too_large = reader.Read(&read, In(milliseconds(5000)), &eos);
  EXPECT_EQ(ErrorCodeOf(too_large), ErrorCode::kFrameTooLarge) << too_large;
}

TEST_F(FramingTest, BadVarint) {
  WriteRaw(std::string(10, '\x80') + '\x01');
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = false;
  EXPECT_EQ(ErrorCodeOf(reader.Read(&read, In(milliseconds(1000)), &eos)),
            ErrorCode::kMalformedRequest);
}

TEST_F(FramingTest, UnparsablePayload) {
  WriteRaw(std::string("\x03\xff\xff\xff", 4));
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = false;
  EXPECT_EQ(ErrorCodeOf(reader.Read(&read, In(milliseconds(1000)), &eos)),
            ErrorCode::kMalformedRequest);
}

TEST_F(FramingTest, TruncatedFrameThenClose) {
  coffer::v1::Request request;
  request.set_request_id(1);
  request.mutable_record_get()->set_dataset("crm");
  std::string frame;
  AppendFrame(request, &frame);
  WriteRaw(frame.substr(0, frame.size() - 2));
  CloseWriter();
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = true;
  absl::Status status = reader.Read(&read, In(milliseconds(1000)), &eos);
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kDaemonUnavailable) << status;
  EXPECT_FALSE(eos);
}

TEST_F(FramingTest, TruncatedSizePrefixThenClose) {
  WriteRaw(std::string("\x80", 1));
  CloseWriter();
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = true;
  EXPECT_EQ(ErrorCodeOf(reader.Read(&read, In(milliseconds(1000)), &eos)),
            ErrorCode::kDaemonUnavailable);
}

TEST_F(FramingTest, ReadTimesOutMidFrame) {
  WriteRaw(std::string("\x05\x08", 2));
  FrameReader reader(reader_fd(), kDefaultMaxFrameBytes);
  coffer::v1::Request read;
  bool eos = true;
  EXPECT_EQ(ErrorCodeOf(reader.Read(&read, In(milliseconds(50)), &eos)),
            ErrorCode::kRequestTimeout);
}

TEST_F(FramingTest, WriteToClosedPeerFails) {
  int pair[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, pair), 0);
  ::close(pair[0]);
  coffer::v1::Request request;
  EXPECT_EQ(ErrorCodeOf(WriteFrame(pair[1], request, In(milliseconds(100)))),
            ErrorCode::kDaemonUnavailable);
  ::close(pair[1]);
}

TEST(DecodeFrameHeaderTest, IncrementalPrefixes) {
  size_t header = 9;
  size_t payload = 9;
  ASSERT_TRUE(DecodeFrameHeader("", 100, &header, &payload).ok());
  EXPECT_EQ(header, 0u);
  ASSERT_TRUE(DecodeFrameHeader("\x80", 1000, &header, &payload).ok());
  EXPECT_EQ(header, 0u);  // continues
  ASSERT_TRUE(DecodeFrameHeader("\xac\x02rest", 1000, &header, &payload).ok());
  EXPECT_EQ(header, 2u);
  EXPECT_EQ(payload, 300u);
  ASSERT_TRUE(DecodeFrameHeader("\xac\x02", 300, &header, &payload).ok());
  EXPECT_EQ(payload, 300u);
  EXPECT_EQ(ErrorCodeOf(DecodeFrameHeader("\xad\x02", 300, &header, &payload)),
            ErrorCode::kFrameTooLarge);
  EXPECT_EQ(ErrorCodeOf(DecodeFrameHeader(std::string(10, '\xff'), 300, &header, &payload)),
            ErrorCode::kMalformedRequest);
  // Nine continuation bytes and a final 0x01: 2^63, a valid varint but far too large.
  EXPECT_EQ(ErrorCodeOf(DecodeFrameHeader(std::string(9, '\x80') + '\x01', 300, &header, &payload)),
            ErrorCode::kFrameTooLarge);
}

}  // namespace
}  // namespace coffer::api
