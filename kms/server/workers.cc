// The server's worker pool: the bounded queue and the threads that run a connection's session
// (kms/server/internal/server_impl.h).

#include "kms/server/internal/server_impl.h"

namespace coffer::server {

bool Server::Impl::TryEnqueue(WorkItem item) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (queued_requests_ >= options_.max_queued_requests) return false;
  ++queued_requests_;
  queue_.push_back(std::move(item));
  queue_cv_.notify_one();
  return true;
}

void Server::Impl::PostCompletion(std::shared_ptr<Connection> connection, bool close) {
  {
    std::lock_guard<std::mutex> lock(completions_mu_);
    completions_.emplace_back(std::move(connection), close);
  }
  Wake();
}

void Server::Impl::WorkerLoop() {
  for (;;) {
    WorkItem item;
    bool was_full = false;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      queue_cv_.wait(lock, [this] { return !queue_.empty() || workers_stop_; });
      if (queue_.empty()) return;
      item = std::move(queue_.front());
      queue_.pop_front();
      if (item.request) {
        was_full = queued_requests_ >= options_.max_queued_requests;
        --queued_requests_;
      }
    }
    if (was_full) Wake();  // paused connections can move up
    if (item.request) {
      RunRequest(item.connection);
    } else {
      item.connection->session->Closed();
    }
  }
}

void Server::Impl::RunRequest(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  coffer::v1::Request request;
  SocketSink sink(c.fd, options_.request_timeout);
  if (!request.ParseFromArray(c.buffer.data() + c.begin + c.frame_header,
                              static_cast<int>(c.frame_payload))) {
    Refused(c.peer, ErrorCode::kMalformedRequest);
    (void)sink.Send(
        ErrorResponse(ErrorCode::kMalformedRequest, 0, "the frame is not a coffer.v1.Request"));
    PostCompletion(connection, true);
    return;
  }
  if (draining_.load()) {  // queued before Shutdown, not yet handed to the session
    Refused(c.peer, ErrorCode::kShuttingDown);
    (void)sink.Send(ErrorResponse(ErrorCode::kShuttingDown, request.request_id(),
                                  "cofferd is shutting down; retry later"));
    PostCompletion(connection, true);
    return;
  }
  ++requests_;
  absl::Status handled = c.session->Handle(request, &sink);
  if (ErrorCodeOf(sink.failure()) == ErrorCode::kRequestTimeout) {
    Refused(c.peer, ErrorCode::kRequestTimeout);
  }
  PostCompletion(connection, !handled.ok() || !sink.failure().ok());
}

}  // namespace coffer::server
