// Progress: what a long operation (a full backup, its verification or restore, a key re-wrap)
// reports while it runs, so an admin client can show a bar with rate and ETA.
//
// The operation calls the ProgressFn it was given; storage/phase_reporter.h is the throttled
// reporting side that storage and kms use. Reports are informational only: an operation never
// fails because of its reports, and a caller must not call back into the reporting object from
// the function (it runs while that object's lock is held).

#ifndef COFFER_CRYPTO_BASE_PROGRESS_H_
#define COFFER_CRYPTO_BASE_PROGRESS_H_

#include <cstdint>
#include <functional>
#include <string>

namespace coffer {

// Progress of a long operation: `done` of `total` units in the current `phase` (units are the
// phase's: bytes for copies and checksums, items for replays, versions for re-wraps). total 0:
// unknown. Phases run in order; within one phase done never decreases.
struct Progress {
  std::string phase;
  uint64_t done = 0;
  uint64_t total = 0;
};

// May be called from a thread other than the caller's, but never concurrently with itself and
// never after the operation that was given it returns. An empty function is allowed (no reports).
using ProgressFn = std::function<void(const Progress&)>;

}  // namespace coffer

#endif  // COFFER_CRYPTO_BASE_PROGRESS_H_
