// Process helpers for the tests that run coffer's binaries (cofferd, keyctl, hooks) as real
// processes: reading a file whole, running a set-up command, starting a program with its output
// in a file, and waiting for a process's effect.
//
// Thread safety: each call is independent. Failures: ReadWholeFile returns "" for a file it
// cannot read; SpawnWithOutput returns -1 when the output file cannot be opened or fork fails
// (a failed exec ends the child with status 127).

#ifndef COFFER_TESTS_TESTING_PROCESS_H_
#define COFFER_TESTS_TESTING_PROCESS_H_

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace coffer::testing {

// The whole content of `path`.
std::string ReadWholeFile(const std::string& path);

// Runs `command` with /bin/sh (test set-up only: the token script, chown) and returns the raw
// wait status from std::system.
int RunShell(const std::string& command);

// Starts `args[0]` with `args`, its standard output and error appended to `output_path`, the
// environment variables `unset_env` removed and those of `set_env` (name, value) set. Returns
// the child's pid.
pid_t SpawnWithOutput(std::vector<std::string> args, const std::string& output_path,
                      const std::vector<std::string>& unset_env = {},
                      const std::vector<std::pair<std::string, std::string>>& set_env = {});

// Polls `done` every `poll` for up to 60 s (a safety net for slow machines, not a measure);
// returns whether it became true.
bool Eventually(const std::function<bool()>& done, std::chrono::milliseconds poll);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_PROCESS_H_
