// AuditTail: reads the audit log's entries from a given sequence number on, incrementally, as
// the log grows (docs/audit.md for the segment format). The event source derives lifecycle
// events from it: every disable, schedule, destruction, rotation and canary read is audited
// before it is acknowledged, so an event derived from a durable audit entry is never lost and
// never made up, and the derivation cursor (the next audit sequence) is saved in the same batch
// as the events (kms/events/event_source.h).
//
// It checks framing and sequence continuity only: the log's own chain, MACs and signatures are
// the verifier's job. A frame cut short at the end of the newest segment is the log's write in
// progress: Next stops before it and reads it on a later call.
//
// Thread safety: none (one owner thread). Failures: AUDIT_LOG_CORRUPT for a frame that does not
// parse or a sequence that jumps; an I/O error as INTERNAL.

#ifndef COFFER_KMS_EVENTS_AUDIT_TAIL_H_
#define COFFER_KMS_EVENTS_AUDIT_TAIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kms/audit/audit.pb.h"

namespace coffer::events {

class AuditTail {
 public:
  // Reads entries of the log in `directory` from sequence `next` on.
  AuditTail(std::string directory, uint64_t next);

  // Up to `max` entries after those already returned (fewer, or none, at the end of the log).
  absl::StatusOr<std::vector<::coffer::audit::v1::AuditEntry>> Next(size_t max);

  // The sequence of the next entry Next will return.
  uint64_t next_sequence() const { return next_; }

 private:
  // Positions on the segment holding next_ (file_first_, offset_); false if none yet.
  absl::StatusOr<bool> Locate();

  std::string directory_;
  uint64_t next_;
  bool located_ = false;
  uint64_t file_first_ = 0;  // first sequence of the segment being read
  uint64_t offset_ = 0;      // byte offset of the next frame in it
};

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_AUDIT_TAIL_H_
