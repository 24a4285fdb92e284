#include "kms/keyctl/commands.h"

#include <pwd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <deque>
#include <fstream>
#include <iostream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/verifier.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

void PrintJson(CommandContext& ctx, const nlohmann::json& json) {
  ctx.out() << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

namespace {

constexpr std::chrono::milliseconds kTerminalPollInterval{500};
constexpr std::chrono::milliseconds kPlainPollInterval{1'000};
constexpr int64_t kPlainLineEveryMicros = 5'000'000;

void PrintPolicy(CommandContext& ctx, const pb::Policy& policy) {
  Table table({"policy", "value"});
  table.AddRow({"records rotation", FormatDurationOrNone(policy.records_rotation_seconds())});
  table.AddRow(
      {"attachments rotation", FormatDurationOrNone(policy.attachments_rotation_seconds())});
  table.AddRow({"usage limit", std::to_string(policy.usage_limit())});
  table.AddRow({"bin days", std::to_string(policy.bin_days())});
  table.AddRow({"retention (max age)", FormatDurationOrNone(policy.retention_max_age_seconds())});
  table.AddRow({"minimum retention", FormatDurationOrNone(policy.minimum_retention_seconds())});
  table.AddRow({"destruction wait", FormatDurationOrNone(policy.destruction_wait_seconds())});
  table.AddRow({"auto-destroy after disabled",
                policy.has_auto_destroy_after_disabled_seconds()
                    ? FormatDurationOrNone(policy.auto_destroy_after_disabled_seconds())
                    : "none"});
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
  table.AddRow({"created", FormatTimeWithAge(info.created_micros(), now)});
  if (info.state() == pb::DATASET_PENDING_DESTRUCTION) {
    table.AddRow({"destruction due", FormatTimeWithAge(info.destruction_due_micros(), now)});
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

// A bar's cells for `done` of `total` (empty while the total is unknown), then a space.
std::string BarCells(uint64_t done, uint64_t total) {
  constexpr uint64_t kWidth = 30;
  const uint64_t filled = total > 0 ? std::min(done, total) * kWidth / total : 0;
  return absl::StrCat("[", std::string(filled, '#'), std::string(kWidth - filled, '.'), "] ");
}

std::string JobBarCells(const pb::JobStatus& job) {
  return job.state() == pb::JOB_DONE ? BarCells(1, 1) : BarCells(job.done(), job.total());
}

// Shows one operation's progress on `out`: on a terminal a bar redrawn in place (ended with a
// newline when the printer goes); otherwise a plain line for the first report and each
// milestone, and at most one every kPlainLineEveryMicros in between.
class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream& out, bool terminal) : out_(out), terminal_(terminal) {}
  ProgressPrinter(const ProgressPrinter&) = delete;
  ProgressPrinter& operator=(const ProgressPrinter&) = delete;
  ~ProgressPrinter() {
    if (bar_open_) out_ << '\n' << std::flush;
  }

  void Show(const std::string& bar_cells, const std::string& line, bool milestone) {
    if (terminal_) {
      out_ << "\r\033[K" << bar_cells << line << std::flush;
      bar_open_ = true;
      return;
    }
    const int64_t now = NowMicros();
    if (milestone || last_line_ == 0 || now - last_line_ >= kPlainLineEveryMicros) {
      out_ << line << '\n' << std::flush;
      last_line_ = now;
    }
  }

 private:
  std::ostream& out_;
  const bool terminal_;
  bool bar_open_ = false;
  int64_t last_line_ = 0;
};

// Units of an OperationProgress phase (service.proto): bytes unless named here.
std::string PhaseUnit(const std::string& phase) {
  if (phase == "replay") return "items";
  if (phase == "rotate") return "datasets";
  if (phase == "rewrap") return "versions";
  if (phase == "export") return "items";
  return "";
}

std::string PhaseAmount(const std::string& unit, uint64_t n) {
  return unit.empty() ? FormatBytes(n) : std::to_string(n);
}

std::string OperationProgressLine(const std::string& what, const pb::OperationProgress& p) {
  const std::string unit = PhaseUnit(p.phase());
  std::string line = absl::StrCat(what, ": ", p.phase(), " ", PhaseAmount(unit, p.done()));
  if (p.total() > 0) {
    absl::StrAppend(&line, "/", PhaseAmount(unit, p.total()), " (",
                    std::min<uint64_t>(p.done(), p.total()) * 100 / p.total(), "%)");
  }
  if (!unit.empty()) absl::StrAppend(&line, " ", unit);
  if (unit.empty()) {
    absl::StrAppend(&line, ", ",
                    FormatBytes(static_cast<uint64_t>(std::max(0.0, p.rate_per_second()))), "/s");
  } else {
    absl::StrAppend(&line, absl::StrFormat(", %.1f %s/s", p.rate_per_second(), unit));
  }
  if (p.eta_seconds() > 0) absl::StrAppend(&line, ", ETA ", FormatDuration(p.eta_seconds()));
  return line;
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

namespace {

constexpr absl::string_view kPendingPayload = "type.coffer.dev/coffer.keyctl.PendingPrinted";

std::string UserName() {
  const uid_t uid = ::getuid();
  if (const passwd* pw = ::getpwuid(uid); pw != nullptr) return pw->pw_name;
  return "uid " + std::to_string(uid);
}

// Reads a TOTP code from the terminal on stdin with echo off (TCSANOW: input typed ahead is
// kept); empty when nothing was read.
std::string PromptTotp() {
  std::cerr << "TOTP code for " << UserName() << ": " << std::flush;
  termios old_mode{};
  const bool have_mode = ::tcgetattr(STDIN_FILENO, &old_mode) == 0;
  if (have_mode) {
    termios quiet = old_mode;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  std::getline(std::cin, line);
  if (have_mode) ::tcsetattr(STDIN_FILENO, TCSANOW, &old_mode);
  std::cerr << '\n';
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

void PrintPending(CommandContext& ctx, const pb::ApprovalInfo& info) {
  if (ctx.json()) {
    ctx.out() << nlohmann::json{{"pending", ProtoToJson(info)}}.dump(
                     2, ' ', false, nlohmann::json::error_handler_t::replace)
              << '\n';
    return;
  }
  ctx.out() << "request " << info.id() << " filed: " << info.summary() << "; expires "
            << FormatLocalTime(info.expires_micros())
            << "; a second admin approves it with: keyctl request approve " << info.id()
            << " --totp CODE\n";
}

}  // namespace

bool IsPendingApproval(const absl::Status& status) {
  return status.GetPayload(kPendingPayload).has_value();
}

bool IsTotpCode(const std::string& code) {
  return code.size() == 6 &&
         std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; });
}

absl::StatusOr<pb::Response> CommandContext::Call(pb::Request request) {
  if (client_ == nullptr) {
    COFFER_ASSIGN_OR_RETURN(client_, AdminClient::Connect(socket_path_));
  }
  bool prompted = false;
  while (true) {
    const bool sent_code = !totp_code_.empty();
    pb::Request attempt = request;
    if (sent_code) attempt.set_totp_code(totp_code_);
    pb::ApprovalInfo approval;
    absl::StatusOr<pb::Response> response =
        client_->CallStreaming(std::move(attempt), &approval, on_progress_, on_frame_);
    const ErrorCode code = response.ok() ? ErrorCode::kOk : ErrorCodeOf(response.status());
    // The daemon took (or judged) the code: it is single-use, never send it again.
    if (sent_code) totp_code_.clear();
    if (code == ErrorCode::kApprovalPending) {
      PrintPending(*this, approval);
      absl::Status status = response.status();
      status.SetPayload(kPendingPayload, absl::Cord("1"));
      return status;
    }
    if (code != ErrorCode::kMfaRequired || sent_code) return response;
    // MFA_REQUIRED without a code in the request.
    if (prompted || ::isatty(STDIN_FILENO) != 1) {
      return MakeError(code, std::string(response.status().message()) +
                                 " (pass --totp CODE: the current 6-digit code of your "
                                 "authenticator)");
    }
    std::string typed = PromptTotp();
    prompted = true;
    if (!IsTotpCode(typed)) {
      return MakeError(ErrorCode::kMfaCodeInvalid,
                       "a TOTP code is exactly 6 digits (pass --totp CODE or type it at the "
                       "prompt)");
    }
    totp_code_ = std::move(typed);
  }
}

absl::StatusOr<pb::Response> CommandContext::CallWithProgress(pb::Request request,
                                                              const std::string& what) {
  request.set_progress(true);
  ProgressPrinter printer(progress_, progress_is_terminal_);
  std::string phase;
  on_progress_ = [&](const pb::OperationProgress& p) {
    // Milestones: a phase starts or completes.
    const bool milestone = p.phase() != phase || (p.total() > 0 && p.done() >= p.total());
    phase = p.phase();
    printer.Show(BarCells(p.done(), p.total()), OperationProgressLine(what, p), milestone);
  };
  absl::StatusOr<pb::Response> response = Call(std::move(request));
  on_progress_ = nullptr;
  return response;
}

absl::StatusOr<pb::Response> CommandContext::CallStreaming(pb::Request request,
                                                           const std::string& what,
                                                           AdminClient::FrameCallback on_frame) {
  on_frame_ = std::move(on_frame);
  absl::StatusOr<pb::Response> response = CallWithProgress(std::move(request), what);
  on_frame_ = nullptr;
  return response;
}

std::function<void(const std::string&, uint64_t, uint64_t)> CommandContext::LocalProgress(
    const std::string& what) {
  auto printer = std::make_shared<ProgressPrinter>(progress_, progress_is_terminal_);
  auto phase = std::make_shared<std::string>();
  auto started = std::make_shared<int64_t>(0);
  return
      [printer, phase, started, what](const std::string& now_phase, uint64_t done, uint64_t total) {
        const int64_t now = NowMicros();
        const bool milestone = now_phase != *phase || (total > 0 && done >= total);
        if (now_phase != *phase) {
          *phase = now_phase;
          *started = now;
        }
        pb::OperationProgress p;
        p.set_phase(now_phase);
        p.set_done(done);
        p.set_total(total);
        const double seconds = static_cast<double>(std::max<int64_t>(now - *started, 1)) / 1e6;
        p.set_rate_per_second(static_cast<double>(done) / seconds);
        p.set_eta_seconds(
            total > done && done > 0
                ? static_cast<int64_t>(static_cast<double>(total - done) / p.rate_per_second())
                : -1);
        p.set_elapsed_ms(static_cast<int64_t>(seconds * 1000));
        printer->Show(BarCells(done, total), OperationProgressLine(what, p), milestone);
      };
}

absl::StatusOr<pb::JobStatus> CommandContext::WaitForJob(uint64_t id) {
  if (client_ == nullptr) {
    COFFER_ASSIGN_OR_RETURN(client_, AdminClient::Connect(socket_path_));
  }
  absl::StatusOr<pb::JobStatus> job;
  {
    ProgressPrinter printer(progress_, progress_is_terminal_);
    job = client_->WaitForJob(
        id, progress_is_terminal_ ? kTerminalPollInterval : kPlainPollInterval,
        [&](const pb::JobStatus& status) {
          const bool final = status.state() == pb::JOB_DONE || status.state() == pb::JOB_FAILED;
          printer.Show(JobBarCells(status), ProgressLine(status), final);
        });
  }  // the bar's line ends before anything else is printed
  if (!job.ok()) return job.status();
  if (job->state() == pb::JOB_FAILED) return JobError(*job);
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
    ctx.out() << ", destroyed at " << FormatTimeWithAge(info.destruction_due_micros(), NowMicros())
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
  COFFER_ASSIGN_OR_RETURN(pb::Response response,
                          ctx.CallWithProgress(std::move(request), "key rewrap " + dataset));
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
  COFFER_ASSIGN_OR_RETURN(pb::Response response,
                          ctx.CallWithProgress(std::move(request), "backup create"));
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
  COFFER_RETURN_IF_ERROR(
      ctx.CallWithProgress(std::move(request), "backup verify " + std::to_string(id)).status());
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
  COFFER_RETURN_IF_ERROR(
      ctx.CallWithProgress(std::move(request), "backup restore " + std::to_string(id)).status());
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
  table.AddRow({"started", FormatTimeWithAge(s.started_micros(), now)});
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

// ---- admins, MFA and dual control ---------------------------------------------------------------

namespace {

std::string UidName(uint32_t uid, const std::string& name) {
  return name.empty() ? std::to_string(uid) : absl::StrCat(name, " (", uid, ")");
}

template <typename Admins>
void PrintAdmins(CommandContext& ctx, const Admins& admins) {
  const int64_t now = NowMicros();
  Table table(
      {"UID", "NAME", "ENROLLED", "AGE", "BOOTSTRAP", "LAST CODE", "FAILURES", "LOCKED UNTIL"});
  for (const pb::AdminInfo& a : admins) {
    table.AddRow(
        {std::to_string(a.uid()), a.name().empty() ? "-" : a.name(),
         FormatLocalTime(a.enrolled_micros()), FormatAge(a.enrolled_micros(), now),
         YesNo(a.bootstrap()),
         a.last_code_micros() == 0 ? "never" : FormatTimeWithAge(a.last_code_micros(), now),
         std::to_string(a.failed_codes()),
         a.locked_until_micros() == 0 ? "-" : FormatLocalTime(a.locked_until_micros())});
  }
  table.Print(ctx.out());
}

template <typename Invitations>
void PrintInvitations(CommandContext& ctx, const Invitations& invitations) {
  Table table({"INVITED UID", "BY", "CREATED", "EXPIRES"});
  for (const pb::AdminInvitation& i : invitations) {
    table.AddRow({std::to_string(i.uid()), std::to_string(i.invited_by()),
                  FormatLocalTime(i.created_micros()), FormatLocalTime(i.expires_micros())});
  }
  table.Print(ctx.out());
}

void PrintApprovals(CommandContext& ctx,
                    const google::protobuf::RepeatedPtrField<pb::ApprovalInfo>& requests) {
  Table table({"ID", "STATE", "DATASET", "SUMMARY", "REQUESTER", "CREATED", "EXPIRES", "DECIDED BY",
               "RESULT"});
  for (const pb::ApprovalInfo& r : requests) {
    table.AddRow({std::to_string(r.id()), ApprovalStateName(r.state()),
                  r.dataset().empty() ? "-" : r.dataset(), r.summary(),
                  UidName(r.requester_uid(), r.requester_name()),
                  FormatLocalTime(r.created_micros()), FormatLocalTime(r.expires_micros()),
                  r.decided_micros() == 0 ? "-" : UidName(r.approver_uid(), r.approver_name()),
                  r.has_result() && r.result().code() != 0 ? r.result().code_name() : "-"});
  }
  table.Print(ctx.out());
}

const char* ResultKind(const pb::Response& response) {
  const auto* field =
      pb::Response::descriptor()->FindFieldByNumber(static_cast<int>(response.result_case()));
  return field == nullptr ? "none" : field->name().c_str();
}

// The approved operation's own answer, printed as its command prints it where keyctl knows how.
void PrintOperationResult(CommandContext& ctx, const pb::Response& result) {
  if (result.has_error()) {
    ctx.out() << "operation failed: " << result.error().code_name() << ": "
              << result.error().message() << '\n';
    return;
  }
  ctx.out() << "operation " << ResultKind(result) << ": done\n";
  switch (result.result_case()) {
    case pb::Response::kDatasetLifecycle:
      PrintDataset(ctx, result.dataset_lifecycle());
      break;
    case pb::Response::kPolicySet:
      PrintPolicy(ctx, result.policy_set().policy());
      break;
    case pb::Response::kHoldSet:
      ctx.out() << result.hold_set().name() << ": legal hold "
                << (result.hold_set().legal_hold() ? "set" : "cleared") << '\n';
      break;
    case pb::Response::kAdminEnroll:
      if (result.admin_enroll().has_invitation()) {
        PrintInvitations(ctx, std::vector<pb::AdminInvitation>{result.admin_enroll().invitation()});
      }
      break;
    default:
      ctx.out() << ProtoToJson(result).dump(2, ' ', false, nlohmann::json::error_handler_t::replace)
                << '\n';
      break;
  }
}

}  // namespace

absl::Status AdminEnroll(CommandContext& ctx, std::optional<uint32_t> uid) {
  pb::Request request;
  auto* r = request.mutable_admin_enroll();
  if (uid) r->set_uid(*uid);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AdminEnrollResponse& e = response.admin_enroll();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(e));
    return absl::OkStatus();
  }
  if (!e.otpauth_uri().empty()) {
    ctx.out() << "Add this to your authenticator app NOW; it is shown only this once and "
                 "cannot be shown again:\n\n  "
              << e.otpauth_uri() << "\n\n";
  }
  if (e.has_admin()) PrintAdmins(ctx, std::vector<pb::AdminInfo>{e.admin()});
  if (e.has_invitation()) {
    ctx.out() << "uid " << e.invitation().uid()
              << " is invited: it claims its enrolment with `keyctl admin enroll` before "
              << FormatLocalTime(e.invitation().expires_micros()) << '\n';
  }
  return absl::OkStatus();
}

absl::Status AdminList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_admin_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AdminListResponse& l = response.admin_list();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(l));
    return absl::OkStatus();
  }
  if (!l.mfa_required()) {
    ctx.out() << "MFA: development mode (off): no codes or dual control\n";
  } else {
    ctx.out() << "MFA: required; an accepted code opens a session of "
              << FormatDuration(l.session_seconds()) << '\n';
  }
  PrintAdmins(ctx, l.admins());
  if (l.invitations_size() > 0) {
    ctx.out() << '\n';
    PrintInvitations(ctx, l.invitations());
  }
  return absl::OkStatus();
}

absl::Status AdminRemove(CommandContext& ctx, uint32_t uid) {
  pb::Request request;
  request.mutable_admin_remove()->set_uid(uid);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, {{"removed", uid}});
  } else {
    ctx.out() << "admin " << uid << " removed; its TOTP secret is destroyed\n";
  }
  return absl::OkStatus();
}

absl::Status RequestList(CommandContext& ctx, bool include_closed) {
  pb::Request request;
  request.mutable_approval_list()->set_include_closed(include_closed);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.approval_list()));
    return absl::OkStatus();
  }
  PrintApprovals(ctx, response.approval_list().requests());
  return absl::OkStatus();
}

absl::Status RequestDecide(CommandContext& ctx, uint64_t id, bool approve) {
  pb::Request request;
  request.mutable_approval_decide()->set_id(id);
  request.mutable_approval_decide()->set_approve(approve);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::ApprovalDecideResponse& d = response.approval_decide();
  if (ctx.json()) {
    nlohmann::json json = {{"request", ProtoToJson(d.request())}};
    if (d.has_result()) json["result"] = ProtoToJson(d.result());
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "request " << d.request().id() << " " << ApprovalStateName(d.request().state())
            << ": " << d.request().summary() << '\n';
  if (d.has_result()) PrintOperationResult(ctx, d.result());
  return absl::OkStatus();
}

// ---- key inventory, recycle bin ---------------------------------------------------------------

absl::Status KeyInventory(CommandContext& ctx, const std::string& dataset) {
  pb::Request request;
  request.mutable_key_inventory()->set_dataset(dataset);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::KeyInventoryResponse& inv = response.key_inventory();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(inv));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"KIND", "DATASET", "PURPOSE", "VERSION", "STATE", "CREATED", "ALGORITHM",
               "LOCATION / WRAPPED BY"});
  for (const pb::InventoryKey& k : inv.keys()) {
    std::string where = k.location();
    if (!k.wrapped_by().empty()) where += (where.empty() ? "" : ", ") + k.wrapped_by();
    if (!k.fingerprint().empty())
      where += (where.empty() ? "" : ", ") + ("sha256 " + k.fingerprint());
    if (k.kind() == "admin-totp-secret") where += absl::StrCat(" (uid ", k.admin_uid(), ")");
    table.AddRow(
        {k.kind(), k.dataset().empty() ? "-" : k.dataset(), k.purpose().empty() ? "-" : k.purpose(),
         k.version() == 0 ? "-" : std::to_string(k.version()), k.state().empty() ? "-" : k.state(),
         k.created_micros() == 0 ? "-" : FormatTimeWithAge(k.created_micros(), now),
         k.algorithm().empty() ? "-" : k.algorithm(), where.empty() ? "-" : where});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

namespace {

bool IsPrintableUtf8(const std::string& bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    size_t extra = 0;
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
    } else if ((c & 0xe0) == 0xc0 && c >= 0xc2) {
      extra = 1;
    } else if ((c & 0xf0) == 0xe0) {
      extra = 2;
    } else if ((c & 0xf8) == 0xf0 && c <= 0xf4) {
      extra = 3;
    } else {
      return false;
    }
    if (i + extra >= bytes.size() && extra > 0) return false;
    for (size_t k = 1; k <= extra; ++k) {
      if ((static_cast<unsigned char>(bytes[i + k]) & 0xc0) != 0x80) return false;
    }
    i += extra + 1;
  }
  return !bytes.empty();
}

std::string ShowId(const std::string& id) {
  return IsPrintableUtf8(id) ? id : "hex:" + kms::audit::ToHex(id);
}

absl::StatusOr<std::string> FromHex(const std::string& hex) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string text = hex.substr(0, 4) == "hex:" ? hex.substr(4) : hex;
  if (text.size() % 2 != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "--hex id '" + hex + "' has an odd length");
  }
  std::string bytes;
  for (size_t i = 0; i < text.size(); i += 2) {
    int hi = digit(text[i]), lo = digit(text[i + 1]);
    if (hi < 0 || lo < 0) {
      return MakeError(ErrorCode::kInvalidArgument, "--hex id '" + hex + "' is not hex");
    }
    bytes.push_back(static_cast<char>(hi * 16 + lo));
  }
  return bytes;
}

}  // namespace

absl::Status BinList(CommandContext& ctx, const std::string& dataset, uint32_t limit) {
  std::vector<pb::BinItem> items;
  std::string token;
  bool more = false;
  while (items.size() < limit) {
    pb::Request request;
    auto* r = request.mutable_bin_list();
    r->set_dataset(dataset);
    r->set_page_token(token);
    r->set_max_items(std::min<uint32_t>(limit - static_cast<uint32_t>(items.size()), 10'000));
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    for (const pb::BinItem& item : response.bin_list().items()) {
      if (items.size() < limit) items.push_back(item);
    }
    token = response.bin_list().next_page_token();
    if (token.empty() || response.bin_list().items_size() == 0) break;
  }
  more = !token.empty();
  if (ctx.json()) {
    nlohmann::json array = nlohmann::json::array();
    for (const pb::BinItem& item : items) {
      nlohmann::json j = ProtoToJson(item);
      j["id_text"] = ShowId(item.id());
      array.push_back(std::move(j));
    }
    PrintJson(ctx, {{"dataset", dataset}, {"items", std::move(array)}, {"more", more}});
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"KIND", "ID", "DELETED", "PURGE AFTER"});
  for (const pb::BinItem& item : items) {
    table.AddRow(
        {item.kind() == pb::BinItem::RECORD ? "record" : "attachment", ShowId(item.id()),
         FormatTimeWithAge(item.deleted_micros(), now),
         item.purge_after_micros() == 0 ? "held" : FormatLocalTime(item.purge_after_micros())});
  }
  table.Print(ctx.out());
  if (more) ctx.out() << "(more items: raise --limit)\n";
  return absl::OkStatus();
}

absl::Status BinRestore(CommandContext& ctx, const std::string& dataset,
                        const std::optional<std::string>& record_id,
                        const std::optional<std::string>& attachment_name, bool hex) {
  pb::Request request;
  std::string id = record_id ? *record_id : *attachment_name;
  if (hex) {
    COFFER_ASSIGN_OR_RETURN(id, FromHex(id));
  }
  if (record_id) {
    request.mutable_record_restore()->set_dataset(dataset);
    request.mutable_record_restore()->set_id(id);
  } else {
    request.mutable_attachment_restore()->set_dataset(dataset);
    request.mutable_attachment_restore()->set_name(id);
  }
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const char* kind = record_id ? "record" : "attachment";
  if (ctx.json()) {
    PrintJson(ctx, {{"restored", {{"dataset", dataset}, {"kind", kind}, {"id", ShowId(id)}}}});
  } else {
    ctx.out() << "restored " << kind << " " << ShowId(id) << " in " << dataset << '\n';
  }
  return absl::OkStatus();
}

absl::Status AuditVerifyOffline(CommandContext& ctx, const std::string& public_key_file,
                                const std::string& audit_directory) {
  std::ifstream in(public_key_file, std::ios::binary);
  if (!in) {
    return MakeError(ErrorCode::kNotFound, "cannot read the audit public key " + public_key_file);
  }
  std::stringstream pem;
  pem << in.rdbuf();
  kms::audit::VerifyOptions options;
  options.public_key_pem = pem.str();
  absl::StatusOr<kms::audit::VerifyReport> report =
      kms::audit::VerifyAuditLog(audit_directory, options);
  if (!report.ok()) {
    return MakeError(ErrorCodeOf(report.status()), "cannot verify the audit log in " +
                                                       audit_directory + ": " +
                                                       std::string(report.status().message()));
  }
  if (!report->ok()) {
    absl::Status status = report->ToStatus();
    return MakeError(ErrorCodeOf(status),
                     "audit log in " + audit_directory +
                         " failed verification: " + std::string(status.message()));
  }
  if (ctx.json()) {
    nlohmann::json json = {{"verified", true},
                           {"directory", audit_directory},
                           {"entries", report->entries},
                           {"checkpoints", report->checkpoints_verified},
                           {"closed_cleanly", report->closed_cleanly},
                           {"warnings", report->warnings}};
    json["last_sequence"] =
        report->last_sequence ? nlohmann::json(*report->last_sequence) : nlohmann::json(nullptr);
    json["uncovered_from"] =
        report->uncovered_from ? nlohmann::json(*report->uncovered_from) : nlohmann::json(nullptr);
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "audit log " << audit_directory << " verified offline: " << report->entries
            << " entries, " << report->checkpoints_verified << " signed checkpoints, last sequence "
            << (report->last_sequence ? std::to_string(*report->last_sequence) : "-") << '\n';
  if (report->uncovered_from) {
    ctx.out() << "warning: entries from " << *report->uncovered_from
              << " on are not yet covered by a signed checkpoint\n";
  }
  for (const std::string& w : report->warnings) ctx.out() << "warning: " << w << '\n';
  return absl::OkStatus();
}

}  // namespace coffer::keyctl
