#include "tests/testing/progress_log.h"

#include <algorithm>
#include <iterator>
#include <set>
#include <string>

namespace coffer::testing {

coffer::ProgressFn ProgressLog::Function() {
  return [this](const coffer::Progress& progress) {
    // Two calls at once both see the other's increment.
    const bool overlapping = in_call_.fetch_add(1) != 0;
    {
      std::lock_guard<std::mutex> lock(mu_);
      overlapped_ = overlapped_ || overlapping;
      reports_.push_back(progress);
    }
    in_call_.fetch_sub(1);
  };
}

std::vector<std::string> ProgressLog::Phases() const {
  std::vector<std::string> phases;
  for (const coffer::Progress& report : reports_) {
    if (phases.empty() || phases.back() != report.phase) phases.push_back(report.phase);
  }
  return phases;
}

std::vector<coffer::Progress> ProgressLog::Of(std::string_view phase) const {
  std::vector<coffer::Progress> out;
  std::copy_if(reports_.begin(), reports_.end(), std::back_inserter(out),
               [phase](const coffer::Progress& report) { return report.phase == phase; });
  return out;
}

::testing::AssertionResult ProgressLog::KeepsTheContract() const {
  if (overlapped_) return ::testing::AssertionFailure() << "two reports overlapped";
  std::set<std::string> seen;
  for (const std::string& phase : Phases()) {
    if (!seen.insert(phase).second) {
      return ::testing::AssertionFailure() << "phase " << phase << " came back after another";
    }
  }
  for (size_t i = 0; i < reports_.size(); ++i) {
    const coffer::Progress& report = reports_[i];
    const auto where = [&] {
      return "report " + std::to_string(i) + " (" + report.phase + " " +
             std::to_string(report.done) + "/" + std::to_string(report.total) + ")";
    };
    if (report.total != 0 && report.done > report.total) {
      return ::testing::AssertionFailure() << where() << ": done exceeds total";
    }
    const bool continues = i > 0 && reports_[i - 1].phase == report.phase;
    if (continues && report.total != reports_[i - 1].total) {
      return ::testing::AssertionFailure() << where() << ": the total changed";
    }
    if (continues && report.done < reports_[i - 1].done) {
      return ::testing::AssertionFailure() << where() << ": done decreased";
    }
    const bool last = i + 1 == reports_.size() || reports_[i + 1].phase != report.phase;
    if (last && report.done != report.total) {
      return ::testing::AssertionFailure() << where() << ": the phase ends below its total";
    }
  }
  return ::testing::AssertionSuccess();
}

}  // namespace coffer::testing
