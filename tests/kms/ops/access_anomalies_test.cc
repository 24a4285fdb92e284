// AccessAnomalies over a real EventLog (RocksDB in a temporary directory) and a fake clock: the
// three rules, their warm-up and cool-down, the readers table across a reopen, and the bound on
// tracked pairs. kms_daemon_anomalies_test shows the same against a running cofferd.

#include "kms/ops/access_anomalies.h"

#include <chrono>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::kms::audit::testing::FakeClock;
using ::coffer::kms::audit::testing::TempDir;
using std::chrono::seconds;

constexpr uint32_t kUid = 1001;
constexpr uint32_t kPid = 42;
constexpr uint64_t kHandle = 7;

class AccessAnomaliesTest : public ::testing::Test {
 protected:
  AccessAnomaliesTest() { Reopen(); }

  void Reopen() {
    anomalies_.reset();
    log_.reset();
    events::EventLogOptions options;
    options.directory = dir_.Sub("events");
    options.clock = &clock_;
    auto log = events::EventLog::Open(options);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    anomalies_ = std::make_unique<AccessAnomalies>(options_, log_.get(), &clock_);
  }
  // The events raised since the last call, of `kind` (all kinds: UNSPECIFIED).
  std::vector<pb::Event> Raised(pb::EventKind kind = pb::EVENT_KIND_UNSPECIFIED) {
    auto read = log_->Read("test", 0, seen_, false, 1000, std::chrono::milliseconds(0));
    EXPECT_TRUE(read.ok()) << read.status();
    std::vector<pb::Event> out;
    if (!read.ok()) return out;
    for (const pb::Event& event : read->events) {
      seen_ = event.sequence();
      if (kind == pb::EVENT_KIND_UNSPECIFIED || event.kind() == kind) out.push_back(event);
    }
    return out;
  }
  void Read(uint32_t times = 1, uint32_t uid = kUid, uint64_t handle = kHandle,
            ErrorCode result = ErrorCode::kOk) {
    for (uint32_t i = 0; i < times; ++i) {
      anomalies_->Observe(uid, kPid, handle, "crm/contacts", 1, result);
    }
  }
  // Reads once every `every` for `total`.
  void Steady(seconds every, seconds total) {
    for (seconds t{0}; t < total; t += every) {
      Read();
      clock_.Advance(every);
    }
  }

  AccessAnomalyOptions options_{.first_read = true,
                                .recent_half_life = seconds(60),
                                .baseline_half_life = seconds(3600),
                                .warm_up = seconds(3600),
                                .rate_factor = 10,
                                .min_reads_per_second = 0.5,
                                .locked_reads = 10,
                                .cooldown = seconds(600),
                                .max_pairs = 1000};
  TempDir dir_;
  FakeClock clock_;
  std::unique_ptr<events::EventLog> log_;
  std::unique_ptr<AccessAnomalies> anomalies_;
  std::optional<uint64_t> seen_;
};

TEST_F(AccessAnomaliesTest, AFirstReadIsRaisedOncePerUidAndDatasetEvenAcrossARestart) {
  Read();
  std::vector<pb::Event> first = Raised(pb::EVENT_FIRST_READ);
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].uid(), kUid);
  EXPECT_EQ(first[0].pid(), kPid);
  EXPECT_EQ(first[0].dataset(), "crm/contacts");
  EXPECT_EQ(first[0].dataset_handle(), kHandle);
  Read(5);
  EXPECT_TRUE(Raised(pb::EVENT_FIRST_READ).empty());
  // Another uid, another dataset: each its own first.
  Read(1, kUid + 1);
  Read(1, kUid, kHandle + 1);
  EXPECT_EQ(Raised(pb::EVENT_FIRST_READ).size(), 2u);
  // A refused read is not a read.
  Read(1, kUid + 2, kHandle, ErrorCode::kDatasetStateForbids);
  EXPECT_TRUE(Raised(pb::EVENT_FIRST_READ).empty());

  Reopen();  // the readers table outlives the process
  Read();
  Read(1, kUid + 1);
  EXPECT_TRUE(Raised(pb::EVENT_FIRST_READ).empty());
}

TEST_F(AccessAnomaliesTest, ABurstFarAboveTheBaselineIsRaisedAfterTheWarmUpOncePerCooldown) {
  // A steady reader: one read a minute for two hours raises nothing but its first read.
  Steady(seconds(60), seconds(7200));
  EXPECT_TRUE(Raised(pb::EVENT_READ_RATE_ANOMALY).empty());
  // A burst: 100 reads at once is about 1.2/s recent against 1/60 s baseline.
  Read(100);
  std::vector<pb::Event> raised = Raised(pb::EVENT_READ_RATE_ANOMALY);
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(raised[0].uid(), kUid);
  EXPECT_GT(raised[0].recent_reads_per_second(), 0.5);
  EXPECT_GT(raised[0].recent_reads_per_second(), 10 * raised[0].baseline_reads_per_second());
  // The baseline is the history's 1/60 s plus the burst's reads before the one that raised it
  // (about 45 of them: 0.5/s over the 87 s recent time constant).
  EXPECT_GT(raised[0].baseline_reads_per_second(), 1.0 / 60);
  EXPECT_LT(raised[0].baseline_reads_per_second(), 2.0 / 60);
  // More of it inside the cool-down: nothing new; after it, again.
  clock_.Advance(seconds(60));
  Read(100);
  EXPECT_TRUE(Raised(pb::EVENT_READ_RATE_ANOMALY).empty());
  clock_.Advance(seconds(600));
  Read(300);
  EXPECT_EQ(Raised(pb::EVENT_READ_RATE_ANOMALY).size(), 1u);
}

TEST_F(AccessAnomaliesTest, NoRateEventDuringTheWarmUpOrBelowTheMinimumRate) {
  // A new pair's heavy start is its baseline, not an anomaly.
  Read(500);
  clock_.Advance(seconds(1800));
  Read(500);
  EXPECT_TRUE(Raised(pb::EVENT_READ_RATE_ANOMALY).empty());
  // A quiet pair (one read an hour) that reads five at once: far above its baseline but under
  // 0.5 reads/s.
  clock_.Advance(seconds(86400));
  Steady(seconds(3600), seconds(6 * 3600));
  Read(5, kUid);
  EXPECT_TRUE(Raised(pb::EVENT_READ_RATE_ANOMALY).empty());
}

TEST_F(AccessAnomaliesTest, RepeatedReadsOfALockedDatasetAreRaisedOncePerCooldown) {
  Read(10, kUid, kHandle, ErrorCode::kDatasetStateForbids);
  EXPECT_TRUE(Raised(pb::EVENT_LOCKED_DATASET_READS).empty());  // at the threshold, not above
  Read(1, kUid, kHandle, ErrorCode::kDatasetStateForbids);
  std::vector<pb::Event> raised = Raised(pb::EVENT_LOCKED_DATASET_READS);
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(raised[0].uid(), kUid);
  EXPECT_EQ(raised[0].dataset(), "crm/contacts");
  Read(50, kUid, kHandle, ErrorCode::kDatasetStateForbids);
  EXPECT_TRUE(Raised(pb::EVENT_LOCKED_DATASET_READS).empty());
  // Other failures (a missing record) are not locked-dataset reads.
  clock_.Advance(seconds(3600));
  Read(50, kUid + 1, kHandle, ErrorCode::kRecordNotFound);
  EXPECT_TRUE(Raised().empty());
}

TEST_F(AccessAnomaliesTest, RulesSetToZeroAreOff) {
  options_.first_read = false;
  options_.rate_factor = 0;
  options_.locked_reads = 0;
  options_.warm_up = seconds(0);
  Reopen();
  Read(1000);
  Read(1000, kUid, kHandle, ErrorCode::kDatasetStateForbids);
  EXPECT_TRUE(Raised().empty());
}

TEST_F(AccessAnomaliesTest, PairsBeyondTheBoundAreForgottenAndWarmUpAgain) {
  options_.max_pairs = 16;  // one per shard
  options_.first_read = false;
  Reopen();
  // The reader of ABurstFarAboveTheBaseline..., whose burst was raised there; but here many other
  // pairs push it out of memory before the burst: back, it is a new pair, in its warm-up again.
  Steady(seconds(60), seconds(7200));
  for (uint32_t uid = 2000; uid < 2400; ++uid) Read(1, uid);
  Read(100);
  EXPECT_TRUE(Raised(pb::EVENT_READ_RATE_ANOMALY).empty());
}

}  // namespace
}  // namespace coffer::daemon
