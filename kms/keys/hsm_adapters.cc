#include "kms/keys/hsm_adapters.h"

#include <openssl/crypto.h>

#include <array>
#include <cstdint>

#include "crypto/secret_bytes.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms {

absl::StatusOr<std::string> HsmCheckpointSigner::Sign(std::string_view message) {
  return signer_.Sign(message);
}

absl::StatusOr<std::string> HsmCheckpointSigner::PublicKeyPem() { return signer_.PublicKeyPem(); }

audit::EpochKeyProvider HsmEpochKeyProvider(hsm::RowAuthenticator& authenticator) {
  return [&authenticator](
             const audit::EpochKeyRequest& request) -> absl::StatusOr<crypto::SecretBytes> {
    return DeriveTokenKey(authenticator, audit::EpochKeyMessage(request.log_id, request.epoch));
  };
}

absl::StatusOr<crypto::SecretBytes> DeriveTokenKey(hsm::RowAuthenticator& authenticator,
                                                   std::string_view message) {
  absl::StatusOr<std::array<uint8_t, 32>> tag = authenticator.HmacRowKey(message);
  if (!tag.ok()) return tag.status();
  absl::StatusOr<crypto::SecretBytes> key = crypto::SecretBytes::CopyFrom(*tag);
  OPENSSL_cleanse(tag->data(), tag->size());  // the only copy outside the secure heap
  return key;
}

}  // namespace coffer::kms
