#include "kms/events/event_source.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;
namespace audit_pb = ::coffer::audit::v1;

constexpr std::string_view kMetaTable = "meta";
constexpr std::string_view kAuditCursorKey = "audit_cursor";
constexpr std::string_view kHsmDownKey = "hsm_down";
constexpr std::string_view kNameTable = "name";
constexpr std::string_view kWarnedTable = "warned";
constexpr size_t kAuditBatch = 256;

bool Succeeded(const audit_pb::AuditEntry& entry) {
  return entry.result_code() == 0 && entry.stage() != audit_pb::STAGE_REQUESTED;
}

}  // namespace

std::optional<pb::Event> EventFromAudit(
    const audit_pb::AuditEntry& entry, const std::map<uint64_t, std::string>& names,
    const std::map<uint64_t, int64_t>& destruction_due,
    const std::function<std::optional<CanaryRef>(uint64_t)>& canary_lookup) {
  if (!Succeeded(entry)) return std::nullopt;
  pb::Event event;
  switch (entry.kind()) {
    case audit_pb::DATASET_DISABLE:
      event.set_kind(pb::EVENT_DATASET_DISABLED);
      break;
    case audit_pb::DATASET_ENABLE:
      event.set_kind(pb::EVENT_DATASET_ENABLED);
      break;
    case audit_pb::DESTRUCTION_SCHEDULE:
      event.set_kind(pb::EVENT_DESTRUCTION_SCHEDULED);
      if (auto due = destruction_due.find(entry.dataset_handle()); due != destruction_due.end()) {
        event.set_destruction_due_micros(due->second);
      }
      break;
    case audit_pb::DESTRUCTION_CANCEL:
      event.set_kind(pb::EVENT_DESTRUCTION_CANCELLED);
      break;
    case audit_pb::DATASET_DESTROY:
      event.set_kind(pb::EVENT_DATASET_DESTROYED);
      break;
    case audit_pb::KEY_ROTATE:
      event.set_kind(absl::StartsWith(entry.detail(), "emergency") ? pb::EVENT_EMERGENCY_ROTATION
                                                                   : pb::EVENT_KEY_ROTATED);
      event.set_purpose(static_cast<pb::Purpose>(entry.purpose()));
      event.set_key_version(entry.key_version());
      break;
    case audit_pb::CANARY_READ: {
      event.set_kind(pb::EVENT_CANARY_READ);
      std::optional<CanaryRef> canary;
      if (canary_lookup) canary = canary_lookup(entry.record_count());
      if (canary) {
        event.set_canary_kind(canary->kind);
        event.set_canary(canary->id);
      }
      break;
    }
    default:
      return std::nullopt;
  }
  event.set_time_micros(entry.time_micros());
  event.set_dataset_handle(entry.dataset_handle());
  if (auto name = names.find(entry.dataset_handle()); name != names.end()) {
    event.set_dataset(name->second);
  }
  event.set_detail(entry.detail());
  event.set_uid(entry.actor().uid());
  event.set_pid(entry.actor().pid());
  event.set_audit_sequence(entry.sequence());
  return event;
}

absl::StatusOr<std::unique_ptr<EventSource>> EventSource::Create(EventSourceOptions options) {
  if (options.log == nullptr || options.audit_directory.empty() || !options.datasets ||
      options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "EventSourceOptions: log, audit_directory, datasets and clock are required");
  }
  std::unique_ptr<EventSource> source(new EventSource(std::move(options)));
  EventLog* log = source->options_.log;
  COFFER_ASSIGN_OR_RETURN(std::optional<std::string> cursor,
                          log->GetRow(kMetaTable, kAuditCursorKey));
  uint64_t start = source->options_.audit_start;
  if (cursor.has_value()) {
    std::optional<uint64_t> saved = DecodeU64(*cursor);
    if (!saved) return MakeError(ErrorCode::kDataDbError, "event log: audit cursor is damaged");
    start = *saved;
  } else {
    COFFER_RETURN_IF_ERROR(log->PutRows(
        {Row{std::string(kMetaTable), std::string(kAuditCursorKey), EncodeU64(start)}}));
  }
  source->tail_ = std::make_unique<AuditTail>(source->options_.audit_directory, start);
  COFFER_ASSIGN_OR_RETURN(std::vector<Row> names, log->ScanTable(kNameTable));
  for (const Row& row : names) {
    if (std::optional<uint64_t> handle = DecodeU64(row.key)) source->names_[*handle] = row.value;
  }
  return source;
}

EventSource::EventSource(EventSourceOptions options)
    : options_(std::move(options)), clock_(options_.clock) {}

EventSource::~EventSource() { Stop(); }

void EventSource::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_) return;
  thread_ = std::thread([this] { Loop(); });
}

void EventSource::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void EventSource::Wake() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    wake_requested_ = true;
  }
  wake_.notify_all();
}

void EventSource::CheckHsmSoon() {
  hsm_check_requested_.store(true);
  Wake();
}

void EventSource::Loop() {
  absl::Status last_failure;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      wake_.wait_for(lock, options_.poll_interval, [this] { return stop_ || wake_requested_; });
      if (stop_) return;
      wake_requested_ = false;
    }
    absl::Status result = RunOnce();
    // A failure is logged once until the next success (the cycle retries on its own).
    if (!result.ok() && last_failure.ok() && options_.log_warning) {
      options_.log_warning(absl::StrCat(
          "events: deriving events failed: ", std::string(ErrorCodeName(ErrorCodeOf(result))), ": ",
          std::string(result.message())));
    }
    last_failure = result;
  }
}

absl::Status EventSource::RunOnce() {
  std::lock_guard<std::mutex> lock(run_mu_);
  std::vector<DatasetView> datasets = options_.datasets();
  std::vector<Row> new_names;
  for (const DatasetView& d : datasets) {
    if (d.name.empty()) continue;
    auto [it, inserted] = names_.emplace(d.handle, d.name);
    if (inserted || it->second != d.name) {
      it->second = d.name;
      new_names.push_back(Row{std::string(kNameTable), EncodeU64(d.handle), d.name});
    }
  }
  if (!new_names.empty()) COFFER_RETURN_IF_ERROR(options_.log->PutRows(new_names));

  absl::Status first = DeriveFromAudit(datasets);
  absl::Status warned = CheckDestructionWarnings(datasets);
  if (first.ok()) first = warned;
  absl::Status health = CheckHealth();
  if (first.ok()) first = health;
  const auto now = std::chrono::steady_clock::now();
  if (now >= next_compaction_) {
    next_compaction_ = now + options_.compaction_interval;
    absl::StatusOr<uint64_t> compacted =
        options_.log->Compact(options_.retention, options_.max_age);
    if (first.ok()) first = compacted.status();
  }
  return first;
}

absl::Status EventSource::DeriveFromAudit(const std::vector<DatasetView>& datasets) {
  std::map<uint64_t, int64_t> due;
  for (const DatasetView& d : datasets) {
    if (d.pending_destruction) due[d.handle] = d.destruction_due_micros;
  }
  while (true) {
    COFFER_ASSIGN_OR_RETURN(std::vector<audit_pb::AuditEntry> entries, tail_->Next(kAuditBatch));
    if (entries.empty()) return absl::OkStatus();
    // The datasets were looked at before these entries were read: a destruction scheduled in
    // between is published (state, due time) before its COMPLETED entry is appended, so a second
    // look now sees it.
    bool stale = false;
    for (const audit_pb::AuditEntry& entry : entries) {
      stale |= entry.kind() == audit_pb::DESTRUCTION_SCHEDULE && Succeeded(entry) &&
               !due.contains(entry.dataset_handle());
    }
    if (stale) {
      for (const DatasetView& d : options_.datasets()) {
        if (d.pending_destruction) due[d.handle] = d.destruction_due_micros;
      }
    }
    std::vector<pb::Event> events;
    for (const audit_pb::AuditEntry& entry : entries) {
      std::optional<pb::Event> event = EventFromAudit(entry, names_, due, options_.canary_lookup);
      if (event) events.push_back(*std::move(event));
    }
    // The cursor moves with the events it produced, in one batch.
    COFFER_RETURN_IF_ERROR(
        options_.log
            ->Append(std::move(events), {Row{std::string(kMetaTable), std::string(kAuditCursorKey),
                                             EncodeU64(tail_->next_sequence())}})
            .status());
    if (entries.size() < kAuditBatch) return absl::OkStatus();
  }
}

absl::Status EventSource::CheckDestructionWarnings(const std::vector<DatasetView>& datasets) {
  if (options_.destruction_warning.count() <= 0) return absl::OkStatus();
  const int64_t now = coffer::ToUnixMicros(clock_->Now());
  const int64_t window =
      std::chrono::duration_cast<std::chrono::microseconds>(options_.destruction_warning).count();
  std::set<std::string> live_markers;
  for (const DatasetView& d : datasets) {
    if (!d.pending_destruction) continue;
    const std::string marker =
        EncodeU64(d.handle) + EncodeU64(static_cast<uint64_t>(d.destruction_due_micros));
    live_markers.insert(marker);
    if (d.destruction_due_micros - now > window) continue;
    COFFER_ASSIGN_OR_RETURN(std::optional<std::string> seen,
                            options_.log->GetRow(kWarnedTable, marker));
    if (seen.has_value()) continue;
    pb::Event event;
    event.set_kind(pb::EVENT_DESTRUCTION_DUE_SOON);
    event.set_dataset_handle(d.handle);
    event.set_dataset(d.name);
    event.set_destruction_due_micros(d.destruction_due_micros);
    event.set_detail("destruction due within the warning period");
    // The marker and the event in one batch: raised exactly once.
    COFFER_RETURN_IF_ERROR(
        options_.log->Append({std::move(event)}, {Row{std::string(kWarnedTable), marker, "1"}})
            .status());
  }
  // Markers of destructions no longer pending (cancelled, done) are dropped.
  COFFER_ASSIGN_OR_RETURN(std::vector<Row> markers, options_.log->ScanTable(kWarnedTable));
  for (const Row& row : markers) {
    if (!live_markers.contains(row.key)) {
      COFFER_RETURN_IF_ERROR(options_.log->DeleteRow(kWarnedTable, row.key));
    }
  }
  return absl::OkStatus();
}

absl::Status EventSource::CheckHealth() {
  const bool audit_failed = options_.audit_failed && options_.audit_failed();
  if (audit_failed && !audit_failure_reported_) {
    pb::Event event;
    event.set_kind(pb::EVENT_AUDIT_WRITE_FAILURE);
    event.set_error_code(static_cast<int32_t>(ErrorCode::kAuditNotDurable));
    event.set_detail(
        "the audit log failed a write and refuses appends until it has reopened itself (fix the "
        "cause: free the disk)");
    COFFER_RETURN_IF_ERROR(options_.log->Append({std::move(event)}).status());
    audit_failure_reported_ = true;
  }
  if (!audit_failed) audit_failure_reported_ = false;  // reopened: a new failure is new news
  if (!options_.hsm_probe) return absl::OkStatus();
  const auto now = std::chrono::steady_clock::now();
  const bool requested = hsm_check_requested_.exchange(false);
  if (!requested && now < next_hsm_check_) return absl::OkStatus();
  next_hsm_check_ = now + options_.hsm_check_interval;
  absl::Status probe = options_.hsm_probe();
  COFFER_ASSIGN_OR_RETURN(std::optional<std::string> down_row,
                          options_.log->GetRow(kMetaTable, kHsmDownKey));
  const bool was_down = down_row.value_or(std::string()) == "1";
  if (probe.ok() == !was_down) return absl::OkStatus();  // no change
  pb::Event event;
  event.set_kind(probe.ok() ? pb::EVENT_HSM_AVAILABLE : pb::EVENT_HSM_UNAVAILABLE);
  if (!probe.ok()) {
    event.set_error_code(static_cast<int32_t>(ErrorCodeOf(probe)));
    event.set_detail("the HSM did not answer a health check");
  } else {
    event.set_detail("the HSM answers again");
  }
  return options_.log
      ->Append({std::move(event)},
               {Row{std::string(kMetaTable), std::string(kHsmDownKey), probe.ok() ? "0" : "1"}})
      .status();
}

}  // namespace coffer::events
