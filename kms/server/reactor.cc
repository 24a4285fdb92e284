// The server's reactor thread: accepting, reading frames, pausing and resuming connections,
// timeouts, completions and drain (kms/server/internal/server_impl.h).

#include "kms/server/internal/server_impl.h"

namespace coffer::server {
namespace {

// The server whose reactor the calling thread is (none on workers and other threads).
thread_local const void* reactor_of = nullptr;

}  // namespace

bool Server::Impl::OnReactor() const { return reactor_of == this; }

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

void Server::Impl::Watch(Connection& connection, bool read) {
  connection.want_read = read;
  bool unsent;
  {
    std::lock_guard<std::mutex> lock(connection.out_mu);
    unsent = connection.unsent() > 0 && connection.out_failure.ok();
  }
  // While replies are unsent the connection is not read: its next request waits for them.
  uint32_t mask = unsent ? uint32_t{EPOLLOUT} : (read ? uint32_t{EPOLLIN} : 0u);
  if (connection.fd < 0 || mask == connection.events) return;
  epoll_event event{};
  event.events = mask;
  event.data.u64 = connection.id;
  int op = connection.events == 0 ? EPOLL_CTL_ADD : (mask == 0 ? EPOLL_CTL_DEL : EPOLL_CTL_MOD);
  ::epoll_ctl(epoll_fd_, op, connection.fd, &event);
  connection.events = mask;
}

void Server::Impl::ReactorLoop() {
  reactor_of = this;
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
    if (!inline_done_.empty()) timeout_ms = 0;  // only look for events, then go on with them

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
        if (it == connections_.end()) continue;
        std::shared_ptr<Connection> connection = it->second;
        if (connection->events & EPOLLOUT) {
          FlushOutput(connection);
        } else if (connection->state == ConnectionState::kReading) {
          OnReadable(connection);
        }
      }
    }
    std::vector<std::pair<std::shared_ptr<Connection>, bool>> done;
    std::vector<std::shared_ptr<Connection>> writing;
    std::vector<std::pair<std::shared_ptr<Connection>, std::optional<coffer::v1::Response>>> parked;
    {
      std::lock_guard<std::mutex> lock(completions_mu_);
      done.swap(completions_);
      writing.swap(want_write_);
      parked.swap(parked_done_);
    }
    for (auto& connection : writing) {
      if (connection->fd >= 0) Watch(*connection, connection->want_read);
    }
    for (auto& [connection, close] : done) OnCompletion(connection, close);
    for (auto& [connection, response] : parked) EndParked(connection, std::move(response));
    parked.clear();
    CompleteInline();
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
    std::shared_ptr<CallerUsage> usage;
    if (!AdmitConnection(fd, *peer, &usage)) continue;
    auto connection = std::make_shared<Connection>();
    connection->id = next_connection_id_++;
    connection->fd = fd;
    connection->peer = std::move(*peer);
    connection->idle_since = Clock::now();
    connection->session = factory_->Open(connection->peer);
    if (connection->session == nullptr) {
      if (usage->connections == 0) callers_.erase({connection->peer.uid, kind});
      ::close(fd);
      continue;
    }
    connection->usage = std::move(usage);
    ++connection->usage->connections;
    if (kind == daemon::SocketKind::kData) ++data_connections_;
    connections_.emplace(connection->id, connection);
    ++connections_open_;
    Watch(*connection, true);
  }
}

// The connection caps: every slot, the data socket's share, the caller's own. A refused
// connection is answered SERVER_BUSY and closed.
bool Server::Impl::AdmitConnection(int fd, const daemon::PeerIdentity& peer,
                                   std::shared_ptr<CallerUsage>* usage) {
  std::string_view message;
  if (connections_.size() >= options_.max_connections ||
      (peer.socket == daemon::SocketKind::kData && data_connections_ >= data_connections_cap_)) {
    ++busy_connection_limit_;
    message = "cofferd has too many open connections; retry later";
  } else {
    std::shared_ptr<CallerUsage>& slot = callers_[{peer.uid, peer.socket}];
    if (slot == nullptr) slot = std::make_shared<CallerUsage>();
    if (slot->connections < options_.max_connections_per_uid) {
      *usage = slot;
      return true;
    }
    ++busy_uid_connections_;
    message = "this uid holds its maximum of open connections; close one and retry";
  }
  Refused(peer, ErrorCode::kServerBusy);
  SendNow(fd, ErrorResponse(ErrorCode::kServerBusy, 0, message));
  ::close(fd);
  return false;
}

void Server::Impl::OnReadable(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  size_t read_now = 0;
  while (read_now < kMaxReadPerEvent) {
    if (c.begin > 0) {  // keep the unread bytes at the front
      std::memmove(c.buffer.data(), c.buffer.data() + c.begin, c.buffered());
      // The vacated tail still holds a copy of what moved (docs/threat-model.md, "Secrets in
      // memory"). Consumed frames were wiped when their request completed.
      const size_t moved_to = c.buffered();
      explicit_bzero(c.buffer.data() + moved_to, c.end - moved_to);
      c.end -= c.begin;
      c.begin = 0;
    }
    size_t header = 0;
    size_t payload = 0;
    if (!api::DecodeFrameHeader(c.unread(), options_.max_frame_bytes, &header, &payload).ok()) {
      break;  // Advance refuses it
    }
    if (header != 0 && c.buffered() >= header + payload) break;  // a complete frame: stop
    if (c.end == c.buffer.size()) {
      // Grow as bytes arrive, never to a declared size ahead of them: end < size after this,
      // as the frame (or its size prefix) is longer than what is buffered.
      size_t limit = header != 0 ? std::max(header + payload, kMinInputBuffer) : kMinInputBuffer;
      size_t grown = std::min(std::max(kMinInputBuffer, 2 * c.buffer.size()), limit);
      if (!GrowInput(connection, grown)) return;
    }
    ssize_t n = ::recv(c.fd, c.buffer.data() + c.end, c.buffer.size() - c.end, MSG_DONTWAIT);
    if (n > 0) {
      if (c.end == c.begin) c.frame_started = Clock::now();
      c.end += static_cast<size_t>(n);
      read_now += static_cast<size_t>(n);
      bytes_received_ += static_cast<uint64_t>(n);
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

// Whether `more` bytes for `c` would take its caller past its byte cap, or a data connection
// the daemon past its own: the admin socket is held only to its callers' caps, so data clients
// cannot use up its share.
bool Server::Impl::OverByteCaps(const Connection& c, size_t more) const {
  if (c.usage->buffered.load() + more > options_.max_buffered_bytes_per_uid) return true;
  if (c.peer.socket == daemon::SocketKind::kAdmin) return false;
  return buffered_input_.load() + buffered_output_.load() + more > options_.max_buffered_bytes;
}

bool Server::Impl::GrowInput(const std::shared_ptr<Connection>& connection, size_t size) {
  Connection& c = *connection;
  size_t more = size - c.buffer.size();
  if (OverByteCaps(c, more)) {
    ++busy_buffered_bytes_;
    Refuse(connection, ErrorCode::kServerBusy, 0,
           "too many bytes are buffered for this uid or for cofferd; retry later");
    return false;
  }
  ResizeInput(c, size);
  return true;
}

void Server::Impl::ResizeInput(Connection& c, size_t size) {
  size_t before = c.buffer.size();
  if (size == 0) {
    std::string().swap(c.buffer);
  } else {
    c.buffer.resize(size);
  }
  c.usage->buffered += size;
  c.usage->buffered -= before;
  buffered_input_ += size;
  buffered_input_ -= before;
}

// Decides what a kReading connection's buffered bytes call for.
void Server::Impl::Advance(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  if (c.fd < 0) return;
  if (HasUnsent(c)) {  // FlushOutput calls again once every reply is sent
    Watch(c, false);
    return;
  }
  if (c.close_when_flushed) {
    Close(connection);
    return;
  }
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
  c.frame_header = header;
  c.frame_payload = payload;
  if (c.request == nullptr) {  // a held frame was parsed when it was first complete
    auto request = std::make_unique<coffer::v1::Request>();
    if (!request->ParseFromArray(c.buffer.data() + c.begin + header, static_cast<int>(payload))) {
      Refuse(connection, ErrorCode::kMalformedRequest, 0, "the frame is not a coffer.v1.Request");
      return;
    }
    c.request = std::move(request);
  }
  if (drain_started_) {
    Refuse(connection, ErrorCode::kShuttingDown, c.request->request_id(),
           "cofferd is shutting down; retry later");
    return;
  }
  Dispatch(connection);
}

// A complete frame, not draining: run inline, to a worker, held at the caller's request cap,
// refused over the byte caps, or paused for room in the queue. A connection whose request
// waits or runs elsewhere is not read meanwhile; one run inline keeps its epoll registration
// (two system calls fewer per request): the reactor ignores its events until it completes.
void Server::Impl::Dispatch(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  CallerUsage& usage = *c.usage;
  if (usage.requests >= options_.max_requests_per_uid) {
    Watch(c, false);
    c.state = ConnectionState::kHeld;
    usage.held.push_back(connection);
    ++requests_held_;
    return;
  }
  if (OverByteCaps(c, 0)) {
    ++busy_buffered_bytes_;
    Refuse(connection, ErrorCode::kServerBusy, 0,
           "too many bytes are buffered for this uid or for cofferd; retry later");
    return;
  }
  ++usage.requests;
  c.counted_request = true;
  if (options_.run_inline && c.session->Inline(*c.request)) {
    RunInline(connection);
    return;
  }
  Watch(c, false);
  bool admin = c.peer.socket == daemon::SocketKind::kAdmin;
  if ((!admin && !paused_.empty()) || !TryEnqueue(WorkItem{connection, true})) {
    c.state = ConnectionState::kPaused;
    paused_.push_back(connection);
    return;
  }
  c.state = ConnectionState::kBusy;
}

// The connection's request ended (completed, or the connection closed): a held frame of the
// same caller may go.
void Server::Impl::RequestEnded(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  if (!c.counted_request) return;
  c.counted_request = false;
  CallerUsage& usage = *c.usage;
  --usage.requests;
  while (!usage.held.empty() && usage.requests < options_.max_requests_per_uid) {
    std::shared_ptr<Connection> held = std::move(usage.held.front());
    usage.held.pop_front();
    if (held->fd < 0 || held->state != ConnectionState::kHeld) continue;
    held->state = ConnectionState::kReading;
    Advance(held);
  }
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
  RequestEnded(connection);
  if (close || c.fd < 0) {
    if (c.fd >= 0) Close(connection);
    return;
  }
  if (!c.request_refused) {
    c.refusals_in_a_row = 0;
  } else if (++c.refusals_in_a_row >= options_.max_refusals_in_a_row) {
    c.close_when_flushed = true;  // after the last refusal is written
    ++closed_after_refusals_;
  }
  c.request_refused = false;
  // The request is done: its frame (record values included) leaves no copy in the buffer, which
  // stays allocated for the connection's next frames; the parsed request's heap blocks are
  // wiped as they are freed (docs/threat-model.md, "Secrets in memory").
  c.request.reset();
  explicit_bzero(c.buffer.data() + c.begin, c.frame_header + c.frame_payload);
  c.begin += c.frame_header + c.frame_payload;
  c.frame_header = c.frame_payload = 0;
  Clock::time_point now = Clock::now();
  c.idle_since = now;
  c.frame_started = now;  // for pipelined bytes; they were not timed while the request ran
  if (c.begin == c.end) {
    c.begin = c.end = 0;
    // Do not keep a large buffer around for one large frame.
    if (c.buffer.size() > kKeptInputBuffer) ResizeInput(c, 0);
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
    if (connection->state == ConnectionState::kHeld) connection->state = ConnectionState::kReading;
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
    if (c.state != ConnectionState::kReading || (c.events & EPOLLOUT)) continue;  // output timer
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
    if (connection->fd < 0) continue;
    if (mid_frame) {
      Refuse(connection, ErrorCode::kRequestTimeout, 0,
             "the request was not received completely within the request timeout");
    } else {
      Refused(connection->peer, ErrorCode::kRequestTimeout);
      Close(connection);
    }
  }
  return std::min(next, CheckOutputTimers(now));
}

void Server::Impl::Refuse(const std::shared_ptr<Connection>& connection, ErrorCode code,
                          uint64_t request_id, std::string_view message) {
  Refused(connection->peer, code);
  SendNow(connection->fd, ErrorResponse(code, request_id, message));
  Close(connection);
}

void Server::Impl::Close(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  ReleaseOutput(c);
  Watch(c, false);
  ResizeInput(c, 0);
  c.begin = c.end = 0;
  ::close(c.fd);
  c.fd = -1;
  connections_.erase(c.id);
  --connections_open_;
  if (c.peer.socket == daemon::SocketKind::kData) --data_connections_;
  if (--c.usage->connections == 0) callers_.erase({c.peer.uid, c.peer.socket});
  RequestEnded(connection);
  // Session::Closed may do real work (abort an upload): it runs on a worker.
  std::lock_guard<std::mutex> lock(queue_mu_);
  closes_.push_back(WorkItem{connection, false});
  queue_cv_.notify_one();
}

}  // namespace coffer::server
