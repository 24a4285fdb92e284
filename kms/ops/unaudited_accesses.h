// UnauditedAccesses: the tally behind the access audit's relaxed failure policy (SERVE_AND_COUNT;
// docs/audit.md, "Failure policy").
//
// Under FAIL_CLOSED (the default) a data request whose access entry the audit log cannot take is
// refused with the audit's error. Under SERVE_AND_COUNT — which only two admins can set — it is
// served, and this class counts it instead: one count per (uid, socket, dataset handle, kind,
// purpose, result). Once the log takes entries again, Take() turns the counts into ordinary
// access entries whose record_count says how many accesses each stands for and whose detail is
// kServedUnauditedDetail, so `keyctl audit who-read` and the anomaly counts still see them.
// What is lost: the accesses' own times and pids (the entry has the latest pid and the time it
// was written), and the item refs of writes and deletes, so a restore from backup cannot replay
// those moves (docs/keyctl.md, `backup restore`).
//
// Memory is bounded: past kMaxKeys distinct keys, new ones are counted under dataset handle 0.
//
// Thread safety: every method from any thread. Failures: none; an entry that could not be
// written goes back with Restore and is counted again.

#ifndef COFFER_KMS_OPS_UNAUDITED_ACCESSES_H_
#define COFFER_KMS_OPS_UNAUDITED_ACCESSES_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kms/audit/audit_event.h"

namespace coffer::daemon {

// The detail of an entry written from the tally.
inline constexpr kms::audit::AuditText kServedUnauditedDetail =
    "served while the audit log was failing (SERVE_AND_COUNT); record_count accesses";

class UnauditedAccesses {
 public:
  static constexpr size_t kMaxKeys = 4096;

  // True for the errors of an audit log that cannot take entries now (AUDIT_NOT_DURABLE,
  // AUDIT_LOG_CLOSED): the only failures the relaxed policy serves through. An invalid event
  // or a full queue's refusal is never served through.
  static bool IsLogUnavailable(const absl::Status& audited);

  // Counts `events` (access events that could not be audited) as served.
  void Count(absl::Span<const kms::audit::AuditEvent> events);
  // Puts entries from Take() back (they could not be written).
  void Restore(absl::Span<const kms::audit::AuditEvent> entries);
  // The pending counts as access entries, oldest key order; the tally is then empty.
  std::vector<kms::audit::AuditEvent> Take();

  bool pending() const { return pending_.load(std::memory_order_acquire) != 0; }
  // Accesses counted but not yet taken out as entries.
  uint64_t pending_accesses() const { return pending_.load(); }
  // Accesses counted since start (Restore does not count them twice).
  uint64_t served() const { return served_.load(); }

 private:
  // uid, socket, dataset handle, kind, purpose, result
  using Key = std::tuple<uint32_t, int, uint64_t, int, int, int>;
  struct Tally {
    kms::audit::AuditActor actor;  // the latest
    uint64_t count = 0;
  };
  void AddLocked(const kms::audit::AuditEvent& event, uint64_t count);

  std::mutex mu_;
  std::map<Key, Tally> tallies_;  // guarded by mu_
  std::atomic<uint64_t> pending_{0};
  std::atomic<uint64_t> served_{0};
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_UNAUDITED_ACCESSES_H_
