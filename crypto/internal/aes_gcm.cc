#include "crypto/internal/aes_gcm.h"

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include <algorithm>
#include <climits>
#include <string>

#include "crypto/base/status.h"

namespace coffer::crypto::internal {
namespace {

// EVP_*Update takes an int length, so large inputs go through in pieces of at most 1 GiB.
constexpr size_t kMaxUpdateBytes = size_t{1} << 30;

// Fetched once per process and kept alive: fetching dominates small operations.
const EVP_CIPHER* FetchedAes256Gcm() {
  static EVP_CIPHER* const cipher = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return cipher;
}

const uint8_t* Bytes(std::string_view data) {
  return reinterpret_cast<const uint8_t*>(data.data());
}

// Feeds `data` to `ctx` in int-sized pieces; `out` null means `data` is associated data.
absl::Status Update(EVP_CIPHER_CTX* ctx, bool encrypt, std::string_view data, uint8_t* out) {
  while (!data.empty()) {
    size_t piece = std::min(data.size(), kMaxUpdateBytes);
    int written = 0;
    int ok = encrypt ? EVP_EncryptUpdate(ctx, out, &written, Bytes(data), static_cast<int>(piece))
                     : EVP_DecryptUpdate(ctx, out, &written, Bytes(data), static_cast<int>(piece));
    if (ok != 1) return OpenSslError(encrypt ? "EVP_EncryptUpdate" : "EVP_DecryptUpdate");
    if (out != nullptr) out += written;
    data.remove_prefix(piece);
  }
  return absl::OkStatus();
}

absl::Status CheckSizes(absl::Span<const uint8_t> nonce, uint64_t plaintext_size) {
  if (nonce.size() != kAesGcmNonceSize) {
    return MakeError(ErrorCode::kInvalidArgument, "AES-GCM nonces must be 12 bytes");
  }
  if (plaintext_size > kAesGcmMaxPlaintextSize) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "plaintext exceeds AES-GCM's limit of 2^36 - 32 bytes per nonce");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AesGcm256> AesGcm256::Create(const SecretBytes& key) {
  if (key.size() != kAesGcmKeySize) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "AES-256-GCM keys must be 32 bytes, got " + std::to_string(key.size()));
  }
  const EVP_CIPHER* cipher = FetchedAes256Gcm();
  if (cipher == nullptr) return OpenSslError("EVP_CIPHER_fetch(AES-256-GCM)");
  EvpCipherCtxPtr ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return OpenSslError("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex2(ctx.get(), cipher, key.data(), nullptr, nullptr) != 1) {
    return OpenSslError("EVP_EncryptInit_ex2(AES-256-GCM)");
  }
  return AesGcm256(std::move(ctx));
}

absl::StatusOr<AesGcm256::Lease> AesGcm256::StartCall(absl::Span<const uint8_t> nonce,
                                                      bool encrypt) const {
  EVP_CIPHER_CTX* pooled = pool_->Take();
  if (pooled == nullptr) {
    EvpCipherCtxPtr copy(EVP_CIPHER_CTX_new());
    if (copy == nullptr) return OpenSslError("EVP_CIPHER_CTX_new");
    if (EVP_CIPHER_CTX_copy(copy.get(), keyed_.get()) != 1) {
      return OpenSslError("EVP_CIPHER_CTX_copy");
    }
    pooled = copy.release();
    Pool::Adopt();
  }
  Lease lease(pool_.get(), pooled);
  // A null cipher and key keep the key schedule; only the nonce and direction change. That
  // also resets whatever a previous call left in a pooled context: OpenSSL 3's GCM provider
  // buffers the new nonce and, before the next update or final, runs CRYPTO_gcm128_setiv,
  // which zeroes the running tag, the AAD and text lengths and any partial block. Open sets
  // its expected tag anew every time.
  if (EVP_CipherInit_ex2(lease.get(), nullptr, nullptr, nonce.data(), encrypt ? 1 : 0, nullptr) !=
      1) {
    lease.Discard();
    return OpenSslError("EVP_CipherInit_ex2(nonce)");
  }
  return lease;
}

absl::Status AesGcm256::Seal(absl::Span<const uint8_t> nonce, std::string_view plaintext,
                             std::string_view aad_prefix, std::string_view aad,
                             absl::Span<uint8_t> out) const {
  COFFER_RETURN_IF_ERROR(CheckSizes(nonce, plaintext.size()));
  if (out.size() != plaintext.size() + kAesGcmTagSize) {
    return MakeError(ErrorCode::kInvalidArgument, "AES-GCM output must be plaintext + 16 bytes");
  }
  COFFER_ASSIGN_OR_RETURN(Lease lease, StartCall(nonce, /*encrypt=*/true));
  EVP_CIPHER_CTX* ctx = lease.get();
  absl::Status status = Update(ctx, true, aad_prefix, nullptr);
  if (status.ok()) status = Update(ctx, true, aad, nullptr);
  if (status.ok()) status = Update(ctx, true, plaintext, out.data());
  uint8_t* tag = out.data() + plaintext.size();
  if (status.ok()) {
    int final_bytes = 0;  // GCM is a stream mode: Final writes nothing
    if (EVP_EncryptFinal_ex(ctx, tag, &final_bytes) != 1 || final_bytes != 0) {
      status = OpenSslError("EVP_EncryptFinal_ex");
    }
  }
  if (status.ok() && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, kAesGcmTagSize, tag) != 1) {
    status = OpenSslError("EVP_CTRL_GCM_GET_TAG");
  }
  if (!status.ok()) lease.Discard();
  return status;
}

absl::Status AesGcm256::Open(absl::Span<const uint8_t> nonce, std::string_view ciphertext_and_tag,
                             std::string_view aad_prefix, std::string_view aad,
                             absl::Span<uint8_t> out) const {
  if (ciphertext_and_tag.size() < kAesGcmTagSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "ciphertext is shorter than its tag");
  }
  std::string_view ciphertext =
      ciphertext_and_tag.substr(0, ciphertext_and_tag.size() - kAesGcmTagSize);
  std::string_view tag = ciphertext_and_tag.substr(ciphertext.size());
  COFFER_RETURN_IF_ERROR(CheckSizes(nonce, ciphertext.size()));
  if (out.size() != ciphertext.size()) {
    return MakeError(ErrorCode::kInvalidArgument, "AES-GCM output must be ciphertext - 16 bytes");
  }
  COFFER_ASSIGN_OR_RETURN(Lease lease, StartCall(nonce, /*encrypt=*/false));
  EVP_CIPHER_CTX* ctx = lease.get();
  absl::Status status;
  // OpenSSL only reads the expected tag; the ctrl interface has no const overload.
  if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, kAesGcmTagSize,
                          const_cast<char*>(tag.data())) != 1) {
    status = OpenSslError("EVP_CTRL_GCM_SET_TAG");
  }
  if (status.ok()) status = Update(ctx, false, aad_prefix, nullptr);
  if (status.ok()) status = Update(ctx, false, aad, nullptr);
  if (status.ok()) status = Update(ctx, false, ciphertext, out.data());
  if (status.ok()) {
    int final_bytes = 0;
    if (EVP_DecryptFinal_ex(ctx, out.data() + out.size(), &final_bytes) != 1) {
      ERR_clear_error();
      status = MakeError(ErrorCode::kCiphertextCorrupt,
                         "AES-GCM authentication failed: wrong key or associated data, or the "
                         "ciphertext was altered");
    }
  }
  if (!status.ok()) {
    // Any failure, a tag mismatch included, frees the context rather than pooling it.
    lease.Discard();
    if (!out.empty()) OPENSSL_cleanse(out.data(), out.size());
  }
  return status;
}

}  // namespace coffer::crypto::internal
