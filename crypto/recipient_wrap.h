// Recipient key wrapping: a 256-bit key encrypted to someone's public key, so that only the
// holder of the matching private key recovers it (the per-export key of export-v1,
// docs/formats.md#export-v1).
//
// Two recipient key types, chosen by the public key given:
//  - RSA (2048 bits or more): RSA-OAEP with SHA-256 and MGF1-SHA256, empty label. The wrapped
//    key is the OAEP ciphertext (modulus-sized). Stock OpenSSL opens it:
//    `openssl pkeyutl -decrypt -inkey KEY.pem -pkeyopt rsa_padding_mode:oaep
//     -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256`.
//  - X25519: an ephemeral X25519 key agreement (OpenSSL 3.0 has no HPKE), then
//    KEK = HKDF-SHA256(ikm = shared secret, salt = ephemeral public ‖ recipient public,
//                      info = "coffer-export-v1 x25519 key wrap", 32 bytes)
//    and the key sealed with AES-256-GCM under KEK, a random 96-bit nonce and associated data
//    "coffer-export-v1". Wrapped = ephemeral public (32) ‖ nonce (12) ‖ ciphertext (32) ‖ tag (16).
//    An all-zero shared secret (a low-order point) is refused.
// A key's fingerprint is SHA-256 of its public key's SubjectPublicKeyInfo DER (what
// `openssl pkey -pubin -outform DER | sha256sum` prints), so both sides name the same key.
//
// Security contract: Wrap gives IND-CCA2 confidentiality of the wrapped key against anyone
// without the private key; Unwrap authenticates (GCM tag, OAEP padding check) and never returns
// an unauthenticated key. Randomness for X25519 ephemeral keys and nonces comes from
// crypto/random.h (the private DRBG); OAEP's seed comes from OpenSSL's own DRBG.
//
// Thread safety: both classes are immutable after creation; every method may run concurrently.
// Failures: EXPORT_RECIPIENT_KEY_INVALID (540) for a key that is not PEM, not RSA >= 2048 bits
// or X25519, or (private keys) passphrase-protected; EXPORT_WRONG_RECIPIENT (542) when a wrapped
// key does not open under the private key; CRYPTO_LIBRARY_ERROR when OpenSSL fails otherwise.
// Messages never contain key material.

#ifndef COFFER_CRYPTO_RECIPIENT_WRAP_H_
#define COFFER_CRYPTO_RECIPIENT_WRAP_H_

#include <openssl/evp.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

enum class RecipientKeyType : uint8_t {
  kRsaOaepSha256 = 1,  // docs/formats.md#export-v1 key type 1
  kX25519 = 2,         // key type 2
};

inline constexpr size_t kRecipientWrappedKeySize = 32;  // what Wrap wraps: a 256-bit key
inline constexpr size_t kMinRecipientRsaBits = 2048;
inline constexpr size_t kX25519WrappedSize = 32 + 12 + kRecipientWrappedKeySize + 16;
inline constexpr std::string_view kX25519WrapInfo = "coffer-export-v1 x25519 key wrap";
inline constexpr std::string_view kX25519WrapAad = "coffer-export-v1";

using RecipientFingerprint = std::array<uint8_t, 32>;

// "RSA-3072" or "X25519", for messages and summaries.
std::string RecipientKeyDescription(RecipientKeyType type, size_t bits);

namespace internal {
struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using RecipientPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyFree>;
}  // namespace internal

class RecipientPublicKey {
 public:
  // Parses a PEM "PUBLIC KEY" (SubjectPublicKeyInfo) that is RSA >= 2048 bits or X25519.
  static absl::StatusOr<RecipientPublicKey> FromPem(std::string_view pem);

  RecipientKeyType type() const { return type_; }
  size_t bits() const { return bits_; }
  const RecipientFingerprint& fingerprint() const { return fingerprint_; }
  std::string description() const { return RecipientKeyDescription(type_, bits_); }

  // Wraps `key` (exactly 32 bytes) to this recipient.
  absl::StatusOr<std::string> Wrap(const SecretBytes& key) const;

 private:
  RecipientPublicKey(internal::RecipientPkeyPtr key, RecipientKeyType type, size_t bits,
                     const RecipientFingerprint& fingerprint)
      : key_(std::move(key)), type_(type), bits_(bits), fingerprint_(fingerprint) {}

  internal::RecipientPkeyPtr key_;
  RecipientKeyType type_;
  size_t bits_;
  RecipientFingerprint fingerprint_;
};

class RecipientPrivateKey {
 public:
  // Parses an unencrypted PEM private key (PKCS#8 or traditional) that is RSA >= 2048 bits or
  // X25519.
  static absl::StatusOr<RecipientPrivateKey> FromPem(const SecretBytes& pem);

  RecipientKeyType type() const { return type_; }
  // The fingerprint of the matching public key.
  const RecipientFingerprint& fingerprint() const { return fingerprint_; }

  // Recovers the 32-byte key from `wrapped` (made by Wrap for this key's public half).
  absl::StatusOr<SecretBytes> Unwrap(std::string_view wrapped) const;

 private:
  RecipientPrivateKey(internal::RecipientPkeyPtr key, RecipientKeyType type,
                      const RecipientFingerprint& fingerprint)
      : key_(std::move(key)), type_(type), fingerprint_(fingerprint) {}

  internal::RecipientPkeyPtr key_;
  RecipientKeyType type_;
  RecipientFingerprint fingerprint_;
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_RECIPIENT_WRAP_H_
