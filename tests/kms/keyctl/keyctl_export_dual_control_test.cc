// Dual control of `keyctl dataset export` against a real cofferd with MFA on (control.proto,
// docs/keyctl.md "Export"): the requester (root, "A") files the export (exit 5, nothing
// written); it cannot approve it itself; a second admin (nobody, "B") approves it and receives
// no archive; only A redeems it, once, for the dataset and recipient key it filed, and the
// archive opens with the recipient's private key. Harness as keyctl_dual_control_test.cc:
// keyctl runs as each admin's uid, TOTP codes from the enrolment URIs with a 2-second step.
// Needs root; skipped otherwise.

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"

namespace coffer::keyctl {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::KeyctlAs;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::SecretOf;
using ::coffer::testing::TotpCodes;
using ::coffer::testing::WriteKeyPair;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

constexpr uid_t kA = ::coffer::testing::kAdminA;
constexpr uid_t kB = ::coffer::testing::kAdminB;

class KeyctlExportDualControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run keyctl as other uids";
    CofferdOptions options;
    options.name = "keyctl-export-dual";
    options.mfa = true;
    // The application (uid 2, no admin) writes the dataset; an admin gets no content.
    options.extra_config = [](const std::string&) {
      return "grants { principals { uid: 2 } datasets: \"*\" rights: READ rights: WRITE }\n";
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    codes_ = TotpCodes(daemon_.get());
    work_ = daemon_->dir() + "/work";
    fs::create_directories(work_);
    chmod(work_.c_str(), 0777);  // B may try to write here
    // The public keys are readable by B whatever the umask.
    ASSERT_NO_FATAL_FAILURE(WriteKeyPair(work_, "x25519", "X25519"));
    chmod((work_ + "/x25519.pub.pem").c_str(), 0644);
    ASSERT_NO_FATAL_FAILURE(WriteKeyPair(work_, "rsa", "RSA"));
    chmod((work_ + "/rsa.pub.pem").c_str(), 0644);
    // Bootstrap: A claims, invites B (no approval while one admin is enrolled), B claims.
    ASSERT_NO_FATAL_FAILURE(Claim(kA));
    Result invite = Run(kA, "--totp " + Code(kA) + " admin enroll --uid 65534");
    ASSERT_EQ(invite.exit_code, 0) << invite.err << invite.out;
    ASSERT_NO_FATAL_FAILURE(Claim(kB));
  }

  Result Run(uid_t uid, const std::string& args) {
    return KeyctlAs(uid, daemon_->keyctl(), daemon_->admin_socket(), args);
  }
  std::string Code(uid_t uid) { return codes_.Next(uid); }
  void Claim(uid_t uid) {
    Result r = Run(uid, "--json admin enroll");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    const std::string secret = SecretOf(r.JsonOrEmpty().value("otpauth_uri", ""));
    ASSERT_FALSE(secret.empty());
    codes_.SetSecret(uid, secret);
  }
  bool NothingWritten(const std::string& file) {
    for (const auto& entry : fs::directory_iterator(work_)) {
      if (entry.path().filename().string().rfind(file, 0) == 0) return false;
    }
    return true;
  }

  std::unique_ptr<Cofferd> daemon_;
  std::string work_;
  TotpCodes codes_;
};

TEST_F(KeyctlExportDualControlTest, FiledApprovedByAnotherAdminRedeemedOnceByTheRequester) {
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset create exp/dual").exit_code, 0);
  const std::string socket = daemon_->dir() + "/data.sock";
  const std::string written =
      ::coffer::testing::RunAsUid(2, daemon_->daemon_gid(), [&socket]() -> std::string {
        auto client = client::Client::Connect(socket);
        if (!client.ok()) return "connect failed";
        const bool ok = (*client)->PutRecord("exp/dual", "customer-1", "alice@example.com").ok() &&
                        (*client)->PutRecord("exp/dual", "customer-2", "").ok();
        return ok ? "written" : "write failed";
      });
  ASSERT_EQ(written, "written");
  // An ACTIVE dataset is refused at filing: nothing to approve.
  const std::string key = " --recipient-key " + work_ + "/x25519.pub.pem";
  Result active = Run(kA, "--json --totp " + Code(kA) + " dataset export exp/dual" + key +
                              " --out " + work_ + "/a.cfx");
  EXPECT_EQ(active.CodeName(), "DATASET_STATE_FORBIDS") << active.out << active.err;
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset disable exp/dual").exit_code, 0);

  const std::string archive = work_ + "/dual.cfx";
  Result filed =
      Run(kA, "--json --totp " + Code(kA) + " dataset export exp/dual" + key + " --out " + archive);
  ASSERT_EQ(filed.exit_code, 5) << filed.err << filed.out;
  const uint64_t id = filed.JsonOrEmpty()["pending"].value("id", uint64_t{0});
  ASSERT_NE(id, 0u) << filed.out;
  EXPECT_TRUE(NothingWritten("dual.cfx"));
  // Each run is its own connection: each brings a code (an MFA session is per connection).
  const std::string redeem =
      " dataset export exp/dual" + key + " --out " + archive + " --approval " + std::to_string(id);

  Result self = Run(kA, "--json --totp " + Code(kA) + " request approve " + std::to_string(id));
  EXPECT_EQ(self.exit_code, 3) << self.err;
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;
  Result early = Run(kA, "--json --totp " + Code(kA) + redeem);
  EXPECT_EQ(early.CodeName(), "APPROVAL_CLOSED") << early.out << early.err;  // not approved yet
  EXPECT_TRUE(NothingWritten("dual.cfx"));

  // B approves: the request is approved, and B receives no archive.
  Result approved = Run(kB, "--json --totp " + Code(kB) + " request approve " + std::to_string(id));
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  json decided = approved.JsonOrEmpty();
  EXPECT_EQ(decided["request"].value("state", ""), "APPROVAL_STATE_APPROVED") << approved.out;
  const json export_result = decided["result"]["dataset_export"];
  EXPECT_TRUE(export_result.value("approved_for_redemption", false)) << approved.out;
  EXPECT_TRUE(export_result.value("data", std::string()).empty()) << "the approver got data";
  EXPECT_FALSE(export_result.contains("summary")) << approved.out;
  EXPECT_TRUE(NothingWritten("dual.cfx"));

  // Only the requester redeems, only for the recipient key filed.
  Result by_b = Run(kB, "--json --totp " + Code(kB) + " dataset export exp/dual" + key + " --out " +
                            work_ + "/b.cfx --approval " + std::to_string(id));
  EXPECT_EQ(by_b.CodeName(), "APPROVAL_FORBIDDEN") << by_b.out << by_b.err;
  EXPECT_TRUE(NothingWritten("b.cfx"));
  Result other_key =
      Run(kA, "--json --totp " + Code(kA) + " dataset export exp/dual --recipient-key " + work_ +
                  "/rsa.pub.pem --out " + work_ + "/rsa.cfx --approval " + std::to_string(id));
  EXPECT_EQ(other_key.CodeName(), "APPROVAL_FORBIDDEN") << other_key.out << other_key.err;
  EXPECT_TRUE(NothingWritten("rsa.cfx"));

  Result redeemed = Run(kA, "--json --totp " + Code(kA) + redeem);
  ASSERT_EQ(redeemed.exit_code, 0) << redeemed.err << redeemed.out;
  EXPECT_EQ(redeemed.JsonOrEmpty().value("records", 0), 2) << redeemed.out;
  Result opened = Run(kA, "--json export open " + archive + " --private-key " + work_ +
                              "/x25519.pem --out-dir " + work_ + "/opened --public-key " +
                              daemon_->dir() + "/audit-public-key.pem");
  ASSERT_EQ(opened.exit_code, 0) << opened.err << opened.out;
  EXPECT_EQ(opened.JsonOrEmpty().value("approval_id", uint64_t{0}), id);
  const std::string records = ReadWholeFile(work_ + "/opened/records.jsonl");
  std::string alice;
  absl::Base64Unescape(json::parse(records.substr(0, records.find('\n'))).value("value", ""),
                       &alice);
  std::string other;
  absl::Base64Unescape(
      json::parse(records.substr(records.find('\n') + 1)).value("value", std::string("x")), &other);
  EXPECT_TRUE((alice == "alice@example.com" && other.empty()) ||
              (other == "alice@example.com" && alice.empty()))
      << records;

  // Single use.
  Result again = Run(kA, "--json --totp " + Code(kA) + " dataset export exp/dual" + key +
                             " --out " + work_ + "/again.cfx --approval " + std::to_string(id));
  EXPECT_EQ(again.exit_code, 3) << again.err;
  EXPECT_EQ(again.CodeName(), "APPROVAL_CLOSED") << again.out;
  EXPECT_TRUE(NothingWritten("again.cfx"));

  // The redemption is audited (the entry also names the approver; audit_query's rows do not
  // show approvers, so only the entry itself is checked here).
  Result audit = Run(kA, "--json audit search --dataset exp/dual");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  const json entries = audit.JsonOrEmpty()["entries"];
  int redeemed_entries = 0;
  for (const json& entry : entries) {
    if (entry.value("kind", "") != "DATASET_EXPORT_REDEEMED") continue;
    ++redeemed_entries;
    EXPECT_EQ(entry.value("record_count", uint64_t{0}), id) << entry.dump();
    EXPECT_EQ(entry.value("uid", -1), 0) << entry.dump();
  }
  EXPECT_EQ(redeemed_entries, 1) << audit.out;
}

}  // namespace
}  // namespace coffer::keyctl
