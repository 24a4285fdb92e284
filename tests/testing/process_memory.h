// ScanProcessMemory: where given byte strings occur in another process's memory, read through
// /proc/PID/maps and /proc/PID/mem — for the tests that check what secrets a running daemon
// leaves behind (tests/kms/cofferd/secrets_in_memory_test.cc).
//
// Every readable mapping is read (anonymous, heap, stacks, file-backed, the secure heap); pages
// the kernel will not hand out ([vvar], holes that fault) are skipped and counted. In a build
// with AddressSanitizer, the shadow memory is not read (process_memory.cc says why). Reading
// another uid's process, or one that made itself non-dumpable, needs CAP_SYS_PTRACE: run as
// root. The process keeps running while it is read, so a scan is a snapshot of each page at
// the moment it was read, not of the whole process at one instant.
//
// Hits report where (address, mapping), never the bytes: a failure message built from them
// prints no secret. Thread safety: none needed (no state). Failures: the status of opening
// /proc/PID/maps or /proc/PID/mem (errno's text); a page that cannot be read is not a failure.

#ifndef COFFER_TESTS_TESTING_PROCESS_MEMORY_H_
#define COFFER_TESTS_TESTING_PROCESS_MEMORY_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace coffer::testing {

// One line of /proc/PID/maps.
struct MemoryMapping {
  uint64_t start = 0;
  uint64_t end = 0;
  std::string permissions;  // "rw-p", "r-xp", ...
  std::string path;         // "" for an anonymous mapping; "[heap]", "[stack]", a file...
  // The name of the thread whose stack pointer was in this mapping during the scan, if any
  // (the kernel no longer labels thread stacks in maps).
  std::string thread;
  uint64_t size() const { return end - start; }
  bool anonymous() const { return path.empty(); }
  // "[heap]", "anonymous rw-p 16384 KiB", "stack of thread cofferd-worker",
  // "/usr/lib/x86_64-linux-gnu/libc.so.6 r--p" ...
  std::string Describe() const;
};

// One occurrence of needle `needle` (its index in the list given) at `address`.
struct MemoryHit {
  size_t needle = 0;
  uint64_t address = 0;
  MemoryMapping mapping;
};

struct MemoryScan {
  std::vector<MemoryMapping> mappings;  // every mapping, readable or not
  std::vector<MemoryHit> hits;
  uint64_t bytes_read = 0;
  uint64_t bytes_unreadable = 0;  // in readable mappings, pages the kernel refused
  uint64_t bytes_skipped = 0;     // AddressSanitizer's shadow memory, not read

  // Hits of `needle`.
  std::vector<MemoryHit> HitsOf(size_t needle) const;
  // "3 in [heap], 1 in anonymous rw-p 16384 KiB" (no bytes), or "none".
  std::string DescribeHitsOf(size_t needle) const;
};

// Reads the mappings of process `pid` and finds every occurrence of every non-empty needle.
absl::StatusOr<MemoryScan> ScanProcessMemory(pid_t pid, const std::vector<std::string>& needles);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_PROCESS_MEMORY_H_
