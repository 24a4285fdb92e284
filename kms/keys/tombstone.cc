#include "kms/keys/tombstone.h"

#include <string>

#include "crypto/base/status.h"
#include "kms/audit/signer.h"
#include "kms/audit/signing_domain.h"

namespace coffer::kms {
namespace {

absl::Status Invalid(std::string message) {
  return MakeError(ErrorCode::kTombstoneInvalid, std::move(message));
}

}  // namespace

absl::StatusOr<v1::Tombstone> VerifyTombstone(const SignedTombstone& tombstone,
                                              std::string_view public_key_pem) {
  COFFER_ASSIGN_OR_RETURN(audit::CheckpointVerifier verifier,
                          audit::CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  // Only authenticated bytes are parsed: the signature decides which version to expect.
  const bool labelled = audit::VerifyInDomain(verifier, audit::SigningDomain::kTombstone,
                                              tombstone.tombstone, tombstone.signature)
                            .ok();
  if (!labelled &&
      !audit::VerifyUnlabelledLegacy(verifier, tombstone.tombstone, tombstone.signature).ok()) {
    return Invalid(
        "the tombstone's signature does not verify: altered, forged, or a signature of "
        "something else");
  }
  v1::Tombstone content;
  if (!content.ParseFromString(tombstone.tombstone)) {
    return Invalid("the tombstone does not parse");
  }
  const uint32_t expected = labelled ? kTombstoneFormatVersion : 0;
  if (content.format_version() != expected) {
    return Invalid("the tombstone declares format version " +
                   std::to_string(content.format_version()) + " but is signed as version " +
                   std::to_string(labelled ? kTombstoneFormatVersion : 1));
  }
  return content;
}

}  // namespace coffer::kms
