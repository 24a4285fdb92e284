#include "kms/audit/internal/forward_mac.h"

#include <openssl/crypto.h>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "crypto/hmac.h"

namespace coffer::kms::audit::internal {

absl::StatusOr<ForwardSecureMac> ForwardSecureMac::Create(crypto::SecretBytes epoch_key) {
  if (epoch_key.size() != kEpochKeySize) {
    return MakeError(ErrorCode::kInvalidArgument, "an audit epoch key must be 32 bytes");
  }
  return ForwardSecureMac(std::move(epoch_key));
}

absl::StatusOr<MacTag> ForwardSecureMac::MacAndEvolve(const ChainHash& hash) {
  crypto::SecretBytes current = std::move(key_);  // key_ stays empty unless every step succeeds
  if (current.size() != kEpochKeySize) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the audit MAC key was lost by an earlier "
                     "failure");
  }
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256 hmac, crypto::HmacSha256::Create(current));
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256Tag mac, hmac.Compute(AsStringView(hash)));
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256Tag next, hmac.Compute(kMacEvolveLabel));
  absl::StatusOr<crypto::SecretBytes> next_key =
      crypto::SecretBytes::CopyFrom(absl::MakeConstSpan(next.data(), next.size()));
  OPENSSL_cleanse(next.data(), next.size());
  if (!next_key.ok()) return next_key.status();
  key_ = *std::move(next_key);
  // `current` (K_i) and `hmac` (OpenSSL's keyed copy) are wiped as they go out of scope.
  return mac;
}

absl::Status ForwardSecureMac::VerifyAndEvolve(const ChainHash& hash, const MacTag& mac) {
  COFFER_ASSIGN_OR_RETURN(MacTag expected, MacAndEvolve(hash));
  if (!crypto::ConstantTimeEquals(AsStringView(expected), AsStringView(mac))) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "audit entry MAC mismatch");
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit::internal
