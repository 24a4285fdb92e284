// Tombstone verification: checks a destroyed dataset's signed tombstone with the public key
// alone, as an auditor would (docs/key-manager.md, "Tombstone", gives the openssl commands).
//
// The tombstone is a serialised coffer.kms.v1.Tombstone; the signature is DER ECDSA-P256 over
// SHA-256 of exactly those bytes, made in the HSM by the token's signing key (hsm::Signer).
//
// Pure; thread-safe. Failure: TOMBSTONE_INVALID when the signature does not verify or the
// bytes do not parse; INVALID_ARGUMENT for a public key that is not a P-256 PEM.

#ifndef COFFER_KMS_KEYS_TOMBSTONE_H_
#define COFFER_KMS_KEYS_TOMBSTONE_H_

#include <string_view>

#include "absl/status/statusor.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager_types.h"

namespace coffer::kms {

// Returns the tombstone's content once its signature verifies under `public_key_pem`.
absl::StatusOr<v1::Tombstone> VerifyTombstone(const SignedTombstone& tombstone,
                                              std::string_view public_key_pem);

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_TOMBSTONE_H_
