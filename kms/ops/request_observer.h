// What the services report of each request as it ends, for metrics (kms/cofferd/metrics.h
// implements it; the services know nothing of how it is exposed).
//
// Thread safety: called from every worker at once, on the request path: an implementation must
// be thread-safe and cheap, and must not block.

#ifndef COFFER_KMS_OPS_REQUEST_OBSERVER_H_
#define COFFER_KMS_OPS_REQUEST_OBSERVER_H_

#include <chrono>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "kms/server/connection.h"

namespace coffer::daemon {

class RequestObserver {
 public:
  RequestObserver() = default;
  RequestObserver(const RequestObserver&) = delete;
  RequestObserver& operator=(const RequestObserver&) = delete;
  virtual ~RequestObserver() = default;

  // A request on `socket` ended: its operation (OP_NOT_SET when it named none), the code of the
  // first error it answered (kOk when none; an attachment chunk answers nothing) and how long
  // Session::Handle took — the service time, including writing the replies to the socket
  // buffer, not the time the request waited for a worker.
  virtual void Handled(::coffer::v1::Request::OpCase op, SocketKind socket, ErrorCode result,
                       std::chrono::steady_clock::duration took) = 0;

  // A request or connection was refused with `code` ("the caller may not", a rate limit, or a
  // transport refusal: SERVER_BUSY, FRAME_TOO_LARGE, a timeout...), as the refusal audit counts
  // it.
  virtual void Refused(SocketKind socket, ErrorCode code) = 0;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_REQUEST_OBSERVER_H_
