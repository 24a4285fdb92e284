// Interfaces to the token-resident service keys (design brief, key hierarchy §3).
//
//  - Signer: the audit/receipt signing key, an ECDSA P-256 key pair. Sign() returns a DER
//    ECDSA-SHA256 signature that `openssl dgst -sha256 -verify pub.pem -signature sig msg`
//    accepts with the PEM from PublicKeyPem(); verification needs only the public key.
//  - RowAuthenticator: HMAC-SHA256 under a token key, to authenticate key-DB rows.
//  - TotpTokenStore: per-admin TOTP secrets kept as token generic-secret objects; HMAC-SHA1 of
//    the counter is computed inside the token, RFC 4226 truncation outside (hsm/otp.h).
//
// Implemented over the token by TokenSigner (hsm/token_signer.h), RowHmacKey
// (hsm/row_hmac_key.h) and TotpSecrets (hsm/totp_secrets.h); HsmClient (hsm/hsm_client.h) opens
// the token once and hands out all three. Service keys are created on first use (found by their
// CKA_ID at start-up, created if absent) and resolved to object handles once.
// Thread-safe. Errors as for hsm/token.h (HSM_MECHANISM_UNSUPPORTED names the missing mechanism).

#ifndef COFFER_HSM_SERVICE_KEYS_H_
#define COFFER_HSM_SERVICE_KEYS_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::hsm {

class Signer {
 public:
  virtual ~Signer() = default;
  // DER-encoded ECDSA signature over SHA-256(message).
  virtual absl::StatusOr<std::string> Sign(std::string_view message) = 0;
  // The verification key as a PEM "PUBLIC KEY" (SubjectPublicKeyInfo).
  virtual absl::StatusOr<std::string> PublicKeyPem() = 0;
};

class RowAuthenticator {
 public:
  virtual ~RowAuthenticator() = default;
  // HMAC-SHA256(row key, data).
  virtual absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) = 0;
};

class TotpTokenStore {
 public:
  virtual ~TotpTokenStore() = default;
  // Stores `secret` (at least 20 bytes, drawn by the caller from crypto/random.h) as admin
  // `admin_id`'s TOTP secret: sensitive, non-extractable, usable only to sign (HMAC).
  // ALREADY_EXISTS if the admin has one.
  virtual absl::Status ImportTotpSecret(uint64_t admin_id, const crypto::SecretBytes& secret) = 0;
  // HMAC-SHA1(secret, counter as 8 bytes big-endian), computed in the token.
  // HSM_KEY_NOT_FOUND if the admin has no secret.
  virtual absl::StatusOr<std::array<uint8_t, 20>> TotpHmac(uint64_t admin_id, uint64_t counter) = 0;
  virtual absl::Status DestroyTotpSecret(uint64_t admin_id) = 0;
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_SERVICE_KEYS_H_
