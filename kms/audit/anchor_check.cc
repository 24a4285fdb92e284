#include "kms/audit/anchor_check.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "crypto/base/status.h"

namespace coffer::kms::audit {

absl::StatusOr<std::vector<CheckpointAnchor>> ParseAnchorsFile(std::string_view text) {
  std::vector<CheckpointAnchor> anchors;
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t end = text.find('\n');
    const std::string_view line = text.substr(0, end);
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.find(kAnchorMarker) == std::string_view::npos) continue;
    absl::StatusOr<CheckpointAnchor> anchor = ParseAnchorLine(line);
    if (!anchor.ok()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "line " + std::to_string(line_number) +
                           " of the anchors: " + std::string(anchor.status().message()));
    }
    anchors.push_back(*anchor);
  }
  return anchors;
}

absl::StatusOr<std::vector<CheckpointAnchor>> ReadAnchorsFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return MakeError(errno == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                     "cannot read the audit anchors file " + path + ": " + std::strerror(errno));
  }
  std::stringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return MakeError(ErrorCode::kIoError, "cannot read the audit anchors file " + path);
  }
  absl::StatusOr<std::vector<CheckpointAnchor>> anchors = ParseAnchorsFile(text.str());
  if (!anchors.ok()) {
    return MakeError(ErrorCodeOf(anchors.status()),
                     path + ": " + std::string(anchors.status().message()));
  }
  return anchors;
}

std::optional<CheckpointAnchor> NewestAnchor(const std::vector<CheckpointAnchor>& anchors) {
  std::optional<CheckpointAnchor> newest;
  for (const CheckpointAnchor& anchor : anchors) {
    if (!newest || anchor.sequence > newest->sequence) newest = anchor;
  }
  return newest;
}

absl::StatusOr<std::optional<CheckpointAnchor>> ReadNewestAnchor(const std::string& path) {
  if (path.empty()) return std::nullopt;
  COFFER_ASSIGN_OR_RETURN(std::vector<CheckpointAnchor> anchors, ReadAnchorsFile(path));
  return NewestAnchor(anchors);
}

absl::Status CheckLogReachesAnchor(const LogEnd& log, const CheckpointAnchor& anchor) {
  if (log.log_id != anchor.log_id) {
    return MakeError(ErrorCode::kAuditTampered,
                     "the audit log is log " + ToHex(log.log_id) +
                         ", but the newest anchor is of log " + ToHex(anchor.log_id) +
                         ": the log was replaced (or the anchors are another installation's)");
  }
  if (!log.last_sequence || *log.last_sequence < anchor.sequence) {
    const std::string ends = log.last_sequence
                                 ? "ends at sequence " + std::to_string(*log.last_sequence)
                                 : "holds no entry";
    return MakeError(ErrorCode::kAuditTampered,
                     "the audit log " + ends + ", before the anchor at sequence " +
                         std::to_string(anchor.sequence) +
                         " sent off the machine: its tail was cut off or its newest segments "
                         "deleted or rolled back");
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit
