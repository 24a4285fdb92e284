// Tests for kms/admin's otpauth helpers: RFC 4648 base32 vectors, the key URI format, and the
// RFC 6238 appendix B SHA-1 vectors computed from a secret round-tripped through base32 (HMAC
// and truncation done independently here with OpenSSL).

#include "kms/admin/admin_registry.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <rocksdb/db.h>

#include <cstdint>
#include <memory>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/admin/otpauth.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::kms::admin {
namespace {

std::string HotpIndependent(const std::string& secret, uint64_t counter, int digits) {
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i) {
    msg[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), msg, sizeof msg, mac, &mac_len);
  const int offset = mac[19] & 0x0f;
  const uint32_t bin = ((mac[offset] & 0x7fu) << 24) | (mac[offset + 1] << 16) |
                       (mac[offset + 2] << 8) | mac[offset + 3];
  uint32_t mod = 1;
  for (int i = 0; i < digits; ++i) mod *= 10;
  std::string code = std::to_string(bin % mod);
  return std::string(static_cast<size_t>(digits) - code.size(), '0') + code;
}

// RFC 4226 §5.3 truncation to 8 digits (appendix B of RFC 6238 lists 8-digit codes).
std::string Totp8(const std::string& secret, uint64_t unix_seconds) {
  uint64_t counter = unix_seconds / 30;
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i) {
    msg[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), msg, sizeof msg, mac, &mac_len);
  const int offset = mac[19] & 0x0f;
  const uint32_t bin = ((mac[offset] & 0x7fu) << 24) | (mac[offset + 1] << 16) |
                       (mac[offset + 2] << 8) | mac[offset + 3];
  std::string code = std::to_string(bin % 100000000u);
  return std::string(8 - code.size(), '0') + code;
}

TEST(Base32Test, Rfc4648Vectors) {
  EXPECT_EQ(Base32Encode(""), "");
  EXPECT_EQ(Base32Encode("f"), "MY");
  EXPECT_EQ(Base32Encode("fo"), "MZXQ");
  EXPECT_EQ(Base32Encode("foo"), "MZXW6");
  EXPECT_EQ(Base32Encode("foob"), "MZXW6YQ");
  EXPECT_EQ(Base32Encode("fooba"), "MZXW6YTB");
  EXPECT_EQ(Base32Encode("foobar"), "MZXW6YTBOI");
  for (const char* s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    auto decoded = Base32Decode(Base32Encode(s));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, s);
  }
  auto padded = Base32Decode("mzxw6yq=");
  ASSERT_TRUE(padded.ok());
  EXPECT_EQ(*padded, "foob");
}

TEST(Base32Test, RejectsMalformed) {
  EXPECT_EQ(ErrorCodeOf(Base32Decode("MZ1W").status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(Base32Decode("M").status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(Base32Decode("MZ").status()), ErrorCode::kInvalidArgument);  // stray bits
}

TEST(OtpauthTest, Rfc6238AppendixBThroughBase32) {
  const std::string secret = "12345678901234567890";
  const std::string b32 = Base32Encode(secret);
  EXPECT_EQ(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
  auto decoded = Base32Decode(b32);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(*decoded, secret);
  EXPECT_EQ(Totp8(*decoded, 59), "94287082");
  EXPECT_EQ(Totp8(*decoded, 1111111109), "07081804");
  EXPECT_EQ(Totp8(*decoded, 1111111111), "14050471");
  EXPECT_EQ(Totp8(*decoded, 1234567890), "89005924");
  EXPECT_EQ(Totp8(*decoded, 2000000000), "69279037");
  EXPECT_EQ(Totp8(*decoded, 20000000000), "65353130");
}

TEST(OtpauthTest, UriFormatAndPercentEncoding) {
  const std::string uri = OtpauthUri("coffer", "Alice Admin", "12345678901234567890", 30);
  EXPECT_EQ(uri,
            "otpauth://totp/coffer:Alice%20Admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            "&issuer=coffer&algorithm=SHA1&digits=6&period=30");
  const std::string uri2 = OtpauthUri("my co:x", "bob@host", "f", 60);
  EXPECT_EQ(uri2,
            "otpauth://totp/my%20co%3Ax:bob%40host?secret=MY&issuer=my%20co%3Ax"
            "&algorithm=SHA1&digits=6&period=60");
}

// Registry tests: real SoftHSM2 token, real RocksDB, fake clock.
class AdminRegistryTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("admin-test");
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
    options.totp_settings.max_failures = 3;
    options.totp_settings.lockout = std::chrono::seconds(300);
    auto registry = AdminRegistry::Open(std::move(options));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
  }

  uint64_t NowStep() const {
    return static_cast<uint64_t>(coffer::ToUnixMicros(clock_.Now()) / 1'000'000) / 30;
  }

  // Parses the secret out of the URI independently of the registry.
  static std::string SecretOf(const std::string& uri) {
    const size_t start = uri.find("secret=") + 7;
    const size_t end = uri.find('&', start);
    auto secret = Base32Decode(uri.substr(start, end - start));
    EXPECT_TRUE(secret.ok());
    return secret.ok() ? *secret : std::string();
  }

  std::string Enrol(uint32_t uid, const std::string& name) {
    auto enrollment = registry_->Claim(uid, name, /*bootstrap=*/true);
    EXPECT_TRUE(enrollment.ok()) << enrollment.status();
    return enrollment.ok() ? SecretOf(enrollment->otpauth_uri) : std::string();
  }

  static inline kms::testing::SuiteToken suite_;
  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::unique_ptr<AdminRegistry> registry_;
};

// Each test uses its own uids: the token is shared by the suite.
TEST_F(AdminRegistryTest, ClaimBootstrapAndUriFormat) {
  auto enrollment = registry_->Claim(1001, "Alice Admin", true);
  ASSERT_TRUE(enrollment.ok()) << enrollment.status();
  const std::string& uri = enrollment->otpauth_uri;
  EXPECT_EQ(uri.rfind("otpauth://totp/coffer:Alice%20Admin?secret=", 0), 0u) << uri;
  const std::string suffix = "&issuer=coffer&algorithm=SHA1&digits=6&period=30";
  ASSERT_GE(uri.size(), suffix.size());
  EXPECT_EQ(uri.substr(uri.size() - suffix.size()), suffix);
  EXPECT_EQ(SecretOf(uri).size(), 20u);
  EXPECT_TRUE(enrollment->admin.bootstrap);
  auto count = registry_->AdminCount();
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count, 1u);
  EXPECT_EQ(ErrorCodeOf(registry_->Claim(1001, "again", true).status()), ErrorCode::kAlreadyExists);
  EXPECT_EQ(ErrorCodeOf(registry_->Invite(1001, 1, std::chrono::seconds(60))),
            ErrorCode::kAlreadyExists);
  ASSERT_TRUE(registry_->Remove(1001).ok());
}

TEST_F(AdminRegistryTest, ClaimNeedsInvitation) {
  EXPECT_EQ(ErrorCodeOf(registry_->Claim(1002, "bob", false).status()),
            ErrorCode::kAdminNotEnrolled);
  ASSERT_TRUE(registry_->Invite(1002, 1, std::chrono::seconds(60)).ok());
  EXPECT_TRUE(*registry_->HasInvitation(1002));
  EXPECT_EQ(registry_->ListInvitations()->size(), 1u);
  auto enrollment = registry_->Claim(1002, "bob", false);
  ASSERT_TRUE(enrollment.ok()) << enrollment.status();
  EXPECT_FALSE(enrollment->admin.bootstrap);
  EXPECT_FALSE(*registry_->HasInvitation(1002));  // consumed

  ASSERT_TRUE(registry_->Invite(1003, 1, std::chrono::seconds(60)).ok());
  clock_.Advance(std::chrono::seconds(61));
  EXPECT_FALSE(*registry_->HasInvitation(1003));
  EXPECT_TRUE(registry_->ListInvitations()->empty());
  EXPECT_EQ(ErrorCodeOf(registry_->Claim(1003, "carol", false).status()),
            ErrorCode::kAdminNotEnrolled);
  ASSERT_TRUE(registry_->Remove(1002).ok());
}

TEST_F(AdminRegistryTest, CodesInWindowSingleUseAndPersisted) {
  const std::string secret = Enrol(1010, "dave");
  clock_.Advance(std::chrono::seconds(10));  // mid-step
  const uint64_t t = NowStep();
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1010, HotpIndependent(secret, t + 2, 6)).status()),
            ErrorCode::kMfaCodeInvalid);
  auto ok = registry_->VerifyCode(1010, HotpIndependent(secret, t - 1, 6));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->last_step, t - 1);
  EXPECT_EQ(ok->failures, 0u);
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1010, HotpIndependent(secret, t - 1, 6)).status()),
            ErrorCode::kMfaCodeReused);
  ASSERT_TRUE(registry_->VerifyCode(1010, HotpIndependent(secret, t + 1, 6)).ok());
  // An older step after a newer one.
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1010, HotpIndependent(secret, t, 6)).status()),
            ErrorCode::kMfaCodeReused);
  // Persisted across reopen.
  Reopen();
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1010, HotpIndependent(secret, t + 1, 6)).status()),
            ErrorCode::kMfaCodeReused);
  auto admin = registry_->FindAdmin(1010);
  ASSERT_TRUE(admin.ok() && admin->has_value());
  EXPECT_EQ((*admin)->last_step, t + 1);
  // The next step's code at T works after time moves on.
  clock_.Advance(std::chrono::seconds(60));
  ASSERT_TRUE(registry_->VerifyCode(1010, HotpIndependent(secret, NowStep(), 6)).ok());
  ASSERT_TRUE(registry_->Remove(1010).ok());
}

TEST_F(AdminRegistryTest, MalformedCodesCountAndLockOut) {
  const std::string secret = Enrol(1020, "erin");
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1020, "12a456").status()),
            ErrorCode::kMfaCodeInvalid);
  EXPECT_EQ((*registry_->FindAdmin(1020))->failures, 1u);
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1020, "12345").status()), ErrorCode::kMfaCodeInvalid);
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1020, "1234567").status()),
            ErrorCode::kMfaLockedOut);  // third failure, max_failures = 3
  Reopen();
  const std::string good = HotpIndependent(secret, NowStep(), 6);
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1020, good).status()), ErrorCode::kMfaLockedOut);
  clock_.Advance(std::chrono::seconds(299));
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1020, good).status()), ErrorCode::kMfaLockedOut);
  clock_.Advance(std::chrono::seconds(1));
  auto ok = registry_->VerifyCode(1020, HotpIndependent(secret, NowStep(), 6));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(9999, "123456").status()),
            ErrorCode::kAdminNotEnrolled);
  ASSERT_TRUE(registry_->Remove(1020).ok());
}

TEST_F(AdminRegistryTest, RemoveDestroysSecretAndReclaimGetsNewOne) {
  const std::string first = Enrol(1030, "frank");
  ASSERT_TRUE(suite_.client->totp_secrets().TotpHmac(1030, 1).ok());
  ASSERT_TRUE(registry_->Remove(1030).ok());
  EXPECT_FALSE(suite_.client->totp_secrets().TotpHmac(1030, 1).ok());
  EXPECT_EQ(ErrorCodeOf(registry_->Remove(1030)), ErrorCode::kAdminNotEnrolled);
  EXPECT_EQ(ErrorCodeOf(registry_->VerifyCode(1030, "123456").status()),
            ErrorCode::kAdminNotEnrolled);
  ASSERT_TRUE(registry_->Invite(1030, 1, std::chrono::seconds(60)).ok());
  auto again = registry_->Claim(1030, "frank", false);
  ASSERT_TRUE(again.ok()) << again.status();
  const std::string second = SecretOf(again->otpauth_uri);
  EXPECT_NE(first, second);
  ASSERT_TRUE(registry_->VerifyCode(1030, HotpIndependent(second, NowStep(), 6)).ok());
  ASSERT_TRUE(registry_->Remove(1030).ok());
}

TEST_F(AdminRegistryTest, StaleTokenSecretIsReplacedOnClaim) {
  auto stale = crypto::SecretBytes::Allocate(20);
  ASSERT_TRUE(stale.ok());
  ASSERT_TRUE(suite_.client->totp_secrets().ImportTotpSecret(1040, *stale).ok());
  const std::string secret = Enrol(1040, "gina");
  ASSERT_TRUE(registry_->VerifyCode(1040, HotpIndependent(secret, NowStep(), 6)).ok());
  ASSERT_TRUE(registry_->Remove(1040).ok());
}

TEST_F(AdminRegistryTest, Approvals) {
  auto a = registry_->CreateApproval(7, "req", "payload-bytes", "rotate ds", "ds1",
                                     std::chrono::seconds(600));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->id, 1u);
  EXPECT_EQ(a->state, ApprovalState::kPending);
  auto b = registry_->CreateApproval(7, "req", "p2", "s2", "ds1", std::chrono::seconds(60));
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->id, 2u);
  Reopen();
  auto c = registry_->CreateApproval(8, "req8", "p3", "s3", "", std::chrono::seconds(600));
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c->id, 3u);

  EXPECT_EQ(ErrorCodeOf(registry_->Decide(1, 7, "req", true).status()),
            ErrorCode::kApprovalForbidden);
  auto decided = registry_->Decide(1, 9, "approver", true);
  ASSERT_TRUE(decided.ok()) << decided.status();
  EXPECT_EQ(decided->state, ApprovalState::kApproved);
  EXPECT_EQ(decided->approver_uid, 9u);
  EXPECT_EQ(decided->approver_name, "approver");
  EXPECT_EQ(decided->decided_micros, coffer::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(ErrorCodeOf(registry_->Decide(1, 10, "other", false).status()),
            ErrorCode::kApprovalClosed);
  EXPECT_EQ(ErrorCodeOf(registry_->Decide(99, 9, "x", true).status()),
            ErrorCode::kApprovalNotFound);
  EXPECT_EQ(ErrorCodeOf(registry_->GetApproval(99).status()), ErrorCode::kApprovalNotFound);

  ASSERT_TRUE(registry_->RecordResult(1, ErrorCode::kOk).ok());
  EXPECT_EQ(registry_->GetApproval(1)->state, ApprovalState::kApproved);
  EXPECT_EQ(ErrorCodeOf(registry_->RecordResult(3, ErrorCode::kOk)), ErrorCode::kApprovalClosed);

  // b expires after 60 s.
  clock_.Advance(std::chrono::seconds(61));
  auto expired = registry_->ExpireDue();
  ASSERT_TRUE(expired.ok());
  ASSERT_EQ(expired->size(), 1u);
  EXPECT_EQ((*expired)[0].id, 2u);
  EXPECT_EQ(registry_->GetApproval(2)->state, ApprovalState::kExpired);
  EXPECT_EQ(ErrorCodeOf(registry_->Decide(2, 9, "x", true).status()), ErrorCode::kApprovalClosed);
  EXPECT_EQ(registry_->ListApprovals(false)->size(), 1u);  // only 3
  EXPECT_EQ(registry_->ListApprovals(true)->size(), 3u);

  // Expired through Decide: persisted as kExpired.
  clock_.Advance(std::chrono::seconds(600));
  EXPECT_EQ(ErrorCodeOf(registry_->Decide(3, 9, "x", false).status()), ErrorCode::kApprovalClosed);
  Reopen();
  EXPECT_EQ(registry_->GetApproval(3)->state, ApprovalState::kExpired);
  EXPECT_TRUE(registry_->ExpireDue()->empty());

  auto d = registry_->CreateApproval(7, "req", "p4", "s4", "", std::chrono::seconds(600));
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->id, 4u);
  ASSERT_TRUE(registry_->Decide(4, 9, "approver", true).ok());
  ASSERT_TRUE(registry_->RecordResult(4, ErrorCode::kDatasetNotFound).ok());
  auto failed = registry_->GetApproval(4);
  EXPECT_EQ(failed->state, ApprovalState::kFailed);
  EXPECT_EQ(failed->result_code, static_cast<int32_t>(ErrorCode::kDatasetNotFound));
  auto denied = registry_->CreateApproval(7, "req", "p5", "s5", "", std::chrono::seconds(600));
  ASSERT_TRUE(denied.ok());
  EXPECT_EQ(registry_->Decide(denied->id, 9, "a", false)->state, ApprovalState::kDenied);
}

TEST_F(AdminRegistryTest, FlippedRowIsCorrupt) {
  ASSERT_TRUE(registry_->CreateApproval(7, "req", "p", "s", "", std::chrono::seconds(600)).ok());
  registry_.reset();
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_.Sub("admin"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    const std::string key = "approval/00000000000000000001";
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), key, &value).ok());
    value[2] ^= 0x01;
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), key, value).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  Reopen();
  EXPECT_EQ(ErrorCodeOf(registry_->GetApproval(1).status()), ErrorCode::kKeyDbRowCorrupt);
  EXPECT_EQ(ErrorCodeOf(registry_->ListApprovals(true).status()), ErrorCode::kKeyDbRowCorrupt);
}

}  // namespace
}  // namespace coffer::kms::admin
