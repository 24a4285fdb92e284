#include "crypto/record_aead.h"

#include <openssl/crypto.h>

#include <array>
#include <cstdint>
#include <functional>

#include "crypto/base/status.h"
#include "crypto/internal/big_endian.h"
#include "crypto/internal/record_seal.h"
#include "crypto/random.h"

namespace coffer::crypto {
namespace {

uint8_t* MutableBytes(std::string& s, size_t offset) {
  return reinterpret_cast<uint8_t*>(s.data()) + offset;
}

// True when `view` points into the allocated storage of `s` (which a resize may move).
bool PointsInto(std::string_view view, const std::string& s) {
  if (view.empty()) return false;
  auto begin = reinterpret_cast<uintptr_t>(s.data());
  auto end = begin + s.capacity();
  auto at = reinterpret_cast<uintptr_t>(view.data());
  return at + view.size() > begin && at < end;
}

}  // namespace

namespace internal {

absl::Status SealRecordWithNonce(const AesGcm256& gcm, uint32_t key_version,
                                 absl::Span<const uint8_t> nonce, std::string_view plaintext,
                                 std::string_view associated_data, std::string* out) {
  if (PointsInto(plaintext, *out) || PointsInto(associated_data, *out)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "SealTo inputs must not point into its output string");
  }
  if (nonce.size() != kRecordNonceSize) {
    return MakeError(ErrorCode::kInvalidArgument, "record nonces must be 12 bytes");
  }
  if (plaintext.size() > kAesGcmMaxPlaintextSize) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "record plaintext exceeds AES-GCM's limit of 2^36 - 32 bytes");
  }
  const size_t start = out->size();
  out->resize(start + kRecordOverhead + plaintext.size());
  uint8_t* header = MutableBytes(*out, start);
  header[0] = kRecordFormatV1;
  StoreBigEndian32(key_version, header + 1);
  std::copy(nonce.begin(), nonce.end(), header + kRecordHeaderSize);
  std::string_view header_view(out->data() + start, kRecordHeaderSize);
  absl::Status status = gcm.Seal(nonce, plaintext, header_view, associated_data,
                                 absl::MakeSpan(header + kRecordHeaderSize + kRecordNonceSize,
                                                plaintext.size() + kRecordTagSize));
  if (!status.ok()) out->resize(start);
  return status;
}

}  // namespace internal

absl::StatusOr<RecordHeader> ParseRecordHeader(std::string_view ciphertext) {
  if (ciphertext.empty()) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "record ciphertext is empty");
  }
  RecordHeader header;
  header.format = static_cast<uint8_t>(ciphertext[0]);
  if (header.format != kRecordFormatV1) {
    return MakeError(
        ErrorCode::kUnsupportedFormat,
        "unknown record format " + std::to_string(header.format) + " (this build reads format 1)");
  }
  if (ciphertext.size() < kRecordOverhead) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "record ciphertext is " +
                                                        std::to_string(ciphertext.size()) +
                                                        " bytes, shorter than the 33-byte minimum");
  }
  header.key_version =
      internal::LoadBigEndian32(reinterpret_cast<const uint8_t*>(ciphertext.data()) + 1);
  return header;
}

absl::StatusOr<RecordAead> RecordAead::Create(const SecretBytes& key, uint32_t key_version) {
  COFFER_ASSIGN_OR_RETURN(internal::AesGcm256 gcm, internal::AesGcm256::Create(key));
  return RecordAead(std::move(gcm), key_version);
}

absl::StatusOr<std::string> RecordAead::Seal(std::string_view plaintext,
                                             std::string_view associated_data) const {
  std::string out;
  COFFER_RETURN_IF_ERROR(SealTo(plaintext, associated_data, &out));
  return out;
}

absl::Status RecordAead::SealTo(std::string_view plaintext, std::string_view associated_data,
                                std::string* out) const {
  std::array<uint8_t, kRecordNonceSize> nonce;
  COFFER_RETURN_IF_ERROR(RandomNonce(absl::MakeSpan(nonce)));
  return internal::SealRecordWithNonce(gcm_, key_version_, nonce, plaintext, associated_data, out);
}

absl::StatusOr<std::string> RecordAead::Open(std::string_view ciphertext,
                                             std::string_view associated_data) const {
  COFFER_ASSIGN_OR_RETURN(RecordHeader header, ParseRecordHeader(ciphertext));
  if (header.key_version != key_version_) {
    return MakeError(ErrorCode::kKeyVersionMismatch, "record was sealed under key version " +
                                                         std::to_string(header.key_version) +
                                                         ", not " + std::to_string(key_version_));
  }
  auto nonce = absl::MakeConstSpan(
      reinterpret_cast<const uint8_t*>(ciphertext.data()) + kRecordHeaderSize, kRecordNonceSize);
  std::string_view header_view = ciphertext.substr(0, kRecordHeaderSize);
  std::string_view sealed = ciphertext.substr(kRecordHeaderSize + kRecordNonceSize);
  std::string plaintext(sealed.size() - kRecordTagSize, '\0');
  COFFER_RETURN_IF_ERROR(gcm_.Open(nonce, sealed, header_view, associated_data,
                                   absl::MakeSpan(MutableBytes(plaintext, 0), plaintext.size())));
  return plaintext;
}

}  // namespace coffer::crypto
