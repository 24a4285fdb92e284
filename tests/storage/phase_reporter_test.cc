// PhaseReporter (storage/phase_reporter.h): the start and the end are always reported, steps in
// between are throttled, done is clamped to a known total and never decreases.

#include "storage/phase_reporter.h"

#include <vector>

#include "gtest/gtest.h"

namespace coffer::storage {
namespace {

struct Collected {
  std::vector<Progress> reports;
  ProgressFn Function() {
    return [this](const Progress& progress) { reports.push_back(progress); };
  }
};

std::vector<uint64_t> Done(const std::vector<Progress>& reports) {
  std::vector<uint64_t> done;
  done.reserve(reports.size());
  for (const Progress& report : reports) done.push_back(report.done);
  return done;
}

TEST(PhaseReporterTest, ReportsTheStartEveryStepAndTheEnd) {
  Collected collected;
  ProgressFn fn = collected.Function();
  PhaseReporter reporter(fn, "copy", 10, 4);
  for (int i = 0; i < 10; ++i) reporter.Add(1);
  reporter.Finish();
  EXPECT_EQ(Done(collected.reports), (std::vector<uint64_t>{0, 4, 8, 10}));
  for (const Progress& report : collected.reports) {
    EXPECT_EQ(report.phase, "copy");
    EXPECT_EQ(report.total, 10u);
  }
  reporter.Add(5);
  reporter.Finish();
  EXPECT_EQ(collected.reports.size(), 4u);  // nothing after the end
}

TEST(PhaseReporterTest, ClampsToTheTotalAndNeverGoesBack) {
  Collected collected;
  ProgressFn fn = collected.Function();
  PhaseReporter reporter(fn, "audit", 100, 1);
  reporter.Raise(40);
  reporter.Raise(30);  // ignored
  reporter.Add(500);   // an estimate exceeded: clamped
  reporter.Finish();   // already at the total: not repeated
  EXPECT_EQ(Done(collected.reports), (std::vector<uint64_t>{0, 40, 100}));
}

TEST(PhaseReporterTest, AnEmptyPhaseIsReportedOnceAndAnUnknownTotalEndsAtDone) {
  Collected collected;
  ProgressFn fn = collected.Function();
  {
    PhaseReporter empty(fn, "replay", 0, 1);
    empty.Finish();
  }
  {
    PhaseReporter unknown(fn, "scan", 0, 1);
    unknown.Add(7);
    unknown.Finish();
  }
  ASSERT_EQ(collected.reports.size(), 3u);
  EXPECT_EQ(collected.reports[0].phase, "replay");
  EXPECT_EQ(collected.reports[1].phase, "scan");
  EXPECT_EQ(Done(collected.reports), (std::vector<uint64_t>{0, 0, 7}));
}

TEST(PhaseReporterTest, AnEmptyFunctionReportsNothing) {
  ProgressFn none;
  PhaseReporter reporter(none, "data", 10, 1);
  reporter.Add(3);
  reporter.Finish();
  EXPECT_EQ(reporter.done(), 10u);
}

}  // namespace
}  // namespace coffer::storage
