// HsmClient: coffer's PKCS#11 client — dataset wrapping keys and service keys in one token.
//
// Open() loads the module (hsm/module.h), finds the token by label, reads the PIN from a file or
// an environment variable (hsm/pin.h) and logs in as user once (login is per application in
// PKCS#11, so it serves every session), then makes ONE enumeration of the token's coffer
// objects into a handle map: (dataset handle, version) → object handle, plus the service keys.
// Requests never search the token — SoftHSM2's file store takes O(objects) per search (≈45 ms
// at 2,000 keys) against ≈80 µs for an unwrap with a known handle. The map is updated on create
// and destroy and rebuilt after a reconnect.
//
// Thread safety: every public method may be called from many threads. Operations run on a
// bounded pool of sessions (HsmOptions::session_pool_size) under a shared connection lock; a
// reconnect takes it exclusively.
//
// Failure behaviour: each failure is a distinct ErrorCode whose message names what to fix and
// the CKR_ name, never the PIN (docs/hsm.md, "Errors"). After a session or device error
// (CKR_SESSION_*, CKR_DEVICE_*, CKR_USER_NOT_LOGGED_IN, …) the client closes its sessions, logs
// in again and rebuilds its map, then retries the operation once if it is idempotent (wrap,
// unwrap, sign, HMAC, list); creates and destroys report the error after reconnecting, and the
// caller reconciles with ListWrappingKeys(). SoftHSM2 reports a tampered wrapped key as
// CKR_GENERAL_ERROR; the client then probes the session (C_GetSessionInfo) and, if it is
// healthy, returns WRAPPED_KEY_CORRUPT without reconnecting.
//
// Ownership: the client owns the Module, its sessions and the PIN (secure heap, kept for
// re-login). Close() — or the destructor — closes every session and calls C_Finalize; call it
// explicitly before exit. After Close() every method returns FAILED_PRECONDITION.

#ifndef COFFER_HSM_HSM_CLIENT_H_
#define COFFER_HSM_HSM_CLIENT_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "hsm/key_wrapper.h"
#include "hsm/module.h"
#include "hsm/pin.h"
#include "hsm/service_keys.h"

namespace coffer::hsm {

namespace internal {
class AttributeList;
class SessionPool;
}  // namespace internal

struct HsmOptions {
  std::string module_path = std::string(kDefaultModulePath);
  std::string token_label;
  PinSource pin;
  // Sessions opened at most; callers beyond this wait for a free one.
  size_t session_pool_size = 4;
};

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

class HsmClient final : public KeyWrapper,
                        public Signer,
                        public RowAuthenticator,
                        public TotpTokenStore {
 public:
  // Errors: HSM_MODULE_NOT_FOUND, HSM_NOT_PKCS11_MODULE, HSM_PIN_UNAVAILABLE,
  // HSM_TOKEN_NOT_FOUND, HSM_WRONG_PIN, HSM_PIN_LOCKED, HSM_MECHANISM_UNSUPPORTED (no
  // CKM_AES_KEY_WRAP or CKM_AES_KEY_GEN), HSM_DEVICE_ERROR.
  static absl::StatusOr<std::unique_ptr<HsmClient>> Open(const HsmOptions& options);

  ~HsmClient() override;

  // Closes every session and finalises the module. Idempotent.
  absl::Status Close();

  // KeyWrapper (contract in hsm/key_wrapper.h).
  absl::Status CreateWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<WrappedKey> Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) override;
  absl::StatusOr<crypto::SecretBytes> Unwrap(const WrappedKey& blob) override;
  absl::Status DestroyWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<std::vector<WrappingKeyId>> ListWrappingKeys() override;

  // Signer: ECDSA P-256 over SHA-256 (hashed by OpenSSL, signed in the token with CKM_ECDSA).
  absl::StatusOr<std::string> Sign(std::string_view message) override;
  absl::StatusOr<std::string> PublicKeyPem() override;

  // RowAuthenticator: CKM_SHA256_HMAC with the token's row key.
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) override;

  // TotpTokenStore: CKM_SHA_1_HMAC with the admin's secret.
  absl::Status ImportTotpSecret(uint64_t admin_id, const crypto::SecretBytes& secret) override;
  absl::StatusOr<std::array<uint8_t, 20>> TotpHmac(uint64_t admin_id, uint64_t counter) override;
  absl::Status DestroyTotpSecret(uint64_t admin_id) override;

  // Reads DWK `id`'s attributes, including an attempt to read its value.
  absl::StatusOr<WrappingKeyAttributes> InspectWrappingKey(WrappingKeyId id);

  // Diagnostics.
  CK_SLOT_ID slot_id() const { return slot_; }
  const std::string& module_description() const { return module_.description(); }
  // How many times the client has reconnected after a session or device error.
  uint64_t reconnect_count() const { return reconnects_.load(); }
  // Whether the token accepted CKA_ALLOWED_MECHANISMS on key creation.
  bool allowed_mechanisms_supported() const { return allowed_mechanisms_supported_.load(); }

 private:
  // The handle map: everything the start-up enumeration found. Guarded by map_mu_.
  struct HandleMap {
    std::map<WrappingKeyId, CK_OBJECT_HANDLE> dwks;
    std::map<uint64_t, CK_OBJECT_HANDLE> totp;
    std::optional<CK_OBJECT_HANDLE> signing_private;
    std::optional<CK_OBJECT_HANDLE> signing_public;
    std::optional<CK_OBJECT_HANDLE> row_hmac;
  };
  using SessionOp = std::function<absl::Status(CK_SESSION_HANDLE session)>;

  HsmClient(Module module, HsmOptions options, crypto::SecretBytes pin);

  // Finds the slot, opens the pool, logs in and enumerates. Requires conn_mu_ held exclusively.
  absl::Status Connect();
  // Reconnects unless another thread already did since `generation`.
  absl::Status Reconnect(uint64_t generation);
  absl::StatusOr<HandleMap> Enumerate(CK_SESSION_HANDLE session);
  // Runs `op` on a pooled session; reconnects after a connection loss, then reruns `op` once
  // when `idempotent`.
  absl::Status Run(bool idempotent, const SessionOp& op);

  absl::Status EnsureSigningKey();
  absl::Status EnsureRowHmacKey();
  // Generates a token key, dropping CKA_ALLOWED_MECHANISMS if the token rejects it.
  absl::StatusOr<CK_OBJECT_HANDLE> GenerateSecretKey(CK_SESSION_HANDLE session,
                                                     CK_MECHANISM_TYPE mechanism,
                                                     internal::AttributeList& attributes);
  absl::StatusOr<std::string> SignRaw(CK_SESSION_HANDLE session, CK_MECHANISM_TYPE mechanism,
                                      CK_OBJECT_HANDLE key, std::string_view data, size_t max_out);

  Module module_;
  const HsmOptions options_;
  const crypto::SecretBytes pin_;
  std::atomic<uint64_t> reconnects_{0};
  std::atomic<bool> allowed_mechanisms_supported_{true};

  std::shared_mutex conn_mu_;  // shared: an operation in flight; exclusive: (re)connect, close
  CK_SLOT_ID slot_ = 0;        // guarded by conn_mu_
  std::unique_ptr<internal::SessionPool> pool_;  // guarded by conn_mu_
  bool connected_ = false;                       // guarded by conn_mu_
  bool closed_ = false;                          // guarded by conn_mu_
  uint64_t generation_ = 0;                      // guarded by conn_mu_

  mutable std::shared_mutex map_mu_;
  HandleMap map_;                      // guarded by map_mu_
  std::set<WrappingKeyId> destroyed_;  // guarded by map_mu_: DWKs this process destroyed

  std::mutex create_mu_;  // serialises creates and destroys of token objects
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_HSM_CLIENT_H_
