// Tombstone verification: checks a destroyed dataset's signed tombstone with the public key
// alone, as an auditor would (docs/key-manager.md, "Tombstone", gives the openssl commands).
//
// The tombstone is a serialised coffer.kms.v1.Tombstone; the signature is DER ECDSA-P256 over
// SHA-256 of the signed message, made in the HSM by the token's signing key (hsm::Signer). The
// same key signs checkpoints, receipts and export archives, so the message is domain-labelled
// (kms/audit/signing_domain.h):
//   format_version 2 (written today):  "coffer.kms.tombstone.v2" 0x00 || tombstone bytes
//   format_version absent (first version, still in old key DBs): the tombstone bytes alone
// A signature is accepted only as the version the signed bytes themselves declare: a
// version-2 tombstone never verifies unlabelled, and a first-version one never labelled.
//
// Pure; thread-safe. Failure: TOMBSTONE_INVALID when the signature does not verify, the bytes
// do not parse or declare another version; INVALID_ARGUMENT for a public key that is not a P-256
// PEM.

#ifndef COFFER_KMS_KEYS_TOMBSTONE_H_
#define COFFER_KMS_KEYS_TOMBSTONE_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager_types.h"

namespace coffer::kms {

// The tombstone format written today (Tombstone.format_version).
inline constexpr uint32_t kTombstoneFormatVersion = 2;

// Returns the tombstone's content once its signature verifies under `public_key_pem`.
absl::StatusOr<v1::Tombstone> VerifyTombstone(const SignedTombstone& tombstone,
                                              std::string_view public_key_pem);

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_TOMBSTONE_H_
