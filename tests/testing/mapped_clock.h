// MappedClock: a wall clock a test controls across processes. The time is one 64-bit count of
// microseconds since the Unix epoch in an 8-byte file that each side maps (MAP_SHARED): the test
// creates it and advances it; test-cofferd (tests/kms/cofferd/test_cofferd.cc) maps it
// read-only and reads every Now() from it, so a change is seen by the daemon at once, without
// a restart or a message. Time stands still between advances.
//
// Test binaries only: the shipped cofferd has no way to read such a file.
//
// Thread safety: Now() and Advance() may be called from any thread and process at once (atomic
// 8-byte loads and stores on the shared page). Failures: Create and OpenReadOnly return nullptr
// when the file cannot be made, opened or mapped; Advance on a read-only clock does nothing.

#ifndef COFFER_TESTS_TESTING_MAPPED_CLOCK_H_
#define COFFER_TESTS_TESTING_MAPPED_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "crypto/base/clock.h"

namespace coffer::testing {

// The environment variable naming the clock file; read by test-cofferd only.
inline constexpr char kClockFileEnv[] = "COFFER_TEST_CLOCK_FILE";

class MappedClock final : public Clock {
 public:
  // Creates (or replaces) `path`, readable by all (the daemon may run as another user), holding
  // `start`; the returned clock may advance.
  static std::unique_ptr<MappedClock> Create(const std::string& path,
                                             std::chrono::system_clock::time_point start);
  // Maps an existing clock file for reading.
  static std::unique_ptr<MappedClock> OpenReadOnly(const std::string& path);

  ~MappedClock() override;

  std::chrono::system_clock::time_point Now() const override;
  // Moves the time forward by `by` (never backwards: the daemon refuses a clock that goes back).
  void Advance(std::chrono::microseconds by);

 private:
  MappedClock(int64_t* micros, bool writable) : micros_(micros), writable_(writable) {}
  int64_t* micros_;  // the shared page
  bool writable_;
};

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_MAPPED_CLOCK_H_
