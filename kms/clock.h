// Clock: the key manager's one source of wall-clock time.
//
// Every piece of kms/ logic that depends on the time of day (audit timestamps and checkpoint
// intervals, rotation clocks, destruction waiting periods) reads it through a Clock passed in by
// the caller, so tests can drive time explicitly. The daemon passes SystemClock(); fake clocks
// exist only in test binaries (tests/kms/), never as a daemon flag or API.
//
// Thread safety: implementations must allow Now() from any number of threads at once.
// Ownership: whoever passes a Clock* keeps it alive for as long as the receiver uses it.
// Failure: Now() cannot fail.

#ifndef COFFER_KMS_CLOCK_H_
#define COFFER_KMS_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace coffer::kms {

class Clock {
 public:
  Clock(const Clock&) = delete;
  Clock& operator=(const Clock&) = delete;
  virtual ~Clock() = default;

  // Returns the current wall-clock time.
  virtual std::chrono::system_clock::time_point Now() const = 0;

 protected:
  Clock() = default;
};

// The process's real clock (std::chrono::system_clock). Lives for the whole process.
Clock& SystemClock();

// Returns `time` as whole microseconds since the Unix epoch (negative before 1970).
int64_t ToUnixMicros(std::chrono::system_clock::time_point time);

}  // namespace coffer::kms

#endif  // COFFER_KMS_CLOCK_H_
