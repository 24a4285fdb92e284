// keyctl's commands: each builds one or more coffer.v1 admin requests, sends them through an
// AdminClient and prints the result — aligned tables with local times and ages for people, or
// with --json one JSON document (format.h, ProtoToJson) on stdout. docs/keyctl.md lists them.
//
// A command returns OK after printing its result, or the failure (crypto/base/status.h codes)
// without printing it: the caller prints the one-line error and picks the exit code (ExitCodeFor).
//
// Thread safety: none; a CommandContext belongs to the one thread running keyctl. It connects to
// the admin socket on the first request, so usage errors never need a daemon.

#ifndef COFFER_KMS_KEYCTL_COMMANDS_H_
#define COFFER_KMS_KEYCTL_COMMANDS_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

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

// What `keyctl audit search` filters on (AuditQueryRequest) and how many entries it prints.
struct AuditFilter {
  int64_t since_micros = 0;
  int64_t until_micros = 0;
  std::string dataset;
  std::optional<uint32_t> caller_uid;
  uint32_t limit = 100;
};

absl::Status DatasetCreate(CommandContext& ctx, const std::string& name,
                           const coffer::v1::Policy& policy);
absl::Status DatasetList(CommandContext& ctx);
absl::Status DatasetDescribe(CommandContext& ctx, const std::string& name);
absl::Status DatasetLifecycle(CommandContext& ctx, const std::string& name,
                              coffer::v1::DatasetLifecycleRequest::Action action);

absl::Status KeyRotate(CommandContext& ctx, const std::string& dataset,
                       const std::vector<coffer::v1::Purpose>& purposes, bool emergency);
absl::Status KeyVersions(CommandContext& ctx, const std::string& dataset);
absl::Status KeyRetire(CommandContext& ctx, const std::string& dataset, coffer::v1::Purpose purpose,
                       uint32_t below);
absl::Status KeyRewrap(CommandContext& ctx, const std::string& dataset, const std::string& module,
                       bool destroy_old);

absl::Status PolicySet(CommandContext& ctx, const std::string& dataset,
                       const coffer::v1::Policy& policy);
absl::Status HoldSet(CommandContext& ctx, const std::string& dataset, bool hold);
// Neither given: empties the dataset's recycle bin.
absl::Status BinPurge(CommandContext& ctx, const std::string& dataset,
                      const std::optional<std::string>& record_id,
                      const std::optional<std::string>& attachment_name);

// Starts a re-encryption or scrub job; with `wait`, follows it to its end.
absl::Status JobStart(CommandContext& ctx, coffer::v1::JobKind kind, const std::string& dataset,
                      uint32_t max_items_per_second, bool wait);
// id 0: every job the daemon knows.
absl::Status JobStatus(CommandContext& ctx, uint64_t id);
absl::Status JobWait(CommandContext& ctx, uint64_t id);

absl::Status BackupCreate(CommandContext& ctx);
absl::Status BackupList(CommandContext& ctx);
absl::Status BackupVerify(CommandContext& ctx, uint32_t id);
absl::Status BackupRestore(CommandContext& ctx, uint32_t id, const std::string& target_directory);
absl::Status BackupPrune(CommandContext& ctx);

// The newest `limit` entries of the whole log.
absl::Status AuditShow(CommandContext& ctx, uint32_t limit);
absl::Status AuditSearch(CommandContext& ctx, const AuditFilter& filter);
absl::Status AuditVerify(CommandContext& ctx);

absl::Status DaemonStatus(CommandContext& ctx);

// Admins, MFA and dual control (control.proto).
// uid unset: claim the caller's own enrolment (prints the otpauth:// URI once); set: invite it.
absl::Status AdminEnroll(CommandContext& ctx, std::optional<uint32_t> uid);
absl::Status AdminList(CommandContext& ctx);
absl::Status AdminRemove(CommandContext& ctx, uint32_t uid);
absl::Status RequestList(CommandContext& ctx, bool include_closed);
absl::Status RequestDecide(CommandContext& ctx, uint64_t id, bool approve);

absl::Status KeyInventory(CommandContext& ctx, const std::string& dataset);
// Pages through the recycle bin up to `limit` items.
absl::Status BinList(CommandContext& ctx, const std::string& dataset, uint32_t limit);
// Restores one record or attachment from the bin; `hex`: the id is given in hex.
absl::Status BinRestore(CommandContext& ctx, const std::string& dataset,
                        const std::optional<std::string>& record_id,
                        const std::optional<std::string>& attachment_name, bool hex);

// Verifies an audit log directory locally with kms/audit's offline verifier (no daemon).
absl::Status AuditVerifyOffline(CommandContext& ctx, const std::string& public_key_file,
                                const std::string& audit_directory);

// Deletion receipts (receipt_commands.cc). ReceiptGet fetches a destroyed dataset's receipt by
// the name it had (or `handle` when set) and writes it to `out_file` (atomically, mode 0644) or
// prints it. ReceiptVerify checks a receipt file offline with the token's public key (PEM) and,
// when `name` is not empty, that the receipt is for that name; RECEIPT_INVALID otherwise.
absl::Status ReceiptGet(CommandContext& ctx, const std::string& name,
                        std::optional<uint64_t> handle, const std::string& out_file);
absl::Status ReceiptVerify(CommandContext& ctx, const std::string& receipt_file,
                           const std::string& public_key_file, const std::string& name);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_COMMANDS_H_
