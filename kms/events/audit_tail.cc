#include "kms/events/audit_tail.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_format.h"

namespace coffer::events {
namespace {

namespace fs = std::filesystem;
namespace audit = ::coffer::kms::audit;

absl::StatusOr<std::vector<uint64_t>> Segments(const std::string& directory) {
  std::vector<uint64_t> firsts;
  std::error_code ec;
  for (fs::directory_iterator it(directory, ec), end; !ec && it != end; it.increment(ec)) {
    std::optional<uint64_t> first = audit::ParseSegmentFileName(it->path().filename().string());
    if (first) firsts.push_back(*first);
  }
  if (ec) {
    return MakeError(ErrorCode::kInternal, "event source: cannot list the audit directory");
  }
  std::sort(firsts.begin(), firsts.end());
  return firsts;
}

uint32_t BigEndian32(const char* p) {
  return (uint32_t{static_cast<uint8_t>(p[0])} << 24) |
         (uint32_t{static_cast<uint8_t>(p[1])} << 16) |
         (uint32_t{static_cast<uint8_t>(p[2])} << 8) | uint32_t{static_cast<uint8_t>(p[3])};
}

}  // namespace

AuditTail::AuditTail(std::string directory, uint64_t next)
    : directory_(std::move(directory)), next_(next) {}

absl::StatusOr<bool> AuditTail::Locate() {
  COFFER_ASSIGN_OR_RETURN(std::vector<uint64_t> firsts, Segments(directory_));
  // The last segment starting at or before next_.
  std::optional<uint64_t> chosen;
  for (uint64_t first : firsts) {
    if (first <= next_) chosen = first;
  }
  if (!chosen) return false;
  file_first_ = *chosen;
  offset_ = audit::kSegmentHeaderSize;
  located_ = true;
  return true;
}

absl::StatusOr<std::vector<::coffer::audit::v1::AuditEntry>> AuditTail::Next(size_t max) {
  std::vector<::coffer::audit::v1::AuditEntry> out;
  if (!located_) {
    COFFER_ASSIGN_OR_RETURN(bool found, Locate());
    if (!found) return out;
  }
  while (out.size() < max) {
    const std::string path = (fs::path(directory_) / audit::SegmentFileName(file_first_)).string();
    std::ifstream in(path, std::ios::binary);
    if (!in) return MakeError(ErrorCode::kInternal, "event source: cannot open an audit segment");
    in.seekg(0, std::ios::end);
    const uint64_t size = static_cast<uint64_t>(in.tellg());
    bool progressed = false;
    while (out.size() < max && offset_ + audit::kFrameLengthSize <= size) {
      char length_bytes[4];
      in.seekg(static_cast<std::streamoff>(offset_));
      if (!in.read(length_bytes, 4)) break;
      const uint32_t length = BigEndian32(length_bytes);
      if (length == 0 || length > audit::kMaxPayloadSize) {
        // Zero fill of a write in progress, or damage: wait; the log repairs or refuses it.
        break;
      }
      if (offset_ + audit::kFrameLengthSize + length + audit::kChainHashSize + audit::kMacSize >
          size) {
        break;  // a frame still being written
      }
      std::string payload(length, '\0');
      if (!in.read(payload.data(), length)) break;
      ::coffer::audit::v1::AuditEntry entry;
      if (!entry.ParseFromString(payload)) {
        return MakeError(ErrorCode::kAuditLogCorrupt,
                         "event source: an audit entry does not parse");
      }
      offset_ += audit::kFrameOverhead + length;
      progressed = true;
      if (entry.sequence() < next_) continue;  // before the cursor (first segment read)
      if (entry.sequence() != next_) {
        return MakeError(ErrorCode::kAuditLogCorrupt,
                         absl::StrCat("event source: audit sequence jumps from ", next_, " to ",
                                      entry.sequence()));
      }
      ++next_;
      out.push_back(std::move(entry));
    }
    if (out.size() >= max || progressed) continue;
    // Nothing more in this segment: move on only if a later one starts exactly at next_.
    COFFER_ASSIGN_OR_RETURN(std::vector<uint64_t> firsts, Segments(directory_));
    auto later = std::find_if(firsts.begin(), firsts.end(),
                              [&](uint64_t first) { return first > file_first_; });
    if (later == firsts.end() || *later != next_) break;
    file_first_ = *later;
    offset_ = audit::kSegmentHeaderSize;
  }
  return out;
}

}  // namespace coffer::events
