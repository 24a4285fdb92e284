// AdminControl (MFA and dual control on the admin socket) over a real SoftHSM2 token, a real
// admin registry (RocksDB) and a real audit log; datasets are described by a test lookup and
// approved operations run through a recording executor. TOTP codes are computed here from the
// otpauth URI with OpenSSL, independently of the token.

#include "kms/ops/admin_control.h"

#include <openssl/hmac.h>

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/verifier.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;

constexpr uid_t kAlice = 2001;
constexpr uid_t kBob = 2002;
constexpr uid_t kCarol = 2003;
constexpr int64_t kStep = 30;

int C(ErrorCode code) { return static_cast<int>(code); }

std::string Base32Decode(std::string_view text) {
  static constexpr std::string_view kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    size_t value = kAlphabet.find(c);
    if (value == std::string_view::npos) return "";
    buffer = (buffer << 5) | static_cast<uint32_t>(value);
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xff));
    }
  }
  return out;
}

// The secret= parameter of an otpauth URI, decoded.
std::string SecretOf(const std::string& uri) {
  size_t at = uri.find("secret=");
  if (at == std::string::npos) return "";
  size_t end = uri.find('&', at);
  return Base32Decode(uri.substr(at + 7, end == std::string::npos ? end : end - at - 7));
}

// RFC 6238 / RFC 4226 with OpenSSL: 6 digits for `counter`.
std::string Totp(const std::string& secret, uint64_t counter) {
  unsigned char message[8];
  for (int i = 7; i >= 0; --i) {
    message[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[20];
  unsigned int size = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), message, sizeof(message), mac,
       &size);
  int offset = mac[19] & 0x0f;
  uint32_t value = (static_cast<uint32_t>(mac[offset] & 0x7f) << 24) |
                   (static_cast<uint32_t>(mac[offset + 1]) << 16) |
                   (static_cast<uint32_t>(mac[offset + 2]) << 8) | mac[offset + 3];
  char digits[7];
  snprintf(digits, sizeof(digits), "%06u", value % 1000000);
  return digits;
}

PeerIdentity Peer(uid_t uid) {
  PeerIdentity peer;
  peer.uid = uid;
  peer.gid = 100;
  peer.pid = 77;
  peer.socket = SocketKind::kAdmin;
  return peer;
}

class AdminControlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("admin-control");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  void SetUp() override {
    auto log = audit::AuditLog::Open(suite_.AuditOptions(dir_.Sub("audit"), &clock_));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    Open(/*mfa_required=*/true);
    dataset_.name = "crm";
    dataset_.handle = 7;
    dataset_.policy.bin_days = 30;
    dataset_.policy.retention_max_age = kms::Seconds(0);
    dataset_.policy.minimum_retention = kms::Seconds(3600);
    dataset_.policy.destruction_wait = kms::Seconds(86400);
  }
  void TearDown() override {
    control_.reset();
    // Every admin's token secret goes, so the next test (same token) starts clean.
    if (registry_ != nullptr) {
      auto admins = registry_->ListAdmins();
      if (admins.ok()) {
        for (const auto& admin : *admins) registry_->Remove(admin.uid).IgnoreError();
      }
    }
  }

  void Open(bool mfa_required) {
    control_.reset();
    registry_.reset();
    kms::admin::AdminRegistry::Options options;
    options.directory = dir_.Sub("admins");
    options.totp = &suite_.client->totp_secrets();
    options.rows = &suite_.client->row_authenticator();
    options.clock = &clock_;
    auto registry = kms::admin::AdminRegistry::Open(std::move(options));
    ASSERT_TRUE(registry.ok()) << registry.status();
    registry_ = *std::move(registry);
    AdminControlOptions control;
    control.registry = registry_.get();
    control.audit_log = log_.get();
    control.clock = &clock_;
    control.mfa_required = mfa_required;
    control.approval_ttl = std::chrono::seconds(600);
    control.user_name = [](uid_t uid) { return "user" + std::to_string(uid); };
    auto created = AdminControl::Create(std::move(control));
    ASSERT_TRUE(created.ok()) << created.status();
    control_ = *std::move(created);
  }

  // `connection`: the admin-socket connection (default: one per uid).
  AdminDecision Admit(uid_t uid, const pb::Request& request,
                      std::optional<uint64_t> connection = std::nullopt) {
    return control_->Admit(Peer(uid), connection.value_or(ConnectionOf(uid)), request,
                           [this](std::string_view name) {
                             if (name != dataset_.name) {
                               return absl::StatusOr<kms::DatasetInfo>(
                                   MakeError(ErrorCode::kDatasetNotFound, "no such dataset"));
                             }
                             return absl::StatusOr<kms::DatasetInfo>(dataset_);
                           });
  }

  // Admit, then (when admitted and AdminControl serves it) Serve; the response or the error.
  pb::Response Run(uid_t uid, pb::Request request) {
    pb::Response response;
    AdminDecision decision = Admit(uid, request);
    if (!decision.status.ok()) {
      response.mutable_error()->set_code(C(ErrorCodeOf(decision.status)));
      if (decision.pending) *response.mutable_approval() = *decision.pending;
      return response;
    }
    last_actor_ = decision.actor;
    if (!AdminControl::Serves(request.op_case())) return response;  // would run
    AdminControl::Executor execute = [this](const pb::Request& filed,
                                            const audit::AuditActor& actor,
                                            const kms::AdminApproval& approval) {
      executed_.push_back(filed);
      executed_as_.push_back(actor);
      executed_approvals_.push_back(approval);
      pb::Response result;
      result.mutable_hold_set()->set_name("crm");
      return result;
    };
    absl::Status served = control_->Serve(Peer(uid), decision.actor, request, execute, &response);
    if (!served.ok()) response.mutable_error()->set_code(C(ErrorCodeOf(served)));
    return response;
  }

  // Enrols `uid` (bootstrap or invited) and remembers its secret.
  void Claim(uid_t uid) {
    pb::Request request;
    request.mutable_admin_enroll();
    pb::Response response = Run(uid, request);
    ASSERT_FALSE(response.has_error()) << response.error().code();
    const std::string& uri = response.admin_enroll().otpauth_uri();
    ASSERT_EQ(uri.rfind("otpauth://totp/", 0), 0u) << "not an otpauth URI";
    secrets_[uid] = SecretOf(uri);
    ASSERT_EQ(secrets_[uid].size(), 20u);
  }
  // A fresh code of `uid`: moves the clock to the next step first (codes are single-use).
  std::string Code(uid_t uid) {
    clock_.Advance(std::chrono::seconds(kStep));
    return Totp(secrets_[uid], static_cast<uint64_t>(NowSeconds() / kStep));
  }
  static uint64_t ConnectionOf(uid_t uid) { return uint64_t{uid} * 100; }
  int64_t NowSeconds() const {
    return std::chrono::duration_cast<std::chrono::seconds>(clock_.Now().time_since_epoch())
        .count();
  }

  static pb::Request WithCode(pb::Request request, const std::string& code) {
    request.set_totp_code(code);
    return request;
  }
  static pb::Request PolicySet(std::optional<uint32_t> bin_days,
                               std::optional<int64_t> retention = std::nullopt,
                               std::optional<int64_t> auto_destroy = std::nullopt) {
    pb::Request r;
    r.mutable_policy_set()->set_dataset("crm");
    auto* policy = r.mutable_policy_set()->mutable_policy();
    if (bin_days) policy->set_bin_days(*bin_days);
    if (retention) policy->set_retention_max_age_seconds(*retention);
    if (auto_destroy) policy->set_auto_destroy_after_disabled_seconds(*auto_destroy);
    return r;
  }
  static pb::Request Invite(uid_t uid) {
    pb::Request r;
    r.mutable_admin_enroll()->set_uid(uid);
    return r;
  }
  static pb::Request Decide(uint64_t id, bool approve = true) {
    pb::Request r;
    r.mutable_approval_decide()->set_id(id);
    r.mutable_approval_decide()->set_approve(approve);
    return r;
  }

  // Alice bootstraps, opens a session, invites Bob (bootstrap), Bob claims.
  void TwoAdmins() {
    Claim(kAlice);
    ASSERT_FALSE(Run(kAlice, WithCode(Invite(kBob), Code(kAlice))).has_error());
    Claim(kBob);
  }

  std::vector<audit::v1::AuditEntry> Entries(audit::v1::EventKind kind) {
    auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
    EXPECT_TRUE(entries.ok()) << entries.status();
    std::vector<audit::v1::AuditEntry> out;
    for (auto& entry : entries.value_or(std::vector<audit::v1::AuditEntry>{})) {
      if (entry.kind() == kind) out.push_back(entry);
    }
    return out;
  }

  static inline kms::testing::SuiteToken suite_;
  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::unique_ptr<audit::AuditLog> log_;
  std::unique_ptr<kms::admin::AdminRegistry> registry_;
  std::unique_ptr<AdminControl> control_;
  kms::DatasetInfo dataset_;
  std::map<uid_t, std::string> secrets_;
  audit::AuditActor last_actor_;
  std::vector<pb::Request> executed_;
  std::vector<audit::AuditActor> executed_as_;
  std::vector<kms::AdminApproval> executed_approvals_;
};

TEST_F(AdminControlTest, ReadOnlyOperationsNeedNoEnrolmentButChangesDo) {
  pb::Request list;
  list.mutable_dataset_list();
  EXPECT_TRUE(Admit(kAlice, list).status.ok());
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm");
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, rotate).status), ErrorCode::kAdminNotEnrolled);
}

TEST_F(AdminControlTest, BootstrapThenCodeOpensASessionAndCodesAreSingleUse) {
  Claim(kAlice);
  EXPECT_EQ(Entries(audit::v1::ADMIN_ENROLL).size(), 1u);
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm");
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, rotate).status), ErrorCode::kMfaRequired);

  const std::string code = Code(kAlice);
  AdminDecision admitted = Admit(kAlice, WithCode(rotate, code));
  ASSERT_TRUE(admitted.status.ok()) << admitted.status;
  EXPECT_EQ(admitted.actor.uid, kAlice);
  EXPECT_EQ(admitted.actor.admin_id, uint64_t{kAlice} + 1);
  EXPECT_EQ(admitted.actor.admin_name, "user2001");
  // The session carries the next request; the same code is refused.
  EXPECT_TRUE(Admit(kAlice, rotate).status.ok());
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, WithCode(rotate, code)).status), ErrorCode::kMfaCodeReused);

  // A second claim by the same uid, and a claim by a stranger without an invitation.
  pb::Request claim;
  claim.mutable_admin_enroll();
  EXPECT_EQ(Run(kAlice, claim).error().code(), C(ErrorCode::kAlreadyExists));
  EXPECT_EQ(Run(kCarol, claim).error().code(), C(ErrorCode::kAdminNotEnrolled));
}

TEST_F(AdminControlTest, ASessionBelongsToItsConnectionAndEndsWithItOrItsTime) {
  TwoAdmins();
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm");
  constexpr uint64_t kFirst = 11;
  constexpr uint64_t kSecond = 12;
  ASSERT_TRUE(Admit(kAlice, WithCode(rotate, Code(kAlice)), kFirst).status.ok());
  EXPECT_TRUE(control_->HasSession(kAlice, kFirst));
  EXPECT_TRUE(Admit(kAlice, rotate, kFirst).status.ok());
  // Another connection of the same uid (malware running as the admin) has no session.
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, rotate, kSecond).status), ErrorCode::kMfaRequired);
  EXPECT_FALSE(control_->HasSession(kAlice, kSecond));
  // Nor has another uid that would reach the same connection number.
  EXPECT_FALSE(control_->HasSession(kBob, kFirst));
  EXPECT_EQ(ErrorCodeOf(Admit(kBob, rotate, kFirst).status), ErrorCode::kMfaRequired);
  ASSERT_TRUE(Admit(kAlice, WithCode(rotate, Code(kAlice)), kFirst).status.ok());

  // The session time (300 s, on the injected clock): still open just before, gone at it.
  clock_.Advance(std::chrono::seconds(299));
  EXPECT_TRUE(Admit(kAlice, rotate, kFirst).status.ok());
  clock_.Advance(std::chrono::seconds(1));
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, rotate, kFirst).status), ErrorCode::kMfaRequired);

  // Closing the connection ends it.
  ASSERT_TRUE(Admit(kAlice, WithCode(rotate, Code(kAlice)), kSecond).status.ok());
  control_->ConnectionClosed(kSecond);
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, rotate, kSecond).status), ErrorCode::kMfaRequired);
}

TEST_F(AdminControlTest, WrongCodesAreAuditedAndLockTheAdminOut) {
  Claim(kAlice);
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("crm");
  AdminDecision wrong = Admit(kAlice, WithCode(rotate, "000000"));
  // One in a million that 000000 is right; the next five cannot all be.
  int invalid = 0;
  int locked = 0;
  for (int i = 0; i < 5; ++i) {
    ErrorCode code = ErrorCodeOf(Admit(kAlice, WithCode(rotate, "12a456")).status);
    invalid += code == ErrorCode::kMfaCodeInvalid;
    locked += code == ErrorCode::kMfaLockedOut;
  }
  EXPECT_GE(locked, 1);
  EXPECT_GE(invalid, 3);
  AdminDecision refused = Admit(kAlice, WithCode(rotate, Code(kAlice)));
  EXPECT_EQ(ErrorCodeOf(refused.status), ErrorCode::kMfaLockedOut);
  EXPECT_GT(refused.retry_after_ms, 0u);
  std::vector<audit::v1::AuditEntry> verifies = Entries(audit::v1::MFA_VERIFY);
  ASSERT_GE(verifies.size(), 6u);
  EXPECT_EQ(verifies[1].result_code(), C(ErrorCode::kMfaCodeInvalid));
  EXPECT_EQ(verifies[1].actor().uid(), kAlice);
  EXPECT_EQ(Entries(audit::v1::MFA_LOCKOUT).size(), 1u);
  (void)wrong;
}

TEST_F(AdminControlTest, ProtectionShorteningChangesBecomeApprovalRequests) {
  TwoAdmins();
  ASSERT_TRUE(Admit(kAlice, WithCode(PolicySet(40), Code(kAlice))).status.ok());  // longer bin

  struct Case {
    const char* what;
    pb::Request request;
  };
  pb::Request destroy;
  destroy.mutable_dataset_lifecycle()->set_name("crm");
  destroy.mutable_dataset_lifecycle()->set_action(
      pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION);
  pb::Request retire;
  retire.mutable_key_retire()->set_dataset("crm");
  retire.mutable_key_retire()->set_purpose(pb::PURPOSE_RECORDS);
  retire.mutable_key_retire()->set_below(2);
  pb::Request rewrap;
  rewrap.mutable_key_rewrap()->set_dataset("crm");
  rewrap.mutable_key_rewrap()->set_destroy_old(true);
  pb::Request remove;
  remove.mutable_admin_remove()->set_uid(kBob);
  std::vector<Case> dual = {
      {"shorter bin", PolicySet(1)},
      {"a retention maximum where there was none", PolicySet(std::nullopt, 1)},
      {"auto-destroy", PolicySet(std::nullopt, std::nullopt, 60)},
      {"destroy", destroy},
      {"retire", retire},
      {"rewrap destroying the old keys", rewrap},
      {"invite a third admin", Invite(kCarol)},
  };
  for (const Case& c : dual) {
    AdminDecision decision = Admit(kAlice, c.request);
    EXPECT_EQ(ErrorCodeOf(decision.status), ErrorCode::kApprovalPending) << c.what;
    ASSERT_TRUE(decision.pending.has_value()) << c.what;
    EXPECT_EQ(decision.pending->state(), pb::APPROVAL_STATE_PENDING);
    EXPECT_EQ(decision.pending->requester_uid(), kAlice);
    EXPECT_FALSE(decision.pending->summary().empty());
    EXPECT_TRUE(decision.pending->request().totp_code().empty());
  }
  EXPECT_EQ(Entries(audit::v1::APPROVAL_REQUESTED).size(), dual.size());

  // Tightening, or a hold clear with no hold set, runs at once.
  EXPECT_TRUE(Admit(kAlice, PolicySet(60, std::nullopt, 0)).status.ok());
  pb::Request clear;
  clear.mutable_hold_set()->set_dataset("crm");
  clear.mutable_hold_set()->set_hold(false);
  EXPECT_TRUE(Admit(kAlice, clear).status.ok());
  dataset_.policy.legal_hold = true;
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, clear).status), ErrorCode::kApprovalPending);
  // Removing would leave one admin.
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, remove).status), ErrorCode::kFailedPrecondition);
}

TEST_F(AdminControlTest, ASecondAdminApprovesWithAFreshCodeAndTheRequesterActs) {
  TwoAdmins();
  dataset_.policy.legal_hold = true;
  pb::Request clear;
  clear.mutable_hold_set()->set_dataset("crm");
  clear.mutable_hold_set()->set_hold(false);
  AdminDecision filed = Admit(kAlice, WithCode(clear, Code(kAlice)));
  ASSERT_TRUE(filed.pending.has_value()) << filed.status;
  const uint64_t id = filed.pending->id();

  // Alice cannot approve her own request, even with a fresh code.
  EXPECT_EQ(Run(kAlice, WithCode(Decide(id), Code(kAlice))).error().code(),
            C(ErrorCode::kApprovalForbidden));
  // Bob needs a code in the request itself, not only a session.
  ASSERT_TRUE(Admit(kBob, WithCode(PolicySet(45), Code(kBob))).status.ok());
  EXPECT_EQ(Run(kBob, Decide(id)).error().code(), C(ErrorCode::kMfaRequired));
  EXPECT_TRUE(executed_.empty());

  pb::Response approved = Run(kBob, WithCode(Decide(id), Code(kBob)));
  ASSERT_FALSE(approved.has_error()) << approved.error().code();
  ASSERT_EQ(executed_.size(), 1u);
  EXPECT_TRUE(executed_[0].has_hold_set());
  EXPECT_FALSE(executed_[0].hold_set().hold());
  EXPECT_EQ(executed_as_[0].uid, kAlice);
  EXPECT_EQ(executed_as_[0].admin_id, uint64_t{kAlice} + 1);
  // The operation learns who approved it, which request, and the APPROVAL_GRANTED entry.
  EXPECT_EQ(executed_approvals_[0].approver.uid, kBob);
  EXPECT_EQ(executed_approvals_[0].approver.admin_id, uint64_t{kBob} + 1);
  EXPECT_EQ(executed_approvals_[0].request_id, id);
  EXPECT_EQ(approved.approval_decide().request().state(), pb::APPROVAL_STATE_APPROVED);
  EXPECT_EQ(approved.approval_decide().request().approver_uid(), kBob);
  EXPECT_TRUE(approved.approval_decide().result().has_hold_set());

  std::vector<audit::v1::AuditEntry> granted = Entries(audit::v1::APPROVAL_GRANTED);
  ASSERT_EQ(granted.size(), 1u);
  EXPECT_EQ(granted[0].actor().uid(), kAlice);
  EXPECT_EQ(granted[0].approver().uid(), kBob);
  EXPECT_EQ(granted[0].record_count(), id);
  EXPECT_EQ(executed_approvals_[0].audit_sequence, granted[0].sequence());

  // Approving twice is refused and runs nothing.
  EXPECT_EQ(Run(kBob, WithCode(Decide(id), Code(kBob))).error().code(),
            C(ErrorCode::kApprovalClosed));
  EXPECT_EQ(executed_.size(), 1u);
}

TEST_F(AdminControlTest, DeniedAndExpiredRequestsNeverRun) {
  TwoAdmins();
  AdminDecision first = Admit(kAlice, WithCode(PolicySet(1), Code(kAlice)));
  ASSERT_TRUE(first.pending.has_value());
  AdminDecision second = Admit(kAlice, PolicySet(2));
  ASSERT_TRUE(second.pending.has_value());

  pb::Response denied = Run(kBob, WithCode(Decide(first.pending->id(), false), Code(kBob)));
  ASSERT_FALSE(denied.has_error());
  EXPECT_EQ(denied.approval_decide().request().state(), pb::APPROVAL_STATE_DENIED);
  EXPECT_EQ(Entries(audit::v1::APPROVAL_DENIED).size(), 1u);

  clock_.Advance(std::chrono::seconds(601));
  EXPECT_EQ(Run(kBob, WithCode(Decide(second.pending->id()), Code(kBob))).error().code(),
            C(ErrorCode::kApprovalClosed));
  EXPECT_TRUE(executed_.empty());
  pb::Request list;
  list.mutable_approval_list()->set_include_closed(true);
  pb::Response listed = Run(kBob, list);
  ASSERT_EQ(listed.approval_list().requests_size(), 2);
  EXPECT_EQ(listed.approval_list().requests(1).state(), pb::APPROVAL_STATE_EXPIRED);
  EXPECT_EQ(Entries(audit::v1::APPROVAL_EXPIRED).size(), 1u);
}

TEST_F(AdminControlTest, DualControlNeedsTwoAdmins) {
  Claim(kAlice);
  pb::Request destroy;
  destroy.mutable_dataset_lifecycle()->set_name("crm");
  destroy.mutable_dataset_lifecycle()->set_action(
      pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION);
  EXPECT_EQ(ErrorCodeOf(Admit(kAlice, WithCode(destroy, Code(kAlice))).status),
            ErrorCode::kApprovalForbidden);
}

TEST_F(AdminControlTest, DevelopmentModeAdmitsEverythingWithoutCodes) {
  Open(/*mfa_required=*/false);
  pb::Request destroy;
  destroy.mutable_dataset_lifecycle()->set_name("crm");
  destroy.mutable_dataset_lifecycle()->set_action(
      pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION);
  EXPECT_TRUE(Admit(kAlice, destroy).status.ok());
  pb::Request list;
  list.mutable_admin_list();
  pb::Response listed = Run(kAlice, list);
  EXPECT_FALSE(listed.admin_list().mfa_required());
}

}  // namespace
}  // namespace coffer::daemon
