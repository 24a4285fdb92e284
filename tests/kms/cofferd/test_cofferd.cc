// test-cofferd: cofferd itself — CofferdMain (kms/cofferd/cofferd_main.h), the same flags,
// wiring, process set-up and signals as the shipped binary — on a wall clock the test controls:
// the MappedClock file named by $COFFER_TEST_CLOCK_FILE (tests/testing/mapped_clock.h), which
// the harness advances (tests/kms/cofferd/cofferd_harness.h). A real process with real sockets,
// a real SoftHSM2 token and real RocksDB; only the clock differs. Built for tests only; the
// shipped cofferd has no such variable, flag or field.

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "kms/cofferd/cofferd_main.h"
#include "tests/testing/mapped_clock.h"

int main(int argc, char** argv) {
  const char* path = std::getenv(coffer::testing::kClockFileEnv);
  if (path == nullptr || *path == '\0') {
    std::fprintf(stderr, "test-cofferd: set %s to a clock file made by the test harness\n",
                 coffer::testing::kClockFileEnv);
    return 1;
  }
  // Mapped before CofferdMain drops privileges, so the daemon's user need not reach the file.
  std::unique_ptr<coffer::testing::MappedClock> clock =
      coffer::testing::MappedClock::OpenReadOnly(path);
  if (clock == nullptr) {
    std::fprintf(stderr, "test-cofferd: cannot map the clock file %s\n", path);
    return 1;
  }
  return coffer::cofferd::CofferdMain(argc, argv, *clock);
}
