// DamagedItem: a stored item whose own bytes no longer open, as the walks report it (record
// listing, re-encryption, re-index, scrub, export) instead of failing the whole walk
// (docs/daemon.md, "Damaged items").
//
// Damage is about the item's bytes, not the environment: an open that fails with
// CIPHERTEXT_CORRUPT, UNSUPPORTED_FORMAT, KEY_VERSION_MISMATCH, KEY_COMMITMENT_MISMATCH,
// KEY_VERSION_NOT_FOUND or the key provider's NOT_FOUND for a version (IsItemDamage). Every other
// failure (I/O, an unavailable HSM, a locked dataset) still fails the walk.
//
// The reference is "dmg-" ‖ the first 24 hex digits of SHA-256(column family name ‖ 0x00 ‖
// RocksDB key). The RocksDB key is handle ‖ HMAC(lookup key, id) (or a bin key wrapping it), so
// the reference reveals no id, value or name; the same item always gets the same reference, so
// an admin can match a listing's reference with a scrub finding, a job's status and an event.
//
// Thread safety: plain values and stateless functions.

#ifndef COFFER_STORAGE_DAMAGED_ITEM_H_
#define COFFER_STORAGE_DAMAGED_ITEM_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "crypto/base/status.h"

namespace coffer::storage {

struct DamagedItem {
  std::string ref;  // "dmg-" + 24 hex digits
  ErrorCode code = ErrorCode::kOk;
  std::string column_family;  // where: "records", "attachment_pointers", "recycle_bin"
};

// Whether `status` (from opening one stored item) means the item itself is damaged.
bool IsItemDamage(const absl::Status& status);
// The same for an error code already taken out of a status (a scrub finding's).
bool IsDamageCode(ErrorCode code);

// The opaque reference of the item stored under `rocks_key` in column family `cf_name`.
std::string DamagedRef(std::string_view cf_name, std::string_view rocks_key);

// The damaged items one walk met: counted in full, listed (deduplicated by reference, in
// reference order) up to kMaxListed so a report stays bounded however much is damaged.
class DamagedItems {
 public:
  static constexpr size_t kMaxListed = 100;

  // Records the item under `rocks_key` of `cf_name` that failed with `status`.
  void Add(std::string_view cf_name, std::string_view rocks_key, const absl::Status& status);
  // Adds what `other` met (one walk over several pages: a listing's, an export's).
  void Merge(const DamagedItems& other);
  uint64_t count() const { return count_; }
  std::vector<DamagedItem> listed() const;

 private:
  uint64_t count_ = 0;
  std::map<std::string, DamagedItem> items_;  // by ref
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_DAMAGED_ITEM_H_
