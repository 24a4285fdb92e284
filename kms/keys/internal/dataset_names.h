// DatasetNames: how dataset names are kept at rest in the key DB (docs/key-manager.md, "Dataset
// names at rest", format names-v2). Dataset names are often customer names, so a thief of the
// key DB must learn none of them:
//  - the `names` column family is keyed by HMAC-SHA256(name lookup key, name), never the name;
//  - the dataset row carries the name sealed (AES-256-GCM, record-v1 framing with key version 1,
//    associated data "coffer-dataset-name-v2" 0x00 ‖ handle u64 BE, so a sealed name cannot be
//    moved to another dataset's row).
// Both keys are derived inside the token from its row key (hsm::RowAuthenticator, the key that
// authenticates every key-DB row): key = HMAC-SHA256(row key, label), with labels that no row
// tag's input can equal (row tags start "coffer-keydb-row-v1" 0x00). A thief without the HSM has
// neither; a guess of a customer's name cannot be checked against the lookup column without it.
// The derived keys live in the secure heap for the key manager's lifetime.
//
// Thread safety: immutable after Create; every method may run concurrently.
// Failures: errors of the RowAuthenticator as they are; CIPHERTEXT_CORRUPT when a sealed name
// does not open (tampered, or moved to another handle).

#ifndef COFFER_KMS_KEYS_INTERNAL_DATASET_NAMES_H_
#define COFFER_KMS_KEYS_INTERNAL_DATASET_NAMES_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/hmac.h"
#include "crypto/record_aead.h"
#include "hsm/service_keys.h"

namespace coffer::kms::internal {

// The key DB's meta row "names_format" holds the format of its names (v1::NamesFormatRow):
// absent or 1 = plaintext names (before names-v2), 2 = this file's format.
inline constexpr uint32_t kNamesFormatPlaintext = 1;
inline constexpr uint32_t kNamesFormatSealed = 2;

class DatasetNames {
 public:
  static absl::StatusOr<DatasetNames> Create(hsm::RowAuthenticator& rows);

  DatasetNames(DatasetNames&&) noexcept = default;
  DatasetNames& operator=(DatasetNames&&) noexcept = default;

  // The `names` column family's key for `name` (32 bytes).
  absl::StatusOr<std::string> LookupKey(std::string_view name) const;
  // `name` sealed for dataset `handle`'s row; OpenName reverses it.
  absl::StatusOr<std::string> Seal(uint64_t handle, std::string_view name) const;
  absl::StatusOr<std::string> OpenName(uint64_t handle, std::string_view sealed) const;
  // The same for the dataset's name-commitment salt (associated data
  // "coffer-dataset-name-salt-v2" 0x00 ‖ handle: a sealed salt never opens as a name).
  absl::StatusOr<std::string> SealSalt(uint64_t handle, std::string_view salt) const;
  absl::StatusOr<std::string> OpenSalt(uint64_t handle, std::string_view sealed) const;

 private:
  DatasetNames(crypto::HmacSha256 lookup, crypto::RecordAead seal)
      : lookup_(std::move(lookup)), seal_(std::move(seal)) {}

  crypto::HmacSha256 lookup_;
  crypto::RecordAead seal_;
};

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_DATASET_NAMES_H_
