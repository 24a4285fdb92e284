#include "storage/internal/layout.h"

#include <algorithm>

#include "crypto/base/status.h"

namespace coffer::storage::internal {
namespace {

absl::Status Corrupt(std::string_view what) {
  return MakeError(ErrorCode::kCiphertextCorrupt,
                   std::string("data DB: malformed ") + std::string(what));
}

}  // namespace

std::string_view CfName(Cf cf) {
  switch (cf) {
    case Cf::kRecords:
      return "records";
    case Cf::kAttachmentPointers:
      return "attachment_pointers";
    case Cf::kAttachmentSegments:
      return "attachment_segments";
    case Cf::kUploads:
      return "uploads";
    case Cf::kRecycleBin:
      return "recycle_bin";
    case Cf::kJobs:
      return "jobs";
  }
  return "unknown";
}

void AppendU16(std::string* out, uint16_t value) {
  out->push_back(static_cast<char>(value >> 8));
  out->push_back(static_cast<char>(value));
}

void AppendU32(std::string* out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(value >> shift));
}

void AppendU64(std::string* out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(value >> shift));
}

uint32_t ReadU32(std::string_view bytes) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  return value;
}

uint64_t ReadU64(std::string_view bytes) {
  uint64_t value = 0;
  for (size_t i = 0; i < 8; ++i) value = (value << 8) | static_cast<uint8_t>(bytes[i]);
  return value;
}

std::string StoredKey(uint64_t handle, const crypto::HmacSha256Tag& mac) {
  std::string key;
  key.reserve(kStoredKeySize);
  AppendU64(&key, handle);
  key.append(reinterpret_cast<const char*>(mac.data()), mac.size());
  return key;
}

std::string DatasetBegin(uint64_t handle) {
  std::string key;
  AppendU64(&key, handle);
  return key;
}

std::string DatasetEnd(uint64_t handle) {
  if (handle == UINT64_MAX) {
    // After every key. (Braces would pick std::string's initializer_list constructor.)
    return std::string(kHandleSize + 1, '\xff');  // NOLINT(modernize-return-braced-init-list)
  }
  return DatasetBegin(handle + 1);
}

uint64_t HandleOf(std::string_view key) { return ReadU64(key); }

std::string_view MacOf(std::string_view stored_key) { return stored_key.substr(kHandleSize); }

crypto::HmacSha256Tag RefOf(std::string_view stored_key) {
  crypto::HmacSha256Tag ref{};
  std::string_view mac = MacOf(stored_key);
  std::copy_n(mac.begin(), std::min(mac.size(), ref.size()), ref.begin());
  return ref;
}

std::string BinKey(Cf cf, std::string_view stored_key) {
  std::string key;
  key.reserve(kBinKeySize);
  key.append(stored_key.substr(0, kHandleSize));
  key.push_back(static_cast<char>(cf));
  key.append(MacOf(stored_key));
  return key;
}

absl::StatusOr<BinKeyParts> ParseBinKey(std::string_view bin_key) {
  if (bin_key.size() != kBinKeySize) return Corrupt("recycle bin key");
  auto cf = static_cast<Cf>(bin_key[kHandleSize]);
  if (cf != Cf::kRecords && cf != Cf::kAttachmentPointers) return Corrupt("recycle bin key");
  std::string stored_key(bin_key.substr(0, kHandleSize));
  stored_key.append(bin_key.substr(kHandleSize + 1));
  return BinKeyParts{cf, std::move(stored_key)};
}

absl::StatusOr<BinKeyParts> ItemKeyOf(Cf cf, std::string_view key) {
  if (cf == Cf::kRecycleBin) return ParseBinKey(key);
  if ((cf != Cf::kRecords && cf != Cf::kAttachmentPointers) || key.size() != kStoredKeySize) {
    return Corrupt("stored key");
  }
  return BinKeyParts{cf, std::string(key)};
}

std::string SegmentKey(uint64_t handle, const UploadId& upload, uint32_t index) {
  std::string key = SegmentsBegin(handle, upload);
  AppendU32(&key, index);
  return key;
}

std::string SegmentsBegin(uint64_t handle, const UploadId& upload) {
  return UploadKey(handle, upload);
}

std::string SegmentsEnd(uint64_t handle, const UploadId& upload) {
  std::string key = SegmentsBegin(handle, upload);
  key.append(4, '\xff');
  key.push_back('\0');  // after index 0xFFFFFFFF
  return key;
}

std::string UploadKey(uint64_t handle, const UploadId& upload) {
  std::string key;
  key.reserve(kSegmentKeySize);
  AppendU64(&key, handle);
  key.append(reinterpret_cast<const char*>(upload.data()), upload.size());
  return key;
}

UploadId UploadIdOf(std::string_view upload_key) {
  UploadId id{};
  std::copy_n(upload_key.begin() + kHandleSize, kUploadIdSize, id.begin());
  return id;
}

std::string AssociatedData(Cf cf, uint64_t handle, KeyPurpose purpose, std::string_view stored_key,
                           int64_t written_at_us, std::string_view upload_id) {
  std::string ad;
  ad.reserve(kAssociatedDataTag.size() + 1 + 8 + 1 + 2 + stored_key.size() + 8 + 2 +
             upload_id.size());
  ad.append(kAssociatedDataTag);
  ad.push_back(static_cast<char>(cf));
  AppendU64(&ad, handle);
  ad.push_back(static_cast<char>(purpose));
  AppendU16(&ad, static_cast<uint16_t>(stored_key.size()));
  ad.append(stored_key);
  AppendU64(&ad, static_cast<uint64_t>(written_at_us));
  AppendU16(&ad, static_cast<uint16_t>(upload_id.size()));
  ad.append(upload_id);
  return ad;
}

std::string EncodeEntry(int64_t written_at_us, std::string_view upload_id,
                        std::string_view sealed) {
  std::string value;
  value.reserve(kEntryHeaderSize + upload_id.size() + sealed.size());
  value.push_back(static_cast<char>(kEntryFormatV1));
  AppendU64(&value, static_cast<uint64_t>(written_at_us));
  value.append(upload_id);
  value.append(sealed);
  return value;
}

absl::StatusOr<Entry> ParseEntry(Cf cf, std::string_view value) {
  size_t upload_size = cf == Cf::kAttachmentPointers ? kUploadIdSize : 0;
  if (value.size() < kEntryHeaderSize + upload_size) return Corrupt("entry");
  if (static_cast<uint8_t>(value[0]) != kEntryFormatV1) {
    return MakeError(ErrorCode::kUnsupportedFormat, "data DB: unknown entry format");
  }
  Entry entry;
  entry.written_at_us = static_cast<int64_t>(ReadU64(value.substr(1)));
  entry.upload_id = value.substr(kEntryHeaderSize, upload_size);
  entry.sealed = value.substr(kEntryHeaderSize + upload_size);
  return entry;
}

std::string EncodeBinValue(int64_t deleted_at_us, std::string_view entry) {
  std::string value;
  value.reserve(kBinValueHeaderSize + entry.size());
  AppendU64(&value, static_cast<uint64_t>(deleted_at_us));
  value.append(entry);
  return value;
}

absl::StatusOr<BinValue> ParseBinValue(std::string_view value) {
  if (value.size() < kBinValueHeaderSize + kEntryHeaderSize) return Corrupt("recycle bin entry");
  return BinValue{static_cast<int64_t>(ReadU64(value)), value.substr(kBinValueHeaderSize)};
}

absl::StatusOr<std::string_view> EntryOf(Cf cf, std::string_view value) {
  if (cf != Cf::kRecycleBin) return value;
  COFFER_ASSIGN_OR_RETURN(BinValue bin, ParseBinValue(value));
  return bin.entry;
}

}  // namespace coffer::storage::internal
