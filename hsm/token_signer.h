// TokenSigner: the Signer (hsm/service_keys.h) over the token's ECDSA P-256 key pair — the key
// that signs audit checkpoints, deletion receipts and exports (label "coffer/audit-signing",
// docs/hsm.md "What lives in the token").
//
// Sign() hashes with SHA-256 in OpenSSL, signs the digest in the token with CKM_ECDSA and
// returns DER; PublicKeyPem() reads CKA_EC_POINT and returns a PEM SubjectPublicKeyInfo, so a
// signature verifies offline with OpenSSL and the public key alone. The pair is created on first
// use (C_GenerateKeyPair with CKM_EC_KEY_PAIR_GEN) unless the Token's enumeration found it, and
// its handles are kept; a reconnect re-finds them.
//
// Thread safety: every method may be called from many threads. Failure behaviour: the Token's
// (hsm/token.h): Sign and PublicKeyPem are retried once after a reconnect; creating the pair is
// not. HSM_MECHANISM_UNSUPPORTED names a missing mechanism; FAILED_PRECONDITION after the Token
// is closed. Never returns or logs the private key (the token will not reveal it).
//
// Ownership: borrows the Token, which must outlive it. Built by HsmClient (hsm/hsm_client.h).

#ifndef COFFER_HSM_TOKEN_SIGNER_H_
#define COFFER_HSM_TOKEN_SIGNER_H_

#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/service_keys.h"
#include "hsm/token.h"

namespace coffer::hsm {

class TokenSigner final : public Signer, public ObjectIndex {
 public:
  explicit TokenSigner(Token& token) : token_(token) {}
  TokenSigner(const TokenSigner&) = delete;
  TokenSigner& operator=(const TokenSigner&) = delete;

  // Signer: ECDSA P-256 over SHA-256 (hashed by OpenSSL, signed in the token with CKM_ECDSA).
  absl::StatusOr<std::string> Sign(std::string_view message) override;
  absl::StatusOr<std::string> PublicKeyPem() override;

  // ObjectIndex: keeps the first private and public key of kind 'S'.
  void Rebuild(const std::vector<TokenObject>& objects) override;

 private:
  // Creates the pair unless the map has both halves.
  absl::Status EnsureKeyPair();
  absl::Status GenerateKeyPair(CK_SESSION_HANDLE session);

  Token& token_;
  mutable std::shared_mutex map_mu_;
  std::optional<CK_OBJECT_HANDLE> private_key_;  // guarded by map_mu_
  std::optional<CK_OBJECT_HANDLE> public_key_;   // guarded by map_mu_
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_TOKEN_SIGNER_H_
