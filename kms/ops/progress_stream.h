// ProgressStream: turns the coffer::Progress reports of one long admin operation (key_rewrap,
// backup_create, backup_verify, backup_restore) into Response.progress frames on the
// request's connection, when the request asked for them (Request.progress).
//
// Frames are throttled: the first report of each phase, the report that completes a phase
// (done == total), and otherwise at most one per `min_interval`. Each frame carries the phase's
// rate (units per second since the phase began) and an ETA.
//
// Thread safety: the operation may report from its own threads (RocksDB's backup engine does);
// reports are serialized here, and they happen while the session's thread is blocked inside the
// operation, so the sink never writes two frames at once (session.h's rule). Ownership: borrows
// the sink for its lifetime. Failures: a failed send (the peer is gone) stops further frames and
// is kept in status(); the handler returns it so the connection closes.

#ifndef COFFER_KMS_OPS_PROGRESS_STREAM_H_
#define COFFER_KMS_OPS_PROGRESS_STREAM_H_

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/progress.h"
#include "kms/server/connection.h"

namespace coffer::daemon {

class ProgressStream {
 public:
  ProgressStream(const coffer::v1::Request& request, ResponseSink* sink,
                 std::chrono::milliseconds min_interval = std::chrono::milliseconds(250));
  ProgressStream(const ProgressStream&) = delete;
  ProgressStream& operator=(const ProgressStream&) = delete;

  // What to pass to the operation: empty when the request did not ask for progress.
  coffer::ProgressFn Function();

  // The first failure to send a frame, or OK.
  absl::Status status() const;

 private:
  using SteadyClock = std::chrono::steady_clock;

  void Report(const coffer::Progress& progress);

  const bool wanted_;
  const uint64_t request_id_;
  ResponseSink* const sink_;
  const std::chrono::milliseconds min_interval_;

  mutable std::mutex mu_;
  std::string phase_;                    // guarded by mu_
  bool in_phase_ = false;                // guarded by mu_
  SteadyClock::time_point phase_start_;  // guarded by mu_
  SteadyClock::time_point last_sent_;    // guarded by mu_
  absl::Status status_;                  // guarded by mu_
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_PROGRESS_STREAM_H_
