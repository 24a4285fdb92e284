// CofferdMain: the whole cofferd program — flags, the unprivileged identity, core dumps, the
// secure heap, the log level and signals (SIGTERM/SIGINT drain and exit 0, SIGHUP reloads
// grants, read from a signalfd on the main thread: no work runs in a signal handler) — around
// one Daemon (kms/cofferd/daemon.h), which owns everything else.
//
// The wall clock is its one parameter and is neither a flag nor a configuration field: the
// shipped cofferd (main.cc) passes SystemClock(), and only a test binary built under tests/
// passes a clock its test controls. Which clock runs is decided by which binary runs.
//
// Returns the process's exit status: 0 after a clean stop, 1 on any failure (logged to stderr;
// CLI11 prints usage errors itself). Call once, from main, before any other thread exists.
// `clock` must outlive the call.

#ifndef COFFER_KMS_COFFERD_COFFERD_MAIN_H_
#define COFFER_KMS_COFFERD_COFFERD_MAIN_H_

#include "crypto/base/clock.h"

namespace coffer::cofferd {

int CofferdMain(int argc, char** argv, const Clock& clock);

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_COFFERD_MAIN_H_
