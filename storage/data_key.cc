#include "storage/data_key.h"

#include <utility>

#include "crypto/status.h"

namespace coffer::storage {
namespace {

// OpenSSL's AES-GCM and HMAC contexts, with their key schedules, are about this large.
constexpr size_t kContextBytesEstimate = 1024;

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
    case KeyPurpose::kPseudonym:
      break;  // AES-SIV keys its context per call from key()
  }
  return std::shared_ptr<const DataKey>(
      new DataKey(purpose, version, std::move(key), std::move(aead), std::move(hmac)));
}

DataKey::DataKey(KeyPurpose purpose, uint32_t version, crypto::SecretBytes key,
                 std::optional<crypto::RecordAead> aead, std::optional<crypto::HmacSha256> hmac)
    : purpose_(purpose),
      version_(version),
      key_(std::move(key)),
      aead_(std::move(aead)),
      hmac_(std::move(hmac)) {}

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

size_t DataKey::MemoryBytes() const {
  return sizeof(DataKey) + key_.size() + kContextBytesEstimate;
}

}  // namespace coffer::storage
