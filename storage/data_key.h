// DataKey: one version of one (dataset, purpose) data encryption key, keyed and ready to use.
//
// A DataKey owns its 32 key bytes (SecretBytes, in the secure heap) and the OpenSSL contexts
// keyed with them (RecordAead for sealing record values, HmacSha256 for the lookup purpose,
// AES-256-SIV for the pseudonym purpose), so the hot path never re-keys. It is immutable and shared
// between threads through std::shared_ptr<const DataKey>; its key material is wiped when the last
// holder releases it — the key bytes, the keyed templates and the contexts RecordAead and
// HmacSha256 keep for reuse (crypto/internal/context_pool.h), which never outlive it.
//
// Purposes (design brief, "Key hierarchy"): records and attachments rotate on the clock; lookup
// (HMAC of record ids into data-DB keys) changes only by a full re-index; pseudonym changes only
// by an explicit re-key. The numeric values are stored in associated data and the key DB:
// never renumber them.

#ifndef COFFER_STORAGE_DATA_KEY_H_
#define COFFER_STORAGE_DATA_KEY_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/aes_siv.h"
#include "crypto/hmac.h"
#include "crypto/record_aead.h"
#include "crypto/secret_bytes.h"

namespace coffer::storage {

enum class KeyPurpose : uint8_t {
  kRecords = 1,
  kAttachments = 2,
  kLookup = 3,
  kPseudonym = 4,
};

// HKDF-SHA256 info (no salt) deriving the 64-byte AES-256-SIV key of a pseudonym DEK
// (docs/formats.md#pseudonym-v1). Never change it: tokens made under it would stop opening.
inline constexpr std::string_view kPseudonymSivKeyInfo = "coffer pseudonym aes-256-siv v1";

// "records", "attachments", "lookup", "pseudonym"; "unknown" for any other value.
std::string_view KeyPurposeName(KeyPurpose purpose);

// Parses a purpose name; nullopt if it names none.
std::optional<KeyPurpose> ParseKeyPurpose(std::string_view name);

class DataKey {
 public:
  // Keys the contexts `purpose` needs from `key` (exactly 32 bytes), which DataKey takes over.
  // A pseudonym key first derives its AES-256-SIV key (kPseudonymSivKeyInfo) and wipes it once
  // the SIV contexts are keyed.
  static absl::StatusOr<std::shared_ptr<const DataKey>> Create(KeyPurpose purpose, uint32_t version,
                                                               crypto::SecretBytes key);

  DataKey(const DataKey&) = delete;
  DataKey& operator=(const DataKey&) = delete;

  KeyPurpose purpose() const { return purpose_; }
  uint32_t version() const { return version_; }

  // Record sealing (records and attachments purposes; attachment metadata is a record).
  // FAILED_PRECONDITION for other purposes.
  absl::StatusOr<const crypto::RecordAead*> record_aead() const;

  // HMAC keyed with this key (lookup purpose only). FAILED_PRECONDITION for other purposes.
  absl::StatusOr<const crypto::HmacSha256*> hmac() const;

  // AES-256-SIV keyed with the key derived from this one (pseudonym purpose only).
  // FAILED_PRECONDITION for other purposes.
  absl::StatusOr<const crypto::AesSiv*> aes_siv() const;

  // The raw key, for derivations that need it: per-attachment stream subkeys (attachments).
  // Never copy it out of the secure heap.
  const crypto::SecretBytes& key() const { return key_; }

  // Approximate bytes this key holds at most, its pooled contexts included (for the key cache's
  // byte bound).
  size_t MemoryBytes() const;

 private:
  DataKey(KeyPurpose purpose, uint32_t version, crypto::SecretBytes key,
          std::optional<crypto::RecordAead> aead, std::optional<crypto::HmacSha256> hmac,
          std::unique_ptr<const crypto::AesSiv> siv);

  KeyPurpose purpose_;
  uint32_t version_;
  crypto::SecretBytes key_;
  std::optional<crypto::RecordAead> aead_;
  std::optional<crypto::HmacSha256> hmac_;
  std::unique_ptr<const crypto::AesSiv> siv_;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_DATA_KEY_H_
