#include "kms/server/server.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "kms/server/listening_socket.h"
#include "kms/server/peer_credentials.h"

namespace coffer::server {
namespace {

using Clock = std::chrono::steady_clock;

constexpr size_t kReadChunk = size_t{64} << 10;
// Bytes read from one connection per readiness event, so one fast sender cannot starve the
// others on the reactor.
constexpr size_t kMaxReadPerEvent = size_t{256} << 10;
// How long accepting pauses when the process is out of file descriptors.
constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

// epoll tags: connections are numbered from kFirstConnectionId.
constexpr uint64_t kDataListenerTag = 1;
constexpr uint64_t kAdminListenerTag = 2;
constexpr uint64_t kWakeTag = 3;
constexpr uint64_t kFirstConnectionId = 16;

enum class ConnectionState {
  kReading,  // in epoll: idle, or a frame partly received
  kPaused,   // a complete frame waits for room in the worker queue; not read
  kBusy,     // its request is queued or running on a worker; not read
};

struct Connection {
  uint64_t id = 0;
  int fd = -1;
  daemon::PeerIdentity peer;
  std::unique_ptr<daemon::Session> session;

  // Received bytes not yet consumed: buffer[begin, end). Only the reactor touches them, except
  // that a worker parses the frame at `begin` while the connection is kBusy.
  std::string buffer;
  size_t begin = 0;
  size_t end = 0;
  size_t frame_header = 0;  // of the complete frame at `begin`, while kPaused or kBusy
  size_t frame_payload = 0;

  ConnectionState state = ConnectionState::kReading;
  bool in_epoll = false;
  bool peer_closed = false;         // the peer shut down its writing side
  Clock::time_point idle_since;     // last accept or response, while nothing is buffered
  Clock::time_point frame_started;  // first byte of the partly received frame

  size_t buffered() const { return end - begin; }
  std::string_view unread() const { return std::string_view(buffer.data() + begin, end - begin); }
};

struct WorkItem {
  std::shared_ptr<Connection> connection;
  bool request = true;  // false: call Session::Closed
};

class SocketSink : public daemon::ResponseSink {
 public:
  SocketSink(int fd, std::chrono::milliseconds timeout) : fd_(fd), timeout_(timeout) {}

  absl::Status Send(const coffer::v1::Response& response) override {
    if (!failure_.ok()) return failure_;
    failure_ = api::WriteFrame(fd_, response, Clock::now() + timeout_);
    return failure_;
  }

  const absl::Status& failure() const { return failure_; }

 private:
  int fd_;
  std::chrono::milliseconds timeout_;
  absl::Status failure_;
};

coffer::v1::Response ErrorResponse(ErrorCode code, uint64_t request_id, std::string_view message) {
  coffer::v1::Response response;
  response.set_request_id(request_id);
  response.mutable_error()->set_code(static_cast<int32_t>(code));
  response.mutable_error()->set_code_name(std::string(ErrorCodeName(code)));
  response.mutable_error()->set_message(std::string(message));
  return response;
}

// A refusal is best effort: one non-blocking send, as the connection is closed right after.
void SendNow(int fd, const coffer::v1::Response& response) {
  std::string frame;
  api::AppendFrame(response, &frame);
  ssize_t rc;
  do {
    rc = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (rc < 0 && errno == EINTR);
}

absl::Status CheckOptions(const ServerOptions& options) {
  auto invalid = [](std::string_view what) {
    return MakeError(ErrorCode::kConfigInvalid,
                     std::string("server options: ") + std::string(what));
  };
  if (options.workers == 0) return invalid("workers must be at least 1");
  if (options.max_queued_requests == 0) return invalid("max_queued_requests must be at least 1");
  if (options.max_connections == 0) return invalid("max_connections must be at least 1");
  if (options.max_frame_bytes == 0 || options.max_frame_bytes > INT_MAX) {
    return invalid("max_frame_bytes must be between 1 and 2^31-1");
  }
  if (options.idle_timeout.count() <= 0 || options.request_timeout.count() <= 0) {
    return invalid("idle_timeout and request_timeout must be positive");
  }
  if (options.data_socket.path == options.admin_socket.path) {
    return invalid("the data and admin sockets need different paths");
  }
  return absl::OkStatus();
}

}  // namespace

class Server::Impl {
 public:
  Impl(const ServerOptions& options, daemon::SessionFactory* factory)
      : options_(options), factory_(factory) {}

  ~Impl() {
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  absl::Status Init();
  void Shutdown(std::chrono::milliseconds drain_timeout);
  ServerStats Stats() const;
  std::chrono::milliseconds default_drain_timeout() const { return options_.default_drain_timeout; }

 private:
  // Reactor thread.
  void ReactorLoop();
  void Accept(ListeningSocket& listener, daemon::SocketKind kind);
  void OnReadable(const std::shared_ptr<Connection>& connection);
  void Advance(const std::shared_ptr<Connection>& connection);
  void OnCompletion(const std::shared_ptr<Connection>& connection, bool close);
  void ResumePaused();
  void BeginDrain();
  Clock::time_point CheckTimers(Clock::time_point now);
  void Refuse(const std::shared_ptr<Connection>& connection, ErrorCode code, uint64_t request_id,
              std::string_view message);
  void Close(const std::shared_ptr<Connection>& connection);
  void Watch(Connection& connection, bool watch);
  void WatchListeners(bool watch);

  // Worker threads.
  void WorkerLoop();
  void RunRequest(const std::shared_ptr<Connection>& connection);
  bool TryEnqueue(WorkItem item);
  void PostCompletion(std::shared_ptr<Connection> connection, bool close);

  void Wake();
  void Refused(const daemon::PeerIdentity& peer, ErrorCode code);

  const ServerOptions options_;
  daemon::SessionFactory* const factory_;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::optional<ListeningSocket> data_listener_;
  std::optional<ListeningSocket> admin_listener_;
  std::thread reactor_;
  std::vector<std::thread> workers_;

  // Reactor-only state.
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  std::deque<std::shared_ptr<Connection>> paused_;
  uint64_t next_connection_id_ = kFirstConnectionId;
  bool listeners_watched_ = false;
  Clock::time_point accept_retry_at_{};
  bool drain_started_ = false;
  bool drain_forced_ = false;

  // Shutdown.
  std::mutex shutdown_mu_;
  bool shut_down_ = false;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> drain_deadline_ns_{0};

  // Worker queue and completions.
  std::mutex queue_mu_;
  std::condition_variable queue_cv_;
  std::deque<WorkItem> queue_;
  size_t queued_requests_ = 0;
  bool workers_stop_ = false;
  std::mutex completions_mu_;
  std::vector<std::pair<std::shared_ptr<Connection>, bool>> completions_;

  // Stats.
  std::atomic<uint64_t> connections_open_{0};
  std::atomic<uint64_t> connections_total_{0};
  std::atomic<uint64_t> requests_{0};
  mutable std::mutex refusals_mu_;
  std::map<ErrorCode, uint64_t> refusals_;
};

absl::Status Server::Impl::Init() {
  COFFER_RETURN_IF_ERROR(CheckOptions(options_));
  COFFER_ASSIGN_OR_RETURN(ListeningSocket data,
                          ListeningSocket::Create(options_.data_socket, SOMAXCONN));
  COFFER_ASSIGN_OR_RETURN(ListeningSocket admin,
                          ListeningSocket::Create(options_.admin_socket, SOMAXCONN));
  data_listener_.emplace(std::move(data));
  admin_listener_.emplace(std::move(admin));
  epoll_fd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epoll_fd_ < 0 || wake_fd_ < 0) {
    return MakeError(ErrorCode::kIoError, std::string("epoll/eventfd: ") + std::strerror(errno));
  }
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = kWakeTag;
  if (::epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, wake_fd_, &event) != 0) {
    return MakeError(ErrorCode::kIoError, std::string("epoll_ctl: ") + std::strerror(errno));
  }
  WatchListeners(true);
  for (size_t i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { WorkerLoop(); });
  reactor_ = std::thread([this] { ReactorLoop(); });
  return absl::OkStatus();
}

void Server::Impl::Wake() {
  uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof(one));
  (void)ignored;  // EAGAIN: the counter is already non-zero, the reactor will wake
}

void Server::Impl::Refused(const daemon::PeerIdentity& peer, ErrorCode code) {
  {
    std::lock_guard<std::mutex> lock(refusals_mu_);
    ++refusals_[code];
  }
  factory_->TransportRefused(peer, code);
}

void Server::Impl::WatchListeners(bool watch) {
  if (listeners_watched_ == watch) return;
  for (auto [listener, tag] : {std::pair{&data_listener_, kDataListenerTag},
                               std::pair{&admin_listener_, kAdminListenerTag}}) {
    if (!listener->has_value() || (*listener)->fd() < 0) continue;
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.u64 = tag;
    ::epoll_ctl(epoll_fd_, watch ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, (*listener)->fd(), &event);
  }
  listeners_watched_ = watch;
}

void Server::Impl::Watch(Connection& connection, bool watch) {
  if (connection.in_epoll == watch) return;
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.u64 = connection.id;
  ::epoll_ctl(epoll_fd_, watch ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, connection.fd, &event);
  connection.in_epoll = watch;
}

void Server::Impl::ReactorLoop() {
  std::vector<epoll_event> events(64);
  for (;;) {
    Clock::time_point now = Clock::now();
    if (draining_.load() && !drain_started_) BeginDrain();
    if (drain_started_) {
      if (!drain_forced_ && now >= Clock::time_point(Clock::duration(drain_deadline_ns_.load()))) {
        // Drain timeout: make the remaining sessions' writes fail so their Handle returns.
        for (auto& [id, connection] : connections_) ::shutdown(connection->fd, SHUT_RDWR);
        drain_forced_ = true;
      }
      if (connections_.empty()) return;
    }
    if (!listeners_watched_ && !drain_started_ && now >= accept_retry_at_) WatchListeners(true);

    Clock::time_point wake_at = CheckTimers(now);
    if (drain_started_ && !drain_forced_) {
      wake_at = std::min(wake_at, Clock::time_point(Clock::duration(drain_deadline_ns_.load())));
    }
    if (!listeners_watched_ && !drain_started_) wake_at = std::min(wake_at, accept_retry_at_);
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(wake_at - Clock::now());
    int timeout_ms = static_cast<int>(std::clamp<int64_t>(wait.count() + 1, 0, 1000));

    int ready = ::epoll_wait(epoll_fd_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (ready < 0) continue;  // EINTR
    for (int i = 0; i < ready; ++i) {
      uint64_t tag = events[i].data.u64;
      if (tag == kWakeTag) {
        uint64_t count;
        ssize_t ignored = ::read(wake_fd_, &count, sizeof(count));
        (void)ignored;
      } else if (tag == kDataListenerTag) {
        if (listeners_watched_) Accept(*data_listener_, daemon::SocketKind::kData);
      } else if (tag == kAdminListenerTag) {
        if (listeners_watched_) Accept(*admin_listener_, daemon::SocketKind::kAdmin);
      } else {
        auto it = connections_.find(tag);
        if (it != connections_.end() && it->second->state == ConnectionState::kReading) {
          std::shared_ptr<Connection> connection = it->second;
          OnReadable(connection);
        }
      }
    }
    std::vector<std::pair<std::shared_ptr<Connection>, bool>> done;
    {
      std::lock_guard<std::mutex> lock(completions_mu_);
      done.swap(completions_);
    }
    for (auto& [connection, close] : done) OnCompletion(connection, close);
    ResumePaused();
  }
}

void Server::Impl::Accept(ListeningSocket& listener, daemon::SocketKind kind) {
  for (;;) {
    int fd = ::accept4(listener.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        WatchListeners(false);
        accept_retry_at_ = Clock::now() + kAcceptRetry;
      }
      return;  // EAGAIN, or retried later
    }
    ++connections_total_;
    absl::StatusOr<daemon::PeerIdentity> peer = ReadPeerIdentity(fd, kind);
    if (!peer.ok()) {
      ::close(fd);
      continue;
    }
    if (connections_.size() >= options_.max_connections) {
      Refused(*peer, ErrorCode::kServerBusy);
      SendNow(fd, ErrorResponse(ErrorCode::kServerBusy, 0,
                                "cofferd has too many open connections; retry later"));
      ::close(fd);
      continue;
    }
    auto connection = std::make_shared<Connection>();
    connection->id = next_connection_id_++;
    connection->fd = fd;
    connection->peer = std::move(*peer);
    connection->idle_since = Clock::now();
    connection->session = factory_->Open(connection->peer);
    if (connection->session == nullptr) {
      ::close(fd);
      continue;
    }
    connections_.emplace(connection->id, connection);
    ++connections_open_;
    Watch(*connection, true);
  }
}

void Server::Impl::OnReadable(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  size_t read_now = 0;
  while (read_now < kMaxReadPerEvent) {
    if (c.begin > 0) {  // keep the unread bytes at the front
      std::memmove(c.buffer.data(), c.buffer.data() + c.begin, c.buffered());
      c.end -= c.begin;
      c.begin = 0;
    }
    size_t header = 0;
    size_t payload = 0;
    if (!api::DecodeFrameHeader(c.unread(), options_.max_frame_bytes, &header, &payload).ok()) {
      break;  // Advance refuses it
    }
    if (header != 0 && c.buffered() >= header + payload) break;  // a complete frame: stop
    size_t want = std::max(kReadChunk, header + payload);
    if (c.buffer.size() < want) c.buffer.resize(want);  // so end < size: the frame is longer
    ssize_t n = ::recv(c.fd, c.buffer.data() + c.end, c.buffer.size() - c.end, MSG_DONTWAIT);
    if (n > 0) {
      if (c.end == c.begin) c.frame_started = Clock::now();
      c.end += static_cast<size_t>(n);
      read_now += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      c.peer_closed = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    Close(connection);  // ECONNRESET and the like: nobody left to answer
    return;
  }
  Advance(connection);
}

// Decides what a kReading connection's buffered bytes call for.
void Server::Impl::Advance(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  size_t header = 0;
  size_t payload = 0;
  absl::Status prefix =
      api::DecodeFrameHeader(c.unread(), options_.max_frame_bytes, &header, &payload);
  if (!prefix.ok()) {
    Refuse(connection, ErrorCodeOf(prefix), 0, std::string(prefix.message()));
    return;
  }
  bool complete = header != 0 && c.buffered() >= header + payload;
  if (!complete) {
    // Nothing more will come (peer closed, possibly inside a frame), or the daemon is draining.
    if (c.peer_closed || drain_started_) {
      Close(connection);
    } else {
      Watch(c, true);
    }
    return;
  }
  Watch(c, false);
  c.frame_header = header;
  c.frame_payload = payload;
  if (drain_started_) {
    coffer::v1::Request request;
    uint64_t id = 0;
    if (request.ParseFromArray(c.buffer.data() + c.begin + header, static_cast<int>(payload))) {
      id = request.request_id();
    }
    Refuse(connection, ErrorCode::kShuttingDown, id, "cofferd is shutting down; retry later");
    return;
  }
  if (!paused_.empty() || !TryEnqueue(WorkItem{connection, true})) {
    c.state = ConnectionState::kPaused;
    paused_.push_back(connection);
    return;
  }
  c.state = ConnectionState::kBusy;
}

void Server::Impl::ResumePaused() {
  while (!paused_.empty()) {
    std::shared_ptr<Connection> connection = paused_.front();
    if (connection->fd < 0) {  // closed while paused
      paused_.pop_front();
      continue;
    }
    if (drain_started_) {
      paused_.pop_front();
      connection->state = ConnectionState::kReading;
      Advance(connection);  // answers SHUTTING_DOWN
      continue;
    }
    if (!TryEnqueue(WorkItem{connection, true})) return;
    paused_.pop_front();
    connection->state = ConnectionState::kBusy;
  }
}

void Server::Impl::OnCompletion(const std::shared_ptr<Connection>& connection, bool close) {
  Connection& c = *connection;
  c.state = ConnectionState::kReading;
  if (close) {
    Close(connection);
    return;
  }
  c.begin += c.frame_header + c.frame_payload;
  c.frame_header = c.frame_payload = 0;
  Clock::time_point now = Clock::now();
  c.idle_since = now;
  c.frame_started = now;  // for pipelined bytes; they were not timed while the request ran
  if (c.begin == c.end) {
    c.begin = c.end = 0;
    // Do not keep a large buffer around for one large frame.
    if (c.buffer.size() > 4 * kReadChunk) std::string().swap(c.buffer);
  }
  Advance(connection);
}

void Server::Impl::BeginDrain() {
  drain_started_ = true;
  WatchListeners(false);
  data_listener_->CloseAndRemove();
  admin_listener_->CloseAndRemove();
  std::vector<std::shared_ptr<Connection>> reading;
  for (auto& [id, connection] : connections_) {
    if (connection->state == ConnectionState::kReading) reading.push_back(connection);
  }
  // Idle ones and partial frames are closed; complete frames are answered SHUTTING_DOWN.
  for (auto& connection : reading) Advance(connection);
  ResumePaused();
}

Clock::time_point Server::Impl::CheckTimers(Clock::time_point now) {
  Clock::time_point next = now + std::chrono::seconds(1);
  std::vector<std::pair<std::shared_ptr<Connection>, bool>> expired;  // bool: mid-frame
  for (auto& [id, connection] : connections_) {
    const Connection& c = *connection;
    if (c.state != ConnectionState::kReading) continue;
    bool mid_frame = c.buffered() > 0;
    Clock::time_point deadline = mid_frame ? c.frame_started + options_.request_timeout
                                           : c.idle_since + options_.idle_timeout;
    if (now >= deadline) {
      expired.emplace_back(connection, mid_frame);
    } else {
      next = std::min(next, deadline);
    }
  }
  for (auto& [connection, mid_frame] : expired) {
    if (mid_frame) {
      Refuse(connection, ErrorCode::kRequestTimeout, 0,
             "the request was not received completely within the request timeout");
    } else {
      Refused(connection->peer, ErrorCode::kRequestTimeout);
      Close(connection);
    }
  }
  return next;
}

void Server::Impl::Refuse(const std::shared_ptr<Connection>& connection, ErrorCode code,
                          uint64_t request_id, std::string_view message) {
  Refused(connection->peer, code);
  SendNow(connection->fd, ErrorResponse(code, request_id, message));
  Close(connection);
}

void Server::Impl::Close(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  Watch(c, false);
  ::close(c.fd);
  c.fd = -1;
  connections_.erase(c.id);
  --connections_open_;
  // Session::Closed may do real work (abort an upload): it runs on a worker.
  std::lock_guard<std::mutex> lock(queue_mu_);
  queue_.push_back(WorkItem{connection, false});
  queue_cv_.notify_one();
}

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

void Server::Impl::Shutdown(std::chrono::milliseconds drain_timeout) {
  std::lock_guard<std::mutex> lock(shutdown_mu_);
  if (shut_down_) return;
  shut_down_ = true;
  if (reactor_.joinable()) {
    drain_deadline_ns_.store((Clock::now() + drain_timeout).time_since_epoch().count());
    draining_.store(true);
    Wake();
    reactor_.join();
  }
  {
    std::lock_guard<std::mutex> queue_lock(queue_mu_);
    workers_stop_ = true;  // workers finish the queue (Session::Closed calls) first
  }
  queue_cv_.notify_all();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
  if (data_listener_) data_listener_->CloseAndRemove();
  if (admin_listener_) admin_listener_->CloseAndRemove();
}

ServerStats Server::Impl::Stats() const {
  ServerStats stats;
  stats.connections_open = connections_open_.load();
  stats.connections_total = connections_total_.load();
  stats.requests = requests_.load();
  std::lock_guard<std::mutex> lock(refusals_mu_);
  stats.refusals = refusals_;
  return stats;
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& options,
                                                      daemon::SessionFactory* factory) {
  if (factory == nullptr) {
    return MakeError(ErrorCode::kConfigInvalid, "server: no session factory");
  }
  auto impl = std::make_unique<Impl>(options, factory);
  absl::Status started = impl->Init();
  if (!started.ok()) {
    impl->Shutdown(std::chrono::milliseconds(0));
    return started;
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(impl_->default_drain_timeout()); }

void Server::Shutdown(std::chrono::milliseconds drain_timeout) { impl_->Shutdown(drain_timeout); }

ServerStats Server::Stats() const { return impl_->Stats(); }

}  // namespace coffer::server
