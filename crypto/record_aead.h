// RecordAead: authenticated encryption of one record value under a data encryption key.
//
// Format record-v1 (docs/formats.md#record-v1), AES-256-GCM:
//   format (1 byte, 0x01) | key version (u32 big-endian) | nonce (12) | ciphertext | tag (16)
// The 5-byte header is authenticated: the GCM associated data is header ‖ associated_data, so
// a ciphertext cannot be relabelled with another key version or format.
//
// Security contract (Tink's Aead): confidentiality and integrity of the plaintext, integrity of
// the associated data, which is not encrypted and not stored in the ciphertext — the caller
// supplies the same bytes to Open (coffer binds column family, dataset, purpose, key version and
// the stored key there, design brief "Ciphertext formats"). The nonce is drawn inside from the
// private DRBG (RandomNonce), 96 bits at random: keep below 2^32 encryptions per key (the key
// manager rotates by usage well before that). Not key-committing.
//
// Thread safety: immutable after Create; Seal/SealTo/Open may run concurrently.
// Ownership: the expanded key belongs to the RecordAead and is wiped when it is destroyed; the
// caller keeps the SecretBytes passed to Create.
//
// Failures (stable codes, docs/formats.md#record-v1):
//   INVALID_ARGUMENT      bad key size; plaintext beyond GCM's limit; inputs aliasing *out
//   UNSUPPORTED_FORMAT    the first byte is not a format this build reads
//   CIPHERTEXT_CORRUPT    too short to be a record, or authentication failed (tampered,
//                         truncated, wrong key or wrong associated data)
//   KEY_VERSION_MISMATCH  the record names another key version than this RecordAead's
// Open never returns or leaves behind unauthenticated plaintext.

#ifndef COFFER_CRYPTO_RECORD_AEAD_H_
#define COFFER_CRYPTO_RECORD_AEAD_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/internal/aes_gcm.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

// docs/formats.md#record-v1
inline constexpr uint8_t kRecordFormatV1 = 0x01;
inline constexpr size_t kRecordHeaderSize = 1 + 4;  // format, key version
inline constexpr size_t kRecordNonceSize = 12;
inline constexpr size_t kRecordTagSize = 16;
inline constexpr size_t kRecordOverhead = kRecordHeaderSize + kRecordNonceSize + kRecordTagSize;
static_assert(kRecordNonceSize == internal::kAesGcmNonceSize);
static_assert(kRecordTagSize == internal::kAesGcmTagSize);
static_assert(kRecordOverhead == 33, "docs/formats.md#record-v1 fixes the overhead at 33 bytes");
inline constexpr size_t kRecordKeySize = internal::kAesGcmKeySize;

struct RecordHeader {
  uint8_t format = 0;
  uint32_t key_version = 0;
};

// Reads the header of a sealed record so that a caller can fetch the right key version before
// opening it. Checks the format byte and that the record is long enough to hold a header,
// nonce and tag; authenticates nothing (Open does that).
absl::StatusOr<RecordHeader> ParseRecordHeader(std::string_view ciphertext);

class RecordAead {
 public:
  // Returns an AEAD for DEK `key` (exactly 32 bytes) of version `key_version`.
  static absl::StatusOr<RecordAead> Create(const SecretBytes& key, uint32_t key_version);

  RecordAead(RecordAead&&) noexcept = default;
  RecordAead& operator=(RecordAead&&) noexcept = default;

  uint32_t key_version() const { return key_version_; }

  // Returns the sealed record (plaintext.size() + kRecordOverhead bytes).
  absl::StatusOr<std::string> Seal(std::string_view plaintext,
                                   std::string_view associated_data) const;

  // Appends the sealed record to *out, saving a copy when the caller builds a larger value.
  // `plaintext` and `associated_data` must not point into *out. On failure *out is unchanged.
  absl::Status SealTo(std::string_view plaintext, std::string_view associated_data,
                      std::string* out) const;

  // Returns the plaintext of a record sealed by Seal with the same key, version and
  // associated data.
  absl::StatusOr<std::string> Open(std::string_view ciphertext,
                                   std::string_view associated_data) const;

 private:
  RecordAead(internal::AesGcm256 gcm, uint32_t key_version)
      : gcm_(std::move(gcm)), key_version_(key_version) {}

  internal::AesGcm256 gcm_;
  uint32_t key_version_;
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_RECORD_AEAD_H_
