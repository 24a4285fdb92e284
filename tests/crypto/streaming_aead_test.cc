#include "crypto/streaming_aead.h"

#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/internal/stream_encrypter_factory.h"
#include "gtest/gtest.h"
#include "tests/crypto/test_keys.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::SecretFrom;
using ::coffer::testing::SpanOf;
using ::coffer::testing::TestKey;

constexpr uint32_t kVersion = 3;
constexpr uint32_t kSegment = kMinStreamSegmentSize;
constexpr std::string_view kContext = "dataset-handle|stored-name-key";

struct EncryptedStream {
  std::string header;
  std::vector<std::string> segments;
};

std::string Pattern(size_t size, char seed = 0) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>(seed + i * 31 + (i >> 8));
  return out;
}

EncryptedStream Encrypt(std::string_view plaintext, char key_fill = 'k',
                        std::string_view context = kContext) {
  auto encrypter = StreamSegmentEncrypter::Create(TestKey(key_fill), kVersion, context, kSegment);
  EXPECT_TRUE(encrypter.ok()) << encrypter.status();
  EncryptedStream stream{std::string(encrypter->header()), {}};
  do {
    bool last = plaintext.size() <= kSegment;
    std::string_view piece = plaintext.substr(0, last ? plaintext.size() : kSegment);
    auto segment = encrypter->EncryptSegment(piece, last);
    EXPECT_TRUE(segment.ok()) << segment.status();
    stream.segments.push_back(*segment);
    plaintext.remove_prefix(piece.size());
  } while (!plaintext.empty());
  return stream;
}

StreamSegmentDecrypter Decrypter(const EncryptedStream& stream, char key_fill = 'k',
                                 std::string_view context = kContext) {
  auto decrypter =
      StreamSegmentDecrypter::Create(TestKey(key_fill), kVersion, stream.header, context);
  EXPECT_TRUE(decrypter.ok()) << decrypter.status();
  return std::move(decrypter).value();
}

// Decrypts all segments in order, treating the final one as last.
absl::StatusOr<std::string> DecryptAll(const StreamSegmentDecrypter& decrypter,
                                       const std::vector<std::string>& segments) {
  std::string out;
  for (size_t i = 0; i < segments.size(); ++i) {
    absl::Status status = decrypter.DecryptSegment(i, segments[i], i + 1 == segments.size(), &out);
    if (!status.ok()) return status;
  }
  return out;
}

TEST(StreamingAeadTest, RoundTripsAtEverySizeBoundary) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{kSegment - 1}, size_t{kSegment},
                      size_t{kSegment + 1}, size_t{3} * kSegment, size_t{3} * kSegment + 17}) {
    std::string plaintext = Pattern(size);
    EncryptedStream stream = Encrypt(plaintext);
    EXPECT_EQ(stream.header.size(), kStreamHeaderSize);
    size_t expected_segments = size == 0 ? 1 : (size + kSegment - 1) / kSegment;
    EXPECT_EQ(stream.segments.size(), expected_segments) << size;
    auto decrypted = DecryptAll(Decrypter(stream), stream.segments);
    ASSERT_TRUE(decrypted.ok()) << decrypted.status();
    EXPECT_EQ(*decrypted, plaintext) << size;
  }
}

TEST(StreamingAeadTest, EmptyPlaintextIsOneEmptyLastSegment) {
  EncryptedStream stream = Encrypt("");
  ASSERT_EQ(stream.segments.size(), 1u);
  EXPECT_EQ(stream.segments[0].size(), kStreamSegmentTagSize);
  auto decrypted = Decrypter(stream).DecryptSegment(0, stream.segments[0], true);
  ASSERT_TRUE(decrypted.ok()) << decrypted.status();
  EXPECT_EQ(*decrypted, "");
  // The same empty segment claimed as non-last fails.
  EXPECT_FALSE(Decrypter(stream).DecryptSegment(0, stream.segments[0], false).ok());
}

TEST(StreamingAeadTest, RandomAccessToAnySegment) {
  std::string plaintext = Pattern(5 * kSegment + 100);
  EncryptedStream stream = Encrypt(plaintext);
  StreamSegmentDecrypter decrypter = Decrypter(stream);
  for (size_t i : {4, 0, 5, 2}) {
    auto segment = decrypter.DecryptSegment(i, stream.segments[i], i == 5);
    ASSERT_TRUE(segment.ok()) << segment.status();
    EXPECT_EQ(*segment, plaintext.substr(i * kSegment, kSegment)) << i;
  }
}

TEST(StreamingAeadTest, TruncationFails) {
  EncryptedStream stream = Encrypt(Pattern(3 * kSegment + 5));
  stream.segments.pop_back();  // the new final segment was not written as last
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(stream), stream.segments).status()),
            ErrorCode::kCiphertextCorrupt);
  // Cutting bytes off the last segment fails too.
  EncryptedStream cut = Encrypt(Pattern(kSegment + 50));
  cut.segments.back().resize(cut.segments.back().size() - 1);
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(cut), cut.segments).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(StreamingAeadTest, ReorderingFails) {
  EncryptedStream stream = Encrypt(Pattern(3 * kSegment + 5));
  std::swap(stream.segments[0], stream.segments[1]);
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(stream), stream.segments).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(StreamingAeadTest, SegmentFromAnotherStreamFails) {
  std::string plaintext = Pattern(3 * kSegment + 5);
  EncryptedStream stream = Encrypt(plaintext);
  EncryptedStream other = Encrypt(plaintext);  // same key, context and plaintext
  stream.segments[1] = other.segments[1];
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(stream), stream.segments).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(StreamingAeadTest, AppendedDataFails) {
  EncryptedStream stream = Encrypt(Pattern(size_t{2} * kSegment));
  // An extra segment after the real last one: the real last is no longer decrypted as last.
  stream.segments.push_back(stream.segments.back());
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(stream), stream.segments).status()),
            ErrorCode::kCiphertextCorrupt);
  // Bytes appended to the last segment.
  EncryptedStream padded = Encrypt(Pattern(kSegment + 3));
  padded.segments.back() += "x";
  EXPECT_EQ(ErrorCodeOf(DecryptAll(Decrypter(padded), padded.segments).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(StreamingAeadTest, WrongKeyContextOrCommitmentFailsAtTheHeader) {
  EncryptedStream stream = Encrypt("attachment");
  auto wrong_context =
      StreamSegmentDecrypter::Create(TestKey('k'), kVersion, stream.header, "other|name");
  EXPECT_EQ(ErrorCodeOf(wrong_context.status()), ErrorCode::kKeyCommitmentMismatch);
  auto wrong_key = StreamSegmentDecrypter::Create(TestKey('z'), kVersion, stream.header, kContext);
  EXPECT_EQ(ErrorCodeOf(wrong_key.status()), ErrorCode::kKeyCommitmentMismatch);
  auto wrong_version =
      StreamSegmentDecrypter::Create(TestKey('k'), kVersion + 1, stream.header, kContext);
  EXPECT_EQ(ErrorCodeOf(wrong_version.status()), ErrorCode::kKeyVersionMismatch);
  // Every byte after the format byte and key version is bound by the commitment.
  for (size_t i = 9; i < kStreamHeaderSize; ++i) {
    std::string header = stream.header;
    header[i] = static_cast<char>(header[i] ^ 0x01);
    auto tampered = StreamSegmentDecrypter::Create(TestKey('k'), kVersion, header, kContext);
    EXPECT_EQ(ErrorCodeOf(tampered.status()), ErrorCode::kKeyCommitmentMismatch) << i;
  }
}

TEST(StreamingAeadTest, MalformedHeadersAreRejected) {
  EncryptedStream stream = Encrypt("x");
  EXPECT_EQ(ErrorCodeOf(ParseStreamHeader("").status()), ErrorCode::kCiphertextCorrupt);
  std::string record_format = stream.header;
  record_format[0] = 0x01;
  EXPECT_EQ(ErrorCodeOf(ParseStreamHeader(record_format).status()), ErrorCode::kUnsupportedFormat);
  EXPECT_EQ(ErrorCodeOf(ParseStreamHeader(stream.header.substr(0, 79)).status()),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(ParseStreamHeader(stream.header + "x").status()),
            ErrorCode::kCiphertextCorrupt);
  std::string huge_segments = stream.header;
  huge_segments[5] = '\x7f';  // segment size 0x7f000400
  EXPECT_EQ(ErrorCodeOf(ParseStreamHeader(huge_segments).status()), ErrorCode::kCiphertextCorrupt);
  auto parsed = ParseStreamHeader(stream.header);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->key_version, kVersion);
  EXPECT_EQ(parsed->segment_size, kSegment);
}

TEST(StreamingAeadTest, SegmentIndexIsRangeChecked) {
  std::string salt(kStreamSaltSize, 's');
  std::string prefix(kStreamNoncePrefixSize, 'p');
  auto near_end = internal::StreamEncrypterFactory::Create(TestKey('k'), kVersion, kContext,
                                                           kSegment, SpanOf(salt), SpanOf(prefix),
                                                           kMaxStreamSegmentIndex - 1);
  ASSERT_TRUE(near_end.ok()) << near_end.status();
  std::string full(kSegment, 'f');
  auto second_to_last = near_end->EncryptSegment(full, false);
  ASSERT_TRUE(second_to_last.ok());
  // Index 2^32 - 1 may only be the last segment: a non-last one would force a wrap next.
  EXPECT_EQ(ErrorCodeOf(near_end->EncryptSegment(full, false).status()), ErrorCode::kOutOfRange);
  auto last = near_end->EncryptSegment("tail", true);
  ASSERT_TRUE(last.ok()) << last.status();

  auto decrypter =
      StreamSegmentDecrypter::Create(TestKey('k'), kVersion, near_end->header(), kContext);
  ASSERT_TRUE(decrypter.ok());
  EXPECT_EQ(*decrypter->DecryptSegment(kMaxStreamSegmentIndex, *last, true), "tail");
  EXPECT_EQ(*decrypter->DecryptSegment(kMaxStreamSegmentIndex - 1, *second_to_last, false), full);
  // Index 2^32 would alias index 0 in a 32-bit field: refused, never wrapped.
  EXPECT_EQ(
      ErrorCodeOf(decrypter->DecryptSegment(kMaxStreamSegmentIndex + 1, *last, true).status()),
      ErrorCode::kOutOfRange);
  EXPECT_EQ(ErrorCodeOf(internal::StreamEncrypterFactory::Create(
                            TestKey('k'), kVersion, kContext, kSegment, SpanOf(salt),
                            SpanOf(prefix), kMaxStreamSegmentIndex + 1)
                            .status()),
            ErrorCode::kOutOfRange);
}

TEST(StreamingAeadTest, EncrypterEnforcesSegmentSizesAndFinality) {
  auto encrypter = StreamSegmentEncrypter::Create(TestKey('k'), kVersion, kContext, kSegment);
  ASSERT_TRUE(encrypter.ok());
  EXPECT_EQ(ErrorCodeOf(encrypter->EncryptSegment(std::string(kSegment - 1, 'x'), false).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(encrypter->EncryptSegment(std::string(kSegment + 1, 'x'), true).status()),
            ErrorCode::kInvalidArgument);
  ASSERT_TRUE(encrypter->EncryptSegment(std::string(kSegment, 'x'), false).ok());
  // An empty last segment after a full one would make contiguous sizes ambiguous.
  EXPECT_EQ(ErrorCodeOf(encrypter->EncryptSegment("", true).status()), ErrorCode::kInvalidArgument);
  ASSERT_TRUE(encrypter->EncryptSegment("end", true).ok());
  EXPECT_EQ(ErrorCodeOf(encrypter->EncryptSegment("more", true).status()),
            ErrorCode::kFailedPrecondition);
}

TEST(StreamingAeadTest, RejectsBadKeyAndSegmentSizes) {
  for (size_t size : {0, 16, 31, 33}) {
    auto encrypter =
        StreamSegmentEncrypter::Create(SecretFrom(std::string(size, 'k')), 1, kContext);
    EXPECT_EQ(ErrorCodeOf(encrypter.status()), ErrorCode::kInvalidArgument) << size;
  }
  for (uint32_t segment : {uint32_t{0}, kMinStreamSegmentSize - 1, kMaxStreamSegmentSize + 1}) {
    auto encrypter = StreamSegmentEncrypter::Create(TestKey('k'), 1, kContext, segment);
    EXPECT_EQ(ErrorCodeOf(encrypter.status()), ErrorCode::kInvalidArgument) << segment;
  }
  EncryptedStream stream = Encrypt("x");
  auto bad_key =
      StreamSegmentDecrypter::Create(SecretFrom("short"), kVersion, stream.header, kContext);
  EXPECT_EQ(ErrorCodeOf(bad_key.status()), ErrorCode::kInvalidArgument);
}

TEST(StreamingAeadTest, FailedDecryptionLeavesOutputUnchanged) {
  EncryptedStream stream = Encrypt(Pattern(kSegment + 1));
  std::string out = "kept";
  std::string tampered = stream.segments[0];
  tampered[10] = static_cast<char>(tampered[10] ^ 1);
  EXPECT_EQ(ErrorCodeOf(Decrypter(stream).DecryptSegment(0, tampered, false, &out)),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(out, "kept");
}

}  // namespace
}  // namespace coffer::crypto
