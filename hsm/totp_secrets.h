// TotpSecrets: the TotpTokenStore (hsm/service_keys.h) over the token — one generic-secret
// object per admin ("coffer/totp/<admin id>": sensitive, non-extractable, CKA_SIGN only,
// allowed {CKM_SHA_1_HMAC}), imported with C_CreateObject and used through CKM_SHA_1_HMAC, so a
// TOTP secret is never readable again once stored. RFC 4226 truncation happens outside
// (hsm/otp.h).
//
// Handles come from the Token's one enumeration (hsm/token.h); this type keeps admin id →
// object handle, updates it on import and destroy, and has it rebuilt after every reconnect.
//
// Thread safety: every method may be called from many threads. Failure behaviour: the Token's:
// TotpHmac is retried once after a reconnect; imports and destroys are not (they report the
// error after reconnecting). FAILED_PRECONDITION after the Token is closed. Secrets are borrowed
// straight from the secure heap into the template and never copied or logged.
//
// Ownership: borrows the Token, which must outlive it. Built by HsmClient (hsm/hsm_client.h).

#ifndef COFFER_HSM_TOTP_SECRETS_H_
#define COFFER_HSM_TOTP_SECRETS_H_

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <shared_mutex>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/service_keys.h"
#include "hsm/token.h"

namespace coffer::hsm {

class TotpSecrets final : public TotpTokenStore, public ObjectIndex {
 public:
  explicit TotpSecrets(Token& token) : token_(token) {}
  TotpSecrets(const TotpSecrets&) = delete;
  TotpSecrets& operator=(const TotpSecrets&) = delete;

  // TotpTokenStore: CKM_SHA_1_HMAC with the admin's secret.
  absl::Status ImportTotpSecret(uint64_t admin_id, const crypto::SecretBytes& secret) override;
  absl::StatusOr<std::array<uint8_t, 20>> TotpHmac(uint64_t admin_id, uint64_t counter) override;
  absl::Status DestroyTotpSecret(uint64_t admin_id) override;

  // ObjectIndex: keeps the secret keys of kind 'T'.
  void Rebuild(const std::vector<TokenObject>& objects) override;

 private:
  // The admin's secret's handle, if the map has it.
  std::optional<CK_OBJECT_HANDLE> Find(uint64_t admin_id) const;

  Token& token_;
  mutable std::shared_mutex map_mu_;
  std::map<uint64_t, CK_OBJECT_HANDLE> secrets_;  // guarded by map_mu_
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_TOTP_SECRETS_H_
