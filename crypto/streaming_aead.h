// Streaming AEAD for attachments: segment-level encryption with random access.
//
// Format stream-v1 (docs/formats.md#stream-v1). A stream is a header followed by segments:
//   header  = format (1, 0x02) | key version (u32 BE) | plaintext segment size (u32 BE)
//             | salt (32) | nonce prefix (7) | key commitment (32)          = 80 bytes
//   segment = AES-256-GCM(subkey, nonce = prefix ‖ index (u32 BE) ‖ last flag (1), no AAD)
//             ciphertext ‖ tag (16)
// Every segment but the last holds exactly `segment size` plaintext bytes; the last holds
// 1..segment size bytes, or 0 when it is the only one (empty plaintext).
// PRK = HKDF-SHA256-Extract(salt, DEK); subkey and commitment are HKDF-Expand outputs under
// distinct labels whose info binds the header fields and the caller's `context` (storage passes
// dataset handle ‖ stored name key), so a header or segment moved to another attachment,
// dataset or key fails. The commitment makes the stream key-committing (as AWS Encryption SDK
// v2): a header opens under exactly one (DEK, context).
//
// Security contract: confidentiality and integrity of the whole plaintext, provided the reader
// checks that it got the last segment (the last flag is authenticated): truncation, reordering,
// segments from another stream and appended data fail. The segment index is range-checked
// (at most 2^32 segments) before it could wrap. A fresh salt and nonce prefix per stream keep
// subkeys (and so nonces) unique without any counter state.
//
// Thread safety: a StreamSegmentEncrypter is stateful (next index) and belongs to one thread.
// A StreamSegmentDecrypter is immutable after Create; DecryptSegment may run concurrently.
// Ownership: derived subkeys live inside the objects and are wiped with them; the caller keeps
// the DEK.
//
// Failures (stable codes):
//   INVALID_ARGUMENT        bad DEK size, segment size out of range, wrong plaintext size for
//                           a non-last segment
//   FAILED_PRECONDITION     encrypting after the last segment
//   OUT_OF_RANGE            segment index beyond 2^32 - 1
//   UNSUPPORTED_FORMAT      unknown format byte
//   KEY_VERSION_MISMATCH    the header names another key version
//   KEY_COMMITMENT_MISMATCH wrong DEK or context for this header (or a tampered header)
//   CIPHERTEXT_CORRUPT      malformed header or segment, or segment authentication failed
// A failed DecryptSegment leaves no plaintext behind.

#ifndef COFFER_CRYPTO_STREAMING_AEAD_H_
#define COFFER_CRYPTO_STREAMING_AEAD_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/internal/aes_gcm.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

// docs/formats.md#stream-v1
inline constexpr uint8_t kStreamFormatV1 = 0x02;
inline constexpr size_t kStreamSaltSize = 32;
inline constexpr size_t kStreamNoncePrefixSize = 7;
inline constexpr size_t kStreamCommitmentSize = 32;
inline constexpr size_t kStreamHeaderSize =
    1 + 4 + 4 + kStreamSaltSize + kStreamNoncePrefixSize + kStreamCommitmentSize;
static_assert(kStreamHeaderSize == 80, "docs/formats.md#stream-v1 fixes the header at 80 bytes");
static_assert(kStreamNoncePrefixSize + 4 + 1 == internal::kAesGcmNonceSize,
              "segment nonce = prefix ‖ u32 index ‖ last flag must be GCM's 96 bits");
inline constexpr size_t kStreamSegmentTagSize = internal::kAesGcmTagSize;
inline constexpr size_t kStreamKeySize = internal::kAesGcmKeySize;
inline constexpr uint32_t kDefaultStreamSegmentSize = 64 * 1024;
inline constexpr uint32_t kMinStreamSegmentSize = 1024;
inline constexpr uint32_t kMaxStreamSegmentSize = 16 * 1024 * 1024;
inline constexpr uint64_t kMaxStreamSegmentIndex = 0xFFFFFFFF;  // the index field is a u32

struct StreamHeader {
  uint8_t format = 0;
  uint32_t key_version = 0;
  uint32_t segment_size = 0;
  std::array<uint8_t, kStreamSaltSize> salt{};
  std::array<uint8_t, kStreamNoncePrefixSize> nonce_prefix{};
  std::array<uint8_t, kStreamCommitmentSize> commitment{};
};

// Parses a stream header (exactly kStreamHeaderSize bytes) so a caller can learn the key
// version before fetching the key. Checks the format byte and the segment size range;
// authenticates nothing (StreamSegmentDecrypter::Create checks the commitment).
absl::StatusOr<StreamHeader> ParseStreamHeader(std::string_view header);

namespace internal {
class StreamEncrypterFactory;
}  // namespace internal

class StreamSegmentEncrypter {
 public:
  // Starts a stream under DEK `key` (32 bytes) of version `key_version`, bound to `context`,
  // with a fresh random salt and nonce prefix.
  static absl::StatusOr<StreamSegmentEncrypter> Create(
      const SecretBytes& key, uint32_t key_version, std::string_view context,
      uint32_t segment_size = kDefaultStreamSegmentSize);

  StreamSegmentEncrypter(StreamSegmentEncrypter&&) noexcept = default;
  StreamSegmentEncrypter& operator=(StreamSegmentEncrypter&&) noexcept = default;

  // The kStreamHeaderSize header bytes to store before (or beside) the segments.
  std::string_view header() const { return header_; }
  uint32_t segment_size() const { return segment_size_; }
  // The index the next EncryptSegment call will use.
  uint64_t next_segment_index() const { return next_index_; }

  // Encrypts the next segment and appends its ciphertext (plaintext.size() + 16 bytes) to
  // *out. A non-last segment must hold exactly segment_size() bytes; the last one 1 to
  // segment_size() bytes, or 0 if it is the first. On failure *out is unchanged.
  absl::Status EncryptSegment(std::string_view plaintext, bool last, std::string* out);

  // As above, returning the segment ciphertext.
  absl::StatusOr<std::string> EncryptSegment(std::string_view plaintext, bool last);

 private:
  friend class internal::StreamEncrypterFactory;
  StreamSegmentEncrypter(internal::AesGcm256 gcm, std::string header, uint32_t segment_size,
                         uint64_t first_index);

  internal::AesGcm256 gcm_;  // keyed with the stream's subkey
  std::string header_;
  uint32_t segment_size_;
  uint64_t next_index_;
  bool finished_ = false;
};

class StreamSegmentDecrypter {
 public:
  // Verifies `header` against DEK `key` of version `key_version` and `context` and returns a
  // decrypter for its segments.
  static absl::StatusOr<StreamSegmentDecrypter> Create(const SecretBytes& key, uint32_t key_version,
                                                       std::string_view header,
                                                       std::string_view context);

  StreamSegmentDecrypter(StreamSegmentDecrypter&&) noexcept = default;
  StreamSegmentDecrypter& operator=(StreamSegmentDecrypter&&) noexcept = default;

  uint32_t segment_size() const { return segment_size_; }

  // Verifies and decrypts segment `index`, appending its plaintext to *out. `last` says whether
  // the caller expects it to be the stream's final segment; a mismatch fails authentication,
  // which is how truncation and extension are caught. On failure *out is unchanged.
  absl::Status DecryptSegment(uint64_t index, std::string_view ciphertext, bool last,
                              std::string* out) const;

  // As above, returning the plaintext.
  absl::StatusOr<std::string> DecryptSegment(uint64_t index, std::string_view ciphertext,
                                             bool last) const;

 private:
  StreamSegmentDecrypter(internal::AesGcm256 gcm, StreamHeader header)
      : gcm_(std::move(gcm)),
        segment_size_(header.segment_size),
        nonce_prefix_(header.nonce_prefix) {}

  internal::AesGcm256 gcm_;
  uint32_t segment_size_;
  std::array<uint8_t, kStreamNoncePrefixSize> nonce_prefix_;
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_STREAMING_AEAD_H_
