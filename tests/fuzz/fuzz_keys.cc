#include "tests/fuzz/fuzz_keys.h"

#include <utility>

#include "crypto/secret_bytes.h"
#include "tests/fuzz/fuzz_support.h"

namespace coffer::fuzz {

namespace {

crypto::SecretBytes SecretOf(std::string_view text) {
  return Must(crypto::SecretBytes::CopyFrom(
      absl::Span<const uint8_t>(reinterpret_cast<const uint8_t*>(text.data()), text.size())));
}

}  // namespace

std::unique_ptr<kms::audit::SoftwareEcdsaSigner> FixedSigner() {
  return Must(kms::audit::SoftwareEcdsaSigner::FromPrivateKeyPem(SecretOf(kSigningKeyPem)));
}

crypto::RecipientPrivateKey FixedRecipientPrivateKey() {
  return Must(crypto::RecipientPrivateKey::FromPem(SecretOf(kRecipientKeyPem)));
}

crypto::RecipientPublicKey FixedRecipientPublicKey() {
  return Must(crypto::RecipientPublicKey::FromPem(kRecipientPublicKeyPem));
}

FixedRowAuthenticator::FixedRowAuthenticator() {
  std::array<uint8_t, 32> key{};
  for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i);
  hmac_ = std::make_unique<crypto::HmacSha256>(
      Must(crypto::HmacSha256::Create(Must(crypto::SecretBytes::CopyFrom(key)))));
}

absl::StatusOr<std::array<uint8_t, 32>> FixedRowAuthenticator::HmacRowKey(std::string_view data) {
  return hmac_->Compute(data);
}

}  // namespace coffer::fuzz
