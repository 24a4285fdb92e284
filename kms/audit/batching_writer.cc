#include "kms/audit/batching_writer.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "crypto/base/status.h"

namespace coffer::kms::audit {

absl::StatusOr<std::unique_ptr<BatchingAuditWriter>> BatchingAuditWriter::Start(
    AuditLog* log, BatchingAuditWriterOptions options) {
  if (log == nullptr || options.max_queued_events == 0 || options.max_batch_events == 0 ||
      options.crash_loss_window.count() < 0 || options.idle_checkpoint_poll.count() <= 0) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "batching audit writer needs a log, non-zero bounds and a positive poll");
  }
  std::unique_ptr<BatchingAuditWriter> writer(new BatchingAuditWriter(log, options));
  writer->thread_ = std::thread([w = writer.get()] { w->Run(); });
  return writer;
}

BatchingAuditWriter::~BatchingAuditWriter() { Stop().IgnoreError(); }

absl::Status BatchingAuditWriter::EnqueueLocked(absl::Span<const AuditEvent> events,
                                                bool wait_for_space,
                                                std::unique_lock<std::mutex>& lock, uint64_t* first,
                                                uint64_t* last) {
  *first = *last = 0;
  const bool waits = options_.crash_loss_window.count() == 0;
  for (const AuditEvent& event : events) {
    COFFER_RETURN_IF_ERROR(ValidateAuditEvent(event));
    if (!waits && !IsAccessKind(event.kind)) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "only access events may be batched with a crash-loss window; key "
                       "operations must be durable before they are acknowledged");
    }
  }
  lock.lock();
  if (!failure_.ok() && !stopping_) {
    // Stopped at a failure: go on once the log has reopened itself (AuditLog::Recover). The
    // writer thread is idle meanwhile: the queue was cleared and nothing was queued since.
    lock.unlock();
    absl::Status recovered = log_->Recover();
    lock.lock();
    if (recovered.ok()) failure_ = absl::OkStatus();
  }
  for (const AuditEvent& event : events) {
    if (wait_for_space && queue_.size() >= options_.max_queued_events) {
      work_.notify_one();  // what this call queued so far may be what fills the queue
      ++space_waiters_;
      space_.wait(lock, [&] {
        return stopping_ || !failure_.ok() || queue_.size() < options_.max_queued_events;
      });
      --space_waiters_;
    }
    // A failure or a stop part-way: the events queued before it share its fate (the caller is
    // told), the rest are not queued.
    if (!failure_.ok() || stopping_) break;
    const bool was_empty = queue_.empty();
    queue_.push_back({event, std::chrono::steady_clock::now()});
    *last = ++enqueued_;
    if (*first == 0) *first = *last;
    // Wake the writer only when it has something new to decide: a first event (it sleeps until
    // one arrives, then until the window of the oldest ends), a full batch, or a waiting caller
    // (window 0, once the last event is queued). Waking it for every event of a window costs a
    // context switch per request.
    if (was_empty || queue_.size() >= options_.max_batch_events) work_.notify_one();
  }
  return absl::OkStatus();
}

absl::Status BatchingAuditWriter::ResultLocked(uint64_t first, uint64_t last) const {
  if (options_.crash_loss_window.count() == 0) {
    for (uint64_t ticket = first; ticket <= last; ++ticket) {
      const absl::Status* lost = LostLocked(ticket);
      if (lost != nullptr) return *lost;
    }
  }
  return absl::OkStatus();
}

absl::Status BatchingAuditWriter::AppendAll(absl::Span<const AuditEvent> events) {
  if (events.empty()) return absl::OkStatus();
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  uint64_t first = 0;
  uint64_t last = 0;
  COFFER_RETURN_IF_ERROR(EnqueueLocked(events, /*wait_for_space=*/true, lock, &first, &last));
  if (first == 0) return StoppedLocked();
  if (options_.crash_loss_window.count() == 0) {  // answer once durable, or with what lost one
    work_.notify_one();
    progress_.wait(lock, [&] { return durable_ >= last; });
    COFFER_RETURN_IF_ERROR(ResultLocked(first, last));
  }
  if (last - first + 1 < events.size()) return StoppedLocked();  // the rest was not queued
  return absl::OkStatus();
}

void BatchingAuditWriter::AppendAllThen(absl::Span<const AuditEvent> events, Done done) {
  absl::Status result;
  {
    std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
    uint64_t first = 0;
    uint64_t last = 0;
    result = events.empty() ? absl::OkStatus()
                            : EnqueueLocked(events, /*wait_for_space=*/false, lock, &first, &last);
    if (result.ok() && !events.empty()) {
      // Without waiting for room, mu_ is held through the whole queueing: all or none go.
      if (first == 0) {
        result = StoppedLocked();
      } else if (options_.crash_loss_window.count() == 0) {
        waiters_.push_back({first, last, std::move(done)});
        work_.notify_one();
        return;  // the writer thread calls `done`
      }
    }
  }
  std::move(done)(std::move(result));
}

std::vector<std::pair<BatchingAuditWriter::Done, absl::Status>>
BatchingAuditWriter::TakeResolvedLocked() {
  std::vector<std::pair<Done, absl::Status>> resolved;
  while (!waiters_.empty() && waiters_.front().last <= durable_) {
    Waiter& waiter = waiters_.front();
    resolved.emplace_back(std::move(waiter.done), ResultLocked(waiter.first, waiter.last));
    waiters_.pop_front();
  }
  return resolved;
}

absl::Status BatchingAuditWriter::Flush() {
  std::unique_lock<std::mutex> lock(mu_);
  const uint64_t target = enqueued_;
  flush_target_ = std::max(flush_target_, target);
  work_.notify_one();
  progress_.wait(lock, [&] { return durable_ >= target || stopped_; });
  if (durable_ < target) return StoppedLocked();
  // Anything lost since the previous Flush is reported once.
  const uint64_t since = flushed_through_;
  flushed_through_ = std::max(flushed_through_, target);
  if (!lost_.empty() && lost_.back().last > since) return lost_.back().why;
  return absl::OkStatus();
}

absl::Status BatchingAuditWriter::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  work_.notify_one();
  progress_.notify_all();
  space_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

absl::Status BatchingAuditWriter::StoppedLocked() const {
  if (!failure_.ok()) return failure_;
  return MakeError(ErrorCode::kAuditLogClosed, "the audit writer is stopped");
}

const absl::Status* BatchingAuditWriter::LostLocked(uint64_t ticket) const {
  for (auto it = lost_.rbegin(); it != lost_.rend(); ++it) {
    if (ticket >= it->first && ticket <= it->last) return &it->why;
    if (ticket > it->last) break;  // ranges only grow: no older one holds it
  }
  return nullptr;
}

void BatchingAuditWriter::WaitForBatchLocked(std::unique_lock<std::mutex>& lock) {
  if (options_.crash_loss_window.count() == 0) return;  // group commit: take what is there
  const auto deadline = queue_.front().queued_at + options_.crash_loss_window;
  work_.wait_until(lock, deadline, [&] {
    return stopping_ || queue_.size() >= options_.max_batch_events || flush_target_ > durable_;
  });
}

void BatchingAuditWriter::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    if (queue_.empty()) {
      if (stopping_) break;
      const bool woken = work_.wait_for(lock, options_.idle_checkpoint_poll,
                                        [&] { return stopping_ || !queue_.empty(); });
      if (!woken && failure_.ok()) {
        lock.unlock();
        // A failed checkpoint is retried at the next poll; a failed write fails the next batch.
        log_->CheckpointIfDue().IgnoreError();
        lock.lock();
      }
      continue;
    }
    WaitForBatchLocked(lock);
    std::vector<AuditEvent> batch;
    const size_t take = std::min(queue_.size(), options_.max_batch_events);
    batch.reserve(take);
    for (size_t i = 0; i < take; ++i) {
      batch.push_back(std::move(queue_.front().event));
      queue_.pop_front();
    }
    const uint64_t last_ticket = durable_ + take;
    if (space_waiters_ > 0) space_.notify_all();  // space freed
    lock.unlock();
    const auto began = std::chrono::steady_clock::now();
    absl::Status written = log_->AppendBatch(batch).status();
    if (written.ok() && options_.on_batch_written) {
      options_.on_batch_written(take, std::chrono::steady_clock::now() - began);
    }
    lock.lock();
    if (!written.ok()) {
      failure_ = written;
      // Cannot be written behind a failure: this batch and the queue behind it are lost (their
      // window-0 callers get the failure), and every Append fails until the log has reopened.
      lost_.push_back({durable_ + 1, enqueued_, written});
      durable_ = enqueued_;
      queue_.clear();
      progress_.notify_all();
      space_.notify_all();
    } else {
      durable_ = last_ticket;
      progress_.notify_all();
    }
    if (!waiters_.empty()) {
      std::vector<std::pair<Done, absl::Status>> resolved = TakeResolvedLocked();
      lock.unlock();
      for (auto& [done, result] : resolved) std::move(done)(std::move(result));
      lock.lock();
    }
  }
  stopped_ = true;
  progress_.notify_all();
  space_.notify_all();
}

}  // namespace coffer::kms::audit
