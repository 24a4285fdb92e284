#include "kms/client/internal/connection_pool.h"

namespace coffer::client::internal {

api::Deadline DeadlineAfter(std::chrono::milliseconds timeout) {
  return std::chrono::steady_clock::now() + timeout;
}

// Codes after which the daemon closes the connection (docs/errors.md): never reuse it.
bool DaemonClosesAfter(ErrorCode code) {
  switch (code) {
    case ErrorCode::kFrameTooLarge:
    case ErrorCode::kMalformedRequest:
    case ErrorCode::kRequestTimeout:
    case ErrorCode::kServerBusy:
    case ErrorCode::kShuttingDown:
      return true;
    default:
      return false;
  }
}

absl::Status ErrorFromResponse(const coffer::v1::Error& error) {
  auto code = static_cast<ErrorCode>(error.code());
  std::string message = "cofferd: " + error.message();
  if (ErrorCodeName(code) == "UNKNOWN" || error.code() <= 0) {
    // A code this client does not know (a newer daemon): keep it readable; maps to INTERNAL.
    message = "cofferd: " + error.code_name() + " (" + std::to_string(error.code()) +
              "): " + error.message();
  }
  absl::Status status = MakeError(code, message);
  if (error.retry_after_ms() > 0) {
    status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(error.retry_after_ms())));
  }
  return status;
}

AttachmentInfo InfoFromProto(const coffer::v1::AttachmentInfo& info) {
  return AttachmentInfo{info.size(), info.content_type(), info.created_micros()};
}

std::string DialFailureMessage(const std::string& path, int err,
                               std::chrono::milliseconds timeout) {
  std::string head = "cannot connect to cofferd at " + path + ": ";
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return head +
             "no such socket. Is cofferd running, and is this its data socket? (scripts/start "
             "prints the socket paths; the example reads $COFFER_DATA_SOCKET)";
    case ECONNREFUSED:
      return head +
             "connection refused: the socket file exists but no cofferd listens on it (the "
             "daemon stopped or crashed; start it again and check its log)";
    case EACCES:
    case EPERM:
      return head +
             "permission denied: the data socket is mode 0660, so this user must be in the "
             "daemon's data group, and may need search permission on its directory";
    case EAGAIN:
    case ETIMEDOUT:
    case EINPROGRESS:
      return head + "the daemon did not accept within " + std::to_string(timeout.count()) +
             " ms (its accept backlog is full: overloaded or stalled)";
    default:
      return head + std::strerror(err);
  }
}

absl::StatusOr<Response> Exchange(ConnectionPool& pool, Request& request, bool idempotent,
                                  Response::ResultCase expected,
                                  std::unique_ptr<Connection>* keep) {
  for (int attempt = 0;; ++attempt) {
    auto acquired = pool.Acquire(/*fresh=*/attempt > 0);
    if (!acquired.ok()) return acquired.status();
    std::unique_ptr<Connection> connection = std::move(acquired).value();
    bool sent_nothing = false;
    absl::Status status = connection->Send(request, &sent_nothing);
    Response response;
    if (status.ok()) status = connection->Receive(request.request_id(), &response);
    if (!status.ok()) {
      if (sent_nothing) {
        pool.Release(std::move(connection));
        return status;
      }
      pool.Discard(std::move(connection));
      if (idempotent && attempt == 0 && ErrorCodeOf(status) == ErrorCode::kDaemonUnavailable) {
        continue;  // the connection broke: once more on a new one
      }
      return status;
    }
    if (response.has_error()) {
      absl::Status error = ErrorFromResponse(response.error());
      if (DaemonClosesAfter(ErrorCodeOf(error))) {
        pool.Discard(std::move(connection));
      } else {
        pool.Release(std::move(connection));
      }
      return error;
    }
    if (response.result_case() != expected) {
      pool.Discard(std::move(connection));
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "cofferd answered request " + std::to_string(request.request_id()) +
                           " with result field " + std::to_string(response.result_case()) +
                           ", expected " + std::to_string(expected));
    }
    if (keep != nullptr) {
      *keep = std::move(connection);
    } else {
      pool.Release(std::move(connection));
    }
    return response;
  }
}

}  // namespace coffer::client::internal
