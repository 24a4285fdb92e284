// Issue 20 item 4 against a running cofferd (test-cofferd on a clock the test advances, fresh
// SoftHSM2 token, real RocksDB, real sockets): under a dataset's minimum retention a record or an
// attachment cannot be overwritten or deleted until its own retention ends, and the dataset
// cannot be destroyed while any item is locked; a rotation's re-encryption is not an overwrite
// (the item stays locked from its own write). Lowering the lock needs a second admin: shown in
// keyctl_dual_control_test (ProtectionShorteningOperationsWaitForApproval).

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

constexpr char kDataset[] = "crm/locked";
constexpr auto kDay = std::chrono::hours(24);

class ComplianceLockTest : public coffer::testing::OneDatasetDaemonTest {
 protected:
  ComplianceLockTest() : OneDatasetDaemonTest("cofferd-compliance", kDataset) {}

  // Uploads `content` as attachment `name`; the commit's status.
  absl::Status Upload(client::Client& c, const std::string& name, const std::string& content) {
    auto writer = c.BeginAttachment(kDataset, name, "text/plain");
    if (!writer.ok()) return writer.status();
    COFFER_RETURN_IF_ERROR((*writer)->Append(content));
    return (*writer)->Commit().status();
  }
  std::string State() {
    KeyctlResult described = Run("--json dataset describe " + std::string(kDataset));
    EXPECT_EQ(described.exit_code, 0) << described.err;
    return described.JsonOrEmpty().value("state", "");
  }
};

TEST_F(ComplianceLockTest, LockedItemsAreNeitherOverwrittenNorDeletedAndHoldTheDataset) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  // Written before the lock: its retention counts from its own write all the same.
  ASSERT_TRUE(c->PutRecord(kDataset, "contact-1", "first value").ok());
  ASSERT_TRUE(Upload(*c, "contract.pdf", "signed contract").ok());
  KeyctlResult policy = Run("policy set " + std::string(kDataset) + " --min-retention 30d");
  ASSERT_EQ(policy.exit_code, 0) << policy.err << policy.out;

  // Overwrites and deletes are refused, and nothing changes.
  absl::Status overwrite = c->PutRecord(kDataset, "contact-1", "second value");
  EXPECT_EQ(ErrorCodeOf(overwrite), ErrorCode::kComplianceLocked) << overwrite;
  EXPECT_NE(overwrite.message().find("forbids overwriting"), std::string::npos) << overwrite;
  EXPECT_EQ(c->GetRecord(kDataset, "contact-1").value_or(""), "first value");
  EXPECT_EQ(ErrorCodeOf(c->DeleteRecord(kDataset, "contact-1")), ErrorCode::kComplianceLocked);
  EXPECT_EQ(ErrorCodeOf(Upload(*c, "contract.pdf", "forged contract")),
            ErrorCode::kComplianceLocked);
  EXPECT_EQ(ErrorCodeOf(c->DeleteAttachment(kDataset, "contract.pdf")),
            ErrorCode::kComplianceLocked);
  auto original = c->OpenAttachment(kDataset, "contract.pdf");
  ASSERT_TRUE(original.ok()) << original.status();
  EXPECT_EQ((*original)->ReadAll().value_or(""), "signed contract");
  // A new item is written, and is locked from then on.
  ASSERT_TRUE(c->PutRecord(kDataset, "contact-2", "new value").ok());
  EXPECT_EQ(ErrorCodeOf(c->PutRecord(kDataset, "contact-2", "newer value")),
            ErrorCode::kComplianceLocked);

  // A rotation's re-encryption rewrites every record without overwriting it: the records stay
  // readable, and locked from their own writes.
  KeyctlResult rotated = Run("key rotate " + std::string(kDataset) + " --purpose records");
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err << rotated.out;
  KeyctlResult reencrypted = Run("reencrypt start " + std::string(kDataset) + " --wait");
  ASSERT_EQ(reencrypted.exit_code, 0) << reencrypted.err << reencrypted.out;
  EXPECT_EQ(c->GetRecord(kDataset, "contact-1").value_or(""), "first value");
  EXPECT_EQ(ErrorCodeOf(c->PutRecord(kDataset, "contact-1", "second value")),
            ErrorCode::kComplianceLocked);

  // The dataset cannot be scheduled for destruction while an item is locked; the refusal says
  // until when.
  ASSERT_EQ(Run("dataset disable " + std::string(kDataset)).exit_code, 0);
  KeyctlResult destroy = Run("--json dataset destroy " + std::string(kDataset));
  EXPECT_NE(destroy.exit_code, 0) << destroy.out;
  EXPECT_EQ(destroy.CodeName(), "COMPLIANCE_LOCKED") << destroy.out << destroy.err;
  EXPECT_NE(destroy.out.find("cannot be destroyed before"), std::string::npos) << destroy.out;
  EXPECT_EQ(State(), "DATASET_DISABLED");
  ASSERT_EQ(Run("dataset enable " + std::string(kDataset)).exit_code, 0);

  // Once an item's own retention ended, it may be overwritten and deleted; an item written
  // since stays locked and still holds the dataset.
  daemon_->AdvanceClock(std::chrono::duration_cast<std::chrono::seconds>(31 * kDay));
  EXPECT_TRUE(c->PutRecord(kDataset, "contact-2", "newer value").ok());
  EXPECT_EQ(c->GetRecord(kDataset, "contact-2").value_or(""), "newer value");
  EXPECT_TRUE(c->DeleteRecord(kDataset, "contact-1").ok());
  EXPECT_TRUE(Upload(*c, "contract.pdf", "amended contract").ok());
  ASSERT_EQ(Run("dataset disable " + std::string(kDataset)).exit_code, 0);
  destroy = Run("--json dataset destroy " + std::string(kDataset));
  EXPECT_EQ(destroy.CodeName(), "COMPLIANCE_LOCKED") << destroy.out << destroy.err;

  // Past every item's retention (the record in the bin included), destruction goes ahead.
  daemon_->AdvanceClock(std::chrono::duration_cast<std::chrono::seconds>(31 * kDay));
  destroy = Run("--json dataset destroy " + std::string(kDataset));
  EXPECT_EQ(destroy.exit_code, 0) << destroy.out << destroy.err;
  EXPECT_EQ(State(), "DATASET_PENDING_DESTRUCTION");
}

}  // namespace
}  // namespace coffer
