// Internal to kms/server: the server's state (Server::Impl) and what its reactor and workers
// share — a connection's buffers and state, work items, the response sink of a worker, limits.
// server.cc starts and stops it; reactor.cc is the reactor thread (accept, read, timers, drain);
// workers.cc the worker pool that runs sessions.
//
// Thread safety: as documented per member below (reactor-only, guarded, or atomic).

#ifndef COFFER_KMS_SERVER_INTERNAL_SERVER_IMPL_H_
#define COFFER_KMS_SERVER_INTERNAL_SERVER_IMPL_H_

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
#include "kms/server/server.h"

namespace coffer::server {

using Clock = std::chrono::steady_clock;

inline constexpr size_t kReadChunk = size_t{64} << 10;
// Bytes read from one connection per readiness event, so one fast sender cannot starve the
// others on the reactor.
inline constexpr size_t kMaxReadPerEvent = size_t{256} << 10;
// How long accepting pauses when the process is out of file descriptors.
inline constexpr auto kAcceptRetry = std::chrono::milliseconds(100);

// epoll tags: connections are numbered from kFirstConnectionId.
inline constexpr uint64_t kDataListenerTag = 1;
inline constexpr uint64_t kAdminListenerTag = 2;
inline constexpr uint64_t kWakeTag = 3;
inline constexpr uint64_t kFirstConnectionId = 16;

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

inline coffer::v1::Response ErrorResponse(ErrorCode code, uint64_t request_id,
                                          std::string_view message) {
  coffer::v1::Response response;
  response.set_request_id(request_id);
  response.mutable_error()->set_code(static_cast<int32_t>(code));
  response.mutable_error()->set_code_name(std::string(ErrorCodeName(code)));
  response.mutable_error()->set_message(std::string(message));
  return response;
}

// A refusal is best effort: one non-blocking send, as the connection is closed right after.
inline void SendNow(int fd, const coffer::v1::Response& response) {
  std::string frame;
  api::AppendFrame(response, &frame);
  ssize_t rc;
  do {
    rc = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (rc < 0 && errno == EINTR);
}

inline absl::Status CheckOptions(const ServerOptions& options) {
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

}  // namespace coffer::server

#endif  // COFFER_KMS_SERVER_INTERNAL_SERVER_IMPL_H_
