// HsmClient: opens coffer's PKCS#11 token once and hands out its four roles, all sharing that
// one login and one session pool (hsm/token.h):
//
//   wrapping_keys()      DatasetWrappingKeys — the KeyWrapper: one AES-256 key per dataset and
//                        version, RFC 3394 wrap/unwrap of data keys (hsm/dataset_wrapping_keys.h)
//   signer()             TokenSigner — the ECDSA P-256 key that signs audit checkpoints, receipts
//                        and exports (hsm/token_signer.h)
//   row_authenticator()  RowHmacKey — the HMAC-SHA256 key that tags key-DB and admin-registry
//                        rows (hsm/row_hmac_key.h)
//   totp_secrets()       TotpSecrets — per-admin TOTP secrets used through CKM_SHA_1_HMAC
//                        (hsm/totp_secrets.h)
//
// Open() loads the module, finds the token by label, reads the PIN (hsm/pin.h), logs in once and
// makes ONE enumeration of the token's coffer objects, from which each role builds its own handle
// map (docs/hsm.md, "Handles are resolved once").
//
// Thread safety: every role may be used from many threads; Close() may race with them (they then
// return FAILED_PRECONDITION). Ownership: the client owns the Token and the roles; the references
// it hands out are valid until it is destroyed. Close() — or the destructor — closes every
// session and calls C_Finalize; call it explicitly before exit.

#ifndef COFFER_HSM_HSM_CLIENT_H_
#define COFFER_HSM_HSM_CLIENT_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hsm/dataset_wrapping_keys.h"
#include "hsm/row_hmac_key.h"
#include "hsm/token.h"
#include "hsm/token_signer.h"
#include "hsm/totp_secrets.h"

namespace coffer::hsm {

class HsmClient {
 public:
  // Errors: INVALID_ARGUMENT (no token label), HSM_MODULE_NOT_FOUND, HSM_NOT_PKCS11_MODULE,
  // HSM_PIN_UNAVAILABLE, HSM_TOKEN_NOT_FOUND, HSM_WRONG_PIN, HSM_PIN_LOCKED,
  // HSM_MECHANISM_UNSUPPORTED (no CKM_AES_KEY_WRAP or CKM_AES_KEY_GEN), HSM_DEVICE_ERROR.
  static absl::StatusOr<std::unique_ptr<HsmClient>> Open(const HsmOptions& options);

  HsmClient(const HsmClient&) = delete;
  HsmClient& operator=(const HsmClient&) = delete;
  ~HsmClient();

  // Closes every session and finalises the module. Idempotent.
  absl::Status Close() { return token_->Close(); }

  DatasetWrappingKeys& wrapping_keys() { return wrapping_keys_; }
  TokenSigner& signer() { return signer_; }
  RowHmacKey& row_authenticator() { return row_authenticator_; }
  TotpSecrets& totp_secrets() { return totp_secrets_; }

  // Diagnostics: slot, reconnect count, CKA_ALLOWED_MECHANISMS support.
  const Token& token() const { return *token_; }
  Token& token() { return *token_; }
  const std::string& module_description() const { return token_->module_description(); }

 private:
  explicit HsmClient(std::unique_ptr<Token> token);

  std::unique_ptr<Token> token_;  // first: the roles below borrow it
  DatasetWrappingKeys wrapping_keys_;
  TokenSigner signer_;
  RowHmacKey row_authenticator_;
  TotpSecrets totp_secrets_;
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_HSM_CLIENT_H_
