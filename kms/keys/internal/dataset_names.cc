#include "kms/keys/internal/dataset_names.h"

#include <array>
#include <utility>

#include "absl/types/span.h"
#include "crypto/base/status.h"
#include "crypto/secret_bytes.h"

namespace coffer::kms::internal {
namespace {

// Part of the stored format (names-v2): never change for an existing key DB.
constexpr std::string_view kLookupKeyLabel = "coffer-dataset-name-lookup-key-v2";
constexpr std::string_view kSealKeyLabel = "coffer-dataset-name-seal-key-v2";
constexpr std::string_view kSealedNameContext = "coffer-dataset-name-v2";
constexpr std::string_view kSealedSaltContext = "coffer-dataset-name-salt-v2";
constexpr uint32_t kSealKeyVersion = 1;

absl::StatusOr<crypto::SecretBytes> DeriveKey(hsm::RowAuthenticator& rows, std::string_view label) {
  COFFER_ASSIGN_OR_RETURN(auto derived, rows.HmacRowKey(label));
  absl::StatusOr<crypto::SecretBytes> key = crypto::SecretBytes::CopyFrom(derived);
  derived.fill(0);
  return key;
}

std::string Associated(uint64_t handle, std::string_view context = kSealedNameContext) {
  std::string out(context);
  out.push_back('\0');
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(handle >> shift));
  return out;
}

}  // namespace

absl::StatusOr<DatasetNames> DatasetNames::Create(hsm::RowAuthenticator& rows) {
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes lookup_key, DeriveKey(rows, kLookupKeyLabel));
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes seal_key, DeriveKey(rows, kSealKeyLabel));
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
