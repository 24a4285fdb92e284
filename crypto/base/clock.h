// Clock: the project's one source of wall-clock time (storage and kms).
//
// Recycle-bin expiry, retention and the compliance lock compare stored times with Now(), as do
// the key manager's rotation, destruction and audit timestamps. Every such decision reads a Clock
// passed in by the caller, so tests drive time explicitly. It lives in the bottom target
// (crypto/base) so that every layer shares one interface and one fake drives them all. The daemon
// passes SystemClock(). Fake clocks exist only in test binaries.
//
// Thread safety: Now() may be called from any number of threads at once.
// Ownership: whoever passes a Clock* keeps it alive for as long as the receiver uses it.
// Failure: Now() cannot fail.

#ifndef COFFER_CRYPTO_BASE_CLOCK_H_
#define COFFER_CRYPTO_BASE_CLOCK_H_

#include <chrono>
#include <cstdint>

namespace coffer {

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
const Clock& SystemClock();

// Whole microseconds since the Unix epoch (negative before 1970): how storage and kms store times.
int64_t ToUnixMicros(std::chrono::system_clock::time_point time);
std::chrono::system_clock::time_point FromUnixMicros(int64_t micros);

}  // namespace coffer

#endif  // COFFER_CRYPTO_BASE_CLOCK_H_
