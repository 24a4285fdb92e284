// The server's worker pool: the bounded queue and the threads that run a connection's session
// (kms/server/internal/server_impl.h).

#include "kms/server/internal/server_impl.h"

namespace coffer::server {
namespace {

// The stack a request's handling used, below RunRequest's (or RunInline's) frame
// (docs/threat-model.md, "Secrets in memory"): dead frames keep what the handler's callees left
// there — a decrypted value, or key bytes from code we do not own
// (kms_daemon_secrets_in_memory_test found a data key there after its dataset was destroyed). 32
// KiB covers the handlers' depth many times over; it costs a memset of that size per request.
// noinline: the buffer must be a frame below the caller's.
constexpr size_t kRequestStackWipeBytes = size_t{32} << 10;

}  // namespace

[[gnu::noinline]] void WipeRequestStack() {
  unsigned char below[kRequestStackWipeBytes];
  explicit_bzero(below, sizeof(below));
}

// The sink of one request: frames go to the connection's output (output.cc).
class Server::Impl::ConnectionSink : public daemon::ResponseSink {
 public:
  ConnectionSink(Server::Impl* server, const std::shared_ptr<Connection>& connection)
      : server_(server), connection_(connection) {}

  absl::Status Send(const coffer::v1::Response& response) override {
    if (parked_) {
      return MakeError(ErrorCode::kInternal, "a parked request answers through its ParkedReply");
    }
    if (!failure_.ok()) return failure_;
    failure_ = server_->SendResponse(connection_, response);
    return failure_;
  }

  // Offered to inline requests only: a worker may simply wait.
  std::unique_ptr<daemon::ParkedReply> Park() override;

  const absl::Status& failure() const { return failure_; }
  bool parked() const { return parked_; }

 private:
  Server::Impl* server_;
  const std::shared_ptr<Connection>& connection_;
  absl::Status failure_;
  bool parked_ = false;
};

// Holds the connection until the reply is posted back to the reactor (PostParked).
class Server::Impl::Parked final : public daemon::ParkedReply {
 public:
  Parked(Server::Impl* server, std::shared_ptr<Connection> connection)
      : server_(server), connection_(std::move(connection)) {}
  ~Parked() override {
    if (connection_ != nullptr) server_->PostParked(std::move(connection_), std::nullopt);
  }

  void Finish(coffer::v1::Response response) override {
    if (connection_ == nullptr) return;  // finished already
    server_->PostParked(std::move(connection_), std::move(response));
  }

 private:
  Server::Impl* const server_;
  std::shared_ptr<Connection> connection_;
};

std::unique_ptr<daemon::ParkedReply> Server::Impl::ConnectionSink::Park() {
  if (parked_ || !server_->OnReactor() || !failure_.ok()) return nullptr;
  parked_ = true;
  return std::make_unique<Parked>(server_, connection_);
}

bool Server::Impl::TryEnqueue(WorkItem item) {
  std::lock_guard<std::mutex> lock(queue_mu_);
  if (item.connection->peer.socket == daemon::SocketKind::kAdmin) {
    admin_queue_.push_back(std::move(item));  // bounded by the admin connections
    queue_cv_.notify_one();
    return true;
  }
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

void Server::Impl::PostWantWrite(std::shared_ptr<Connection> connection) {
  {
    std::lock_guard<std::mutex> lock(completions_mu_);
    want_write_.push_back(std::move(connection));
  }
  Wake();
}

// Session::Closed calls first, then admin requests, then data requests while fewer than the
// data share of the workers run them: the rest is the admin socket's reserve.
void Server::Impl::WorkerLoop() {
  for (;;) {
    WorkItem item;
    bool was_full = false;
    bool data = false;
    {
      std::unique_lock<std::mutex> lock(queue_mu_);
      auto runnable = [this] {
        return !closes_.empty() || !admin_queue_.empty() ||
               (!queue_.empty() && data_running_ < data_workers_cap_);
      };
      queue_cv_.wait(lock, [&] { return runnable() || workers_stop_; });
      std::deque<WorkItem>* from = nullptr;
      if (!closes_.empty()) {
        from = &closes_;
      } else if (!admin_queue_.empty()) {
        from = &admin_queue_;
      } else if (!queue_.empty() && data_running_ < data_workers_cap_) {
        from = &queue_;
        was_full = queued_requests_ >= options_.max_queued_requests;
        --queued_requests_;
        ++data_running_;
        data = true;
      } else {
        return;  // stopping, and nothing left this worker may run
      }
      item = std::move(from->front());
      from->pop_front();
    }
    if (was_full) Wake();  // paused connections can move up
    if (item.request) {
      RunRequest(item.connection);
      WipeRequestStack();
    } else {
      item.connection->session->Closed();
    }
    if (data) {
      std::lock_guard<std::mutex> lock(queue_mu_);
      --data_running_;
      queue_cv_.notify_one();
    }
  }
}

void Server::Impl::RunRequest(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  // The reactor parsed the frame before queueing it (Dispatch) and resets it only once this
  // request's completion is posted.
  const coffer::v1::Request& request = *c.request;
  ConnectionSink sink(this, connection);
  if (draining_.load()) {  // queued before Shutdown, not yet handed to the session
    Refused(c.peer, ErrorCode::kShuttingDown);
    (void)sink.Send(ErrorResponse(ErrorCode::kShuttingDown, request.request_id(),
                                  "cofferd is shutting down; retry later"));
    PostCompletion(connection, true);
    return;
  }
  ++requests_;
  absl::Status handled = c.session->Handle(request, &sink);
  PostCompletion(connection, !handled.ok() || !sink.failure().ok());
}

// Reactor: the request runs here, to completion; its completion waits for CompleteInline, so a
// connection's pipelined frames do not recurse and do not starve the others.
void Server::Impl::RunInline(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  c.state = ConnectionState::kBusy;
  ++requests_;
  ++requests_inline_;
  bool close;
  bool parked;
  {
    ConnectionSink sink(this, connection);
    absl::Status handled = c.session->Handle(*c.request, &sink);
    close = !handled.ok() || !sink.failure().ok();
    parked = sink.parked();
  }
  WipeRequestStack();
  if (parked) {
    // Its reply comes through PostParked. Meanwhile the connection is not watched at all, so a
    // pipelined frame or the peer's close does not wake the reactor over and over.
    ++requests_parked_;
    if (close) c.close_when_flushed = true;  // Handle failed after parking: close after the reply
    Watch(c, false);
    return;
  }
  inline_done_.emplace_back(connection, close);
}

void Server::Impl::PostParked(std::shared_ptr<Connection> connection,
                              std::optional<coffer::v1::Response> response) {
  {
    std::lock_guard<std::mutex> lock(completions_mu_);
    parked_done_.emplace_back(std::move(connection), std::move(response));
  }
  Wake();
}

void Server::Impl::EndParked(const std::shared_ptr<Connection>& connection,
                             std::optional<coffer::v1::Response> response) {
  bool close = !response.has_value();
  // On the reactor, SendResponse takes the frame whole and never waits.
  if (!close && connection->fd >= 0) close = !SendResponse(connection, *response).ok();
  response.reset();  // a record value: its heap blocks are wiped as they are freed
  OnCompletion(connection, close);
}

void Server::Impl::CompleteInline() {
  for (size_t n = inline_done_.size(); n > 0; --n) {
    auto [connection, close] = std::move(inline_done_.front());
    inline_done_.pop_front();
    OnCompletion(connection, close);
  }
}

}  // namespace coffer::server
