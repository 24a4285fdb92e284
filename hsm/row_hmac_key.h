// RowHmacKey: the RowAuthenticator (hsm/service_keys.h) over the token's 32-byte generic-secret
// key "coffer/row-hmac" — the key whose HMAC-SHA256 tags key-DB and admin-registry rows and
// derives the audit log's epoch keys (kms/keys/hsm_adapters.h).
//
// HmacRowKey() computes CKM_SHA256_HMAC inside the token. The key is created on first use
// (C_GenerateKey with CKM_GENERIC_SECRET_KEY_GEN: sensitive, non-extractable, allowed
// {CKM_SHA256_HMAC}) unless the Token's enumeration found it; its handle is kept and re-found
// after a reconnect.
//
// Thread safety: every method may be called from many threads. Failure behaviour: the Token's
// (hsm/token.h): an HMAC is retried once after a reconnect, creating the key is not;
// FAILED_PRECONDITION after the Token is closed. The key never leaves the token.
//
// Ownership: borrows the Token, which must outlive it. Built by HsmClient (hsm/hsm_client.h).

#ifndef COFFER_HSM_ROW_HMAC_KEY_H_
#define COFFER_HSM_ROW_HMAC_KEY_H_

#include <array>
#include <cstdint>
#include <optional>
#include <shared_mutex>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/service_keys.h"
#include "hsm/token.h"

namespace coffer::hsm {

class RowHmacKey final : public RowAuthenticator, public ObjectIndex {
 public:
  explicit RowHmacKey(Token& token) : token_(token) {}
  RowHmacKey(const RowHmacKey&) = delete;
  RowHmacKey& operator=(const RowHmacKey&) = delete;

  // RowAuthenticator: CKM_SHA256_HMAC with the token's row key.
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) override;

  // ObjectIndex: keeps the first secret key of kind 'H'.
  void Rebuild(const std::vector<TokenObject>& objects) override;

 private:
  // Creates the key unless the map has it.
  absl::Status EnsureKey();

  Token& token_;
  mutable std::shared_mutex map_mu_;
  std::optional<CK_OBJECT_HANDLE> key_;  // guarded by map_mu_
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_ROW_HMAC_KEY_H_
