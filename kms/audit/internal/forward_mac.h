// ForwardSecureMac: the audit log's evolving MAC key (Acra-style forward security).
//
// Entry i of an epoch is authenticated as mac_i = HMAC-SHA256(K_i, h_i) over its chain hash;
// then K_{i+1} = HMAC-SHA256(K_i, kMacEvolveLabel) replaces K_i, which is wiped. Whoever reads
// the process's memory later holds only the current key and cannot forge or re-MAC any entry
// already written. K_0 of each epoch comes from the caller's EpochKeyProvider (docs/audit.md).
//
// Internal to kms/audit. Not thread-safe (the owner serialises calls). The current key lives
// in a SecretBytes (secure heap); the OpenSSL context keyed with it is freed, and cleansed by
// OpenSSL, at every step. Any failure leaves the object unusable (a later call fails too).

#ifndef COFFER_KMS_AUDIT_INTERNAL_FORWARD_MAC_H_
#define COFFER_KMS_AUDIT_INTERNAL_FORWARD_MAC_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms::audit::internal {

inline constexpr size_t kEpochKeySize = 32;

class ForwardSecureMac {
 public:
  // Takes ownership of K_0, which must be kEpochKeySize bytes (INVALID_ARGUMENT otherwise).
  static absl::StatusOr<ForwardSecureMac> Create(crypto::SecretBytes epoch_key);

  ForwardSecureMac(ForwardSecureMac&&) noexcept = default;
  ForwardSecureMac& operator=(ForwardSecureMac&&) noexcept = default;

  // Returns HMAC(K_i, hash) and moves to K_{i+1}, wiping K_i.
  absl::StatusOr<MacTag> MacAndEvolve(const ChainHash& hash);

  // Returns OK when `mac` is HMAC(K_i, hash) (constant-time compare), CIPHERTEXT_CORRUPT when not;
  // moves to K_{i+1} either way.
  absl::Status VerifyAndEvolve(const ChainHash& hash, const MacTag& mac);

 private:
  explicit ForwardSecureMac(crypto::SecretBytes key) : key_(std::move(key)) {}

  crypto::SecretBytes key_;  // K_i; empty once a step failed
};

}  // namespace coffer::kms::audit::internal

#endif  // COFFER_KMS_AUDIT_INTERNAL_FORWARD_MAC_H_
