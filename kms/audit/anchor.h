// External anchors: each checkpoint's (sequence, chain hash) published outside the log.
//
// After a checkpoint entry is durable, the audit log hands a CheckpointAnchor for it (the
// checkpoint entry's own sequence number and chain hash, so the anchor also pins the signed
// checkpoint) to an AnchorSink. The daemon uses SyslogAnchorSink, which sends one line to the
// system journal or syslog (ident "cofferd-audit"); with log forwarding, a host root who rewrites
// the audit log later cannot rewrite what the journal already holds. The offline verifier takes
// anchors back (ParseAnchorLine on the journal's lines) and reports any mismatch or any anchored
// sequence missing from the log.
//
// Line format (docs/audit.md "Anchors"), one line, ASCII:
//   coffer-audit-anchor v1 log=<32 hex> seq=<decimal> head=<64 hex> time=<decimal micros>
//
// Thread safety: FormatAnchorLine/ParseAnchorLine are pure. A sink's Publish is called by the
// log under its lock, one call at a time; SyslogAnchorSink is also safe to call concurrently.
// Failure: Publish returns IO_ERROR when the line could not be handed over (no syslog running);
// the log counts such failures and carries on: anchors are best effort, where a journal runs.

#ifndef COFFER_KMS_AUDIT_ANCHOR_H_
#define COFFER_KMS_AUDIT_ANCHOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms::audit {

struct CheckpointAnchor {
  LogId log_id{};
  uint64_t sequence = 0;  // the checkpoint entry's sequence number
  ChainHash head{};       // the checkpoint entry's chain hash
  int64_t time_micros = 0;

  bool operator==(const CheckpointAnchor&) const = default;
};

inline constexpr std::string_view kAnchorMarker = "coffer-audit-anchor v1 ";

std::string FormatAnchorLine(const CheckpointAnchor& anchor);

// Finds kAnchorMarker anywhere in `line` (journal and syslog lines carry a prefix) and parses the
// fields after it. INVALID_ARGUMENT when the marker is absent or a field is malformed.
absl::StatusOr<CheckpointAnchor> ParseAnchorLine(std::string_view line);

class AnchorSink {
 public:
  AnchorSink(const AnchorSink&) = delete;
  AnchorSink& operator=(const AnchorSink&) = delete;
  virtual ~AnchorSink() = default;

  virtual absl::Status Publish(const CheckpointAnchor& anchor) = 0;

 protected:
  AnchorSink() = default;
};

// Sends anchor lines as RFC 3164 datagrams to the local syslog socket (journald and rsyslog both
// listen on /dev/log), priority `facility | LOG_NOTICE`, ident "cofferd-audit". Talks to the
// socket directly rather than through syslog(3), so it neither changes the process's openlog()
// state nor hides a missing listener.
class SyslogAnchorSink final : public AnchorSink {
 public:
  // `facility` is LOG_AUTHPRIV or LOG_DAEMON (from <syslog.h>); `socket_path` names the syslog
  // socket. IO_ERROR if a datagram socket cannot be created.
  static absl::StatusOr<std::unique_ptr<SyslogAnchorSink>> Create(
      int facility, std::string socket_path = "/dev/log");
  ~SyslogAnchorSink() override;

  absl::Status Publish(const CheckpointAnchor& anchor) override;

 private:
  SyslogAnchorSink(int fd, int facility, std::string socket_path)
      : fd_(fd), facility_(facility), socket_path_(std::move(socket_path)) {}

  int fd_;
  int facility_;
  std::string socket_path_;
};

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_ANCHOR_H_
