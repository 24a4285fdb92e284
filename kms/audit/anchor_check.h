// Tail truncation: does an audit log reach the newest anchor kept outside the machine?
// (docs/audit.md, "Tail truncation and rollback").
//
// A log cut at a frame boundary, or missing its newest segments, is a well-formed shorter log:
// its hash chain and signatures all check, and the next run would sign a checkpoint over it.
// Only something that left the machine knows the log was longer: the anchors (one line per
// checkpoint, kms/audit/anchor.h) the daemon sends to the journal/syslog. Start-up
// (AuditLogOptions::minimum_anchor), restore and `keyctl audit verify --anchors FILE` take the
// newest anchor they are given and refuse a log that ends before it.
//
// An anchors file is text with one anchor line per line, as `journalctl -t cofferd-audit -o cat`
// or a forwarded syslog file holds them: lines without the "coffer-audit-anchor v1 " marker are
// skipped; a marked line that does not parse is an error (a damaged anchor file is not "no
// anchor").
//
// Pure functions except ReadAnchorsFile (reads one file). Thread-safe. Failures:
// INVALID_ARGUMENT for a malformed anchor line (with its line number); NOT_FOUND / IO_ERROR for
// an anchors file that cannot be read; AUDIT_TAMPERED when a log does not reach its anchor or is
// another log.

#ifndef COFFER_KMS_AUDIT_ANCHOR_CHECK_H_
#define COFFER_KMS_AUDIT_ANCHOR_CHECK_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms::audit {

// Every anchor line in `text`, in file order.
absl::StatusOr<std::vector<CheckpointAnchor>> ParseAnchorsFile(std::string_view text);

// ParseAnchorsFile over the file at `path`.
absl::StatusOr<std::vector<CheckpointAnchor>> ReadAnchorsFile(const std::string& path);

// The anchor with the highest sequence number, or nullopt when `anchors` is empty. Anchors of
// several logs (a log recreated after a restore) are ranked by sequence alone: the caller
// checks the log id with CheckLogReachesAnchor.
std::optional<CheckpointAnchor> NewestAnchor(const std::vector<CheckpointAnchor>& anchors);

// NewestAnchor of the anchors file at `path`; nullopt when `path` is empty (no anchors file is
// configured) or the file holds no anchor. Errors: ReadAnchorsFile's.
absl::StatusOr<std::optional<CheckpointAnchor>> ReadNewestAnchor(const std::string& path);

// Where a log ends: its id and the sequence of its last entry (nullopt: no entry at all).
struct LogEnd {
  LogId log_id{};
  std::optional<uint64_t> last_sequence;
};

// OK when the log is `anchor`'s log and holds the anchored sequence. AUDIT_TAMPERED "the audit
// log ends at sequence N, before the anchor at sequence M ..." when it ends earlier, or "...
// another log" when the ids differ. The entry's hash at that sequence is checked by whoever
// holds it (AuditLog::Open within the segments it reads, VerifyAuditLog always).
absl::Status CheckLogReachesAnchor(const LogEnd& log, const CheckpointAnchor& anchor);

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_ANCHOR_CHECK_H_
