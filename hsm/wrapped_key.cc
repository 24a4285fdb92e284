// WrappedKey serialization; the layout is documented in docs/hsm.md ("Wrapped key blob").
#include <string>

#include "crypto/base/status.h"
#include "hsm/key_wrapper.h"

namespace coffer::hsm {
namespace {

void PutBigEndian(std::string* out, uint64_t value, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out->push_back(static_cast<char>((value >> (8 * i)) & 0xff));
}

uint64_t GetBigEndian(std::string_view in, size_t offset, int bytes) {
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value = (value << 8) | static_cast<uint8_t>(in[offset + i]);
  return value;
}

}  // namespace

std::string WrappingKeyId::ToString() const {
  return "dataset handle " + std::to_string(dataset_handle) + " version " + std::to_string(version);
}

std::string WrappedKey::Serialize() const {
  std::string out;
  out.reserve(kHeaderBytes + wrapped.size());
  out.push_back(static_cast<char>(kFormatV1));
  PutBigEndian(&out, mechanism, 4);
  PutBigEndian(&out, key.dataset_handle, 8);
  PutBigEndian(&out, key.version, 4);
  PutBigEndian(&out, wrapped.size(), 2);
  out += wrapped;
  return out;
}

absl::StatusOr<WrappedKey> WrappedKey::Parse(std::string_view blob) {
  if (blob.empty()) return MakeError(ErrorCode::kInvalidArgument, "wrapped key blob is empty");
  if (static_cast<uint8_t>(blob[0]) != kFormatV1) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "wrapped key blob has unknown format byte " +
                         std::to_string(static_cast<uint8_t>(blob[0])) +
                         "; it was written by a newer coffer or is damaged");
  }
  if (blob.size() < kHeaderBytes) {
    return MakeError(ErrorCode::kInvalidArgument, "wrapped key blob is truncated (header)");
  }
  WrappedKey key;
  key.mechanism = static_cast<uint32_t>(GetBigEndian(blob, 1, 4));
  key.key.dataset_handle = GetBigEndian(blob, 5, 8);
  key.key.version = static_cast<uint32_t>(GetBigEndian(blob, 13, 4));
  size_t length = GetBigEndian(blob, 17, 2);
  if (key.mechanism != kMechanismAesKeyWrap) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "wrapped key blob names mechanism " + std::to_string(key.mechanism) +
                         ", which this coffer cannot unwrap (it knows CKM_AES_KEY_WRAP)");
  }
  if (blob.size() != kHeaderBytes + length) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "wrapped key blob length does not match its header (truncated or padded)");
  }
  if (length < 24 || length % 8 != 0 || length > kMaxWrappedBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "wrapped key blob holds " + std::to_string(length) +
                         " wrapped bytes; RFC 3394 output is a multiple of 8, at least 24");
  }
  key.wrapped.assign(blob.substr(kHeaderBytes));
  return key;
}

}  // namespace coffer::hsm
