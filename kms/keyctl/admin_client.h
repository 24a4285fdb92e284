// AdminClient: a small synchronous client for cofferd's admin socket (the coffer.v1 API,
// kms/api/proto, framed as in kms/api/framing.h), used by keyctl.
//
// One connection, one request at a time: Call assigns the next request id, sends the request
// and reads its one response. Before each request it checks whether the daemon closed the idle
// connection (cofferd closes connections idle longer than its idle timeout) and dials again
// if so; a connection that breaks during a request is not retried (an admin operation may not
// be safe to repeat) and the failure is reported.
//
// Thread safety: none; one thread per AdminClient. Ownership: Connect returns a unique_ptr that
// owns the socket; responses are copies the caller owns.
//
// Failures: absl::Status made with coffer::MakeError (crypto/base/status.h), so coffer::ErrorCodeOf
// gives the stable code (docs/errors.md). An error the daemon answers keeps its code and
// message ("cofferd: ..."); failing to reach the daemon is DAEMON_UNAVAILABLE (510) with a
// message naming the socket path and what to check (IsSocketPermissionDenied tells a socket
// the caller may not open apart from a daemon that is not there); a client-side deadline is
// REQUEST_TIMEOUT (505); a response that breaks the protocol (wrong request id, no result or
// the wrong one) is UNEXPECTED_FRAME (508).
//
// Secrets: the client never logs; admin responses carry no key material.

#ifndef COFFER_KMS_KEYCTL_ADMIN_CLIENT_H_
#define COFFER_KMS_KEYCTL_ADMIN_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/api/framing.h"

namespace coffer::keyctl {

struct AdminClientOptions {
  std::chrono::milliseconds connect_timeout{5'000};
  // One request: backups, restores and re-wraps answer when they are done, so this is long.
  std::chrono::milliseconds request_timeout{600'000};
  size_t max_frame_bytes = api::kDefaultMaxFrameBytes;
};

// True when `status` came from a connect that the socket's permissions refused (EACCES/EPERM).
bool IsSocketPermissionDenied(const absl::Status& status);

class AdminClient {
 public:
  // Dials `socket_path` (so a daemon that is not there is reported here).
  static absl::StatusOr<std::unique_ptr<AdminClient>> Connect(std::string socket_path,
                                                              AdminClientOptions options = {});

  AdminClient(const AdminClient&) = delete;
  AdminClient& operator=(const AdminClient&) = delete;
  ~AdminClient();

  using ProgressCallback = std::function<void(const coffer::v1::OperationProgress&)>;

  // Sends `request` (its request_id is overwritten) and returns the daemon's response when it
  // carries no error and a result; otherwise the mapped error.
  // `approval`, when not null, receives Response.approval of an APPROVAL_PENDING answer.
  // With Request.progress set, the daemon's progress frames before the response go to
  // `on_progress` (each frame restarts the request timeout).
  absl::StatusOr<coffer::v1::Response> Call(coffer::v1::Request request,
                                            coffer::v1::ApprovalInfo* approval = nullptr,
                                            const ProgressCallback& on_progress = {});

  // For an operation whose result comes as several frames (dataset_export): `on_frame` gets
  // every result frame and returns true while more follow, false after the last (whose
  // response Call then returns). An error it returns ends the call and closes the connection
  // (the rest of the stream is unread). Each frame restarts the request timeout.
  using FrameCallback = std::function<absl::StatusOr<bool>(const coffer::v1::Response&)>;
  absl::StatusOr<coffer::v1::Response> CallStreaming(coffer::v1::Request request,
                                                     coffer::v1::ApprovalInfo* approval,
                                                     const ProgressCallback& on_progress,
                                                     const FrameCallback& on_frame);

  // Polls job `id` every `interval` until it is DONE or FAILED, calling `on_progress` with each
  // status read (the last one included). Returns the final status; a FAILED job is returned as
  // a status too (its error is in JobStatus.error), only failures to ask are errors.
  absl::StatusOr<coffer::v1::JobStatus> WaitForJob(
      uint64_t id, std::chrono::milliseconds interval,
      const std::function<void(const coffer::v1::JobStatus&)>& on_progress);

  const std::string& socket_path() const { return path_; }

 private:
  AdminClient(std::string path, AdminClientOptions options);
  absl::Status Dial();
  void Close();
  bool LooksClosed() const;

  std::string path_;
  AdminClientOptions options_;
  int fd_ = -1;
  std::unique_ptr<api::FrameReader> reader_;
  uint64_t next_request_id_ = 1;
};

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_ADMIN_CLIENT_H_
