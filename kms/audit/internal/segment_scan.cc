#include "kms/audit/internal/segment_scan.h"

#include <algorithm>

namespace coffer::kms::audit::internal {
namespace {

bool AllZero(std::string_view bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

size_t ReadLength(std::string_view bytes) {
  size_t value = 0;
  for (char c : bytes.substr(0, kFrameLengthSize)) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

}  // namespace

absl::StatusOr<SegmentScan> ScanSegment(std::string_view file) {
  SegmentScan scan;
  if (file.size() < kSegmentHeaderSize) {
    scan.tail = SegmentTail::kTorn;
    return scan;
  }
  absl::StatusOr<SegmentHeader> header = DecodeSegmentHeader(file.substr(0, kSegmentHeaderSize));
  if (!header.ok()) return header.status();
  scan.header = *header;

  size_t at = kSegmentHeaderSize;
  while (at < file.size()) {
    std::string_view rest = file.substr(at);
    if (rest.size() < kFrameLengthSize) {
      scan.tail = SegmentTail::kTorn;
      break;
    }
    const size_t length = ReadLength(rest);
    if (length == 0) {
      // Our entries are never empty; zeros here are a file extended but not written (a crash).
      scan.tail = AllZero(rest) ? SegmentTail::kTorn : SegmentTail::kDamaged;
      break;
    }
    if (length > kMaxPayloadSize) {
      scan.tail = SegmentTail::kDamaged;
      break;
    }
    if (rest.size() < kFrameOverhead + length) {
      scan.tail = SegmentTail::kTorn;
      break;
    }
    ScannedFrame frame;
    frame.offset = at;
    frame.payload = rest.substr(kFrameLengthSize, length);
    frame.hash = *ToArray<kChainHashSize>(rest.substr(kFrameLengthSize + length, kChainHashSize));
    frame.mac =
        *ToArray<kMacSize>(rest.substr(kFrameLengthSize + length + kChainHashSize, kMacSize));
    scan.frames.push_back(frame);
    at += kFrameOverhead + length;
  }
  scan.valid_bytes = scan.tail == SegmentTail::kClean ? file.size() : at;
  return scan;
}

}  // namespace coffer::kms::audit::internal
