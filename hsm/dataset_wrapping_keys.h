// DatasetWrappingKeys: the KeyWrapper (hsm/key_wrapper.h) over a real PKCS#11 token — one
// AES-256 token key per (dataset handle, version), DEKs wrapped and unwrapped with
// CKM_AES_KEY_WRAP (RFC 3394) inside the token (attributes and labels in docs/hsm.md).
//
// Handles come from the Token's one enumeration (hsm/token.h): this type keeps the map
// (dataset handle, version) → object handle, updates it on create and destroy, and has it
// rebuilt after every reconnect; requests never search the token. It also remembers the DWKs
// this process destroyed, so that a later Wrap says KEY_DESTROYED rather than HSM_KEY_NOT_FOUND.
//
// Thread safety: every method may be called from many threads (a reader/writer lock guards the
// map; creates and destroys take the Token's object-changes lock).
//
// Failure behaviour: as the KeyWrapper contract says, plus the Token's (reconnect after a session
// or device error; wrap, unwrap and inspect are retried once, create and destroy are not — the
// caller reconciles with ListWrappingKeys(), which reads the map and never calls the token).
// SoftHSM2 reports a tampered wrapped key as CKR_GENERAL_ERROR; Unwrap then probes the session
// (C_GetSessionInfo) and, if it is healthy, returns WRAPPED_KEY_CORRUPT without reconnecting. After
// the Token is closed every method returns FAILED_PRECONDITION.
//
// Ownership: borrows the Token, which must outlive it. Built by HsmClient (hsm/hsm_client.h).

#ifndef COFFER_HSM_DATASET_WRAPPING_KEYS_H_
#define COFFER_HSM_DATASET_WRAPPING_KEYS_H_

#include <map>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/key_wrapper.h"
#include "hsm/token.h"

namespace coffer::hsm {

// A DWK's attributes as the token reports them (tests, `keyctl hsm status`).
struct WrappingKeyAttributes {
  bool token = false;
  bool is_private = false;
  bool sensitive = false;
  bool extractable = true;
  bool always_sensitive = false;
  bool never_extractable = false;
  bool wrap = false;
  bool unwrap = false;
  bool encrypt = false;
  bool decrypt = false;
  bool sign = false;
  std::string label;
  std::vector<CK_MECHANISM_TYPE> allowed_mechanisms;  // empty when the token lacks the attribute
  // The status of an attempt to read CKA_VALUE; OK would mean the key leaked.
  absl::Status value_read;
};

class DatasetWrappingKeys final : public KeyWrapper, public ObjectIndex {
 public:
  explicit DatasetWrappingKeys(Token& token) : token_(token) {}

  // KeyWrapper (contract in hsm/key_wrapper.h).
  absl::Status CreateWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<WrappedKey> Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) override;
  absl::StatusOr<crypto::SecretBytes> Unwrap(const WrappedKey& blob) override;
  absl::Status DestroyWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<std::vector<WrappingKeyId>> ListWrappingKeys() override;

  // Reads DWK `id`'s attributes, including an attempt to read its value.
  absl::StatusOr<WrappingKeyAttributes> InspectWrappingKey(WrappingKeyId id);

  // ObjectIndex: keeps the secret keys of kind 'W'.
  void Rebuild(const std::vector<TokenObject>& objects) override;

 private:
  // The DWK's handle, if the map has it.
  std::optional<CK_OBJECT_HANDLE> Find(WrappingKeyId id) const;
  // C_UnwrapKey of `blob` under `dwk` into a session object, read and destroyed.
  absl::StatusOr<crypto::SecretBytes> UnwrapInSession(CK_SESSION_HANDLE session,
                                                      CK_OBJECT_HANDLE dwk, const WrappedKey& blob);

  Token& token_;
  mutable std::shared_mutex map_mu_;
  std::map<WrappingKeyId, CK_OBJECT_HANDLE> dwks_;  // guarded by map_mu_
  std::set<WrappingKeyId> destroyed_;  // guarded by map_mu_: DWKs this process destroyed
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_DATASET_WRAPPING_KEYS_H_
