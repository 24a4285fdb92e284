// Labels and CKA_IDs of the token objects coffer creates (docs/hsm.md, "Token objects").
//
// Every coffer object carries a 16-byte CKA_ID:  "cfr" | kind (1) | a (8, BE) | b (4, BE)
// so that the start-up enumeration reads one attribute per object, and a readable CKA_LABEL:
//   dataset wrapping key   kind 'W', a = dataset handle, b = version   "coffer/dwk/<h>/<v>"
//   audit signing pair     kind 'S', a = 0, b = 0                      "coffer/audit-signing"
//   key-DB row HMAC key    kind 'H', a = 0, b = 0                      "coffer/row-hmac"
//   admin TOTP secret      kind 'T', a = admin id, b = 0               "coffer/totp/<admin id>"
// Only opaque numbers appear, never a dataset's or an admin's name. Pure functions.

#ifndef COFFER_HSM_INTERNAL_LABELS_H_
#define COFFER_HSM_INTERNAL_LABELS_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace coffer::hsm::internal {

enum class ObjectKind : char {
  kDatasetWrappingKey = 'W',
  kSigningKey = 'S',
  kRowHmacKey = 'H',
  kTotpSecret = 'T',
};

inline constexpr size_t kObjectIdBytes = 16;

struct ObjectId {
  ObjectKind kind;
  uint64_t a = 0;
  uint32_t b = 0;
};

std::string EncodeObjectId(const ObjectId& id);
// nullopt for anything that is not a coffer ID (other applications' objects share the token).
std::optional<ObjectId> DecodeObjectId(std::string_view id);
std::string ObjectLabel(const ObjectId& id);

}  // namespace coffer::hsm::internal

#endif  // COFFER_HSM_INTERNAL_LABELS_H_
