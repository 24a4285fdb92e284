// Helpers shared by the fuzz targets (tests/fuzz): set-up that must succeed, scratch files.
// A set-up failure is not a finding about the input, so it aborts with a message naming the
// step, never the input's bytes.

#ifndef COFFER_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define COFFER_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace coffer::fuzz {

// Prints `what` and aborts: a broken invariant the fuzzer must report as a crash.
[[noreturn]] void Fail(std::string_view what);

template <typename T>
T Must(absl::StatusOr<T> value) {
  if (!value.ok()) Fail(value.status().ToString());
  return *std::move(value);
}
inline void Must(const absl::Status& status) {
  if (!status.ok()) Fail(status.ToString());
}

// With COFFER_FUZZ_DEBUG set in the environment, prints "what: CODE" to stderr — the status's
// coffer error code, never its message or any input byte — so that a seed's depth can be
// checked (docs/fuzzing.md); silent otherwise.
void Report(std::string_view what, const absl::Status& status);

// A fresh directory under $TMPDIR (default /tmp), named after `purpose`, removed with its
// contents when the process exits normally (a crash leaves it, for the finding's post-mortem).
std::string MakeTemporaryDirectory(std::string_view purpose);

// Replaces the file at `path` with `bytes`.
void WriteFileOrDie(const std::string& path, std::string_view bytes);

}  // namespace coffer::fuzz

#endif  // COFFER_TESTS_FUZZ_FUZZ_SUPPORT_H_
