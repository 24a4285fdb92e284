// Periodic jobs of the JobRegistry (no data DB needed): registration, runs and their status,
// failures, the scheduler thread. Re-encryption and scrub run in services_test.cc against a
// real token and data DB.

#include "kms/ops/jobs.h"

#include <atomic>
#include <condition_variable>
#include <mutex>

#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;

const pb::JobStatus* Find(const std::vector<pb::JobStatus>& all, const std::string& name) {
  for (const auto& status : all) {
    if (status.name() == name) return &status;
  }
  return nullptr;
}

// Not for a temporary: the pointer would dangle.
const pb::JobStatus* Find(std::vector<pb::JobStatus>&& all, const std::string& name) = delete;

TEST(DaemonJobsTest, PeriodicJobsRecordTheirRunsAndErrors) {
  JobRegistry jobs(JobRegistryDeps{}, coffer::SystemClock());
  int runs = 0;
  bool fail = false;
  ASSERT_TRUE(jobs.RegisterPeriodic("retention", pb::JOB_BIN_RETENTION, std::chrono::hours(1),
                                    [&]() -> absl::Status {
                                      ++runs;
                                      if (fail) return MakeError(ErrorCode::kDataDbError, "disk");
                                      return absl::OkStatus();
                                    })
                  .ok());
  EXPECT_EQ(
      ErrorCodeOf(jobs.RegisterPeriodic("retention", pb::JOB_BIN_RETENTION, std::chrono::hours(1),
                                        [] { return absl::OkStatus(); })),
      ErrorCode::kAlreadyExists);
  EXPECT_EQ(ErrorCodeOf(jobs.RegisterPeriodic("zero", pb::JOB_ROTATION, std::chrono::seconds(0),
                                              [] { return absl::OkStatus(); })),
            ErrorCode::kInvalidArgument);

  const std::vector<pb::JobStatus> initial = jobs.AllStatus();
  const pb::JobStatus* before = Find(initial, "retention");
  ASSERT_NE(before, nullptr);
  EXPECT_EQ(before->state(), pb::JOB_PENDING);
  EXPECT_EQ(before->kind(), pb::JOB_BIN_RETENTION);
  EXPECT_GT(before->next_run_micros(), 0);
  EXPECT_EQ(before->done(), 0u);

  ASSERT_TRUE(jobs.RunNow("retention").ok());
  fail = true;
  EXPECT_EQ(ErrorCodeOf(jobs.RunNow("retention")), ErrorCode::kDataDbError);
  EXPECT_EQ(runs, 2);
  auto all = jobs.AllStatus();
  const pb::JobStatus* after = Find(all, "retention");
  ASSERT_NE(after, nullptr);
  EXPECT_EQ(after->state(), pb::JOB_FAILED);
  EXPECT_EQ(after->done(), 2u);
  EXPECT_EQ(after->failures(), 1u);
  EXPECT_EQ(after->error().code(), static_cast<int>(ErrorCode::kDataDbError));
  EXPECT_EQ(after->error().code_name(), "DATA_DB_ERROR");
  auto by_id = jobs.Status(after->id());
  ASSERT_TRUE(by_id.ok());
  EXPECT_EQ(by_id->name(), "retention");

  EXPECT_EQ(ErrorCodeOf(jobs.RunNow("nope")), ErrorCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(jobs.Status(999).status()), ErrorCode::kNotFound);
}

TEST(DaemonJobsTest, TheSchedulerRunsAJobDueAtStartAndStopJoins) {
  JobRegistry jobs(JobRegistryDeps{}, coffer::SystemClock());
  std::mutex mu;
  std::condition_variable ran_cv;
  int ran = 0;
  ASSERT_TRUE(jobs.RegisterPeriodic(
                      "rotation", pb::JOB_ROTATION, std::chrono::hours(1),
                      [&] {
                        std::lock_guard<std::mutex> lock(mu);
                        ++ran;
                        ran_cv.notify_all();
                        return absl::OkStatus();
                      },
                      /*run_at_start=*/true)
                  .ok());
  jobs.StartScheduler();
  {
    std::unique_lock<std::mutex> lock(mu);
    ran_cv.wait(lock, [&] { return ran >= 1; });
  }
  jobs.Stop();
  EXPECT_EQ(ran, 1);  // the next run is an hour away
  const std::vector<pb::JobStatus> statuses = jobs.AllStatus();
  const pb::JobStatus* status = Find(statuses, "rotation");
  ASSERT_NE(status, nullptr);
  EXPECT_EQ(status->done(), 1u);
  EXPECT_EQ(ErrorCodeOf(jobs.RegisterPeriodic("late", pb::JOB_ROTATION, std::chrono::hours(1),
                                              [] { return absl::OkStatus(); })),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(jobs.StartScrub(std::nullopt, "").status()),
            ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace coffer::daemon
