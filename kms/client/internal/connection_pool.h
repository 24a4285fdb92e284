// Internal to the client library: one connection to cofferd's data socket (framing, request
// ids, deadlines), the pool that keeps them, the one exchange with its retry rule, and how an
// error response becomes an absl::Status.
//
// Thread safety: a Connection is used by one thread at a time; ConnectionPool is thread-safe.
// Ownership: the pool owns idle connections; Acquire hands one out until Release or Discard.

#ifndef COFFER_KMS_CLIENT_INTERNAL_CONNECTION_POOL_H_
#define COFFER_KMS_CLIENT_INTERNAL_CONNECTION_POOL_H_

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/cord.h"
#include "crypto/base/status.h"
#include "kms/client/client.h"

namespace coffer::client::internal {

using coffer::v1::Request;
using coffer::v1::Response;

// The status payload carrying a SLOW_DOWN or SERVER_BUSY retry delay (RetryAfter reads it).
inline constexpr absl::string_view kRetryAfterPayload =
    "type.coffer.dev/coffer.client.RetryAfterMillis";

api::Deadline DeadlineAfter(std::chrono::milliseconds timeout);
// Codes after which the daemon closes the connection (docs/errors.md).
bool DaemonClosesAfter(ErrorCode code);
// The Status of an error response: its code, its message, and a retry delay as a payload.
absl::Status ErrorFromResponse(const coffer::v1::Error& error);
AttachmentInfo InfoFromProto(const coffer::v1::AttachmentInfo& info);
// Why connecting to `path` failed (errno `err`), saying what to check.
std::string DialFailureMessage(const std::string& path, int err, std::chrono::milliseconds timeout);

// One connected socket with its frame reader and request-id counter.
class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Dial(const std::string& path,
                                                          const ClientOptions& options) {
    int connect_errno = 0;
    absl::StatusOr<int> fd = api::DialUnixSocket(path, options.connect_timeout, &connect_errno);
    if (!fd.ok()) {
      if (connect_errno == 0) return fd.status();
      return MakeError(ErrorCode::kDaemonUnavailable,
                       DialFailureMessage(path, connect_errno, options.connect_timeout));
    }
    auto connection = std::unique_ptr<Connection>(new Connection(*fd, path, options));
    return connection;
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { ::close(fd_); }

  // Assigns the next request id and sends `request`. Sets *sent_nothing when it failed before
  // writing a byte (the connection is then still usable).
  absl::Status Send(Request& request, bool* sent_nothing) {
    *sent_nothing = true;
    std::string frame;
    const size_t size = AppendNumbered(request, &frame);
    if (size > options_.max_frame_bytes) {
      return MakeError(ErrorCode::kFrameTooLarge, "request frame of " + std::to_string(size) +
                                                      " bytes exceeds max_frame_bytes (" +
                                                      std::to_string(options_.max_frame_bytes) +
                                                      "); send large data as an attachment");
    }
    *sent_nothing = false;
    return Write(frame);
  }

  // Pipelining: assigns each request its id and sends them all in one write, back to back.
  // Sets *sent_nothing as Send does; a request whose frame is too large is not sent, and its
  // index is in *too_large (the others go).
  absl::Status SendAll(const std::vector<Request*>& requests, std::vector<size_t>* too_large,
                       bool* sent_nothing) {
    *sent_nothing = true;
    std::string frames;
    for (size_t i = 0; i < requests.size(); ++i) {
      const size_t before = frames.size();
      if (AppendNumbered(*requests[i], &frames) > options_.max_frame_bytes) {
        frames.resize(before);
        too_large->push_back(i);
      }
    }
    if (frames.empty()) return absl::OkStatus();
    *sent_nothing = false;
    return Write(frames);
  }

  // Reads the next response frame, which must answer `request_id`.
  absl::Status Receive(uint64_t request_id, Response* response) {
    bool end_of_stream = false;
    absl::Status status =
        reader_.Read(response, DeadlineAfter(options_.request_timeout), &end_of_stream);
    if (!status.ok()) return Annotate(status);
    if (end_of_stream) {
      return MakeError(ErrorCode::kDaemonUnavailable,
                       "cofferd at " + path_ +
                           " closed the connection before answering (it may have restarted or "
                           "dropped the connection; check its log)");
    }
    if (response->request_id() != request_id) {
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "response for request " + std::to_string(response->request_id()) +
                           " while waiting for request " + std::to_string(request_id));
    }
    return absl::OkStatus();
  }

  // True when the daemon closed this idle connection (or sent something unasked): either way it
  // must not carry another request.
  bool LooksClosed() {
    if (reader_.buffered() > 0) return true;
    pollfd pfd{fd_, POLLIN, 0};
    return ::poll(&pfd, 1, 0) != 0;
  }

  uint64_t last_request_id() const { return next_request_id_ - 1; }

 private:
  Connection(int fd, std::string path, const ClientOptions& options)
      : fd_(fd), path_(std::move(path)), options_(options), reader_(fd, options.max_frame_bytes) {}

  // Assigns `request` the next request id and appends its frame to `frames`; returns the
  // frame's size.
  size_t AppendNumbered(Request& request, std::string* frames) {
    request.set_request_id(next_request_id_++);
    const size_t before = frames->size();
    api::AppendFrame(request, frames);
    return frames->size() - before;
  }
  absl::Status Write(const std::string& bytes) {
    return Annotate(api::WriteAll(fd_, bytes, DeadlineAfter(options_.request_timeout)));
  }

  absl::Status Annotate(const absl::Status& status) const {
    if (status.ok()) return status;
    ErrorCode code = ErrorCodeOf(status);
    std::string what(status.message());
    switch (code) {
      case ErrorCode::kDaemonUnavailable:
        return MakeError(code, "connection to cofferd at " + path_ + " broke: " + what +
                                   " (the daemon may have restarted or closed the connection)");
      case ErrorCode::kRequestTimeout:
        return MakeError(code, "cofferd at " + path_ + " did not answer within " +
                                   std::to_string(options_.request_timeout.count()) +
                                   " ms (ClientOptions::request_timeout)");
      case ErrorCode::kFrameTooLarge:
        return MakeError(code, "response from cofferd at " + path_ + ": " + what +
                                   " (raise ClientOptions::max_frame_bytes to the daemon's)");
      case ErrorCode::kMalformedRequest:
        return MakeError(ErrorCode::kUnexpectedFrame,
                         "response from cofferd at " + path_ + " is not a coffer.v1.Response");
      default:
        return status;
    }
  }

  int fd_;
  std::string path_;
  const ClientOptions& options_;
  api::FrameReader reader_;
  uint64_t next_request_id_ = 1;
};

class ConnectionPool {
 public:
  ConnectionPool(std::string path, ClientOptions options)
      : path_(std::move(path)), options_(options) {
    options_.max_connections = std::max<size_t>(options_.max_connections, 1);
    options_.chunk_bytes = std::max<size_t>(options_.chunk_bytes, 1);
  }

  const std::string& path() const { return path_; }
  const ClientOptions& options() const { return options_; }

  // An idle connection, or a newly dialled one when `fresh` or none is idle. Waits while
  // max_connections are open and none is idle.
  absl::StatusOr<std::unique_ptr<Connection>> Acquire(bool fresh) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      while (!idle_.empty()) {
        std::unique_ptr<Connection> connection = std::move(idle_.back());
        idle_.pop_back();
        if (!fresh && !connection->LooksClosed()) return connection;
        --open_;  // closed by the daemon, or the caller wants a new one: drop it
      }
      if (open_ < options_.max_connections) break;
      if (!released_.wait_until(lock, DeadlineAfter(options_.request_timeout), [&] {
            return !idle_.empty() || open_ < options_.max_connections;
          })) {
        return MakeError(ErrorCode::kResourceExhausted,
                         "all " + std::to_string(options_.max_connections) +
                             " connections of this client are in use (raise "
                             "ClientOptions::max_connections, or finish open attachment "
                             "readers and writers)");
      }
    }
    ++open_;
    lock.unlock();
    auto connection = Connection::Dial(path_, options_);
    if (!connection.ok()) Discard(nullptr);
    return connection;
  }

  // Returns a healthy connection after a complete exchange.
  void Release(std::unique_ptr<Connection> connection) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < options_.idle_connections) {
      idle_.push_back(std::move(connection));
    } else {
      connection.reset();
      --open_;
    }
    released_.notify_one();
  }

  // Closes a connection that must not be reused (or accounts for a failed dial: nullptr).
  void Discard(std::unique_ptr<Connection> connection) {
    connection.reset();
    std::lock_guard<std::mutex> lock(mu_);
    --open_;
    released_.notify_one();
  }

 private:
  const std::string path_;
  ClientOptions options_;
  std::mutex mu_;
  std::condition_variable released_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
  size_t open_ = 0;                                // guarded by mu_: idle + in use
};

// One request/response exchange with the pool's retry rule. On success returns the response
// and, when `keep` is non-null, hands the connection to the caller instead of the pool.
absl::StatusOr<Response> Exchange(ConnectionPool& pool, Request& request, bool idempotent,
                                  Response::ResultCase expected, std::unique_ptr<Connection>* keep);

}  // namespace coffer::client::internal

#endif  // COFFER_KMS_CLIENT_INTERNAL_CONNECTION_POOL_H_
