// The envelope shared by records and attachment pointers (docs/formats.md#data-db-entries):
// the stored key is dataset handle ‖ HMAC-SHA256(lookup key, id); the entry seals
// u32 id length ‖ id ‖ body under the purpose's primary key with associated data binding the
// column family, dataset, purpose, stored key, write time and upload id. Opening checks the
// tag, then that HMAC(decrypted id) under one of the dataset's live lookup versions equals the
// stored key (docs/formats.md#data-db-lookup-versions): the primary's first, so an entry
// already re-indexed costs one HMAC.
//
// Thread safety: stateless functions; KeyProvider is thread-safe by contract.
// Failures: ID_TOO_LONG; the key provider's codes (NOT_FOUND, KEY_DESTROYED,
// FAILED_PRECONDITION); CIPHERTEXT_CORRUPT / UNSUPPORTED_FORMAT / KEY_VERSION_MISMATCH for a
// damaged, moved or mislabelled entry. Never returns unauthenticated plaintext.

#ifndef COFFER_STORAGE_INTERNAL_ENVELOPE_H_
#define COFFER_STORAGE_INTERNAL_ENVELOPE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/base/status.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"

namespace coffer::storage::internal {

// handle ‖ HMAC(lookup key, id). ID_TOO_LONG beyond kMaxIdSize; INVALID_ARGUMENT when empty.
absl::StatusOr<std::string> StoredKeyFor(KeyProvider* keys, uint64_t handle, std::string_view id);

// The stored keys of `id` under every live lookup version, the primary's first, then the older
// versions' from the newest down (KeyProvider::LiveVersions order).
struct IdStoredKeys {
  std::vector<std::string> stored_keys;
  std::vector<uint32_t> versions;  // the lookup version of each stored key

  // Their MACs, for DataDb::LockStripes.
  std::vector<std::string_view> Macs() const;
  // Whether `versions` are still exactly the dataset's live lookup versions. A writer checks
  // this under the stripes: a rotation between hashing and locking would otherwise let it write
  // beside an entry under a version it did not hash (it then hashes again).
  absl::StatusOr<bool> StillLive(KeyProvider* keys, uint64_t handle) const;
};
absl::StatusOr<IdStoredKeys> StoredKeysFor(KeyProvider* keys, uint64_t handle, std::string_view id);

// The live lookup version whose HMAC of `id` is `stored_key`'s MAC (the primary's tried first);
// CIPHERTEXT_CORRUPT when none is.
absl::StatusOr<uint32_t> LookupVersionOf(KeyProvider* keys, std::string_view stored_key,
                                         std::string_view id);

// The same with an already fetched lookup key (`lookup` must be a lookup-purpose key).
absl::StatusOr<std::string> StoredKeyWith(const DataKey& lookup, uint64_t handle,
                                          std::string_view id);

// Runs `read` (a lock-free read of an entry, then its open) up to three times while it fails
// with KEY_VERSION_RETIRED: a re-encryption that rewrote the entry and a retirement of the version
// read can both land between the read and the open, and a read again finds the rewritten entry.
template <typename Read>
auto ReadAgainIfRetired(const Read& read) -> decltype(read()) {
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    auto result = read();
    if (result.ok() || attempt == kAttempts ||
        ErrorCodeOf(result.status()) != ErrorCode::kKeyVersionRetired) {
      return result;
    }
  }
}

// Seals id ‖ body into an encoded entry under `purpose`'s primary key.
absl::StatusOr<std::string> SealEntry(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                      std::string_view stored_key, int64_t written_at_us,
                                      std::string_view upload_id, std::string_view id,
                                      std::string_view body);

// Same, with an already fetched key (attachment commits seal the pointer with the key the
// stream was written under).
absl::StatusOr<std::string> SealEntryWith(const DataKey& key, Cf cf, std::string_view stored_key,
                                          int64_t written_at_us, std::string_view upload_id,
                                          std::string_view id, std::string_view body);

struct OpenedEntry {
  int64_t written_at_us = 0;
  std::string upload_id;  // empty for records
  uint32_t key_version = 0;
  uint32_t lookup_version = 0;  // the lookup version whose HMAC of `id` is the stored key
  std::string id;
  std::string body;
};

// Opens an encoded entry stored under `stored_key` in `cf`.
absl::StatusOr<OpenedEntry> OpenEntry(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                      std::string_view stored_key, std::string_view value);

// Opens the record entry stored under `stored_key`, which the caller has just computed as
// handle ‖ HMAC(lookup key, `id`), and returns its body. Instead of a second HMAC over the
// decrypted id it checks, in constant time, that the decrypted id is `id`: since HMAC is a
// function, this accepts exactly the entries whose HMAC(decrypted id) is the stored key (up to
// an HMAC collision, which it rejects), i.e. the same check as OpenEntry for one HMAC less.
// Failures as OpenEntry.
absl::StatusOr<std::string> OpenEntryBodyFor(KeyProvider* keys, Cf cf, KeyPurpose purpose,
                                             std::string_view stored_key, std::string_view id,
                                             std::string_view value);

// The key version an encoded entry names, without opening it.
absl::StatusOr<uint32_t> EntryKeyVersion(Cf cf, std::string_view value);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_ENVELOPE_H_
