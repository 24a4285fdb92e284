#include "kms/keyctl/command_context.h"

#include <pwd.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "crypto/base/status.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

void PrintJson(CommandContext& ctx, const nlohmann::json& json) {
  ctx.out() << json.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
}

std::string JobProgressLine(const pb::JobStatus& job) {
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

namespace {

constexpr std::chrono::milliseconds kTerminalPollInterval{500};
constexpr std::chrono::milliseconds kPlainPollInterval{1'000};
constexpr int64_t kPlainLineEveryMicros = 5'000'000;

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
  if (ctx.json()) return PrintJson(ctx, {{"pending", ProtoToJson(info)}});
  ctx.out() << "request " << info.id() << " filed: " << info.summary() << "; expires "
            << FormatLocalTime(info.expires_micros())
            << "; a second admin approves it with: keyctl request approve " << info.id()
            << " --totp CODE\n";
}

}  // namespace

absl::Status JobError(const pb::JobStatus& job) {
  std::string what = "job " + std::to_string(job.id()) + " (" + JobKindName(job.kind()) +
                     ") failed: " + job.error().message();
  return MakeError(
      static_cast<ErrorCode>(job.error().code() != 0 ? job.error().code()
                                                     : static_cast<int>(ErrorCode::kInternal)),
      what);
}

CommandContext::CommandContext(std::string socket_path, bool json, std::ostream& out,
                               std::ostream& progress, bool progress_is_terminal)
    : socket_path_(std::move(socket_path)),
      json_(json),
      out_(out),
      progress_(progress),
      progress_is_terminal_(progress_is_terminal) {}

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
          printer.Show(JobBarCells(status), JobProgressLine(status), final);
        });
  }  // the bar's line ends before anything else is printed
  if (!job.ok()) return job.status();
  if (job->state() == pb::JOB_FAILED) return JobError(*job);
  return job;
}

}  // namespace coffer::keyctl
