// ProgressLog: collects the progress reports of one long operation (crypto/base/progress.h) and
// checks the contract every operation keeps, so each test states only what is particular to its
// operation (the phases, their totals).
//
// Thread safety: the function it hands out may be called from any thread (the operation's
// contract says never concurrently; an overlapping call is recorded as a violation); the
// accessors are for after the operation returned.

#ifndef COFFER_TESTS_TESTING_PROGRESS_LOG_H_
#define COFFER_TESTS_TESTING_PROGRESS_LOG_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/base/progress.h"
#include "gtest/gtest.h"

namespace coffer::testing {

class ProgressLog {
 public:
  ProgressLog() = default;
  ProgressLog(const ProgressLog&) = delete;
  ProgressLog& operator=(const ProgressLog&) = delete;

  // Records every report it is called with, in order. Valid while this log lives.
  coffer::ProgressFn Function();

  const std::vector<coffer::Progress>& reports() const { return reports_; }
  // The phases in the order they were reported, each once per run of consecutive reports.
  std::vector<std::string> Phases() const;
  // The reports of `phase`, in order.
  std::vector<coffer::Progress> Of(std::string_view phase) const;

  // Success when: no report overlapped another; every phase is one run of consecutive reports
  // (phases run in order, none returns); within a phase the total does not change, done never
  // decreases and never exceeds a known total; the last report of every phase has
  // done == total.
  ::testing::AssertionResult KeepsTheContract() const;

 private:
  std::mutex mu_;
  std::atomic<int> in_call_{0};
  bool overlapped_ = false;                // guarded by mu_
  std::vector<coffer::Progress> reports_;  // guarded by mu_
};

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_PROGRESS_LOG_H_
