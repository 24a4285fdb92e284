// PhaseReporter: the reporting side of crypto/base/progress.h — one phase of a long operation,
// reported to a ProgressFn with throttling, so a caller is not flooded (one report per 4 KiB
// chunk) and a phase always ends on a report with done == total.
//
// The constructor reports the start (done 0 of total). Add/Raise report when done has grown by
// at least `step` units since the last report; Finish reports the end. done is clamped to a
// known total (a total taken before the work, e.g. the size of a file that grows meanwhile, is
// an estimate) and never decreases. A phase that fails is left unfinished: its last report is
// below total, which is the truth.
//
// Thread safety: none; the operation serializes its calls (one thread, or under its lock).
// Ownership: borrows the ProgressFn, which must outlive the reporter. With an empty function
// every call does nothing.

#ifndef COFFER_STORAGE_PHASE_REPORTER_H_
#define COFFER_STORAGE_PHASE_REPORTER_H_

#include <cstdint>
#include <string>

#include "crypto/base/progress.h"

namespace coffer::storage {

class PhaseReporter {
 public:
  // Byte phases (copies, checksums) report at most once per MiB; item phases (replays,
  // re-wraps, rotations: each an HSM call or a DB write) after every item.
  static constexpr uint64_t kByteStep = uint64_t{1} << 20;
  static constexpr uint64_t kItemStep = 1;

  // Reports {phase, 0, total}.
  PhaseReporter(const ProgressFn& fn, std::string phase, uint64_t total, uint64_t step);
  PhaseReporter(const PhaseReporter&) = delete;
  PhaseReporter& operator=(const PhaseReporter&) = delete;

  // Adds `units` to done.
  void Add(uint64_t units);
  // Raises done to `done`; a lower value changes nothing.
  void Raise(uint64_t done);
  // Reports the end: done = total when the total is known (as it is otherwise). Later calls to
  // any method report nothing.
  void Finish();

  uint64_t done() const { return progress_.done; }
  uint64_t total() const { return progress_.total; }

 private:
  void Report();

  const ProgressFn* fn_;
  Progress progress_;
  uint64_t step_;
  uint64_t reported_ = 0;  // done at the last report
  bool finished_ = false;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_PHASE_REPORTER_H_
