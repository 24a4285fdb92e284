// cofferd's transport: two Unix stream sockets (data and admin), kernel peer credentials,
// varint-delimited coffer.v1 frames (kms/api/framing.h), a bounded worker pool, and every limit
// and timeout a socket-facing daemon needs. It hands each complete Request to the services
// through daemon::Session (kms/server/connection.h) and knows nothing of datasets.
//
// Threads. One reactor thread owns every socket: it accepts, reads peer credentials, reads
// frames non-blockingly (epoll), parses each complete frame, writes what a reply's first write
// left over (EPOLLOUT), enforces the timeouts, and writes the transport's own refusals. A
// request the session says may run inline (Session::Inline: one reply, short work, no wait on
// a disk sync) runs to completion on the reactor: Handle, reply, and on to the connection's
// next frame, with no hand-off to another thread (Stats().requests_inline). An inline request
// that must wait for something another thread does (its audit entry's fsync at window 0) parks
// (ResponseSink::Park): the reactor moves on, and the thread that finishes the wait posts the
// reply back to it (Stats().requests_parked). Every other request
// goes to a pool of `workers` threads that runs Session::Handle; the session sends its
// responses from the worker through a ResponseSink that never blocks on the socket (Output,
// below), and the worker posts the connection back to the reactor. An idle connection, or one
// whose next frame is only partly received, holds no thread. A connection has at most one
// request running at a time: while it runs, or while its replies are not all written, the
// reactor stops reading that connection (pipelined frames wait in the kernel and in the bytes
// already read), so requests of one connection run strictly in order. After an inline request
// the reactor serves the other connections' events before that connection's next pipelined
// frame. SessionFactory::Open runs on the reactor; Session::Closed runs on a worker, after the
// connection's last Handle returned.
//
// Output. ResponseSink::Send writes what the socket takes at once (MSG_DONTWAIT) and keeps the
// rest in the connection's output buffer, which the reactor writes as the peer reads; a frame
// is always taken while the buffer holds less than `max_output_bytes_per_connection` (and
// always on the reactor), so a request with one reply (a record get) never waits for its
// reader and frees its thread at once. A streaming handler (an attachment download, an export) that
// finds the buffer at its cap waits for the reader: a bounded wait, as the connection fails with
// REQUEST_TIMEOUT when the peer takes no byte for `request_timeout`. That wait holds a worker, so
// it is accounted as running: it counts against the caller's `max_requests_per_uid` and, on the
// data socket, against the data share of the workers, so the slow readers of one caller pin at most
// `max_requests_per_uid` workers and data clients never the admin socket's reserve
// (Stats().sends_waiting shows them). A connection whose unsent bytes the peer does not take
// for `request_timeout` is dropped (REQUEST_TIMEOUT), whether a request runs or not.
//
// Fair shares. Callers are counted per (uid, socket): at most `max_connections_per_uid` open
// connections, `max_requests_per_uid` requests queued or running (a further complete frame is
// held, its timers suspended, until one of them ends), and `max_buffered_bytes_per_uid` bytes
// buffered (input buffers as allocated plus unsent output); data-socket connections stop
// growing once all connections together buffer `max_buffered_bytes` (admin-socket ones are held
// to their callers' caps only). Beyond a cap only a single reply frame per running request is
// still taken. The data socket may take at most `max_connections - admin_reserved_connections`
// connections and `workers - admin_reserved_workers` workers (each reserve clamped so as to
// leave the data socket one), so the admin socket keeps capacity of its own. Input buffers grow
// as bytes arrive (doubling from 4 KiB, at most to the frame's declared size), never ahead of
// them, and an emptied buffer above 64 KiB is released.
//
// Backpressure. At most `max_queued_requests` complete data-socket requests wait for a worker
// (admin requests are bounded by the admin connections). When the queue is full, a data
// connection that has a complete frame is paused (not read, its timeouts suspended) until a
// slot frees: its client's writes block in the kernel.
//
// Limits, timeouts and refusals. Each refusal is one Response whose `error` carries the code
// (request_id 0 unless the request could be read), best effort (the socket is not waited on),
// then the connection is closed; each is reported to SessionFactory::TransportRefused and
// counted in Stats().refusals:
//  - more than `max_connections` open connections (both sockets together), more data-socket
//    connections than its share, or more than `max_connections_per_uid` of one caller: the new
//    connection is accepted, answered SERVER_BUSY (506), closed.
//  - a frame whose bytes would take its caller's buffered bytes past
//    `max_buffered_bytes_per_uid` (or the daemon's past `max_buffered_bytes`), or a request
//    arriving while they are already past it (unsent replies): SERVER_BUSY.
//  - a frame whose declared size exceeds `max_frame_bytes`: FRAME_TOO_LARGE (500), before any
//    of its payload is read.
//  - a size prefix that is not a valid varint, or a payload that does not parse as a
//    coffer.v1.Request: MALFORMED_REQUEST (501).
//  - a frame begun but not completed within `request_timeout`: REQUEST_TIMEOUT (505).
//  - no byte received for `idle_timeout` between requests: closed without an answer, reported
//    as REQUEST_TIMEOUT.
//  - unsent response bytes the peer does not take for `request_timeout`: the connection is
//    closed (a waiting Send fails) and reported as REQUEST_TIMEOUT.
//  - `max_refusals_in_a_row` requests in a row answered with a refusal (NOT_GRANTED,
//    SLOW_DOWN, WRONG_SOCKET, MFA_REQUIRED, ADMIN_NOT_ENROLLED: the caller may not, see
//    IsRefusal in output.cc): once the last answer is written, the connection is closed
//    without more, so refused requests cannot keep a connection alive; counted in
//    Stats().closed_after_refusals (each refusal was already the session's to audit).
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

  // Fair shares (see the header comment). A caller is a (uid, socket) pair.
  size_t admin_reserved_connections = 16;  // of max_connections, for the admin socket only
  size_t admin_reserved_workers = 2;       // of workers, for admin requests only
  size_t max_connections_per_uid = 64;
  size_t max_requests_per_uid = 32;  // queued or running
  size_t max_buffered_bytes_per_uid = size_t{64} << 20;
  size_t max_buffered_bytes = size_t{512} << 20;
  // A streaming Send waits (bounded by request_timeout) while this many bytes are unsent.
  size_t max_output_bytes_per_connection = size_t{2} << 20;
  size_t max_refusals_in_a_row = 16;
  // false: every request goes to the workers, whatever Session::Inline says.
  bool run_inline = true;
};

// For the status operation.
struct ServerStats {
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;  // accepted since Start, refused ones included
  uint64_t requests = 0;           // frames handed to Session::Handle
  uint64_t requests_inline = 0;    // of them, run on the reactor (Session::Inline)
  uint64_t requests_parked = 0;    // of those, answered later from another thread (Park)
  std::map<ErrorCode, uint64_t> refusals;

  // Gauges.
  uint64_t buffered_input_bytes = 0;   // input buffers as allocated
  uint64_t buffered_output_bytes = 0;  // response bytes not yet taken by their peers
  uint64_t sends_waiting = 0;          // Sends waiting for a slow reader (each holds a worker)
  // Counters since Start.
  uint64_t bytes_received = 0;
  uint64_t busy_connection_limit = 0;  // SERVER_BUSY at accept: all slots, or the data share
  uint64_t busy_uid_connections = 0;   // SERVER_BUSY at accept: the caller's connection cap
  uint64_t busy_buffered_bytes = 0;    // SERVER_BUSY: the caller's or the daemon's byte cap
  uint64_t requests_held = 0;          // complete frames held at the caller's request cap
  uint64_t output_timeouts = 0;        // dropped: unsent bytes not taken in request_timeout
  uint64_t closed_after_refusals = 0;  // closed after max_refusals_in_a_row refusals
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
