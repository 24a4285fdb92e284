#include "kms/ops/unaudited_accesses.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "crypto/base/status.h"

namespace coffer::daemon {

namespace audit = kms::audit;

bool UnauditedAccesses::IsLogUnavailable(const absl::Status& audited) {
  const ErrorCode code = ErrorCodeOf(audited);
  return code == ErrorCode::kAuditNotDurable || code == ErrorCode::kAuditLogClosed;
}

void UnauditedAccesses::AddLocked(const audit::AuditEvent& event, uint64_t count) {
  Key key{event.actor.uid,
          static_cast<int>(event.actor.socket),
          event.dataset_handle,
          static_cast<int>(event.kind),
          static_cast<int>(event.purpose),
          static_cast<int>(event.result)};
  auto it = tallies_.find(key);
  if (it == tallies_.end() && tallies_.size() >= kMaxKeys) {
    std::get<2>(key) = 0;  // bounded: fold new datasets into the key without one
    it = tallies_.find(key);
  }
  if (it == tallies_.end()) it = tallies_.emplace(key, Tally{event.actor, 0}).first;
  it->second.actor = event.actor;
  it->second.count += count;
  pending_.fetch_add(count, std::memory_order_release);
}

void UnauditedAccesses::Count(absl::Span<const audit::AuditEvent> events) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const audit::AuditEvent& event : events) {
    const uint64_t count = std::max<uint64_t>(event.record_count, 1);
    AddLocked(event, count);
    served_.fetch_add(count);
  }
}

void UnauditedAccesses::Restore(absl::Span<const audit::AuditEvent> entries) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const audit::AuditEvent& entry : entries) AddLocked(entry, entry.record_count);
}

std::vector<audit::AuditEvent> UnauditedAccesses::Take() {
  std::map<Key, Tally> taken;
  {
    std::lock_guard<std::mutex> lock(mu_);
    taken.swap(tallies_);
    pending_.store(0, std::memory_order_release);
  }
  std::vector<audit::AuditEvent> entries;
  for (const auto& [key, tally] : taken) {
    // An entry's record_count is 32 bits: a larger tally becomes several entries.
    uint64_t left = tally.count;
    while (left > 0) {
      const uint32_t count =
          static_cast<uint32_t>(std::min<uint64_t>(left, std::numeric_limits<uint32_t>::max()));
      audit::AuditEvent entry;
      entry.kind = static_cast<audit::v1::EventKind>(std::get<3>(key));
      entry.actor = tally.actor;
      entry.dataset_handle = std::get<2>(key);
      entry.purpose = static_cast<audit::v1::Purpose>(std::get<4>(key));
      entry.result = static_cast<ErrorCode>(std::get<5>(key));
      entry.record_count = count;
      entry.detail = kServedUnauditedDetail;
      entries.push_back(std::move(entry));
      left -= count;
    }
  }
  return entries;
}

}  // namespace coffer::daemon
