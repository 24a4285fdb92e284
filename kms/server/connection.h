// The seam between cofferd's transport (kms/server/server.h: sockets, peer credentials, framing,
// worker pool, timeouts) and its operations (kms/ops/services.h: grants, rate limits, data and
// admin operations, access audit). The transport knows nothing of datasets; the services know
// nothing of sockets. Tests drive either side alone through these interfaces.

#ifndef COFFER_KMS_SERVER_CONNECTION_H_
#define COFFER_KMS_SERVER_CONNECTION_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"

namespace coffer::daemon {

enum class SocketKind { kData, kAdmin };

// Who is on the other end of a connection, from the kernel: SO_PEERCRED (uid, gid, pid at
// connect time) and SO_PEERGROUPS (supplementary groups). Never from anything the client says.
struct PeerIdentity {
  uid_t uid = 0;
  gid_t gid = 0;
  pid_t pid = 0;
  std::vector<gid_t> groups;  // supplementary groups, without `gid`
  SocketKind socket = SocketKind::kData;
};

// The one reply of a parked request (ResponseSink::Park), sent later from any thread.
class ParkedReply {
 public:
  ParkedReply() = default;
  ParkedReply(const ParkedReply&) = delete;
  ParkedReply& operator=(const ParkedReply&) = delete;
  // Destroyed unfinished, it ends the request and closes the connection.
  virtual ~ParkedReply() = default;

  // Sends `response` and ends the request, so the connection's next frame may run. Once, from
  // any thread; never blocks: the transport writes the reply on its own thread.
  virtual void Finish(coffer::v1::Response response) = 0;
};

// Sends responses on one connection. Used only from the thread running Session::Handle.
class ResponseSink {
 public:
  ResponseSink() = default;
  ResponseSink(const ResponseSink&) = delete;
  ResponseSink& operator=(const ResponseSink&) = delete;
  virtual ~ResponseSink() = default;

  // Writes one response frame; fails (DAEMON_UNAVAILABLE, REQUEST_TIMEOUT) when the peer is
  // gone or does not read within the request timeout. A session seeing a failure must stop
  // sending and return the failure from Handle.
  virtual absl::Status Send(const coffer::v1::Response& response) = 0;

  // Parks the request: Handle returns before its reply is sent, and the request ends when the
  // returned ParkedReply is finished, from any thread (for instance once its audit entry is
  // durable). The thread that ran Handle moves on; the connection is not read meanwhile, so
  // replies stay in order. Only for a request with exactly one reply, which then goes only
  // through the ParkedReply (Send fails). Null where the transport does not offer it: for a
  // request on a worker, which simply waits in Handle.
  virtual std::unique_ptr<ParkedReply> Park() { return nullptr; }
};

// The per-connection state of the services (e.g. an attachment upload in progress).
class Session {
 public:
  Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;
  virtual ~Session() = default;

  // Handles one request. Requests of one connection reach Handle in arrival order and never
  // concurrently; different connections run concurrently on the worker pool. Handle sends the
  // request's response(s) through `sink` — none for an attachment chunk, several for a
  // download. A refused or failed request is an OK return after sending an error response;
  // a non-OK return means the connection must be closed (the peer broke the protocol or is
  // gone), after nothing more is sent.
  virtual absl::Status Handle(const coffer::v1::Request& request, ResponseSink* sink) = 0;

  // Whether Handle may run `request` on the transport's reactor thread, the one that read it
  // (run to completion: no hand-off to a worker and back). Only for requests that send one
  // reply and never wait long: not on a disk sync, a slow reader, an upload's next frame or
  // long CPU. The reactor takes their reply whole, whatever the output cap; every connection of
  // that reactor waits while Handle runs. What would wait on a disk sync (a window-0 audit
  // entry) parks instead (ResponseSink::Park). The default, false, runs every request on the
  // pool.
  virtual bool Inline(const coffer::v1::Request& /*request*/) const { return false; }

  // The connection ended (peer closed, error, timeout, or shutdown): release what Handle holds,
  // e.g. abort an open upload so nothing partial becomes visible.
  virtual void Closed() = 0;
};

class SessionFactory {
 public:
  SessionFactory() = default;
  SessionFactory(const SessionFactory&) = delete;
  SessionFactory& operator=(const SessionFactory&) = delete;
  virtual ~SessionFactory() = default;

  // A new connection from `peer`. Called on the transport's thread; must not block for long.
  virtual std::unique_ptr<Session> Open(const PeerIdentity& peer) = 0;

  // The transport refused something before any session saw it — an oversized or unparsable
  // frame, a timeout, SERVER_BUSY at accept — so the services can audit it. Must be
  // thread-safe and must not block for long.
  virtual void TransportRefused(const PeerIdentity& peer, ErrorCode code) = 0;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_SERVER_CONNECTION_H_
