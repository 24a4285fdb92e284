#include "kms/keys/tombstone.h"

#include <string>

#include "crypto/base/status.h"
#include "kms/audit/signer.h"

namespace coffer::kms {

absl::StatusOr<v1::Tombstone> VerifyTombstone(const SignedTombstone& tombstone,
                                              std::string_view public_key_pem) {
  COFFER_ASSIGN_OR_RETURN(audit::CheckpointVerifier verifier,
                          audit::CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  if (!verifier.Verify(tombstone.tombstone, tombstone.signature).ok()) {
    return MakeError(ErrorCode::kTombstoneInvalid,
                     "the tombstone's signature does not verify: altered or forged");
  }
  v1::Tombstone content;
  if (!content.ParseFromString(tombstone.tombstone)) {
    return MakeError(ErrorCode::kTombstoneInvalid, "the tombstone does not parse");
  }
  return content;
}

}  // namespace coffer::kms
