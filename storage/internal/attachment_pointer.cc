#include "storage/internal/attachment_pointer.h"

#include <algorithm>

#include "crypto/base/status.h"
#include "crypto/streaming_aead.h"

namespace coffer::storage::internal {

std::string EncodePointerBody(uint64_t size, int64_t created_us, std::string_view content_type,
                              std::string_view stream_header) {
  std::string body;
  AppendU64(&body, size);
  AppendU64(&body, static_cast<uint64_t>(created_us));
  AppendU16(&body, static_cast<uint16_t>(content_type.size()));
  body.append(content_type);
  body.append(stream_header);
  return body;
}

absl::StatusOr<PointerBody> ParsePointerBody(std::string_view body) {
  auto corrupt = [] {
    return MakeError(ErrorCode::kCiphertextCorrupt, "malformed attachment pointer");
  };
  if (body.size() < 18) return corrupt();
  PointerBody parsed;
  parsed.size = ReadU64(body);
  parsed.created_us = static_cast<int64_t>(ReadU64(body.substr(8)));
  size_t type_size = (static_cast<uint8_t>(body[16]) << 8) | static_cast<uint8_t>(body[17]);
  if (body.size() != 18 + type_size + crypto::kStreamHeaderSize) return corrupt();
  parsed.content_type = std::string(body.substr(18, type_size));
  parsed.stream_header = std::string(body.substr(18 + type_size));
  return parsed;
}

uint64_t SegmentCount(uint64_t size, uint32_t segment_size) {
  return size == 0 ? 1 : (size + segment_size - 1) / segment_size;
}

UploadId ToUploadId(std::string_view bytes) {
  UploadId id{};
  std::copy_n(bytes.begin(), id.size(), id.begin());
  return id;
}

std::string_view AsView(const UploadId& id) {
  return {reinterpret_cast<const char*>(id.data()), id.size()};
}

}  // namespace coffer::storage::internal
