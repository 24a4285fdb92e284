#include "crypto/streaming_aead.h"

#include <algorithm>
#include <string>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "crypto/hkdf.h"
#include "crypto/internal/big_endian.h"
#include "crypto/internal/stream_encrypter_factory.h"
#include "crypto/random.h"

namespace coffer::crypto {
namespace {

// docs/formats.md#stream-v1-key-derivation. Equal lengths keep the info strings prefix-free.
constexpr std::string_view kSubkeyLabel = "coffer stream v1 key";
constexpr std::string_view kCommitmentLabel = "coffer stream v1 cmt";
static_assert(kSubkeyLabel.size() == kCommitmentLabel.size());

// Offsets of the header fields (docs/formats.md#stream-v1).
constexpr size_t kKeyVersionOffset = 1;
constexpr size_t kSegmentSizeOffset = 5;
constexpr size_t kSaltOffset = 9;
constexpr size_t kNoncePrefixOffset = kSaltOffset + kStreamSaltSize;
constexpr size_t kCommitmentOffset = kNoncePrefixOffset + kStreamNoncePrefixSize;
static_assert(kCommitmentOffset + kStreamCommitmentSize == kStreamHeaderSize);

const uint8_t* Bytes(std::string_view data) {
  return reinterpret_cast<const uint8_t*>(data.data());
}

std::string_view View(const SecretBytes& secret) {
  return {reinterpret_cast<const char*>(secret.data()), secret.size()};
}

bool PointsInto(std::string_view view, const std::string& s) {
  if (view.empty()) return false;
  auto begin = reinterpret_cast<uintptr_t>(s.data());
  auto at = reinterpret_cast<uintptr_t>(view.data());
  return at + view.size() > begin && at < begin + s.capacity();
}

struct StreamKeys {
  SecretBytes subkey;
  SecretBytes commitment;
};

// Derives the segment subkey and the key commitment from the DEK, the header's first
// kCommitmentOffset bytes (format, key version, segment size, salt, nonce prefix) and the
// caller's context: info = label ‖ header fields ‖ context.
absl::StatusOr<StreamKeys> DeriveStreamKeys(const SecretBytes& dek, std::string_view header_fields,
                                            std::string_view context) {
  if (dek.size() != kStreamKeySize) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "stream DEKs must be 32 bytes, got " + std::to_string(dek.size()));
  }
  std::string_view salt = header_fields.substr(kSaltOffset, kStreamSaltSize);
  COFFER_ASSIGN_OR_RETURN(SecretBytes prk, HkdfSha256Extract(dek, salt));
  std::string info;
  info.reserve(kSubkeyLabel.size() + header_fields.size() + context.size());
  info.append(kSubkeyLabel).append(header_fields).append(context);
  COFFER_ASSIGN_OR_RETURN(SecretBytes subkey, HkdfSha256Expand(prk, info, kStreamKeySize));
  info.replace(0, kCommitmentLabel.size(), kCommitmentLabel);
  COFFER_ASSIGN_OR_RETURN(SecretBytes commitment,
                          HkdfSha256Expand(prk, info, kStreamCommitmentSize));
  return StreamKeys{std::move(subkey), std::move(commitment)};
}

std::array<uint8_t, internal::kAesGcmNonceSize> SegmentNonce(
    const std::array<uint8_t, kStreamNoncePrefixSize>& prefix, uint64_t index, bool last) {
  std::array<uint8_t, internal::kAesGcmNonceSize> nonce{};
  std::copy(prefix.begin(), prefix.end(), nonce.begin());
  internal::StoreBigEndian32(static_cast<uint32_t>(index), nonce.data() + kStreamNoncePrefixSize);
  nonce[kStreamNoncePrefixSize + 4] = last ? 1 : 0;
  return nonce;
}

bool SegmentSizeInRange(uint32_t segment_size) {
  return segment_size >= kMinStreamSegmentSize && segment_size <= kMaxStreamSegmentSize;
}

}  // namespace

absl::StatusOr<StreamHeader> ParseStreamHeader(std::string_view header_bytes) {
  if (header_bytes.empty()) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "stream header is empty");
  }
  StreamHeader header;
  header.format = static_cast<uint8_t>(header_bytes[0]);
  if (header.format != kStreamFormatV1) {
    return MakeError(
        ErrorCode::kUnsupportedFormat,
        "unknown stream format " + std::to_string(header.format) + " (this build reads format 2)");
  }
  if (header_bytes.size() != kStreamHeaderSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt,
                     "stream header is " + std::to_string(header_bytes.size()) + " bytes, not 80");
  }
  const uint8_t* bytes = Bytes(header_bytes);
  header.key_version = internal::LoadBigEndian32(bytes + kKeyVersionOffset);
  header.segment_size = internal::LoadBigEndian32(bytes + kSegmentSizeOffset);
  if (!SegmentSizeInRange(header.segment_size)) {
    return MakeError(
        ErrorCode::kCiphertextCorrupt,
        "stream header names an out-of-range segment size " + std::to_string(header.segment_size));
  }
  std::copy_n(bytes + kSaltOffset, kStreamSaltSize, header.salt.begin());
  std::copy_n(bytes + kNoncePrefixOffset, kStreamNoncePrefixSize, header.nonce_prefix.begin());
  std::copy_n(bytes + kCommitmentOffset, kStreamCommitmentSize, header.commitment.begin());
  return header;
}

namespace internal {

absl::StatusOr<StreamSegmentEncrypter> StreamEncrypterFactory::Create(
    const SecretBytes& key, uint32_t key_version, std::string_view context, uint32_t segment_size,
    absl::Span<const uint8_t> salt, absl::Span<const uint8_t> nonce_prefix,
    uint64_t first_segment_index) {
  if (!SegmentSizeInRange(segment_size)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "stream segment size must be " + std::to_string(kMinStreamSegmentSize) + ".." +
                         std::to_string(kMaxStreamSegmentSize) + " bytes, got " +
                         std::to_string(segment_size));
  }
  if (salt.size() != kStreamSaltSize || nonce_prefix.size() != kStreamNoncePrefixSize) {
    return MakeError(ErrorCode::kInvalidArgument, "stream salt or nonce prefix has a wrong size");
  }
  if (first_segment_index > kMaxStreamSegmentIndex) {
    return MakeError(ErrorCode::kOutOfRange, "first segment index beyond 2^32 - 1");
  }
  std::string header(kStreamHeaderSize, '\0');
  auto* bytes = reinterpret_cast<uint8_t*>(header.data());
  bytes[0] = kStreamFormatV1;
  StoreBigEndian32(key_version, bytes + kKeyVersionOffset);
  StoreBigEndian32(segment_size, bytes + kSegmentSizeOffset);
  std::copy(salt.begin(), salt.end(), bytes + kSaltOffset);
  std::copy(nonce_prefix.begin(), nonce_prefix.end(), bytes + kNoncePrefixOffset);
  COFFER_ASSIGN_OR_RETURN(
      StreamKeys keys,
      DeriveStreamKeys(key, std::string_view(header).substr(0, kCommitmentOffset), context));
  std::copy_n(keys.commitment.data(), kStreamCommitmentSize, bytes + kCommitmentOffset);
  COFFER_ASSIGN_OR_RETURN(AesGcm256 gcm, AesGcm256::Create(keys.subkey));
  return StreamSegmentEncrypter(std::move(gcm), std::move(header), segment_size,
                                first_segment_index);
}

}  // namespace internal

StreamSegmentEncrypter::StreamSegmentEncrypter(internal::AesGcm256 gcm, std::string header,
                                               uint32_t segment_size, uint64_t first_index)
    : gcm_(std::move(gcm)),
      header_(std::move(header)),
      segment_size_(segment_size),
      next_index_(first_index) {}

absl::StatusOr<StreamSegmentEncrypter> StreamSegmentEncrypter::Create(const SecretBytes& key,
                                                                      uint32_t key_version,
                                                                      std::string_view context,
                                                                      uint32_t segment_size) {
  std::array<uint8_t, kStreamSaltSize> salt;
  std::array<uint8_t, kStreamNoncePrefixSize> nonce_prefix;
  COFFER_RETURN_IF_ERROR(RandomNonce(absl::MakeSpan(salt)));
  COFFER_RETURN_IF_ERROR(RandomNonce(absl::MakeSpan(nonce_prefix)));
  return internal::StreamEncrypterFactory::Create(key, key_version, context, segment_size, salt,
                                                  nonce_prefix);
}

absl::Status StreamSegmentEncrypter::EncryptSegment(std::string_view plaintext, bool last,
                                                    std::string* out) {
  if (finished_) {
    return MakeError(ErrorCode::kFailedPrecondition, "the stream's last segment was written");
  }
  if (next_index_ > kMaxStreamSegmentIndex || (!last && next_index_ == kMaxStreamSegmentIndex)) {
    return MakeError(ErrorCode::kOutOfRange,
                     "a stream holds at most 2^32 segments; this one would exceed that");
  }
  if (!last && plaintext.size() != segment_size_) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "every segment but the last must hold exactly the segment size");
  }
  if (last && (plaintext.size() > segment_size_ || (plaintext.empty() && next_index_ != 0))) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the last segment must hold 1..segment size bytes (0 only when it is the "
                     "first)");
  }
  if (PointsInto(plaintext, *out)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "EncryptSegment's plaintext must not point into its output string");
  }
  // The subkey is fixed per stream, so the nonce prefix alone need not be secret or unique.
  std::array<uint8_t, kStreamNoncePrefixSize> prefix;
  std::copy_n(Bytes(header_) + kNoncePrefixOffset, kStreamNoncePrefixSize, prefix.begin());
  auto nonce = SegmentNonce(prefix, next_index_, last);
  const size_t start = out->size();
  out->resize(start + plaintext.size() + kStreamSegmentTagSize);
  absl::Status status = gcm_.Seal(
      nonce, plaintext, {}, {},
      absl::MakeSpan(reinterpret_cast<uint8_t*>(out->data()) + start, out->size() - start));
  if (!status.ok()) {
    out->resize(start);
    return status;
  }
  ++next_index_;
  finished_ = last;
  return absl::OkStatus();
}

absl::StatusOr<std::string> StreamSegmentEncrypter::EncryptSegment(std::string_view plaintext,
                                                                   bool last) {
  std::string out;
  COFFER_RETURN_IF_ERROR(EncryptSegment(plaintext, last, &out));
  return out;
}

absl::StatusOr<StreamSegmentDecrypter> StreamSegmentDecrypter::Create(const SecretBytes& key,
                                                                      uint32_t key_version,
                                                                      std::string_view header,
                                                                      std::string_view context) {
  COFFER_ASSIGN_OR_RETURN(StreamHeader parsed, ParseStreamHeader(header));
  if (parsed.key_version != key_version) {
    return MakeError(ErrorCode::kKeyVersionMismatch, "stream was written under key version " +
                                                         std::to_string(parsed.key_version) +
                                                         ", not " + std::to_string(key_version));
  }
  COFFER_ASSIGN_OR_RETURN(StreamKeys keys,
                          DeriveStreamKeys(key, header.substr(0, kCommitmentOffset), context));
  if (!ConstantTimeEquals(View(keys.commitment),
                          header.substr(kCommitmentOffset, kStreamCommitmentSize))) {
    return MakeError(ErrorCode::kKeyCommitmentMismatch,
                     "stream header does not commit to this key and context (wrong key, wrong "
                     "attachment, or a tampered header)");
  }
  COFFER_ASSIGN_OR_RETURN(internal::AesGcm256 gcm, internal::AesGcm256::Create(keys.subkey));
  return StreamSegmentDecrypter(std::move(gcm), parsed);
}

absl::Status StreamSegmentDecrypter::DecryptSegment(uint64_t index, std::string_view ciphertext,
                                                    bool last, std::string* out) const {
  if (index > kMaxStreamSegmentIndex) {
    return MakeError(ErrorCode::kOutOfRange, "segment index beyond 2^32 - 1");
  }
  if (ciphertext.size() < kStreamSegmentTagSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "segment is shorter than its tag");
  }
  const size_t plaintext_size = ciphertext.size() - kStreamSegmentTagSize;
  if (plaintext_size > segment_size_ || (!last && plaintext_size != segment_size_) ||
      (last && plaintext_size == 0 && index != 0)) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "segment " + std::to_string(index) +
                                                        " has an impossible size " +
                                                        std::to_string(ciphertext.size()));
  }
  if (PointsInto(ciphertext, *out)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "DecryptSegment's ciphertext must not point into its output string");
  }
  auto nonce = SegmentNonce(nonce_prefix_, index, last);
  const size_t start = out->size();
  out->resize(start + plaintext_size);
  absl::Status status =
      gcm_.Open(nonce, ciphertext, {}, {},
                absl::MakeSpan(reinterpret_cast<uint8_t*>(out->data()) + start, plaintext_size));
  if (!status.ok()) {
    out->resize(start);  // Open already zeroed the unauthenticated bytes
    if (ErrorCodeOf(status) != ErrorCode::kCiphertextCorrupt) return status;
    return MakeError(ErrorCode::kCiphertextCorrupt,
                     "segment " + std::to_string(index) +
                         " failed authentication: altered, reordered, from another stream, "
                         "or the stream was truncated or extended");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> StreamSegmentDecrypter::DecryptSegment(uint64_t index,
                                                                   std::string_view ciphertext,
                                                                   bool last) const {
  std::string out;
  COFFER_RETURN_IF_ERROR(DecryptSegment(index, ciphertext, last, &out));
  return out;
}

}  // namespace coffer::crypto
