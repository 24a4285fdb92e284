// Checkpoint signatures: the signer interface the audit log uses, a software implementation, and
// the public-key verifier that offline verification needs.
//
// CheckpointSigner is the seam to the HSM: in the daemon, an adapter over the token's ECDSA
// P-256 audit key implements it (hsm/ exposes Sign(message) -> DER ECDSA-SHA256 and
// PublicKeyPem()). SoftwareEcdsaSigner holds a P-256 key in this process and exists for tests,
// tools and development set-ups without a token; it never replaces the token key in production.
//
// Signatures are ECDSA over SHA-256 of the message, DER-encoded (what `openssl dgst -sha256
// -sign/-verify` produces and checks), so an auditor can verify one with stock tools.
//
// Thread safety: Sign, PublicKeyPem and Verify may be called from any thread; implementations of
// CheckpointSigner must allow that (the audit log calls them under its own lock, one at a time).
// Failures: CRYPTO_LIBRARY_ERROR when OpenSSL fails; INVALID_ARGUMENT for a key that is not
// P-256 or not PEM; AUDIT_TAMPERED when a signature does not verify.

#ifndef COFFER_KMS_AUDIT_SIGNER_H_
#define COFFER_KMS_AUDIT_SIGNER_H_

#include <openssl/evp.h>

#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::kms::audit {

struct EvpPkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using EvpPkeyPtr = std::unique_ptr<EVP_PKEY, EvpPkeyDeleter>;

class CheckpointSigner {
 public:
  CheckpointSigner(const CheckpointSigner&) = delete;
  CheckpointSigner& operator=(const CheckpointSigner&) = delete;
  virtual ~CheckpointSigner() = default;

  // Returns a DER ECDSA-P256 signature over SHA-256(message).
  virtual absl::StatusOr<std::string> Sign(std::string_view message) = 0;

  // Returns the verifying key as a PEM "PUBLIC KEY" (SubjectPublicKeyInfo).
  virtual absl::StatusOr<std::string> PublicKeyPem() = 0;

 protected:
  CheckpointSigner() = default;
};

class SoftwareEcdsaSigner final : public CheckpointSigner {
 public:
  // Generates a fresh P-256 key pair (OpenSSL's key generation, for tests and tools).
  static absl::StatusOr<std::unique_ptr<SoftwareEcdsaSigner>> Generate();

  // Loads a PEM private key (PKCS#8 or SEC1), which must be P-256.
  static absl::StatusOr<std::unique_ptr<SoftwareEcdsaSigner>> FromPrivateKeyPem(
      const crypto::SecretBytes& pem);

  absl::StatusOr<std::string> Sign(std::string_view message) override;
  absl::StatusOr<std::string> PublicKeyPem() override;

 private:
  explicit SoftwareEcdsaSigner(EvpPkeyPtr key) : key_(std::move(key)) {}

  EvpPkeyPtr key_;
};

// Verifies checkpoint signatures with a public key only.
class CheckpointVerifier {
 public:
  // Parses a PEM "PUBLIC KEY" that must be an EC P-256 key.
  static absl::StatusOr<CheckpointVerifier> FromPublicKeyPem(std::string_view pem);

  CheckpointVerifier(CheckpointVerifier&&) noexcept = default;
  CheckpointVerifier& operator=(CheckpointVerifier&&) noexcept = default;

  // OK when `der_signature` is a valid ECDSA signature of SHA-256(message); AUDIT_TAMPERED if not.
  absl::Status Verify(std::string_view message, std::string_view der_signature) const;

 private:
  explicit CheckpointVerifier(EvpPkeyPtr key) : key_(std::move(key)) {}

  EvpPkeyPtr key_;
};

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_SIGNER_H_
