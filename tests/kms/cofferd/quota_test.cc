// Issue 20 item 13 against a running cofferd (test-cofferd on a clock the test advances, fresh
// SoftHSM2 token, real RocksDB, real sockets): a dataset's quotas on live records and stored
// bytes (policy max_records, max_stored_bytes) refuse the write that would exceed them with
// QUOTA_EXCEEDED, shown in `keyctl dataset describe`; an overwrite at the limit still works, an
// upload beyond the storage quota leaves nothing, room freed by a delete counts from the next
// census (on the daemon's clock), the quotas survive a restart, and raising one takes effect at
// once.

#include <chrono>
#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"

namespace coffer {
namespace {

using ::coffer::testing::KeyctlResult;

constexpr char kDataset[] = "crm/quota";

class QuotaTest : public coffer::testing::OneDatasetDaemonTest {
 protected:
  QuotaTest() : OneDatasetDaemonTest("cofferd-quota", kDataset) {}

  nlohmann::json Describe() {
    KeyctlResult described = Run("--json dataset describe " + std::string(kDataset));
    EXPECT_EQ(described.exit_code, 0) << described.err;
    return described.JsonOrEmpty();
  }
  void SetPolicy(const std::string& flags) {
    KeyctlResult set = Run("policy set " + std::string(kDataset) + " " + flags);
    ASSERT_EQ(set.exit_code, 0) << set.err << set.out;
  }
};

TEST_F(QuotaTest, ARecordQuotaRefusesTheRecordBeyondItAndIsShownAndKept) {
  SetPolicy("--max-records 3");
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (const char* id : {"contact-1", "contact-2", "contact-3"}) {
    ASSERT_TRUE(c->PutRecord(kDataset, id, "value").ok()) << id;
  }
  absl::Status refused = c->PutRecord(kDataset, "contact-4", "value");
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kQuotaExceeded) << refused;
  EXPECT_NE(refused.message().find("quota"), std::string::npos) << refused;
  EXPECT_EQ(refused.message().find("contact-4"), std::string::npos) << refused;
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, "contact-4").status()), ErrorCode::kRecordNotFound);
  // An overwrite adds no record.
  ASSERT_TRUE(c->PutRecord(kDataset, "contact-1", "changed").ok());

  // Shown: the quota in the policy, the usage beside it.
  nlohmann::json info = Describe();
  EXPECT_EQ(info["policy"].value("max_records", uint64_t{0}), 3u) << info.dump();
  EXPECT_EQ(info.value("records", uint64_t{0}), 3u) << info.dump();
  KeyctlResult human = Run("dataset describe " + std::string(kDataset));
  EXPECT_NE(human.out.find("quota: records"), std::string::npos) << human.out;

  // A delete makes room once the daemon's next census may run (5 s on its clock).
  ASSERT_TRUE(c->DeleteRecord(kDataset, "contact-2").ok());
  daemon_->AdvanceClock(std::chrono::seconds(5));
  ASSERT_TRUE(c->PutRecord(kDataset, "contact-4", "value").ok());
  EXPECT_EQ(ErrorCodeOf(c->PutRecord(kDataset, "contact-5", "value")), ErrorCode::kQuotaExceeded);

  // Kept across a restart (the key DB's policy format 2), and counted afresh from the data.
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(ErrorCodeOf(c->PutRecord(kDataset, "contact-5", "value")), ErrorCode::kQuotaExceeded);
  // Raised: at once.
  SetPolicy("--max-records 4");
  EXPECT_TRUE(c->PutRecord(kDataset, "contact-5", "value").ok());
  // Removed: no limit.
  SetPolicy("--max-records 0");
  EXPECT_TRUE(c->PutRecord(kDataset, "contact-6", "value").ok());
  EXPECT_EQ(Describe().value("records", uint64_t{0}), 5u);
}

TEST_F(QuotaTest, AStorageQuotaStopsAnUploadAndLeavesNothingOfIt) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->PutRecord(kDataset, "contact-1", std::string(2000, 'v')).ok());
  SetPolicy("--max-stored-bytes 64KiB");
  nlohmann::json info = Describe();
  EXPECT_EQ(info["policy"].value("max_stored_bytes", uint64_t{0}), 65536u) << info.dump();
  const uint64_t before = info.value("stored_bytes", uint64_t{0});
  EXPECT_GT(before, 2000u) << info.dump();
  EXPECT_LT(before, 65536u) << info.dump();

  // 256 KiB do not fit: the upload fails (at a chunk or at the commit) and nothing is visible.
  absl::Status upload = [&]() -> absl::Status {
    auto writer = c->BeginAttachment(kDataset, "scan.pdf", "application/pdf");
    if (!writer.ok()) return writer.status();
    for (int i = 0; i < 4; ++i) {
      COFFER_RETURN_IF_ERROR((*writer)->Append(std::string(64 * 1024, 'p')));
    }
    return (*writer)->Commit().status();
  }();
  EXPECT_EQ(ErrorCodeOf(upload), ErrorCode::kQuotaExceeded) << upload;
  EXPECT_EQ(ErrorCodeOf(c->AttachmentMetadata(kDataset, "scan.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_LE(Describe().value("stored_bytes", uint64_t{0}), 65536u);
  // A record that would cross it is refused too; one that fits is written.
  EXPECT_EQ(ErrorCodeOf(c->PutRecord(kDataset, "big", std::string(100 * 1024, 'b'))),
            ErrorCode::kQuotaExceeded);
  daemon_->AdvanceClock(std::chrono::seconds(5));  // the aborted upload's bytes are gone
  EXPECT_TRUE(c->PutRecord(kDataset, "small", std::string(1000, 's')).ok());
  KeyctlResult human = Run("dataset describe " + std::string(kDataset));
  EXPECT_NE(human.out.find("stored bytes"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("64.0 KiB"), std::string::npos) << human.out;
}

}  // namespace
}  // namespace coffer
