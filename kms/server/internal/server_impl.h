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
#include <map>
#include <mutex>
#include <optional>
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

// Input buffers start at kMinInputBuffer and double as bytes arrive; an emptied buffer larger
// than kKeptInputBuffer is released.
inline constexpr size_t kMinInputBuffer = size_t{4} << 10;
inline constexpr size_t kKeptInputBuffer = size_t{64} << 10;
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
  kReading,  // idle, a frame partly received, or its replies still being written
  kPaused,   // a complete frame waits for room in the worker queue; not read
  kHeld,     // a complete frame waits for its caller's request cap; not read
  kBusy,     // its request is queued or running on a worker; not read
};

struct Connection;

// What one caller — a (uid, socket) pair — holds. The map entry and the counts are
// reactor-only; `buffered` is also changed by workers (output).
struct CallerUsage {
  size_t connections = 0;
  size_t requests = 0;  // queued or running (kPaused or kBusy)
  std::atomic<size_t> buffered{0};
  std::deque<std::shared_ptr<Connection>> held;  // kHeld, in arrival order
};

struct Connection {
  uint64_t id = 0;
  int fd = -1;
  daemon::PeerIdentity peer;
  std::unique_ptr<daemon::Session> session;
  std::shared_ptr<CallerUsage> usage;

  // Received bytes not yet consumed: buffer[begin, end). Only the reactor touches them, except
  // that a worker parses the frame at `begin` while the connection is kBusy.
  std::string buffer;
  size_t begin = 0;
  size_t end = 0;
  size_t frame_header = 0;  // of the complete frame at `begin`, while kPaused or kBusy
  size_t frame_payload = 0;
  // That frame parsed (by the reactor, which decides where it runs), while kHeld, kPaused or
  // kBusy; reset when its request completes.
  std::unique_ptr<coffer::v1::Request> request;

  ConnectionState state = ConnectionState::kReading;
  bool counted_request = false;  // counted in usage->requests
  uint32_t events = 0;           // the epoll mask now registered (0: not in epoll)
  bool want_read = false;        // EPOLLIN once no output is pending
  size_t refusals_in_a_row = 0;
  bool close_when_flushed = false;
  // Set by the worker while kBusy, read by the reactor at completion.
  bool request_refused = false;
  bool peer_closed = false;         // the peer shut down its writing side
  Clock::time_point idle_since;     // last accept or response, while nothing is buffered
  Clock::time_point frame_started;  // first byte of the partly received frame

  // Unsent response bytes: out[out_begin, size). Guarded by out_mu; written by the worker's
  // sink (first write) and by the reactor (EPOLLOUT).
  std::mutex out_mu;
  std::condition_variable out_cv;  // room, or a failure
  std::string out;
  size_t out_begin = 0;
  Clock::time_point out_progress;  // the last byte the peer took, while bytes are unsent
  absl::Status out_failure;
  bool write_requested = false;  // the reactor was asked to watch EPOLLOUT

  size_t buffered() const { return end - begin; }
  std::string_view unread() const { return std::string_view(buffer.data() + begin, end - begin); }
  size_t unsent() const { return out.size() - out_begin; }  // under out_mu
};

struct WorkItem {
  std::shared_ptr<Connection> connection;
  bool request = true;  // false: call Session::Closed
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

// Wipes the stack a request's handling used, below the caller's frame (workers.cc).
void WipeRequestStack();

// A refusal is best effort: one non-blocking send, as the connection is closed right after.
inline void SendNow(int fd, const coffer::v1::Response& response) {
  std::string frame;
  api::AppendFrame(response, &frame);
  ssize_t rc;
  do {
    rc = ::send(fd, frame.data(), frame.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (rc < 0 && errno == EINTR);
}

// Whether replies of `c` wait to be written (and can still be).
inline bool HasUnsent(Connection& c) {
  std::lock_guard<std::mutex> lock(c.out_mu);
  return c.unsent() > 0 && c.out_failure.ok();
}

// Whether an error response says "the caller may not" (counted towards max_refusals_in_a_row).
bool IsRefusal(ErrorCode code);

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
  if (options.max_connections_per_uid == 0 || options.max_requests_per_uid == 0 ||
      options.max_output_bytes_per_connection == 0 || options.max_refusals_in_a_row == 0) {
    return invalid("per-caller limits must be at least 1");
  }
  if (options.max_buffered_bytes_per_uid < options.max_frame_bytes ||
      options.max_buffered_bytes < options.max_buffered_bytes_per_uid) {
    return invalid("max_buffered_bytes >= max_buffered_bytes_per_uid >= max_frame_bytes");
  }
  if (options.data_socket.path == options.admin_socket.path) {
    return invalid("the data and admin sockets need different paths");
  }
  return absl::OkStatus();
}

class Server::Impl {
 public:
  Impl(const ServerOptions& options, daemon::SessionFactory* factory)
      : options_(options),
        factory_(factory),
        data_connections_cap_(options.max_connections - std::min(options.admin_reserved_connections,
                                                                 options.max_connections - 1)),
        data_workers_cap_(options.workers -
                          std::min(options.admin_reserved_workers, options.workers - 1)) {}

  ~Impl() {
    if (epoll_fd_ >= 0) ::close(epoll_fd_);
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  absl::Status Init();
  void Shutdown(std::chrono::milliseconds drain_timeout);
  ServerStats Stats() const;
  std::chrono::milliseconds default_drain_timeout() const { return options_.default_drain_timeout; }

  // The ResponseSink a request's session sends through, and a parked request's reply
  // (workers.cc).
  class ConnectionSink;
  class Parked;

  // Worker threads (the sink): queues one response frame on the connection (output.cc).
  absl::Status SendResponse(const std::shared_ptr<Connection>& connection,
                            const coffer::v1::Response& response);

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
  // Sets want_read and registers the mask it and the pending output call for.
  void Watch(Connection& connection, bool read);
  void WatchListeners(bool watch);
  bool AdmitConnection(int fd, const daemon::PeerIdentity& peer,
                       std::shared_ptr<CallerUsage>* usage);
  bool OverByteCaps(const Connection& connection, size_t more) const;
  bool GrowInput(const std::shared_ptr<Connection>& connection, size_t size);
  void ResizeInput(Connection& connection, size_t size);
  void Dispatch(const std::shared_ptr<Connection>& connection);
  // Runs the connection's request on the reactor (Session::Inline) and queues its completion.
  void RunInline(const std::shared_ptr<Connection>& connection);
  // Completes the requests run inline since the last pass, each once (a connection with more
  // pipelined frames goes on in the next pass, after the other connections' events).
  void CompleteInline();
  // Any thread: a parked request's reply (none: close the connection) is ready.
  void PostParked(std::shared_ptr<Connection> connection,
                  std::optional<coffer::v1::Response> response);
  // Reactor: sends a parked request's reply and completes it.
  void EndParked(const std::shared_ptr<Connection>& connection,
                 std::optional<coffer::v1::Response> response);
  void RequestEnded(const std::shared_ptr<Connection>& connection);
  // Output, on the reactor (output.cc).
  void FlushOutput(const std::shared_ptr<Connection>& connection);
  Clock::time_point CheckOutputTimers(Clock::time_point now);
  void ReleaseOutput(Connection& connection);
  // Marks the output failed (waking a waiting Send); true for the first failure.
  bool FailOutput(Connection& connection, absl::Status failure);
  void OutputFailed(const std::shared_ptr<Connection>& connection);

  // Worker threads.
  void WorkerLoop();
  void RunRequest(const std::shared_ptr<Connection>& connection);
  bool TryEnqueue(WorkItem item);
  void PostCompletion(std::shared_ptr<Connection> connection, bool close);
  void PostWantWrite(std::shared_ptr<Connection> connection);

  void Wake();
  // Whether the calling thread is this server's reactor.
  bool OnReactor() const;
  void Refused(const daemon::PeerIdentity& peer, ErrorCode code);

  const ServerOptions options_;
  daemon::SessionFactory* const factory_;
  const size_t data_connections_cap_;
  const size_t data_workers_cap_;

  int epoll_fd_ = -1;
  int wake_fd_ = -1;
  std::optional<ListeningSocket> data_listener_;
  std::optional<ListeningSocket> admin_listener_;
  std::thread reactor_;
  std::vector<std::thread> workers_;

  // Reactor-only state.
  std::unordered_map<uint64_t, std::shared_ptr<Connection>> connections_;
  std::deque<std::pair<std::shared_ptr<Connection>, bool>> inline_done_;  // bool: close
  std::deque<std::shared_ptr<Connection>> paused_;
  std::map<std::pair<uid_t, daemon::SocketKind>, std::shared_ptr<CallerUsage>> callers_;
  size_t data_connections_ = 0;
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
  std::deque<WorkItem> closes_;       // Session::Closed calls
  std::deque<WorkItem> admin_queue_;  // admin-socket requests
  std::deque<WorkItem> queue_;        // data-socket requests
  size_t queued_requests_ = 0;        // queue_.size()
  size_t data_running_ = 0;           // data requests on a worker, at most data_workers_cap_
  bool workers_stop_ = false;
  std::mutex completions_mu_;
  std::vector<std::pair<std::shared_ptr<Connection>, bool>> completions_;
  std::vector<std::shared_ptr<Connection>> want_write_;
  std::vector<std::pair<std::shared_ptr<Connection>, std::optional<coffer::v1::Response>>>
      parked_done_;

  // Stats.
  std::atomic<uint64_t> connections_open_{0};
  std::atomic<uint64_t> connections_total_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> requests_inline_{0};
  std::atomic<uint64_t> requests_parked_{0};
  std::atomic<uint64_t> buffered_input_{0};
  std::atomic<uint64_t> buffered_output_{0};
  std::atomic<uint64_t> sends_waiting_{0};
  std::atomic<uint64_t> bytes_received_{0};
  std::atomic<uint64_t> busy_connection_limit_{0};
  std::atomic<uint64_t> busy_uid_connections_{0};
  std::atomic<uint64_t> busy_buffered_bytes_{0};
  std::atomic<uint64_t> requests_held_{0};
  std::atomic<uint64_t> output_timeouts_{0};
  std::atomic<uint64_t> closed_after_refusals_{0};
  mutable std::mutex refusals_mu_;
  std::map<ErrorCode, uint64_t> refusals_;
};

}  // namespace coffer::server

#endif  // COFFER_KMS_SERVER_INTERNAL_SERVER_IMPL_H_
