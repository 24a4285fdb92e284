// Byte layouts of the data DB: keys, entry values, associated data, bin entries, upload markers
// and job state. docs/formats.md#data-db is the specification; this file implements it and
// static_asserts the sizes. All integers are unsigned big-endian.
//
// Nothing here touches a plaintext id, name or value: keys hold HMACs, entries hold sealed
// record-v1 bytes, times and random upload ids.
//
// Thread safety: pure functions. Failure: Parse* return CIPHERTEXT_CORRUPT for malformed bytes
// (stored bytes were damaged; the caller did nothing wrong).

#ifndef COFFER_STORAGE_INTERNAL_LAYOUT_H_
#define COFFER_STORAGE_INTERNAL_LAYOUT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/hmac.h"
#include "storage/data_key.h"

namespace coffer::storage::internal {

// docs/formats.md#data-db-column-families. The numbers are bound into associated data and bin
// keys: never renumber.
enum class Cf : uint8_t {
  kRecords = 1,
  kAttachmentPointers = 2,
  kAttachmentSegments = 3,
  kUploads = 4,
  kRecycleBin = 5,
  kJobs = 6,
};
inline constexpr Cf kAllCfs[] = {Cf::kRecords, Cf::kAttachmentPointers, Cf::kAttachmentSegments,
                                 Cf::kUploads, Cf::kRecycleBin,         Cf::kJobs};
std::string_view CfName(Cf cf);

inline constexpr size_t kHandleSize = 8;
inline constexpr size_t kMacSize = crypto::kHmacSha256TagSize;
inline constexpr size_t kStoredKeySize = kHandleSize + kMacSize;  // handle ‖ HMAC(id)
inline constexpr size_t kUploadIdSize = 16;
inline constexpr size_t kSegmentKeySize = kHandleSize + kUploadIdSize + 4;
inline constexpr size_t kUploadKeySize = kHandleSize + kUploadIdSize;
inline constexpr size_t kBinKeySize = kHandleSize + 1 + kMacSize;  // handle ‖ cf ‖ HMAC(id)
inline constexpr uint8_t kEntryFormatV1 = 0x01;
inline constexpr size_t kEntryHeaderSize = 1 + 8;  // format ‖ written_at
inline constexpr size_t kBinValueHeaderSize = 8;   // deleted_at
inline constexpr size_t kMaxIdSize = 1024;
inline constexpr std::string_view kAssociatedDataTag = "coffer/data-db/v1";
static_assert(kStoredKeySize == 40);
static_assert(kSegmentKeySize == 28);
static_assert(kBinKeySize == 41);
static_assert(kAssociatedDataTag.size() == 17);

using UploadId = std::array<uint8_t, kUploadIdSize>;

void AppendU16(std::string* out, uint16_t value);
void AppendU32(std::string* out, uint32_t value);
void AppendU64(std::string* out, uint64_t value);
uint32_t ReadU32(std::string_view bytes);  // bytes.size() >= 4
uint64_t ReadU64(std::string_view bytes);  // bytes.size() >= 8

// handle ‖ mac: the RocksDB key of a record or attachment pointer.
std::string StoredKey(uint64_t handle, const crypto::HmacSha256Tag& mac);
// The first key of `handle` in any column family, and the first key after it.
std::string DatasetBegin(uint64_t handle);
std::string DatasetEnd(uint64_t handle);
uint64_t HandleOf(std::string_view key);  // key.size() >= 8
std::string_view MacOf(std::string_view stored_key);
// MacOf as a tag: the ref audit entries and purge journals name an item by.
crypto::HmacSha256Tag RefOf(std::string_view stored_key);  // stored_key.size() == kStoredKeySize

// handle ‖ cf ‖ mac: where a deleted item waits in the recycle bin.
std::string BinKey(Cf cf, std::string_view stored_key);
// Splits a bin key; CIPHERTEXT_CORRUPT if it is not one.
struct BinKeyParts {
  Cf cf;
  std::string stored_key;
};
absl::StatusOr<BinKeyParts> ParseBinKey(std::string_view bin_key);
// Whose key `key` in `cf` is: the item's own family and stored key, whether `key` is its live
// key (records, attachment pointers) or its recycle-bin key. CIPHERTEXT_CORRUPT when it is
// neither (a bin key that does not parse, a live key of the wrong size, another family).
absl::StatusOr<BinKeyParts> ItemKeyOf(Cf cf, std::string_view key);

std::string SegmentKey(uint64_t handle, const UploadId& upload, uint32_t index);
std::string SegmentsBegin(uint64_t handle, const UploadId& upload);
std::string SegmentsEnd(uint64_t handle, const UploadId& upload);
std::string UploadKey(uint64_t handle, const UploadId& upload);
UploadId UploadIdOf(std::string_view upload_key);  // upload_key.size() == kUploadKeySize

// The associated data of a sealed entry (docs/formats.md#data-db-associated-data).
std::string AssociatedData(Cf cf, uint64_t handle, KeyPurpose purpose, std::string_view stored_key,
                           int64_t written_at_us, std::string_view upload_id);

// A record or pointer entry: format ‖ written_at ‖ [upload id, pointers only] ‖ record-v1.
struct Entry {
  int64_t written_at_us = 0;
  std::string_view upload_id;  // empty for records
  std::string_view sealed;     // record-v1
};
std::string EncodeEntry(int64_t written_at_us, std::string_view upload_id, std::string_view sealed);
absl::StatusOr<Entry> ParseEntry(Cf cf, std::string_view value);

// A bin value: deleted_at ‖ the entry exactly as it was live.
std::string EncodeBinValue(int64_t deleted_at_us, std::string_view entry);
struct BinValue {
  int64_t deleted_at_us = 0;
  std::string_view entry;
};
absl::StatusOr<BinValue> ParseBinValue(std::string_view value);
// The entry in `value` as stored in `cf`: the value itself, or a bin value's entry.
absl::StatusOr<std::string_view> EntryOf(Cf cf, std::string_view value);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_LAYOUT_H_
