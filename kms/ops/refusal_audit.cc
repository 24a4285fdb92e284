#include "kms/ops/refusal_audit.h"

#include <algorithm>
#include <limits>
#include <utility>
#include <vector>

namespace coffer::daemon {

namespace audit = kms::audit;

RefusalAudit::RefusalAudit(audit::AuditLog* log, RefusalAuditOptions options)
    : log_(log), options_(options) {
  thread_ = std::thread([this] { Run(); });
}

RefusalAudit::~RefusalAudit() { Stop(); }

void RefusalAudit::AddLocked(Key key, const audit::AuditActor& actor, audit::AuditText detail,
                             uint32_t count) {
  auto it = pending_.find(key);
  if (it == pending_.end() && pending_.size() >= options_.max_pending_keys) {
    std::get<3>(key) = 0;  // bounded: fold new datasets into the peer's entry without one
    it = pending_.find(key);
  }
  if (it == pending_.end()) it = pending_.emplace(key, Pending{actor, detail, 0}).first;
  it->second.actor = actor;  // the latest pid
  const uint64_t sum = uint64_t{it->second.count} + count;
  it->second.count =
      static_cast<uint32_t>(std::min<uint64_t>(sum, std::numeric_limits<uint32_t>::max()));
}

void RefusalAudit::Record(const audit::AuditActor& actor, ErrorCode code, uint64_t dataset_handle,
                          audit::AuditText detail) {
  bool write_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    AddLocked(
        Key{actor.uid, static_cast<int>(actor.socket), static_cast<int>(code), dataset_handle},
        actor, detail, 1);
    write_now = stopped_;
  }
  // After Stop (shutdown), the caller writes: the writer thread is gone.
  if (write_now) WritePending().IgnoreError();
}

absl::Status RefusalAudit::WritePending() {
  std::lock_guard<std::mutex> write_lock(write_mu_);
  std::map<Key, Pending> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return absl::OkStatus();
  std::vector<audit::AuditEvent> events;
  events.reserve(batch.size());
  for (const auto& [key, pending] : batch) {
    audit::AuditEvent event;
    event.kind = audit::v1::REQUEST_REFUSED;
    event.actor = pending.actor;
    event.dataset_handle = std::get<3>(key);
    event.result = static_cast<ErrorCode>(std::get<2>(key));
    event.detail = pending.detail;
    event.record_count = pending.count;
    events.push_back(std::move(event));
  }
  // A refusal that cannot be audited yet was still refused. Its count goes back into the
  // pending entries, to be written once the log has reopened (the next interval tries again):
  // nothing is lost unless the process ends first. Frames of a failed write that reached the
  // file whole stay there (docs/audit.md), so a refusal may then be counted twice, never lost.
  absl::Status written = log_->AppendBatch(events).status();
  if (!written.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, pending] : batch)
      AddLocked(key, pending.actor, pending.detail, pending.count);
  }
  return written;
}

absl::Status RefusalAudit::Flush() { return WritePending(); }

void RefusalAudit::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    wake_.wait_for(lock, options_.interval);
    if (pending_.empty()) continue;
    lock.unlock();
    WritePending().IgnoreError();
    lock.lock();
  }
}

void RefusalAudit::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
  }
  WritePending().IgnoreError();
}

}  // namespace coffer::daemon
