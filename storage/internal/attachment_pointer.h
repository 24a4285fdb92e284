// The attachment pointer's body and the small conversions the attachment store's files share
// (storage/attachment_store.cc, storage/attachment_copy.cc). Internal to storage.

#ifndef COFFER_STORAGE_INTERNAL_ATTACHMENT_POINTER_H_
#define COFFER_STORAGE_INTERNAL_ATTACHMENT_POINTER_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/internal/layout.h"

namespace coffer::storage::internal {

// Pointer body (docs/formats.md#data-db-attachments):
//   size (u64) ‖ created (u64 µs) ‖ content type length (u16) ‖ content type ‖ stream header (80)
std::string EncodePointerBody(uint64_t size, int64_t created_us, std::string_view content_type,
                              std::string_view stream_header);

struct PointerBody {
  uint64_t size = 0;
  int64_t created_us = 0;
  std::string content_type;
  std::string stream_header;
};

// CIPHERTEXT_CORRUPT for a body of the wrong shape.
absl::StatusOr<PointerBody> ParsePointerBody(std::string_view body);

// The number of segments of a stream of `size` bytes (an empty stream has one).
uint64_t SegmentCount(uint64_t size, uint32_t segment_size);

// `bytes` holds at least kUploadIdSize bytes.
UploadId ToUploadId(std::string_view bytes);
std::string_view AsView(const UploadId& id);

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_ATTACHMENT_POINTER_H_
