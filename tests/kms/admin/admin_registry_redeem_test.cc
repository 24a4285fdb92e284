// AdminRegistry::Redeem (kms/admin/admin_registry.h), the single-use redemption of an approved
// request whose result only its requester may receive (dataset export), against a real
// SoftHSM2 token and a real RocksDB on a fake clock: only the requester, only once (across a
// reopen), only approved and unexpired requests.

#include <chrono>
#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/admin/admin_registry.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::kms::admin {
namespace {

class AdminRegistryRedeemTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("admin-redeem-test");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }
  void SetUp() override { Reopen(); }

  void Reopen() {
    registry_.reset();
    AdminRegistry::Options options;
    options.directory = dir_.Sub("admin");
    options.totp = &suite_.client->totp_secrets();
    options.rows = &suite_.client->row_authenticator();
    options.clock = &clock_;
    auto registry = AdminRegistry::Open(std::move(options));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
  }
  uint64_t File(std::chrono::seconds ttl = std::chrono::seconds(600)) {
    auto filed = registry_->CreateApproval(7, "requester", "payload", "dataset export d", "d", ttl);
    EXPECT_TRUE(filed.ok()) << filed.status();
    return filed.ok() ? filed->id : 0;
  }

  static inline kms::testing::SuiteToken suite_;
  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::unique_ptr<AdminRegistry> registry_;
};

TEST_F(AdminRegistryRedeemTest, OnlyTheRequesterOnlyOnceOnlyApproved) {
  const uint64_t id = File();
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(id, 7).status()), ErrorCode::kApprovalClosed)
      << "redeemed before approval";
  ASSERT_TRUE(registry_->Decide(id, 9, "approver", true).ok());
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(id, 9).status()), ErrorCode::kApprovalForbidden)
      << "the approver redeemed";
  clock_.Advance(std::chrono::seconds(5));
  auto redeemed = registry_->Redeem(id, 7);
  ASSERT_TRUE(redeemed.ok()) << redeemed.status();
  EXPECT_EQ(redeemed->redeemed_micros, coffer::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(redeemed->approver_uid, 9u);
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(id, 7).status()), ErrorCode::kApprovalClosed);
  Reopen();  // persisted
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(id, 7).status()), ErrorCode::kApprovalClosed);
  auto reloaded = registry_->GetApproval(id);
  ASSERT_TRUE(reloaded.ok());
  EXPECT_EQ(reloaded->redeemed_micros, redeemed->redeemed_micros);
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(999, 7).status()), ErrorCode::kApprovalNotFound);
}

TEST_F(AdminRegistryRedeemTest, DeniedAndExpiredRequestsAreNotRedeemed) {
  const uint64_t denied = File();
  ASSERT_TRUE(registry_->Decide(denied, 9, "approver", false).ok());
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(denied, 7).status()), ErrorCode::kApprovalClosed);
  const uint64_t late = File(std::chrono::seconds(60));
  ASSERT_TRUE(registry_->Decide(late, 9, "approver", true).ok());
  clock_.Advance(std::chrono::seconds(60));
  EXPECT_EQ(ErrorCodeOf(registry_->Redeem(late, 7).status()), ErrorCode::kApprovalClosed);
}

}  // namespace
}  // namespace coffer::kms::admin
