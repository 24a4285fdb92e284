#include "kms/keyctl/admin_client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <thread>
#include <utility>

#include "absl/strings/cord.h"
#include "crypto/base/status.h"

namespace coffer::keyctl {

using coffer::v1::Request;
using coffer::v1::Response;

namespace {

constexpr absl::string_view kSocketPermissionPayload =
    "type.coffer.dev/coffer.keyctl.SocketPermissionDenied";

api::Deadline DeadlineAfter(std::chrono::milliseconds timeout) {
  return std::chrono::steady_clock::now() + timeout;
}

absl::Status ErrorFromResponse(const coffer::v1::Error& error) {
  auto code = static_cast<ErrorCode>(error.code());
  if (ErrorCodeName(code) == "UNKNOWN" || error.code() <= 0) {
    // A code this keyctl does not know (a newer daemon): keep its number and name readable.
    return MakeError(code, "cofferd: " + error.code_name() + " (" + std::to_string(error.code()) +
                               "): " + error.message());
  }
  return MakeError(code, "cofferd: " + error.message());
}

std::string DialFailureMessage(const std::string& path, int err) {
  std::string head = "cannot connect to cofferd's admin socket " + path + ": ";
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return head +
             "no such socket. Is cofferd running? Pass its admin socket with --socket or "
             "$COFFER_ADMIN_SOCKET (scripts/start prints it)";
    case ECONNREFUSED:
      return head +
             "connection refused: the socket file exists but no cofferd listens on it (start "
             "the daemon again and check its log)";
    case EACCES:
    case EPERM:
      return head +
             "permission denied: this user may not open the admin socket (cofferd sets its "
             "group from admin_socket_group); run keyctl as an admin the configuration lists";
    case EAGAIN:
    case ETIMEDOUT:
    case EINPROGRESS:
      return head + "the daemon did not accept in time (overloaded or stalled)";
    default:
      return head + std::strerror(err);
  }
}

const char* ResultName(Response::ResultCase result) {
  const auto* field = Response::descriptor()->FindFieldByNumber(static_cast<int>(result));
  return field == nullptr ? "none" : field->name().c_str();
}

}  // namespace

bool IsSocketPermissionDenied(const absl::Status& status) {
  return status.GetPayload(kSocketPermissionPayload).has_value();
}

AdminClient::AdminClient(std::string path, AdminClientOptions options)
    : path_(std::move(path)), options_(options) {}

AdminClient::~AdminClient() { Close(); }

absl::StatusOr<std::unique_ptr<AdminClient>> AdminClient::Connect(std::string socket_path,
                                                                  AdminClientOptions options) {
  auto client = std::unique_ptr<AdminClient>(new AdminClient(std::move(socket_path), options));
  COFFER_RETURN_IF_ERROR(client->Dial());
  return client;
}

void AdminClient::Close() {
  reader_.reset();
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

absl::Status AdminClient::Dial() {
  Close();
  int connect_errno = 0;
  absl::StatusOr<int> fd = api::DialUnixSocket(path_, options_.connect_timeout, &connect_errno);
  if (!fd.ok()) {
    if (ErrorCodeOf(fd.status()) == ErrorCode::kInvalidArgument) {
      return MakeError(ErrorCode::kInvalidArgument, "admin " + std::string(fd.status().message()));
    }
    if (connect_errno == 0) return fd.status();
    absl::Status status =
        MakeError(ErrorCode::kDaemonUnavailable, DialFailureMessage(path_, connect_errno));
    if (connect_errno == EACCES || connect_errno == EPERM) {
      status.SetPayload(kSocketPermissionPayload, absl::Cord("1"));
    }
    return status;
  }
  fd_ = *fd;
  reader_ = std::make_unique<api::FrameReader>(fd_, options_.max_frame_bytes);
  return absl::OkStatus();
}

bool AdminClient::LooksClosed() const {
  if (fd_ < 0) return true;
  if (reader_->buffered() > 0) return true;
  pollfd pfd{fd_, POLLIN, 0};
  return ::poll(&pfd, 1, 0) != 0;
}

absl::StatusOr<Response> AdminClient::Call(Request request, coffer::v1::ApprovalInfo* approval,
                                           const ProgressCallback& on_progress) {
  return CallStreaming(std::move(request), approval, on_progress, {});
}

absl::StatusOr<Response> AdminClient::CallStreaming(Request request,
                                                    coffer::v1::ApprovalInfo* approval,
                                                    const ProgressCallback& on_progress,
                                                    const FrameCallback& on_frame) {
  // The daemon closes idle connections (and after some errors): dial again before sending.
  if (LooksClosed()) COFFER_RETURN_IF_ERROR(Dial());
  const uint64_t id = next_request_id_++;
  request.set_request_id(id);
  const auto broke = [&](const absl::Status& status) {
    Close();
    ErrorCode code = ErrorCodeOf(status);
    std::string what(status.message());
    switch (code) {
      case ErrorCode::kRequestTimeout:
        return MakeError(code, "cofferd at " + path_ + " did not answer within " +
                                   std::to_string(options_.request_timeout.count() / 1000) + " s");
      case ErrorCode::kMalformedRequest:
        return MakeError(ErrorCode::kUnexpectedFrame,
                         "response from cofferd at " + path_ + " is not a coffer.v1.Response");
      case ErrorCode::kDaemonUnavailable:
        return MakeError(code, "connection to cofferd at " + path_ + " broke: " + what +
                                   " (the daemon may have stopped; check its log)");
      default:
        return status;
    }
  };
  absl::Status sent = api::WriteFrame(fd_, request, DeadlineAfter(options_.request_timeout));
  if (!sent.ok()) return broke(sent);
  Response response;
  while (true) {
    // Each frame restarts the deadline: a long operation that reports progress is alive.
    bool end_of_stream = false;
    absl::Status read =
        reader_->Read(&response, DeadlineAfter(options_.request_timeout), &end_of_stream);
    if (!read.ok()) return broke(read);
    if (end_of_stream) {
      Close();
      return MakeError(ErrorCode::kDaemonUnavailable,
                       "cofferd at " + path_ +
                           " closed the connection before answering (it may have stopped; check "
                           "its log)");
    }
    if (response.request_id() != id) {
      Close();
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "response for request " + std::to_string(response.request_id()) +
                           " while waiting for request " + std::to_string(id));
    }
    const bool progress_frame = response.has_progress() && !response.has_error() &&
                                response.result_case() == Response::RESULT_NOT_SET;
    if (!progress_frame && on_frame && !response.has_error() &&
        static_cast<int>(response.result_case()) == static_cast<int>(request.op_case())) {
      absl::StatusOr<bool> more = on_frame(response);
      if (!more.ok()) {
        Close();
        return more.status();
      }
      if (*more) continue;
    }
    if (!progress_frame) break;
    if (!request.progress()) {
      Close();
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "cofferd sent a progress frame that was not asked for");
    }
    if (on_progress) on_progress(response.progress());
  }
  if (response.has_error()) {
    if (approval != nullptr && response.has_approval()) *approval = response.approval();
    return ErrorFromResponse(response.error());
  }
  // Every admin result shares its field number with its request's operation.
  const auto expected = static_cast<Response::ResultCase>(static_cast<int>(request.op_case()));
  if (response.result_case() != expected) {
    Close();
    return MakeError(ErrorCode::kUnexpectedFrame, std::string("cofferd answered with result '") +
                                                      ResultName(response.result_case()) +
                                                      "' where '" + ResultName(expected) +
                                                      "' was expected");
  }
  return response;
}

absl::StatusOr<coffer::v1::JobStatus> AdminClient::WaitForJob(
    uint64_t id, std::chrono::milliseconds interval,
    const std::function<void(const coffer::v1::JobStatus&)>& on_progress) {
  while (true) {
    Request request;
    request.mutable_job_status()->set_id(id);
    COFFER_ASSIGN_OR_RETURN(Response response, Call(std::move(request)));
    if (response.job_status().jobs_size() != 1) {
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "job_status for job " + std::to_string(id) + " answered " +
                           std::to_string(response.job_status().jobs_size()) + " jobs");
    }
    const coffer::v1::JobStatus& status = response.job_status().jobs(0);
    if (on_progress) on_progress(status);
    if (status.state() == coffer::v1::JOB_DONE || status.state() == coffer::v1::JOB_FAILED) {
      return status;
    }
    std::this_thread::sleep_for(interval);
  }
}

}  // namespace coffer::keyctl
