// RefusalAudit: cofferd's REQUEST_REFUSED entries, coalesced and written off the request path.
//
// Every refusal the daemon sees is audited (grant, wrong socket, rate limit, protocol and
// transport refusals), but writing each one synchronously would let a flooding or broken client
// buy one synced audit write per refused frame — on a worker, or worse on the transport's reactor
// thread — and so slow everybody else. Instead Record() only counts: refusals with the same
// (uid, socket, code, dataset handle) within one interval become ONE REQUEST_REFUSED entry whose
// record_count says how many it stands for (the actor's pid is the last one seen). A writer
// thread appends the pending entries every `interval` in one AuditLog::AppendBatch (one sync).
// Memory is bounded: past `max_pending_keys` distinct keys in one interval, further new keys are
// counted under their uid, socket and code with dataset handle 0.
//
// Crash-loss window: a crash loses at most the refusals of the last interval (default 100 ms),
// the same promise as the access audit's window (docs/audit.md). Flush() writes what is pending
// now; cofferd calls it before answering an audit query and at shutdown.
//
// Thread safety: Record and Flush from any thread; Record never blocks on I/O. Ownership:
// borrows the AuditLog, which must outlive this object. Failures: an append that fails is
// reported by Flush (and by status through the log's own failure state), and what it held stays
// pending, to be written once the log has reopened; Record cannot fail.

#ifndef COFFER_KMS_OPS_REFUSAL_AUDIT_H_
#define COFFER_KMS_OPS_REFUSAL_AUDIT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"

namespace coffer::daemon {

struct RefusalAuditOptions {
  std::chrono::milliseconds interval{100};
  size_t max_pending_keys = 4096;
};

class RefusalAudit {
 public:
  RefusalAudit(kms::audit::AuditLog* log, RefusalAuditOptions options = {});
  RefusalAudit(const RefusalAudit&) = delete;
  RefusalAudit& operator=(const RefusalAudit&) = delete;
  ~RefusalAudit();  // Stop()

  // Counts one refusal of `code` for `actor` on dataset `dataset_handle` (0: none); `detail` is
  // the entry's fixed text (one per code).
  void Record(const kms::audit::AuditActor& actor, ErrorCode code, uint64_t dataset_handle,
              kms::audit::AuditText detail);

  // Appends every pending entry now; the first append failure, if any.
  absl::Status Flush();

  // Flushes and stops the writer thread. Idempotent; Record after Stop is written at once by
  // the caller's thread (so nothing is lost during shutdown).
  void Stop();

 private:
  using Key = std::tuple<uint32_t, int, int, uint64_t>;  // uid, socket, code, handle
  struct Pending {
    kms::audit::AuditActor actor;
    kms::audit::AuditText detail;
    uint32_t count = 0;
  };

  void Run();
  // Adds `count` refusals to key's pending entry (mu_ held).
  void AddLocked(Key key, const kms::audit::AuditActor& actor, kms::audit::AuditText detail,
                 uint32_t count);
  // Takes what is pending and appends it (under write_mu_, so batches keep their order).
  absl::Status WritePending();

  kms::audit::AuditLog* const log_;
  const RefusalAuditOptions options_;
  std::mutex write_mu_;  // one writer at a time, so entries keep their order
  std::mutex mu_;
  std::condition_variable wake_;
  std::map<Key, Pending> pending_;  // guarded by mu_
  bool stopping_ = false;           // guarded by mu_
  bool stopped_ = false;            // guarded by mu_
  std::thread thread_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_REFUSAL_AUDIT_H_
