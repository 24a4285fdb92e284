#include "storage/quota_meter.h"

#include <algorithm>
#include <string>
#include <utility>

#include "crypto/base/status.h"

namespace coffer::storage {

QuotaMeter::Ticket::Ticket(Ticket&& other) noexcept
    : meter_(std::exchange(other.meter_, nullptr)),
      handle_(other.handle_),
      records_(other.records_),
      bytes_(other.bytes_) {}

QuotaMeter::Ticket& QuotaMeter::Ticket::operator=(Ticket&& other) noexcept {
  if (this != &other) {
    Done();
    meter_ = std::exchange(other.meter_, nullptr);
    handle_ = other.handle_;
    records_ = other.records_;
    bytes_ = other.bytes_;
  }
  return *this;
}

void QuotaMeter::Ticket::Done() {
  if (meter_ == nullptr) return;
  std::exchange(meter_, nullptr)->Release(handle_, records_, bytes_);
}

QuotaMeter::QuotaMeter(DataDb* db, DatasetPolicySource* policies, const Clock* clock,
                       Options options)
    : db_(db), policies_(policies), clock_(clock), options_(options) {}

absl::StatusOr<bool> QuotaMeter::HasQuota(uint64_t handle) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (policy.max_records > 0 || policy.max_stored_bytes > 0) return true;
  UntrackIfTracked(handle);
  return false;
}

void QuotaMeter::UntrackIfTracked(uint64_t handle) {
  if (!ever_tracked_.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(mu_);
  Untrack(handle);
}

QuotaMeter::Tracked& QuotaMeter::Track(uint64_t handle) {
  ever_tracked_.store(true, std::memory_order_release);
  return tracked_[handle];
}

void QuotaMeter::Untrack(uint64_t handle) {
  // The entry stays (a caller may be waiting on it); its figures go, so that a quota set later
  // starts from a census of its own rather than from figures the writes meanwhile made stale.
  auto it = tracked_.find(handle);
  if (it != tracked_.end() && !it->second.census_running) {
    const DatasetUsage inflight = it->second.inflight;
    it->second = Tracked();
    it->second.inflight = inflight;
  }
}

DatasetUsage QuotaMeter::Estimate(const Tracked& t) const {
  DatasetUsage sum = t.census;
  for (const DatasetUsage* part : {&t.before, &t.since}) {
    sum.records += part->records;
    sum.stored_bytes += part->stored_bytes;
  }
  return sum;
}

absl::Status QuotaMeter::Census(std::unique_lock<std::mutex>& lock, uint64_t handle, Tracked& t) {
  t.census_running = true;
  t.before = t.since;
  t.since = t.inflight;  // their keys may land after the scan passed them
  const auto started = clock_->Now();
  lock.unlock();
  absl::StatusOr<DatasetUsage> counted = CountDatasetUsage(*db_, handle);
  lock.lock();
  t.census_running = false;
  if (counted.ok()) {
    t.counted = true;
    t.census = *counted;
    t.before = {};
    t.last_census = clock_->Now();
    t.census_took = std::max(t.last_census - started, std::chrono::system_clock::duration::zero());
  } else {
    // Keep counting everything admitted: the old census plus both parts stays an upper bound.
    t.since.records += t.before.records;
    t.since.stored_bytes += t.before.stored_bytes;
    t.before = {};
  }
  census_done_.notify_all();
  return counted.status();
}

absl::StatusOr<QuotaMeter::Ticket> QuotaMeter::Admit(uint64_t handle, uint64_t records,
                                                     uint64_t bytes) {
  COFFER_ASSIGN_OR_RETURN(DatasetPolicy policy, policies_->PolicyFor(handle));
  if (policy.max_records == 0 && policy.max_stored_bytes == 0) {
    UntrackIfTracked(handle);
    return Ticket();
  }
  std::unique_lock<std::mutex> lock(mu_);
  Tracked& t = Track(handle);
  const auto fits = [&] {
    const DatasetUsage estimate = Estimate(t);
    return (policy.max_records == 0 || estimate.records + records <= policy.max_records) &&
           (policy.max_stored_bytes == 0 ||
            estimate.stored_bytes + bytes <= policy.max_stored_bytes);
  };
  bool fresh = false;  // a census finished after this call began
  for (;;) {
    if (t.census_running) {
      census_done_.wait(lock, [&] { return !t.census_running; });
      fresh = true;
      continue;
    }
    if (!t.counted) {
      COFFER_RETURN_IF_ERROR(Census(lock, handle, t));
      fresh = true;
      continue;
    }
    if (fits()) break;
    const auto now = clock_->Now();
    const auto wait = std::max<std::chrono::system_clock::duration>(options_.min_census_interval,
                                                                    10 * t.census_took);
    if (fresh || now - t.last_census < wait) {
      const DatasetUsage estimate = Estimate(t);
      if (policy.max_records > 0 && estimate.records + records > policy.max_records) {
        return MakeError(ErrorCode::kQuotaExceeded, "the dataset's record quota (" +
                                                        std::to_string(policy.max_records) +
                                                        " live records) is reached");
      }
      return MakeError(ErrorCode::kQuotaExceeded, "the dataset's storage quota (" +
                                                      std::to_string(policy.max_stored_bytes) +
                                                      " stored bytes) is reached");
    }
    COFFER_RETURN_IF_ERROR(Census(lock, handle, t));
    fresh = true;
  }
  t.since.records += records;
  t.since.stored_bytes += bytes;
  t.inflight.records += records;
  t.inflight.stored_bytes += bytes;
  Ticket ticket;
  ticket.meter_ = this;
  ticket.handle_ = handle;
  ticket.records_ = records;
  ticket.bytes_ = bytes;
  return ticket;
}

void QuotaMeter::Release(uint64_t handle, uint64_t records, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = tracked_.find(handle);
  if (it == tracked_.end()) return;
  DatasetUsage& inflight = it->second.inflight;
  inflight.records -= std::min(inflight.records, records);
  inflight.stored_bytes -= std::min(inflight.stored_bytes, bytes);
}

}  // namespace coffer::storage
