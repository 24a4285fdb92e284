// AES-256-GCM with a caller-supplied 96-bit nonce and a 128-bit tag: the primitive under
// RecordAead and the streaming AEAD.
//
// INTERNAL, and dangerous on its own: reusing a nonce under one key reveals the XOR of the
// plaintexts and lets an attacker forge tags. Only code that derives nonces by construction
// (random per record, prefix ‖ index ‖ flag per stream segment) and tests with fixed vectors
// (Wycheproof, golden ciphertexts) may call it. Applications use crypto/record_aead.h or
// crypto/streaming_aead.h.
//
// The key is expanded once, into a template EVP_CIPHER_CTX. A call takes a keyed context from
// the object's pool (crypto/internal/context_pool.h), or copies the template when every pooled
// one is in use, and sets only the nonce; it gives the context back when done. So no call
// re-runs the key schedule, the common call allocates nothing, and const methods are
// thread-safe. The template and every pooled context belong to this object and are freed with
// EVP_CIPHER_CTX_free, which wipes the key schedule, when it is destroyed (a context a call
// failed with is freed at once).
//
// Failures: INVALID_ARGUMENT for a wrong key, nonce or output size or a plaintext beyond GCM's
// limit; CIPHERTEXT_CORRUPT when the tag does not verify (the output is then wiped);
// CRYPTO_LIBRARY_ERROR if OpenSSL fails.

#ifndef COFFER_CRYPTO_INTERNAL_AES_GCM_H_
#define COFFER_CRYPTO_INTERNAL_AES_GCM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/internal/context_pool.h"
#include "crypto/internal/openssl_util.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto::internal {

inline constexpr size_t kAesGcmKeySize = 32;
inline constexpr size_t kAesGcmNonceSize = 12;
inline constexpr size_t kAesGcmTagSize = 16;
// NIST SP 800-38D: at most 2^39 - 256 bits of plaintext per (key, nonce).
inline constexpr uint64_t kAesGcmMaxPlaintextSize = (uint64_t{1} << 36) - 32;

class AesGcm256 {
 public:
  // Returns a cipher keyed with `key`, which must be exactly 32 bytes.
  static absl::StatusOr<AesGcm256> Create(const SecretBytes& key);

  AesGcm256(AesGcm256&&) noexcept = default;
  AesGcm256& operator=(AesGcm256&&) noexcept = default;

  // Encrypts `plaintext` under `nonce` (12 bytes), authenticating aad_prefix ‖ aad, and
  // writes ciphertext ‖ tag into `out`, which must be exactly plaintext.size() + 16 bytes and
  // must not overlap the inputs.
  absl::Status Seal(absl::Span<const uint8_t> nonce, std::string_view plaintext,
                    std::string_view aad_prefix, std::string_view aad,
                    absl::Span<uint8_t> out) const;

  // Verifies and decrypts `ciphertext_and_tag` into `out`, which must be exactly 16 bytes
  // shorter than it and must not overlap it. On failure `out` is zeroed: no unauthenticated
  // plaintext is ever left behind.
  absl::Status Open(absl::Span<const uint8_t> nonce, std::string_view ciphertext_and_tag,
                    std::string_view aad_prefix, std::string_view aad,
                    absl::Span<uint8_t> out) const;

 private:
  using Pool = KeyedContextPool<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>;
  using Lease = PooledContextLease<Pool, EVP_CIPHER_CTX>;

  explicit AesGcm256(EvpCipherCtxPtr keyed)
      : keyed_(std::move(keyed)), pool_(std::make_unique<Pool>()) {}

  // A keyed context (pooled, or a copy of the template), set up for `encrypt` under `nonce`.
  absl::StatusOr<Lease> StartCall(absl::Span<const uint8_t> nonce, bool encrypt) const;

  EvpCipherCtxPtr keyed_;  // key expanded, no nonce; only ever copied
  // Declared after keyed_, so destroyed first. Behind a pointer: AesGcm256 stays movable.
  std::unique_ptr<Pool> pool_;
};

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_AES_GCM_H_
