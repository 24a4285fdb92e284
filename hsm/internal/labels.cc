#include "hsm/internal/labels.h"

namespace coffer::hsm::internal {

std::string EncodeObjectId(const ObjectId& id) {
  std::string out = "cfr";
  out.push_back(static_cast<char>(id.kind));
  for (int i = 7; i >= 0; --i) out.push_back(static_cast<char>((id.a >> (8 * i)) & 0xff));
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((id.b >> (8 * i)) & 0xff));
  return out;
}

std::optional<ObjectId> DecodeObjectId(std::string_view id) {
  if (id.size() != kObjectIdBytes || id.substr(0, 3) != "cfr") return std::nullopt;
  ObjectId out{static_cast<ObjectKind>(id[3])};
  switch (out.kind) {
    case ObjectKind::kDatasetWrappingKey:
    case ObjectKind::kSigningKey:
    case ObjectKind::kRowHmacKey:
    case ObjectKind::kTotpSecret:
      break;
    default:
      return std::nullopt;
  }
  for (size_t i = 4; i < 12; ++i) out.a = (out.a << 8) | static_cast<uint8_t>(id[i]);
  for (size_t i = 12; i < 16; ++i) out.b = (out.b << 8) | static_cast<uint8_t>(id[i]);
  return out;
}

std::string ObjectLabel(const ObjectId& id) {
  switch (id.kind) {
    case ObjectKind::kDatasetWrappingKey:
      return "coffer/dwk/" + std::to_string(id.a) + "/" + std::to_string(id.b);
    case ObjectKind::kSigningKey:
      return "coffer/audit-signing";
    case ObjectKind::kRowHmacKey:
      return "coffer/row-hmac";
    case ObjectKind::kTotpSecret:
      return "coffer/totp/" + std::to_string(id.a);
  }
  return "coffer/unknown";
}

}  // namespace coffer::hsm::internal
