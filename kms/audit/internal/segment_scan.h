// ScanSegment: splits one audit segment file into its header and frames, without judging the
// entries (sequence numbers, chain hashes and MACs are checked by the log at open and by the
// verifier, each with its own policy).
//
// Internal to kms/audit. Pure function over bytes; thread-safe. The returned views point into
// the caller's buffer, which must outlive the scan.

#ifndef COFFER_KMS_AUDIT_INTERNAL_SEGMENT_SCAN_H_
#define COFFER_KMS_AUDIT_INTERNAL_SEGMENT_SCAN_H_

#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms::audit::internal {

struct ScannedFrame {
  size_t offset = 0;  // of the length field, from the start of the file
  std::string_view payload;
  ChainHash hash{};
  MacTag mac{};
};

enum class SegmentTail {
  kClean,    // the file ends exactly after a complete frame (or the header)
  kTorn,     // the file ends inside a frame or header, or in zero fill: a write cut by a crash
  kDamaged,  // a length field beyond kMaxPayloadSize or a non-zero empty frame: not a crash
};

struct SegmentScan {
  std::optional<SegmentHeader> header;  // nullopt when the file is shorter than a header
  std::vector<ScannedFrame> frames;
  size_t valid_bytes = 0;  // header plus complete frames
  SegmentTail tail = SegmentTail::kClean;
};

// Returns the scan of `file`, or the header's decoding error (AUDIT_LOG_CORRUPT,
// UNSUPPORTED_FORMAT) when a full-size header is not a valid one.
absl::StatusOr<SegmentScan> ScanSegment(std::string_view file);

}  // namespace coffer::kms::audit::internal

#endif  // COFFER_KMS_AUDIT_INTERNAL_SEGMENT_SCAN_H_
