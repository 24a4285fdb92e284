#include "kms/ops/damaged_events.h"

#include <set>
#include <utility>

namespace coffer::daemon {

namespace pb = coffer::v1;

namespace {

// docs/events.md, "Tables": the references already raised.
constexpr std::string_view kDamagedTable = "damaged";
// Bounds the memory kept before the log is attached; later items are raised by the next walk.
constexpr size_t kMaxWaiting = 1000;

}  // namespace

pb::DamagedItem ToWire(const storage::DamagedItem& item) {
  pb::DamagedItem wire;
  wire.set_ref(item.ref);
  wire.set_code(static_cast<int32_t>(item.code));
  wire.set_code_name(std::string(ErrorCodeName(item.code)));
  wire.set_column_family(item.column_family);
  return wire;
}

void AppendWire(const std::vector<storage::DamagedItem>& items,
                google::protobuf::RepeatedPtrField<pb::DamagedItem>* out) {
  for (const storage::DamagedItem& item : items) *out->Add() = ToWire(item);
}

absl::Status DamagedItemEvents::Attach(events::EventLog* log) {
  std::lock_guard<std::mutex> lock(mu_);
  log_ = log;
  if (log_ == nullptr || waiting_.empty()) return absl::OkStatus();
  std::vector<Pending> waiting = std::move(waiting_);
  waiting_.clear();
  return Warned(RaiseLocked(waiting));
}

absl::Status DamagedItemEvents::Raise(uint64_t handle, std::string_view dataset,
                                      const std::vector<storage::DamagedItem>& items) {
  if (items.empty()) return absl::OkStatus();
  std::vector<Pending> pending;
  pending.reserve(items.size());
  for (const storage::DamagedItem& item : items) {
    pending.push_back(Pending{handle, std::string(dataset), item});
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (log_ == nullptr) {
    for (Pending& item : pending) {
      if (waiting_.size() < kMaxWaiting) waiting_.push_back(std::move(item));
    }
    return absl::OkStatus();
  }
  return Warned(RaiseLocked(pending));
}

absl::Status DamagedItemEvents::Warned(absl::Status status) const {
  if (!status.ok() && log_warning_) {
    log_warning_("events: cannot raise EVENT_DAMAGED_ITEM: " + std::string(status.message()));
  }
  return status;
}

absl::Status DamagedItemEvents::RaiseLocked(const std::vector<Pending>& items) {
  std::vector<pb::Event> raised;
  std::vector<events::Row> rows;
  std::set<std::string> seen;  // one event per ref, even if a batch names it twice
  for (const Pending& pending : items) {
    const storage::DamagedItem& item = pending.item;
    if (!seen.insert(item.ref).second) continue;
    absl::StatusOr<std::optional<std::string>> known = log_->GetRow(kDamagedTable, item.ref);
    if (!known.ok()) return known.status();
    if (known->has_value()) continue;
    pb::Event event;
    event.set_kind(pb::EVENT_DAMAGED_ITEM);
    event.set_dataset(pending.dataset);
    event.set_dataset_handle(pending.handle);
    event.set_damaged_ref(item.ref);
    event.set_error_code(static_cast<int32_t>(item.code));
    event.set_detail("a stored item in " + item.column_family +
                     " no longer opens; it is skipped by listings and jobs");
    raised.push_back(std::move(event));
    rows.push_back(
        events::Row{std::string(kDamagedTable), item.ref, events::EncodeU64(pending.handle)});
  }
  if (raised.empty()) return absl::OkStatus();
  return log_->Append(std::move(raised), rows).status();
}

}  // namespace coffer::daemon
