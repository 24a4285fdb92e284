#include "kms/keys/internal/dataset_names.h"

#include <utility>

#include "crypto/base/status.h"
#include "crypto/secret_bytes.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_db.h"

namespace coffer::kms::internal {
namespace {

// Part of the stored format (names-v2): never change for an existing key DB.
constexpr std::string_view kLookupKeyLabel = "coffer-dataset-name-lookup-key-v2";
constexpr std::string_view kSealKeyLabel = "coffer-dataset-name-seal-key-v2";
constexpr std::string_view kSealedNameContext = "coffer-dataset-name-v2";
constexpr std::string_view kSealedSaltContext = "coffer-dataset-name-salt-v2";
constexpr uint32_t kSealKeyVersion = 1;

std::string Associated(uint64_t handle, std::string_view context = kSealedNameContext) {
  std::string out(context);
  out.push_back('\0');
  out += DatasetRowKey(handle);  // the handle, 8 bytes big-endian
  return out;
}

}  // namespace

absl::StatusOr<DatasetNames> DatasetNames::Create(hsm::RowAuthenticator& rows) {
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes lookup_key, DeriveTokenKey(rows, kLookupKeyLabel));
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes seal_key, DeriveTokenKey(rows, kSealKeyLabel));
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256 lookup, crypto::HmacSha256::Create(lookup_key));
  COFFER_ASSIGN_OR_RETURN(crypto::RecordAead seal,
                          crypto::RecordAead::Create(seal_key, kSealKeyVersion));
  return DatasetNames(std::move(lookup), std::move(seal));
}

absl::StatusOr<std::string> DatasetNames::LookupKey(std::string_view name) const {
  COFFER_ASSIGN_OR_RETURN(crypto::HmacSha256Tag tag, lookup_.Compute(name));
  return std::string(tag.begin(), tag.end());
}

absl::StatusOr<std::string> DatasetNames::Seal(uint64_t handle, std::string_view name) const {
  return seal_.Seal(name, Associated(handle));
}

absl::StatusOr<std::string> DatasetNames::OpenName(uint64_t handle, std::string_view sealed) const {
  return seal_.Open(sealed, Associated(handle));
}

absl::StatusOr<std::string> DatasetNames::SealSalt(uint64_t handle, std::string_view salt) const {
  return seal_.Seal(salt, Associated(handle, kSealedSaltContext));
}

absl::StatusOr<std::string> DatasetNames::OpenSalt(uint64_t handle, std::string_view sealed) const {
  return seal_.Open(sealed, Associated(handle, kSealedSaltContext));
}

}  // namespace coffer::kms::internal
