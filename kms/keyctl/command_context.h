// What keyctl's commands run with: the connection to the admin socket, the output stream and the
// progress display. A command (dataset_commands.h, key_commands.h, ... one file a domain) builds
// one or more coffer.v1 admin requests, sends them through its CommandContext and prints the
// result — aligned tables with local times and ages for people, or with --json one JSON document
// (output.h, ProtoToJson) on stdout. docs/keyctl.md lists them.
//
// A command returns OK after printing its result, or the failure (crypto/base/status.h codes)
// without printing it: the caller prints the one-line error and picks the exit code (ExitCodeFor).
//
// Thread safety: none; a CommandContext belongs to the one thread running keyctl. It connects to
// the admin socket on the first request, so usage errors never need a daemon.

#ifndef COFFER_KMS_KEYCTL_COMMAND_CONTEXT_H_
#define COFFER_KMS_KEYCTL_COMMAND_CONTEXT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"

namespace coffer::keyctl {

class CommandContext {
 public:
  // `progress` receives job progress (a bar when `progress_is_terminal`, else periodic lines).
  CommandContext(std::string socket_path, bool json, std::ostream& out, std::ostream& progress,
                 bool progress_is_terminal);

  // Sends `request`. The --totp code goes on the first request sent (a code is single-use: once
  // the daemon took it the uid has an MFA session and later requests go without). MFA_REQUIRED
  // with stdin a terminal prompts for a code (echo off) and retries once; otherwise it becomes
  // a one-line error telling to pass --totp. APPROVAL_PENDING prints the filed request (text or
  // {"pending": ...}) before returning the error (the caller exits 5 without printing it again).
  absl::StatusOr<coffer::v1::Response> Call(coffer::v1::Request request);
  // Call for a long operation (key_rewrap, backup_create/verify/restore): asks the daemon for
  // progress frames and shows them as `what`'s progress (a bar with rate and ETA on a terminal,
  // else a line per phase and every few seconds).
  absl::StatusOr<coffer::v1::Response> CallWithProgress(coffer::v1::Request request,
                                                        const std::string& what);
  // CallWithProgress for an operation answering with several result frames (dataset_export):
  // each result frame goes to `on_frame` (AdminClient::CallStreaming).
  absl::StatusOr<coffer::v1::Response> CallStreaming(coffer::v1::Request request,
                                                     const std::string& what,
                                                     AdminClient::FrameCallback on_frame);
  // Shows local work (keyctl export open) as CallWithProgress shows the daemon's: call the
  // returned function with each phase's done/total bytes; the display ends with it.
  std::function<void(const std::string& phase, uint64_t done, uint64_t total)> LocalProgress(
      const std::string& what);
  bool progress_is_terminal() const { return progress_is_terminal_; }
  void set_totp_code(std::string code) { totp_code_ = std::move(code); }
  // Polls job `id` to its end, showing progress; FAILED jobs become their error.
  absl::StatusOr<coffer::v1::JobStatus> WaitForJob(uint64_t id);

  bool json() const { return json_; }
  std::ostream& out() { return out_; }

 private:
  std::string socket_path_;
  bool json_;
  std::ostream& out_;
  std::ostream& progress_;
  bool progress_is_terminal_;
  std::unique_ptr<AdminClient> client_;
  AdminClient::ProgressCallback on_progress_;  // set during CallWithProgress
  AdminClient::FrameCallback on_frame_;        // set during CallStreaming
  std::string totp_code_;                      // never printed; cleared once the daemon took it
};

// Prints `json` to ctx.out(), indented (the --json form of every command).
void PrintJson(CommandContext& ctx, const nlohmann::json& json);

// True for the error that Call already printed (a request filed for approval).
bool IsPendingApproval(const absl::Status& status);
// A --totp value: exactly 6 ASCII digits.
bool IsTotpCode(const std::string& code);

// The one-line progress of job `job`: "job 7 reencrypt crm: RUNNING, 40/100 (40%), 12.5 items/s,
// ETA 5s" (WaitForJob shows it; `reencrypt wait` prints the last one).
std::string JobProgressLine(const coffer::v1::JobStatus& job);
// The error of a JOB_FAILED job: its code, and "job 7 (reencrypt) failed: MESSAGE".
absl::Status JobError(const coffer::v1::JobStatus& job);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_COMMAND_CONTEXT_H_
