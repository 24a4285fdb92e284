#include "storage/data_key.h"

#include <utility>

#include "crypto/base/status.h"
#include "crypto/hkdf.h"
#include "crypto/pooled_contexts.h"

namespace coffer::storage {
namespace {

// OpenSSL's AES-GCM and HMAC contexts, with their key schedules, are about this large.
constexpr size_t kContextBytesEstimate = 1024;
// The keyed template plus the contexts kept for reuse (crypto/pooled_contexts.h); the pool
// fills only as far as calls run concurrently, so this is the most.
constexpr size_t kPooledContextBytesEstimate =
    (1 + crypto::kPooledContextsPerKey) * kContextBytesEstimate;
// AesSiv holds a SIV context (a CTR and a CMAC context inside) and a CMAC template: ~2.8 KiB
// measured with OpenSSL 3.0.
constexpr size_t kSivContextBytesEstimate = 3 * kContextBytesEstimate;

}  // namespace

std::string_view KeyPurposeName(KeyPurpose purpose) {
  switch (purpose) {
    case KeyPurpose::kRecords:
      return "records";
    case KeyPurpose::kAttachments:
      return "attachments";
    case KeyPurpose::kLookup:
      return "lookup";
    case KeyPurpose::kPseudonym:
      return "pseudonym";
  }
  return "unknown";
}

std::optional<KeyPurpose> ParseKeyPurpose(std::string_view name) {
  for (KeyPurpose purpose : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup,
                             KeyPurpose::kPseudonym}) {
    if (KeyPurposeName(purpose) == name) return purpose;
  }
  return std::nullopt;
}

absl::StatusOr<std::shared_ptr<const DataKey>> DataKey::Create(KeyPurpose purpose, uint32_t version,
                                                               crypto::SecretBytes key) {
  if (KeyPurposeName(purpose) == "unknown") {
    return MakeError(ErrorCode::kInvalidArgument, "unknown key purpose");
  }
  if (key.size() != crypto::kRecordKeySize) {
    return MakeError(ErrorCode::kInvalidArgument, "a data key must be 32 bytes");
  }
  std::optional<crypto::RecordAead> aead;
  std::optional<crypto::HmacSha256> hmac;
  std::unique_ptr<const crypto::AesSiv> siv;
  switch (purpose) {
    case KeyPurpose::kRecords:
    case KeyPurpose::kAttachments: {
      COFFER_ASSIGN_OR_RETURN(crypto::RecordAead keyed, crypto::RecordAead::Create(key, version));
      aead.emplace(std::move(keyed));
      break;
    }
    case KeyPurpose::kLookup: {
      COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256 keyed, crypto::HmacSha256::Create(key));
      hmac.emplace(std::move(keyed));
      break;
    }
    case KeyPurpose::kPseudonym: {
      COFFER_ASSIGN_OR_RETURN(
          crypto::SecretBytes siv_key,
          crypto::HkdfSha256(key, "", kPseudonymSivKeyInfo, crypto::kAesSiv256KeySize));
      COFFER_ASSIGN_OR_RETURN(siv, crypto::AesSiv::Create(siv_key));
      break;  // siv_key is wiped here; the contexts keep their own copies
    }
  }
  return std::shared_ptr<const DataKey>(new DataKey(
      purpose, version, std::move(key), std::move(aead), std::move(hmac), std::move(siv)));
}

DataKey::DataKey(KeyPurpose purpose, uint32_t version, crypto::SecretBytes key,
                 std::optional<crypto::RecordAead> aead, std::optional<crypto::HmacSha256> hmac,
                 std::unique_ptr<const crypto::AesSiv> siv)
    : purpose_(purpose),
      version_(version),
      key_(std::move(key)),
      aead_(std::move(aead)),
      hmac_(std::move(hmac)),
      siv_(std::move(siv)) {}

absl::StatusOr<const crypto::RecordAead*> DataKey::record_aead() const {
  if (!aead_.has_value()) {
    return MakeError(
        ErrorCode::kFailedPrecondition,
        std::string("a ") + std::string(KeyPurposeName(purpose_)) + " key does not seal records");
  }
  return &*aead_;
}

absl::StatusOr<const crypto::HmacSha256*> DataKey::hmac() const {
  if (!hmac_.has_value()) {
    return MakeError(
        ErrorCode::kFailedPrecondition,
        std::string("a ") + std::string(KeyPurposeName(purpose_)) + " key is not a lookup key");
  }
  return &*hmac_;
}

absl::StatusOr<const crypto::AesSiv*> DataKey::aes_siv() const {
  if (siv_ == nullptr) {
    return MakeError(
        ErrorCode::kFailedPrecondition,
        std::string("a ") + std::string(KeyPurposeName(purpose_)) + " key is not a pseudonym key");
  }
  return siv_.get();
}

size_t DataKey::MemoryBytes() const {
  return sizeof(DataKey) + key_.size() +
         (siv_ != nullptr ? kSivContextBytesEstimate : kPooledContextBytesEstimate);
}

}  // namespace coffer::storage
