#include "storage/damaged_item.h"

#include <utility>

#include "openssl/sha.h"

namespace coffer::storage {

bool IsItemDamage(const absl::Status& status) { return IsDamageCode(ErrorCodeOf(status)); }

bool IsDamageCode(ErrorCode code) {
  switch (code) {
    case ErrorCode::kCiphertextCorrupt:
    case ErrorCode::kUnsupportedFormat:
    case ErrorCode::kKeyVersionMismatch:
    case ErrorCode::kKeyCommitmentMismatch:
    case ErrorCode::kKeyVersionNotFound:
      return true;
    default:
      return false;
  }
}

std::string DamagedRef(std::string_view cf_name, std::string_view rocks_key) {
  std::string input(cf_name);
  input.push_back('\0');
  input.append(rocks_key);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string ref = "dmg-";
  for (size_t i = 0; i < 12; ++i) {  // 12 bytes: 24 hex digits
    ref.push_back(kDigits[digest[i] >> 4]);
    ref.push_back(kDigits[digest[i] & 15]);
  }
  return ref;
}

void DamagedItems::Add(std::string_view cf_name, std::string_view rocks_key,
                       const absl::Status& status) {
  std::string ref = DamagedRef(cf_name, rocks_key);
  if (items_.count(ref) != 0) return;  // met again (a second pass): counted once
  ++count_;
  if (items_.size() >= kMaxListed) return;
  items_.emplace(ref, DamagedItem{ref, ErrorCodeOf(status), std::string(cf_name)});
}

void DamagedItems::Merge(const DamagedItems& other) {
  uint64_t again = 0;
  for (const auto& [ref, item] : other.items_) {
    if (items_.count(ref) != 0) {
      ++again;
    } else if (items_.size() < kMaxListed) {
      items_.emplace(ref, item);
    }
  }
  count_ += other.count_ - again;
}

std::vector<DamagedItem> DamagedItems::listed() const {
  std::vector<DamagedItem> out;
  out.reserve(items_.size());
  for (const auto& [ref, item] : items_) out.push_back(item);
  return out;
}

}  // namespace coffer::storage
