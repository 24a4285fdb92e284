// AesSiv: deterministic authenticated encryption, AES-SIV (RFC 5297), through OpenSSL 3's
// "AES-128-SIV" / "AES-192-SIV" / "AES-256-SIV" ciphers.
//
// Output: V (16-byte synthetic IV, which is also the tag) ‖ C (as long as the plaintext), the
// layout of RFC 5297 and Wycheproof. The key is K1 ‖ K2 (S2V/CMAC key, then CTR key), 32, 48 or
// 64 bytes; coffer uses 64 (AES-256-SIV, docs/formats.md#pseudonym-v1).
//
// Security contract (Tink's DeterministicAead): the same key, plaintext and associated data
// always give the same output, so equal outputs reveal equal inputs — that is the point
// (pseudonyms that join) and the only leak: otherwise confidentiality of the plaintext and
// integrity of plaintext and associated data. There is no nonce, so nothing to reuse.
// Associated data is a vector of components, each fed to S2V on its own: ("ab", "c") and
// ("a", "bc") differ. At most 126 components (RFC 5297, section 2.6); each component and the
// plaintext at most kAesSivMaxInputSize bytes.
//
// Thread safety: immutable after Create; Seal and Open may run concurrently. Each call copies
// a keyed template context, so no call re-runs the key schedule.
// Ownership: the keyed contexts belong to the AesSiv and are wiped (EVP_*_free) when it is
// destroyed; the caller keeps the SecretBytes passed to Create.
//
// Plaintext comes back as std::string, not SecretBytes: it is data (identifiers, PII), not
// key material, and the secure heap is sized for keys only. Callers wipe copies they no longer
// need. Open never returns or leaves behind unauthenticated plaintext.
//
// OpenSSL 3.0's SIV cipher cannot seal an empty plaintext (its final step fails), so for that
// case AesSiv computes S2V itself with AES-CMAC (RFC 5297, section 2.4; C is empty). The
// Wycheproof empty-message vectors check that path.
//
// Failures:
//   INVALID_ARGUMENT      key not 32, 48 or 64 bytes; more than 126 associated-data components;
//                         a component or plaintext beyond kAesSivMaxInputSize
//   CIPHERTEXT_CORRUPT    Open: shorter than 16 bytes, or authentication failed (altered,
//                         wrong key or wrong associated data)
//   CRYPTO_LIBRARY_ERROR  an OpenSSL call failed unexpectedly

#ifndef COFFER_CRYPTO_AES_SIV_H_
#define COFFER_CRYPTO_AES_SIV_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/internal/openssl_util.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

inline constexpr size_t kAesSivTagSize = 16;     // V
inline constexpr size_t kAesSiv256KeySize = 64;  // AES-256-SIV, what coffer uses
inline constexpr size_t kAesSivMaxAssociatedData = 126;
// OpenSSL takes each SIV input in a single int-sized call; coffer's inputs are small.
inline constexpr size_t kAesSivMaxInputSize = size_t{1} << 30;

class AesSiv {
 public:
  // Returns AES-SIV keyed with `key` (32, 48 or 64 bytes: AES-128/192/256-SIV).
  static absl::StatusOr<std::unique_ptr<const AesSiv>> Create(const SecretBytes& key);

  AesSiv(const AesSiv&) = delete;
  AesSiv& operator=(const AesSiv&) = delete;

  // Returns V ‖ C (plaintext.size() + 16 bytes); the same for the same inputs, every time.
  absl::StatusOr<std::string> Seal(std::string_view plaintext,
                                   absl::Span<const std::string_view> associated_data) const;

  // Returns the plaintext of `sealed` (V ‖ C) if it authenticates under this key and exactly
  // these associated-data components.
  absl::StatusOr<std::string> Open(std::string_view sealed,
                                   absl::Span<const std::string_view> associated_data) const;

 private:
  AesSiv(internal::EvpCipherCtxPtr siv, internal::EvpMacCtxPtr cmac)
      : siv_(std::move(siv)), cmac_(std::move(cmac)) {}

  // Returns a copy of the keyed SIV template, set up for `encrypt`.
  absl::StatusOr<internal::EvpCipherCtxPtr> StartCall(bool encrypt) const;
  // V = S2V(K1, associated data..., empty plaintext), for the empty plaintext OpenSSL refuses.
  absl::StatusOr<std::string> S2vOfEmptyPlaintext(
      absl::Span<const std::string_view> associated_data) const;
  // AES-CMAC under K1 of `data` into `out` (16 bytes).
  absl::Status Cmac(std::string_view data, uint8_t* out) const;

  internal::EvpCipherCtxPtr siv_;  // keyed, never used directly: only copied
  internal::EvpMacCtxPtr cmac_;    // AES-CMAC keyed with K1, only duplicated
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_AES_SIV_H_
