// The server's output path: a response is written at once as far as the socket takes it, the
// rest waits in the connection's output buffer for the reactor (EPOLLOUT), so no worker and no
// reactor pass ever blocks on a slow reader (kms/server/server.h, "Output").

#include "kms/server/internal/server_impl.h"

namespace coffer::server {

bool IsRefusal(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotGranted:
    case ErrorCode::kSlowDown:
    case ErrorCode::kWrongSocket:
    case ErrorCode::kMfaRequired:
    case ErrorCode::kAdminNotEnrolled:
      return true;
    default:
      return false;
  }
}

namespace {

// One non-blocking send: the bytes taken (0 when the socket is full), or -1 when the peer is gone.
ssize_t SendSome(int fd, std::string_view bytes) {
  for (;;) {
    ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -1;
  }
}

absl::Status PeerGone() {
  return MakeError(ErrorCode::kDaemonUnavailable, "the peer closed the connection");
}

}  // namespace

bool Server::Impl::FailOutput(Connection& c, absl::Status failure) {
  if (!c.out_failure.ok()) return false;
  c.out_failure = std::move(failure);
  c.out_cv.notify_all();
  return true;
}

absl::Status Server::Impl::SendResponse(const std::shared_ptr<Connection>& connection,
                                        const coffer::v1::Response& response) {
  Connection& c = *connection;
  if (response.has_error() && IsRefusal(static_cast<ErrorCode>(response.error().code()))) {
    c.request_refused = true;
  }
  std::string frame;
  api::AppendFrame(response, &frame);
  // On the reactor (a request run inline): never wait, and the reactor itself watches for
  // EPOLLOUT once the request completes (Advance).
  const bool on_reactor = OnReactor();
  std::unique_lock<std::mutex> lock(c.out_mu);
  // A streaming handler waits here for its reader: bounded, as the reactor (or this wait) fails
  // the connection once the peer took nothing for request_timeout.
  while (!on_reactor && c.out_failure.ok() &&
         c.unsent() >= options_.max_output_bytes_per_connection) {
    Clock::time_point deadline = c.out_progress + options_.request_timeout;
    if (Clock::now() >= deadline) {
      if (FailOutput(c, MakeError(ErrorCode::kRequestTimeout,
                                  "the peer did not read its response in time"))) {
        ++output_timeouts_;
        Refused(c.peer, ErrorCode::kRequestTimeout);
      }
      break;
    }
    ++sends_waiting_;
    c.out_cv.wait_until(lock, deadline);
    --sends_waiting_;
  }
  if (!c.out_failure.ok()) return c.out_failure;
  std::string_view rest = frame;
  if (c.unsent() == 0) {
    ssize_t n = SendSome(c.fd, rest);
    if (n < 0) {
      FailOutput(c, PeerGone());
      return c.out_failure;
    }
    rest.remove_prefix(static_cast<size_t>(n));
    c.out_progress = Clock::now();
    if (rest.empty()) return absl::OkStatus();
    explicit_bzero(c.out.data(), c.out.size());  // sent replies: no copy kept in the capacity
    c.out.clear();
    c.out_begin = 0;
  }
  c.out.append(rest);
  c.usage->buffered += rest.size();
  buffered_output_ += rest.size();
  if (c.write_requested || on_reactor) return absl::OkStatus();
  c.write_requested = true;
  lock.unlock();
  PostWantWrite(connection);
  return absl::OkStatus();
}

// Reactor: writes what the peer takes; resumes the connection once everything is sent.
void Server::Impl::FlushOutput(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  bool failed = false;
  bool drained = false;
  {
    std::lock_guard<std::mutex> lock(c.out_mu);
    if (!c.out_failure.ok()) {
      failed = true;
    } else if (c.unsent() > 0) {
      ssize_t n = SendSome(c.fd, std::string_view(c.out).substr(c.out_begin));
      if (n < 0) {
        FailOutput(c, PeerGone());
        failed = true;
      } else if (n > 0) {
        c.out_begin += static_cast<size_t>(n);
        c.usage->buffered -= static_cast<size_t>(n);
        buffered_output_ -= static_cast<size_t>(n);
        c.out_progress = Clock::now();
        if (c.unsent() == 0) {
          std::string().swap(c.out);
          c.out_begin = 0;
        } else if (c.out_begin > c.out.size() / 2) {
          // As erase(0, out_begin), but the vacated tail is wiped before the string shrinks.
          const size_t unsent = c.unsent();
          std::memmove(c.out.data(), c.out.data() + c.out_begin, unsent);
          explicit_bzero(c.out.data() + unsent, c.out.size() - unsent);
          c.out.resize(unsent);
          c.out_begin = 0;
        }
        c.out_cv.notify_all();
      }
    }
    if (!failed && c.unsent() == 0) {
      c.write_requested = false;
      drained = true;
    }
  }
  if (failed) {
    OutputFailed(connection);
  } else if (drained && c.state == ConnectionState::kReading) {
    // The connection's timers start again from here, not from the end of its request.
    c.idle_since = c.frame_started = Clock::now();
    Advance(connection);  // the next frame, or close after refusals or in a drain
  } else {
    Watch(c, c.want_read);
  }
}

// Reactor: the output failed (peer gone, or too slow). A connection whose request still runs is
// only shut down, so that its fd stays valid until the worker's completion closes it.
void Server::Impl::OutputFailed(const std::shared_ptr<Connection>& connection) {
  Connection& c = *connection;
  if (c.fd < 0) return;
  if (c.state == ConnectionState::kBusy) {
    ::shutdown(c.fd, SHUT_RDWR);
    ReleaseOutput(c);
    Watch(c, false);
  } else {
    Close(connection);
  }
}

Clock::time_point Server::Impl::CheckOutputTimers(Clock::time_point now) {
  Clock::time_point next = now + std::chrono::seconds(1);
  std::vector<std::shared_ptr<Connection>> expired;
  for (auto& [id, connection] : connections_) {
    Connection& c = *connection;
    std::lock_guard<std::mutex> lock(c.out_mu);
    if (c.unsent() == 0 || !c.out_failure.ok()) continue;
    Clock::time_point deadline = c.out_progress + options_.request_timeout;
    if (now < deadline) {
      next = std::min(next, deadline);
    } else if (FailOutput(c, MakeError(ErrorCode::kRequestTimeout,
                                       "the peer did not read its response in time"))) {
      expired.push_back(connection);
    }
  }
  for (auto& connection : expired) {
    ++output_timeouts_;
    Refused(connection->peer, ErrorCode::kRequestTimeout);
    OutputFailed(connection);
  }
  return next;
}

// Drops the unsent bytes from the accounting (the connection is closing or failed).
void Server::Impl::ReleaseOutput(Connection& c) {
  std::lock_guard<std::mutex> lock(c.out_mu);
  size_t unsent = c.unsent();
  c.usage->buffered -= unsent;
  buffered_output_ -= unsent;
  std::string().swap(c.out);
  c.out_begin = 0;
  if (c.out_failure.ok()) FailOutput(c, PeerGone());
}

}  // namespace coffer::server
