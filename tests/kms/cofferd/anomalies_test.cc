// Issue 20 item 8 against a running cofferd (test-cofferd on a clock the test advances, fresh
// SoftHSM2 token, real RocksDB, real sockets): a uid's first read of a dataset, a burst far above
// its own baseline, and repeated reads of a disabled dataset each raise their event (read by an
// events subscriber, as the hook would get it), once; a restart does not raise the first read
// again. The rules' edges (warm-up, minimum rate, cool-down, bounds) are in
// kms_access_anomalies_test.

#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using ::coffer::testing::UnseenEvents;

constexpr char kDataset[] = "crm/anomalies";

class AnomaliesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CofferdOptions options;
    options.name = "cofferd-anomalies";
    options.extra_config = [](const std::string&) {
      return std::string(
          "anomalies { recent_half_life_seconds: 60 baseline_half_life_seconds: 3600 "
          "warm_up_seconds: 3600 rate_factor: 10 min_reads_per_second: 0.5 locked_reads: 10 "
          "cooldown_seconds: 600 }\n");
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    ASSERT_EQ(Run("dataset create " + std::string(kDataset)).exit_code, 0);
    Connect();
    ASSERT_TRUE(client_->PutRecord(kDataset, "contact-1", "a value").ok());
    Events("EVENT_");  // the subscriber starts after the set-up's events
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }
  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  void Connect() {
    auto c = client::Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }
  std::vector<nlohmann::json> Events(const std::string& kind) {
    return UnseenEvents(daemon_->admin_socket(), "anomaly-watch", kind);
  }
  void Read(int times, ErrorCode expected = ErrorCode::kOk) {
    for (int i = 0; i < times; ++i) {
      EXPECT_EQ(ErrorCodeOf(client_->GetRecord(kDataset, "contact-1").status()), expected);
    }
  }

  std::unique_ptr<Cofferd> daemon_;
  std::unique_ptr<client::Client> client_;
};

TEST_F(AnomaliesTest, FirstReadBurstAndLockedReadsEachRaiseTheirEventOnce) {
  // The first read of the dataset by this uid, once.
  Read(3);
  std::vector<nlohmann::json> first = Events("EVENT_FIRST_READ");
  ASSERT_EQ(first.size(), 1u);
  EXPECT_EQ(first[0].value("dataset", ""), kDataset);
  EXPECT_EQ(first[0].value("uid", 0u), static_cast<uint32_t>(::getuid()));

  // A steady reader for two hours (a read a minute), then a burst of 100 reads.
  for (int minute = 0; minute < 120; ++minute) {
    Read(1);
    daemon_->AdvanceClock(std::chrono::seconds(60));
  }
  EXPECT_TRUE(Events("EVENT_READ_RATE_ANOMALY").empty());
  Read(100);
  std::vector<nlohmann::json> burst = Events("EVENT_READ_RATE_ANOMALY");
  ASSERT_EQ(burst.size(), 1u);
  EXPECT_EQ(burst[0].value("dataset", ""), kDataset);
  EXPECT_GT(burst[0].value("recent_reads_per_second", 0.0),
            10 * burst[0].value("baseline_reads_per_second", 1.0));

  // The dataset locked (the account in its grace period): something keeps reading it.
  ASSERT_EQ(Run("dataset disable " + std::string(kDataset)).exit_code, 0);
  Read(15, ErrorCode::kDatasetStateForbids);
  std::vector<nlohmann::json> locked = Events("EVENT_LOCKED_DATASET_READS");
  ASSERT_EQ(locked.size(), 1u);
  EXPECT_EQ(locked[0].value("dataset", ""), kDataset);

  // After a restart, the first read is not raised again (the readers table is on disk).
  ASSERT_EQ(Run("dataset enable " + std::string(kDataset)).exit_code, 0);
  client_.reset();
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  Connect();
  Read(1);
  EXPECT_TRUE(Events("EVENT_FIRST_READ").empty());
}

}  // namespace
}  // namespace coffer
