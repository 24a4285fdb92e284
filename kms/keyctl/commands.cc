#include "kms/keyctl/commands.h"

#include <algorithm>
#include <chrono>
#include <deque>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "crypto/status.h"
#include "kms/keyctl/format.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

constexpr std::chrono::milliseconds kTerminalPollInterval{500};
constexpr std::chrono::milliseconds kPlainPollInterval{1'000};
constexpr int64_t kPlainLineEveryMicros = 5'000'000;

void PrintJson(CommandContext& ctx, const nlohmann::json& json) {
  ctx.out() << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

std::string YesNo(bool value) { return value ? "yes" : "no"; }

std::string TimeWithAge(int64_t micros, int64_t now) {
  if (micros == 0) return "-";
  return FormatLocalTime(micros) + " (" + FormatAge(micros, now) + ")";
}

std::string DurationOrNone(int64_t seconds) {
  return seconds == 0 ? "none" : FormatDuration(seconds);
}

void PrintPolicy(CommandContext& ctx, const pb::Policy& policy) {
  Table table({"policy", "value"});
  table.AddRow({"records rotation", DurationOrNone(policy.records_rotation_seconds())});
  table.AddRow({"attachments rotation", DurationOrNone(policy.attachments_rotation_seconds())});
  table.AddRow({"usage limit", std::to_string(policy.usage_limit())});
  table.AddRow({"bin days", std::to_string(policy.bin_days())});
  table.AddRow({"retention (max age)", DurationOrNone(policy.retention_max_age_seconds())});
  table.AddRow({"minimum retention", DurationOrNone(policy.minimum_retention_seconds())});
  table.AddRow({"destruction wait", DurationOrNone(policy.destruction_wait_seconds())});
  table.Print(ctx.out());
}

void PrintVersions(CommandContext& ctx, const pb::DatasetInfo& info) {
  const int64_t now = NowMicros();
  Table table({"PURPOSE", "VERSION", "STATE", "CREATED", "AGE", "ENCRYPTIONS", "MODULE", "DWK"});
  for (const pb::KeyVersion& v : info.versions()) {
    table.AddRow({PurposeName(v.purpose()), std::to_string(v.version()), KeyStateName(v.state()),
                  FormatLocalTime(v.created_micros()), FormatAge(v.created_micros(), now),
                  std::to_string(v.encryptions()),
                  v.wrapping_module().empty() ? "-" : v.wrapping_module(),
                  std::to_string(v.wrapping_version())});
  }
  table.Print(ctx.out());
}

void PrintDataset(CommandContext& ctx, const pb::DatasetInfo& info) {
  const int64_t now = NowMicros();
  Table table({"dataset", info.name()});
  table.AddRow({"state", DatasetStateName(info.state())});
  table.AddRow({"legal hold", YesNo(info.legal_hold())});
  table.AddRow({"created", TimeWithAge(info.created_micros(), now)});
  if (info.state() == pb::DATASET_PENDING_DESTRUCTION) {
    table.AddRow({"destruction due", TimeWithAge(info.destruction_due_micros(), now)});
  }
  table.AddRow({"records", std::to_string(info.records())});
  table.AddRow({"attachments", std::to_string(info.attachments())});
  table.AddRow({"recycle bin items", std::to_string(info.recycle_bin_items())});
  table.Print(ctx.out());
  ctx.out() << '\n';
  PrintPolicy(ctx, info.policy());
  if (info.versions_size() > 0) {
    ctx.out() << '\n';
    PrintVersions(ctx, info);
  }
}

void PrintJobs(CommandContext& ctx, const google::protobuf::RepeatedPtrField<pb::JobStatus>& jobs) {
  const int64_t now = NowMicros();
  Table table({"ID", "KIND", "STATE", "DATASET", "PROGRESS", "RATE/S", "ETA", "STARTED", "NEXT"});
  for (const pb::JobStatus& job : jobs) {
    std::string progress = job.total() > 0
                               ? std::to_string(job.done()) + "/" + std::to_string(job.total())
                               : std::to_string(job.done());
    std::string rate = absl::StrFormat("%.1f", job.rate_per_second());
    std::string kind = job.name().empty() ? JobKindName(job.kind()) : job.name();
    std::string state = JobStateName(job.state());
    if (job.state() == pb::JOB_FAILED && job.has_error()) state += ": " + job.error().code_name();
    table.AddRow({std::to_string(job.id()), kind, state,
                  job.dataset().empty() ? "-" : job.dataset(), progress, rate,
                  job.eta_seconds() < 0 ? "-" : FormatDuration(job.eta_seconds()),
                  FormatAge(job.started_micros(), now), FormatAge(job.next_run_micros(), now)});
  }
  table.Print(ctx.out());
}

void PrintAudit(CommandContext& ctx, const std::vector<pb::AuditRecord>& entries) {
  Table table({"SEQ", "TIME", "KIND", "UID", "PID", "SOCKET", "DATASET", "PURPOSE", "VERSION",
               "RESULT", "COUNT", "DETAIL"});
  for (const pb::AuditRecord& e : entries) {
    std::string dataset = !e.dataset().empty()      ? e.dataset()
                          : e.dataset_handle() != 0 ? absl::StrCat("#", e.dataset_handle())
                                                    : "-";
    std::string result = e.result_code() == 0
                             ? "OK"
                             : std::string(ErrorCodeName(static_cast<ErrorCode>(e.result_code())));
    table.AddRow({std::to_string(e.sequence()), FormatLocalTime(e.time_micros()), e.kind(),
                  std::to_string(e.uid()), std::to_string(e.pid()),
                  e.socket().empty() ? "-" : e.socket(), dataset,
                  e.purpose() == pb::PURPOSE_UNSPECIFIED ? "-" : PurposeName(e.purpose()),
                  e.key_version() == 0 ? "-" : std::to_string(e.key_version()), result,
                  std::to_string(e.record_count()), e.detail().empty() ? "-" : e.detail()});
  }
  table.Print(ctx.out());
}

void PrintAuditJson(CommandContext& ctx, const std::vector<pb::AuditRecord>& entries, bool more) {
  nlohmann::json array = nlohmann::json::array();
  for (const pb::AuditRecord& e : entries) array.push_back(ProtoToJson(e));
  PrintJson(ctx, {{"entries", std::move(array)}, {"more", more}});
}

std::string ProgressLine(const pb::JobStatus& job) {
  std::string line = absl::StrCat("job ", job.id(), " ", JobKindName(job.kind()));
  if (!job.dataset().empty()) absl::StrAppend(&line, " ", job.dataset());
  absl::StrAppend(&line, ": ", JobStateName(job.state()), ", ", job.done());
  if (job.total() > 0) {
    absl::StrAppend(&line, "/", job.total(), " (", job.done() * 100 / job.total(), "%)");
  }
  absl::StrAppend(&line, absl::StrFormat(", %.1f items/s", job.rate_per_second()));
  if (job.eta_seconds() >= 0 && job.state() == pb::JOB_RUNNING) {
    absl::StrAppend(&line, ", ETA ", FormatDuration(job.eta_seconds()));
  }
  return line;
}

std::string ProgressBar(const pb::JobStatus& job) {
  constexpr int kWidth = 30;
  int filled = job.total() > 0 ? static_cast<int>(job.done() * kWidth / job.total()) : 0;
  if (job.state() == pb::JOB_DONE) filled = kWidth;
  filled = std::clamp(filled, 0, kWidth);
  return absl::StrCat("[", std::string(static_cast<size_t>(filled), '#'),
                      std::string(static_cast<size_t>(kWidth - filled), '.'), "] ",
                      ProgressLine(job));
}

absl::Status JobError(const pb::JobStatus& job) {
  std::string what = "job " + std::to_string(job.id()) + " (" + JobKindName(job.kind()) +
                     ") failed: " + job.error().message();
  return MakeError(
      static_cast<ErrorCode>(job.error().code() != 0 ? job.error().code()
                                                     : static_cast<int>(ErrorCode::kInternal)),
      what);
}

void PrintJobResult(CommandContext& ctx, const pb::JobStatus& job) {
  if (ctx.json()) return PrintJson(ctx, ProtoToJson(job));
  ctx.out() << ProgressLine(job) << '\n';
  if (job.kind() == pb::JOB_SCRUB) {
    ctx.out() << "items that failed authentication: " << job.failures() << '\n';
  }
  if (job.version_counts_size() > 0) {
    Table table({"PURPOSE", "VERSION", "ITEMS"});
    for (const pb::VersionCount& c : job.version_counts()) {
      table.AddRow(
          {PurposeName(c.purpose()), std::to_string(c.version()), std::to_string(c.items())});
    }
    table.Print(ctx.out());
  }
}

}  // namespace

CommandContext::CommandContext(std::string socket_path, bool json, std::ostream& out,
                               std::ostream& progress, bool progress_is_terminal)
    : socket_path_(std::move(socket_path)),
      json_(json),
      out_(out),
      progress_(progress),
      progress_is_terminal_(progress_is_terminal) {}

absl::StatusOr<pb::Response> CommandContext::Call(pb::Request request) {
  if (client_ == nullptr) {
    COFFER_ASSIGN_OR_RETURN(client_, AdminClient::Connect(socket_path_));
  }
  return client_->Call(std::move(request));
}

absl::StatusOr<pb::JobStatus> CommandContext::WaitForJob(uint64_t id) {
  if (client_ == nullptr) {
    COFFER_ASSIGN_OR_RETURN(client_, AdminClient::Connect(socket_path_));
  }
  int64_t last_line = 0;
  auto show = [&](const pb::JobStatus& job) {
    bool final = job.state() == pb::JOB_DONE || job.state() == pb::JOB_FAILED;
    if (progress_is_terminal_) {
      progress_ << "\r\033[K" << ProgressBar(job) << (final ? "\n" : "") << std::flush;
      return;
    }
    int64_t now = NowMicros();
    if (final || last_line == 0 || now - last_line >= kPlainLineEveryMicros) {
      progress_ << ProgressLine(job) << '\n' << std::flush;
      last_line = now;
    }
  };
  COFFER_ASSIGN_OR_RETURN(
      pb::JobStatus job,
      client_->WaitForJob(id, progress_is_terminal_ ? kTerminalPollInterval : kPlainPollInterval,
                          show));
  if (job.state() == pb::JOB_FAILED) return JobError(job);
  return job;
}

// ---- datasets ---------------------------------------------------------------------------------

absl::Status DatasetCreate(CommandContext& ctx, const std::string& name, const pb::Policy& policy) {
  pb::Request request;
  request.mutable_dataset_create()->set_name(name);
  *request.mutable_dataset_create()->mutable_policy() = policy;
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_create()));
  } else {
    ctx.out() << "created dataset " << name << "\n\n";
    PrintDataset(ctx, response.dataset_create());
  }
  return absl::OkStatus();
}

absl::Status DatasetList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_dataset_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_list()));
    return absl::OkStatus();
  }
  // The list carries names, states and holds; policies, times, versions and counts are in
  // `dataset describe`.
  Table table({"NAME", "STATE", "LEGAL HOLD"});
  for (const pb::DatasetInfo& d : response.dataset_list().datasets()) {
    table.AddRow({d.name(), DatasetStateName(d.state()), YesNo(d.legal_hold())});
  }
  if (table.rows() == 1) {
    ctx.out() << "no datasets (create one with: keyctl dataset create NAME)\n";
  } else {
    table.Print(ctx.out());
  }
  return absl::OkStatus();
}

absl::Status DatasetDescribe(CommandContext& ctx, const std::string& name) {
  pb::Request request;
  request.mutable_dataset_describe()->set_name(name);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_describe()));
  } else {
    PrintDataset(ctx, response.dataset_describe());
  }
  return absl::OkStatus();
}

absl::Status DatasetLifecycle(CommandContext& ctx, const std::string& name,
                              pb::DatasetLifecycleRequest::Action action) {
  pb::Request request;
  request.mutable_dataset_lifecycle()->set_name(name);
  request.mutable_dataset_lifecycle()->set_action(action);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::DatasetInfo& info = response.dataset_lifecycle();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(info));
    return absl::OkStatus();
  }
  ctx.out() << name << ": " << DatasetStateName(info.state());
  if (info.state() == pb::DATASET_PENDING_DESTRUCTION) {
    ctx.out() << ", destroyed at " << TimeWithAge(info.destruction_due_micros(), NowMicros())
              << " unless cancelled (keyctl dataset cancel-destroy " << name << ")";
  }
  ctx.out() << '\n';
  return absl::OkStatus();
}

// ---- keys -------------------------------------------------------------------------------------

absl::Status KeyRotate(CommandContext& ctx, const std::string& dataset,
                       const std::vector<pb::Purpose>& purposes, bool emergency) {
  pb::Request request;
  auto* r = request.mutable_key_rotate();
  r->set_dataset(dataset);
  for (pb::Purpose p : purposes) r->add_purposes(p);
  r->set_emergency(emergency);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.key_rotate()));
    return absl::OkStatus();
  }
  ctx.out() << (emergency ? "emergency rotation of " : "rotated ") << dataset
            << "; new primary versions:\n";
  Table table({"PURPOSE", "VERSION", "MODULE", "DWK"});
  for (const pb::KeyVersion& v : response.key_rotate().new_primaries()) {
    table.AddRow({PurposeName(v.purpose()), std::to_string(v.version()), v.wrapping_module(),
                  std::to_string(v.wrapping_version())});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

absl::Status KeyVersions(CommandContext& ctx, const std::string& dataset) {
  pb::Request request;
  request.mutable_dataset_describe()->set_name(dataset);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::DatasetInfo& info = response.dataset_describe();
  if (ctx.json()) {
    nlohmann::json versions = nlohmann::json::array();
    for (const pb::KeyVersion& v : info.versions()) versions.push_back(ProtoToJson(v));
    PrintJson(ctx, {{"dataset", info.name()}, {"versions", std::move(versions)}});
  } else {
    PrintVersions(ctx, info);
  }
  return absl::OkStatus();
}

absl::Status KeyRetire(CommandContext& ctx, const std::string& dataset, pb::Purpose purpose,
                       uint32_t below) {
  pb::Request request;
  auto* r = request.mutable_key_retire();
  r->set_dataset(dataset);
  r->set_purpose(purpose);
  r->set_below(below);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.key_retire()));
    return absl::OkStatus();
  }
  if (response.key_retire().retired_size() == 0) {
    ctx.out() << "no " << PurposeName(purpose) << " version below " << below
              << " was left to retire\n";
    return absl::OkStatus();
  }
  ctx.out() << "retired " << PurposeName(purpose) << " versions:";
  for (uint32_t v : response.key_retire().retired()) ctx.out() << ' ' << v;
  ctx.out() << '\n';
  return absl::OkStatus();
}

absl::Status KeyRewrap(CommandContext& ctx, const std::string& dataset, const std::string& module,
                       bool destroy_old) {
  pb::Request request;
  auto* r = request.mutable_key_rewrap();
  r->set_dataset(dataset);
  r->set_module(module);
  r->set_destroy_old(destroy_old);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.key_rewrap()));
    return absl::OkStatus();
  }
  ctx.out() << "re-wrapped every key of " << dataset
            << (destroy_old ? "; old wrapping keys destroyed" : "") << '\n';
  PrintVersions(ctx, response.key_rewrap().dataset());
  return absl::OkStatus();
}

// ---- policies, holds, purges ------------------------------------------------------------------

absl::Status PolicySet(CommandContext& ctx, const std::string& dataset, const pb::Policy& policy) {
  pb::Request request;
  request.mutable_policy_set()->set_dataset(dataset);
  *request.mutable_policy_set()->mutable_policy() = policy;
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.policy_set()));
    return absl::OkStatus();
  }
  ctx.out() << "policy of " << dataset << " now:\n";
  PrintPolicy(ctx, response.policy_set().policy());
  return absl::OkStatus();
}

absl::Status HoldSet(CommandContext& ctx, const std::string& dataset, bool hold) {
  pb::Request request;
  request.mutable_hold_set()->set_dataset(dataset);
  request.mutable_hold_set()->set_hold(hold);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.hold_set()));
  } else {
    ctx.out() << dataset << ": legal hold "
              << (response.hold_set().legal_hold() ? "set" : "cleared") << '\n';
  }
  return absl::OkStatus();
}

absl::Status BinPurge(CommandContext& ctx, const std::string& dataset,
                      const std::optional<std::string>& record_id,
                      const std::optional<std::string>& attachment_name) {
  pb::Request request;
  auto* r = request.mutable_purge();
  r->set_dataset(dataset);
  if (record_id) r->set_record_id(*record_id);
  if (attachment_name) r->set_attachment_name(*attachment_name);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.purge()));
  } else {
    ctx.out() << "purged from " << dataset << ": " << response.purge().records() << " record(s), "
              << response.purge().attachments() << " attachment(s)\n";
  }
  return absl::OkStatus();
}

// ---- jobs -------------------------------------------------------------------------------------

absl::Status JobStart(CommandContext& ctx, pb::JobKind kind, const std::string& dataset,
                      uint32_t max_items_per_second, bool wait) {
  pb::Request request;
  auto* r = request.mutable_job_start();
  r->set_kind(kind);
  r->set_dataset(dataset);
  r->set_max_items_per_second(max_items_per_second);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::JobStatus& started = response.job_start();
  if (wait) {
    COFFER_ASSIGN_OR_RETURN(pb::JobStatus done, ctx.WaitForJob(started.id()));
    PrintJobResult(ctx, done);
    return absl::OkStatus();
  }
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(started));
  } else {
    ctx.out() << "started " << JobKindName(kind) << " job " << started.id()
              << (dataset.empty() ? "" : " on " + dataset)
              << "; follow it with: keyctl reencrypt wait " << started.id() << '\n';
  }
  return absl::OkStatus();
}

absl::Status JobStatus(CommandContext& ctx, uint64_t id) {
  pb::Request request;
  request.mutable_job_status()->set_id(id);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.job_status()));
  } else {
    PrintJobs(ctx, response.job_status().jobs());
  }
  return absl::OkStatus();
}

absl::Status JobWait(CommandContext& ctx, uint64_t id) {
  COFFER_ASSIGN_OR_RETURN(pb::JobStatus done, ctx.WaitForJob(id));
  PrintJobResult(ctx, done);
  return absl::OkStatus();
}

// ---- backups ----------------------------------------------------------------------------------

absl::Status BackupCreate(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_create();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::BackupInfo& b = response.backup_create();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(b));
  } else {
    ctx.out() << "created backup " << b.id() << " (" << FormatBytes(b.size_bytes())
              << ", audit sequence " << b.audit_sequence() << ")\n";
  }
  return absl::OkStatus();
}

absl::Status BackupList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.backup_list()));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"ID", "CREATED", "AGE", "SIZE", "AUDIT SEQ"});
  for (const pb::BackupInfo& b : response.backup_list().backups()) {
    table.AddRow({std::to_string(b.id()), FormatLocalTime(b.created_micros()),
                  FormatAge(b.created_micros(), now), FormatBytes(b.size_bytes()),
                  std::to_string(b.audit_sequence())});
  }
  if (table.rows() == 1) {
    ctx.out() << "no backups (make one with: keyctl backup create)\n";
  } else {
    table.Print(ctx.out());
  }
  return absl::OkStatus();
}

absl::Status BackupVerify(CommandContext& ctx, uint32_t id) {
  pb::Request request;
  request.mutable_backup_verify()->set_id(id);
  COFFER_RETURN_IF_ERROR(ctx.Call(std::move(request)).status());
  if (ctx.json()) {
    PrintJson(ctx, {{"id", id}, {"verified", true}});
  } else {
    ctx.out() << "backup " << id << " verified\n";
  }
  return absl::OkStatus();
}

absl::Status BackupRestore(CommandContext& ctx, uint32_t id, const std::string& target_directory) {
  pb::Request request;
  request.mutable_backup_restore()->set_id(id);
  request.mutable_backup_restore()->set_target_directory(target_directory);
  COFFER_RETURN_IF_ERROR(ctx.Call(std::move(request)).status());
  if (ctx.json()) {
    PrintJson(ctx, {{"id", id}, {"target_directory", target_directory}, {"restored", true}});
  } else {
    ctx.out() << "restored backup " << id << " into " << target_directory
              << " (start a cofferd on that directory to serve it)\n";
  }
  return absl::OkStatus();
}

absl::Status BackupPrune(CommandContext& ctx) {
  pb::Request request;
  request.mutable_backup_prune();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.backup_prune()));
    return absl::OkStatus();
  }
  ctx.out() << "pruned " << response.backup_prune().deleted_size() << " backup(s)";
  for (uint32_t id : response.backup_prune().deleted()) ctx.out() << ' ' << id;
  ctx.out() << '\n';
  return absl::OkStatus();
}

// ---- audit ------------------------------------------------------------------------------------

absl::Status AuditShow(CommandContext& ctx, uint32_t limit) {
  pb::Request status_request;
  status_request.mutable_status();
  COFFER_ASSIGN_OR_RETURN(pb::Response status, ctx.Call(std::move(status_request)));
  const uint64_t next = status.status().audit_entries();
  // Start just before the newest `limit` entries and page to the end, keeping the last `limit`
  // (the log grows while we read: the status and these queries may be audited).
  uint64_t after = next > limit ? next - limit - 1 : 0;
  std::deque<pb::AuditRecord> newest;
  while (true) {
    pb::Request request;
    request.mutable_audit_query()->set_after_sequence(after);
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    for (const pb::AuditRecord& e : response.audit_query().entries()) {
      newest.push_back(e);
      if (newest.size() > limit) newest.pop_front();
    }
    if (!response.audit_query().more() || response.audit_query().entries_size() == 0) break;
    after = response.audit_query().entries().rbegin()->sequence();
  }
  std::vector<pb::AuditRecord> entries(newest.begin(), newest.end());
  if (ctx.json()) {
    PrintAuditJson(ctx, entries, false);
  } else {
    PrintAudit(ctx, entries);
  }
  return absl::OkStatus();
}

absl::Status AuditSearch(CommandContext& ctx, const AuditFilter& filter) {
  std::vector<pb::AuditRecord> entries;
  uint64_t after = 0;
  bool more = false;
  while (entries.size() < filter.limit) {
    pb::Request request;
    auto* q = request.mutable_audit_query();
    q->set_since_micros(filter.since_micros);
    q->set_until_micros(filter.until_micros);
    q->set_dataset(filter.dataset);
    if (filter.caller_uid) q->set_caller_uid(*filter.caller_uid);
    q->set_after_sequence(after);
    q->set_limit(static_cast<uint32_t>(filter.limit - entries.size()));
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    for (const pb::AuditRecord& e : response.audit_query().entries()) entries.push_back(e);
    more = response.audit_query().more();
    if (!more || response.audit_query().entries_size() == 0) break;
    after = response.audit_query().entries().rbegin()->sequence();
  }
  if (ctx.json()) {
    PrintAuditJson(ctx, entries, more);
    return absl::OkStatus();
  }
  PrintAudit(ctx, entries);
  if (more) {
    ctx.out() << "(more entries match: raise --limit or narrow --since/--until)\n";
  }
  return absl::OkStatus();
}

absl::Status AuditVerify(CommandContext& ctx) {
  pb::Request request;
  request.mutable_audit_verify();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AuditVerifyResponse& v = response.audit_verify();
  if (ctx.json()) {
    nlohmann::json json = ProtoToJson(v);
    json["verified"] = true;
    PrintJson(ctx, json);
  } else {
    ctx.out() << "audit log verified: " << v.entries() << " entries, " << v.checkpoints()
              << " signed checkpoints, last sequence " << v.last_sequence() << '\n';
  }
  return absl::OkStatus();
}

// ---- status -----------------------------------------------------------------------------------

absl::Status DaemonStatus(CommandContext& ctx) {
  pb::Request request;
  request.mutable_status();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::StatusResponse& s = response.status();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(s));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"cofferd", s.version()});
  table.AddRow({"started", TimeWithAge(s.started_micros(), now)});
  table.AddRow({"datasets", std::to_string(s.datasets())});
  table.AddRow({"durability", s.durability()});
  table.AddRow({"data socket", s.data_socket()});
  table.AddRow({"admin socket", s.admin_socket()});
  table.AddRow({"connections open", std::to_string(s.connections_open())});
  table.AddRow({"connections total", std::to_string(s.connections_total())});
  table.AddRow({"requests total", std::to_string(s.requests_total())});
  table.AddRow({"requests refused", std::to_string(s.requests_refused())});
  table.AddRow({"requests slowed", std::to_string(s.requests_slowed())});
  table.AddRow({"audit entries", std::to_string(s.audit_entries())});
  table.Print(ctx.out());
  if (s.jobs_size() > 0) {
    ctx.out() << '\n';
    PrintJobs(ctx, s.jobs());
  }
  return absl::OkStatus();
}

}  // namespace coffer::keyctl
