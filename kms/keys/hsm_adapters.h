// Adapters from the HSM's service keys (hsm/service_keys.h) to what the audit log needs
// (kms/audit/): what the daemon wires, and what the key-manager tests use.
//
//  - HsmCheckpointSigner: audit::CheckpointSigner over the token's ECDSA P-256 signing key, so
//    checkpoints and receipts verify offline with the exported public key alone.
//  - HsmEpochKeyProvider: audit::EpochKeyProvider deriving each epoch's K_0 inside the token,
//    K_0 = HMAC-SHA256(token HMAC service key, audit::EpochKeyMessage(log id, epoch)), i.e.
//    "coffer.audit.v1.epoch\0" | log id (16) | epoch (8, big-endian) (docs/audit.md "Epochs").
//    Only the token can recompute it. The domain prefix keeps these inputs disjoint from the key
//    DB's row-authentication inputs, which start "coffer-keydb-row-v1\0" under the same key.
//
// Thread safety: both may be used from any thread (the hsm/ roles are thread-safe).
// Ownership: neither owns the HSM interface it is given; it must outlive the adapter (and every
// copy of the provider function).
// Failure: HSM errors pass through unchanged (HSM_*, see docs/hsm.md); nothing is retried here
// (hsm::Token retries idempotent operations once after a reconnect). Key bytes are never logged.

#ifndef COFFER_KMS_KEYS_HSM_ADAPTERS_H_
#define COFFER_KMS_KEYS_HSM_ADAPTERS_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "hsm/service_keys.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/signer.h"

namespace coffer::kms {

class HsmCheckpointSigner final : public audit::CheckpointSigner {
 public:
  explicit HsmCheckpointSigner(hsm::Signer& signer) : signer_(signer) {}

  absl::StatusOr<std::string> Sign(std::string_view message) override;
  absl::StatusOr<std::string> PublicKeyPem() override;

 private:
  hsm::Signer& signer_;
};

// Returns the provider described above; `authenticator` is the token's HMAC service key.
audit::EpochKeyProvider HsmEpochKeyProvider(hsm::RowAuthenticator& authenticator);

// A 32-byte key derived inside the token: HMAC-SHA256(token HMAC service key, `message`), copied
// into the secure heap (the intermediate copy is cleansed). Every key the daemon derives from the
// token goes through here — audit epoch keys, dataset-name keys, the event log's and the admin
// registry's sealing keys, full backups' key-DB sealing keys ("coffer.backup.keydb.v1\0" ‖
// salt: internal/backup_manifest.h) — each under its own message, which must not begin like a row
// tag's input ("coffer-keydb-row-v1\0", "coffer-admin-row-v1\0").
absl::StatusOr<crypto::SecretBytes> DeriveTokenKey(hsm::RowAuthenticator& authenticator,
                                                   std::string_view message);

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_HSM_ADAPTERS_H_
