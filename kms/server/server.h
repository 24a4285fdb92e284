// cofferd's transport: two Unix stream sockets (data and admin), kernel peer credentials,
// varint-delimited coffer.v1 frames (kms/api/framing.h), a bounded worker pool, and every limit
// and timeout a socket-facing daemon needs. It hands each complete Request to the services
// through daemon::Session (kms/server/connection.h) and knows nothing of datasets.
//
// Threads. One reactor thread owns every socket: it accepts, reads peer credentials, reads
// frames non-blockingly (epoll), enforces the timeouts, and writes the transport's own refusals.
// A pool of `workers` threads parses complete frames and runs Session::Handle; the session sends
// its responses from the worker through a ResponseSink writing to the socket. An idle
// connection, or one whose next frame is only partly received, holds no worker. A connection
// has at most one request in the pool at a time: while it is queued or running, the reactor
// stops reading that connection (pipelined frames wait in the kernel and in at most one read
// chunk), so requests of one connection run strictly in order. SessionFactory::Open runs on the
// reactor; Session::Closed runs on a worker, after the connection's last Handle returned.
//
// Backpressure. At most `max_queued_requests` complete requests wait for a worker. When the
// queue is full, a connection that has a complete frame is paused (not read, its timeouts
// suspended) until a slot frees: its client's writes block in the kernel; nothing is buffered
// beyond one frame per connection.
//
// Limits, timeouts and refusals. Each refusal is one Response whose `error` carries the code
// (request_id 0 unless the request could be read), best effort (the socket is not waited on),
// then the connection is closed; each is reported to SessionFactory::TransportRefused and
// counted in Stats().refusals:
//  - more than `max_connections` open connections (both sockets together): the new connection
//    is accepted, answered SERVER_BUSY (506), closed.
//  - a frame whose declared size exceeds `max_frame_bytes`: FRAME_TOO_LARGE (500), before any
//    of its payload is read.
//  - a size prefix that is not a valid varint, or a payload that does not parse as a
//    coffer.v1.Request: MALFORMED_REQUEST (501).
//  - a frame begun but not completed within `request_timeout`: REQUEST_TIMEOUT (505).
//  - no byte received for `idle_timeout` between requests: closed without an answer, reported
//    as REQUEST_TIMEOUT.
//  - a response the peer does not take within `request_timeout` (each Send has its own
//    deadline): the connection is closed and the worker freed; reported as REQUEST_TIMEOUT.
//  - a frame received after Shutdown began: SHUTTING_DOWN (507), with its request_id.
// A peer that closes between frames, or half-closes after a request (its response is still
// sent), ends the connection without a refusal; one that closes inside a frame likewise.
// Session::Handle returning non-OK closes the connection with nothing more sent.
//
// Sockets. Each path is created with `mode` (default 0660) and, if set, chown'ed to `group`
// before listen(), so no client can connect through wider permissions. Start refuses
// (CONFIG_INVALID, the message says what to fix) a path longer than sun_path allows, a missing
// parent directory, a file in the way that is not a socket, a socket another process still
// listens on, or identical data and admin paths. A stale socket (nothing listening) is
// replaced. Shutdown removes the socket files it created (if they were not replaced since).
//
// Identity comes only from the kernel: SO_PEERCRED (uid, gid, pid at connect time) and
// SO_PEERGROUPS (supplementary groups) plus which socket was connected to.
//
// Thread safety: Stats and Shutdown may be called from any thread; Shutdown is idempotent and
// the destructor calls it with `default_drain_timeout`. The SessionFactory must outlive the
// Server. Nothing is logged; request contents never leave the session.

#ifndef COFFER_KMS_SERVER_SERVER_H_
#define COFFER_KMS_SERVER_SERVER_H_

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "crypto/base/status.h"
#include "kms/api/framing.h"
#include "kms/server/connection.h"

namespace coffer::server {

struct SocketOptions {
  std::string path;
  mode_t mode = 0660;
  std::optional<gid_t> group;  // chown(path, -1, group) when set
};

struct ServerOptions {
  SocketOptions data_socket;
  SocketOptions admin_socket;
  size_t workers = 16;
  size_t max_queued_requests = 64;
  size_t max_connections = 256;
  size_t max_frame_bytes = api::kDefaultMaxFrameBytes;
  std::chrono::milliseconds idle_timeout{60'000};
  std::chrono::milliseconds request_timeout{30'000};
  // Used by the destructor when Shutdown was not called.
  std::chrono::milliseconds default_drain_timeout{5'000};
};

// For the status operation.
struct ServerStats {
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;  // accepted since Start, refused ones included
  uint64_t requests = 0;           // frames handed to Session::Handle
  std::map<ErrorCode, uint64_t> refusals;
};

class Server {
 public:
  // Creates both sockets, then starts the reactor and `workers` worker threads. Fails with
  // CONFIG_INVALID for unusable options or socket paths, IO_ERROR for a failing system call.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const ServerOptions& options,
                                                       daemon::SessionFactory* factory);

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // Stops accepting and removes the socket files; frames that arrive from now on are answered
  // SHUTTING_DOWN, and so are requests still waiting for a worker. Requests already in
  // Session::Handle run to completion and their responses are sent, for up to `drain_timeout`;
  // then the remaining connections are shut down (their sinks fail) and Shutdown waits for
  // those Handle calls to return. Every connection is closed and its Session::Closed called
  // before Shutdown returns. Idempotent; concurrent callers wait for the first.
  void Shutdown(std::chrono::milliseconds drain_timeout);

  ServerStats Stats() const;

 private:
  class Impl;
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace coffer::server

#endif  // COFFER_KMS_SERVER_SERVER_H_
