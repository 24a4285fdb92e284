// BatchingAuditWriter: the single writer thread through which access events reach the log.
//
// Every data read, write and delete is audited; syncing each one would cost a disk flush per
// request. Callers enqueue events; one thread takes everything queued and appends it with
// AuditLog::AppendBatch (one write, one fdatasync: group commit). The crash-loss window bounds
// what a crash may lose (docs/audit.md "Crash-loss window"):
//   - window 0: Append returns only when its event is durable — the reply to the client waits for
//     the audit write; concurrent callers share syncs, so throughput still scales;
//   - window W > 0: Append returns as soon as the event is queued; the writer syncs a batch no
//     later than W after its oldest event was queued, so a crash or power loss loses at most the
//     access events of the last W (plus one write and sync). Only ACCESS_* events are accepted:
//     key operations must be durable before they are acknowledged (use AuditLog::Append).
// A caller that must not block (a request parked on the transport's reactor) uses AppendAllThen:
// at window 0 the writer thread calls it back once its events are durable, after their batch.
// The queue is bounded: when `max_queued_events` wait, Append blocks until the writer catches up
// (backpressure, never silent dropping). When idle, the writer calls AuditLog::CheckpointIfDue
// every `idle_checkpoint_poll`, so time-based checkpoints happen without traffic.
//
// Failing closed: once an AppendBatch fails, the writer stops writing; every queued and later
// Append returns that error (window-0 callers see it directly; window-W callers on their next
// call, and Flush reports it), so the daemon refuses data requests. Recovery: each later Append
// first asks the log to reopen itself (AuditLog::Recover, at most once per kAuditReopenInterval
// of the log's clock); once it has, appends go on — the events lost in the failure stay lost
// and were never acknowledged as durable (window 0) or fall in the crash-loss window (W).
//
// Thread safety: Append and Flush from any number of threads. Ownership: the writer does not
// own the log; the log must outlive it. The destructor calls Stop().

#ifndef COFFER_KMS_AUDIT_BATCHING_WRITER_H_
#define COFFER_KMS_AUDIT_BATCHING_WRITER_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"

namespace coffer::kms::audit {

struct BatchingAuditWriterOptions {
  std::chrono::milliseconds crash_loss_window{0};
  size_t max_queued_events = 8192;  // Append blocks beyond this
  size_t max_batch_events = 1024;   // events per AppendBatch
  std::chrono::milliseconds idle_checkpoint_poll{1000};
  // Called on the writer thread after each batch the log took: its events and how long its
  // AppendBatch (one write and one fsync) took. For metrics; must not block. Optional.
  std::function<void(size_t events, std::chrono::steady_clock::duration took)> on_batch_written;
};

class BatchingAuditWriter {
 public:
  // Starts the writer thread. INVALID_ARGUMENT for a null log or zero bounds.
  static absl::StatusOr<std::unique_ptr<BatchingAuditWriter>> Start(
      AuditLog* log, BatchingAuditWriterOptions options);

  BatchingAuditWriter(const BatchingAuditWriter&) = delete;
  BatchingAuditWriter& operator=(const BatchingAuditWriter&) = delete;
  ~BatchingAuditWriter();

  // Queues `event` (INVALID_ARGUMENT if it is not valid, or not an access event with a window).
  // Window 0: returns once it is durable. Returns the writer's failure once it has failed, and
  // AUDIT_LOG_CLOSED after Stop.
  absl::Status Append(const AuditEvent& event) { return AppendAll({&event, 1}); }
  // Append for several events (a batch request's items, one entry each), queued in order with
  // one wait: window 0 returns once all are durable, with the first failure that lost any. None
  // is queued when one of them is not valid.
  absl::Status AppendAll(absl::Span<const AuditEvent> events);

  // What AppendAllThen calls with what AppendAll would have returned.
  using Done = absl::AnyInvocable<void(absl::Status) &&>;
  // AppendAll that never waits, for a caller that must not block (a request parked on the
  // transport's reactor: kms/server/connection.h, ResponseSink::Park). `done` runs exactly once:
  //   - window 0: on the writer thread, once every event is durable or lost, after the batch;
  //   - otherwise (window above 0, an event not valid, the writer stopped or failed): on the
  //     calling thread, before AppendAllThen returns.
  // `done` must not block for long (the next batch waits for it) and must not wait on this writer
  // (AppendAll, Append or Flush at window 0 would deadlock); AppendAllThen may be called from it.
  // The events do not wait for room in a full queue: they are queued beyond max_queued_events,
  // which its callers bound (the transport parks at most one request per connection).
  void AppendAllThen(absl::Span<const AuditEvent> events, Done done);

  // Returns once every event queued before the call is durable (or the writer has failed).
  absl::Status Flush();

  // 0: Append waits for a sync; above 0: it returns once the event is queued.
  std::chrono::milliseconds crash_loss_window() const { return options_.crash_loss_window; }

  // Writes what is queued, stops the thread. Idempotent. Does not close the log.
  absl::Status Stop();

 private:
  struct Queued {
    AuditEvent event;
    std::chrono::steady_clock::time_point queued_at;
  };

  BatchingAuditWriter(AuditLog* log, BatchingAuditWriterOptions options)
      : log_(log), options_(options) {}

  void Run();
  // Validates `events` and queues them, waiting for room unless `wait_for_space` is false;
  // [*first, *last] are their tickets. Not OK (and nothing queued) for an invalid event; *first
  // is 0 when a failure or a stop let none be queued. Takes mu_ through `lock`, which it may
  // release while the log reopens itself.
  absl::Status EnqueueLocked(absl::Span<const AuditEvent> events, bool wait_for_space,
                             std::unique_lock<std::mutex>& lock, uint64_t* first, uint64_t* last);
  // What a caller whose events hold tickets [first, last] is told once durable_ >= last.
  absl::Status ResultLocked(uint64_t first, uint64_t last) const;
  // Takes the AppendAllThen callbacks whose events are all resolved, with their results.
  std::vector<std::pair<Done, absl::Status>> TakeResolvedLocked();
  // Waits, with mu_ held, until the batch at the queue's head should be written.
  void WaitForBatchLocked(std::unique_lock<std::mutex>& lock);

  AuditLog* const log_;
  const BatchingAuditWriterOptions options_;

  std::mutex mu_;
  std::condition_variable work_;      // writer: events queued, flush asked, or stopping
  std::condition_variable progress_;  // callers: events durable, or failure, or stopped
  std::condition_variable space_;     // callers of a full queue: space freed, failure, stopping
  size_t space_waiters_ = 0;          // callers waiting on space_
  std::deque<Queued> queue_;
  uint64_t enqueued_ = 0;  // tickets handed out (ticket n = the n-th event queued, from 1)
  uint64_t durable_ = 0;   // every ticket <= durable_ is resolved: durable, or in lost_
  uint64_t flush_target_ = 0;
  uint64_t flushed_through_ = 0;  // the target of the last Flush
  bool stopping_ = false;
  bool stopped_ = false;
  absl::Status failure_;  // set when a batch failed, cleared when the log has reopened
  // The tickets each failed batch lost (with the queue behind it), and why: first, last, status.
  struct Lost {
    uint64_t first;
    uint64_t last;
    absl::Status why;
  };
  std::vector<Lost> lost_;
  // AppendAllThen's callbacks in ticket order, until every one of their tickets is resolved.
  struct Waiter {
    uint64_t first;
    uint64_t last;
    Done done;
  };
  std::deque<Waiter> waiters_;
  // The failure that lost `ticket`, if one did.
  const absl::Status* LostLocked(uint64_t ticket) const;
  // Why an event was not queued or not written: the failure the writer stopped at, else
  // AUDIT_LOG_CLOSED (the writer is stopped).
  absl::Status StoppedLocked() const;

  std::thread thread_;
};

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_BATCHING_WRITER_H_
