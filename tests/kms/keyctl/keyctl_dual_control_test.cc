// keyctl against a real cofferd with MFA and dual control on (control.proto's rules): three
// admin uids — root (0, "A"), nobody (65534, "B") and uid 1 ("C") — each running keyctl as its
// own uid (fork, setgroups/setgid/setuid, exec). TOTP codes are computed here from the otpauth://
// URI that `admin enroll` prints (RFC 6238 with a 2-second step), at the time of test-cofferd's
// clock, which advances one step for each fresh code instead of waiting. Needs root (to run
// keyctl as other uids); skipped otherwise.

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/keyctl/mfa_daemon_fixture.h"

namespace coffer::keyctl {
namespace {

using ::coffer::testing::CofferdOptions;
using ::coffer::testing::KeyctlAs;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

class DualControlTest : public ::coffer::testing::MfaDaemonTest {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "keyctl-dual";
    StartDaemon(std::move(options));
  }

  static json Describe(const std::string& dataset) {
    Result r = Run(kA, "--json dataset describe " + dataset);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.JsonOrEmpty();
  }
};

TEST_F(DualControlTest, InviteNeedsASecondAdminAndApprovalsAreSingleUse) {
  const uint64_t id = FilePending(kA, "admin enroll --uid 1");
  ASSERT_NE(id, 0u);
  Result self = Approve(kA, id);
  EXPECT_EQ(self.exit_code, 3) << self.err;
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;
  Result claim_early = Run(kC, "admin enroll");
  EXPECT_NE(claim_early.exit_code, 0) << "C claimed without an approved invitation";

  Result approved = Approve(kB, id);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(approved.JsonOrEmpty()["request"].value("state", ""), "APPROVAL_STATE_APPROVED")
      << approved.out;
  Result twice = Approve(kB, id);
  EXPECT_EQ(twice.exit_code, 3) << twice.err;
  EXPECT_EQ(twice.CodeName(), "APPROVAL_CLOSED") << twice.out;
  Result unknown = Approve(kB, 999999);
  EXPECT_EQ(unknown.exit_code, 4) << unknown.err;

  ASSERT_NO_FATAL_FAILURE(Claim(kC));
  Result list = Run(kA, "--json admin list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(list.JsonOrEmpty().value("mfa_required", false)) << list.out;
  EXPECT_EQ(list.JsonOrEmpty()["admins"].size(), 3u) << list.out;

  // Removing an admin is dual control too; denied, it changes nothing.
  const uint64_t removal = FilePending(kA, "admin remove --uid 1");
  ASSERT_NE(removal, 0u);
  Result denied = Run(kC, "--totp " + Code(kC) + " request deny " + std::to_string(removal));
  ASSERT_EQ(denied.exit_code, 0) << denied.err << denied.out;
  Result after = Run(kB, "--json admin list");
  EXPECT_EQ(after.JsonOrEmpty()["admins"].size(), 3u) << after.out;

  // The inventory lists each admin's TOTP secret (never the secret itself).
  Result inventory = Run(kB, "--json key inventory");
  ASSERT_EQ(inventory.exit_code, 0) << inventory.err;
  int secrets = 0;
  const json keys = inventory.JsonOrEmpty()["keys"];
  for (const json& k : keys) secrets += k.value("kind", "") == "admin-totp-secret";
  EXPECT_EQ(secrets, 3) << inventory.out;
}

TEST_F(DualControlTest, ProtectionShorteningOperationsWaitForApproval) {
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create dual/one");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  // A session is the connection's: another keyctl process of the same uid needs its own code.
  Result second = Run(kA, "--json dataset create dual/two");
  EXPECT_EQ(second.exit_code, 3) << second.err;
  EXPECT_EQ(second.CodeName(), "MFA_REQUIRED") << second.out;
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset create dual/two").exit_code, 0);

  // Retention shortened to 1s.
  uint64_t id = FilePending(kA, "policy set dual/one --retention 1s");
  EXPECT_EQ(Describe("dual/one")["policy"].value("retention_max_age_seconds", int64_t{0}), 0);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(Describe("dual/one")["policy"].value("retention_max_age_seconds", int64_t{0}), 1);

  // Auto-destroy after 1s disabled.
  id = FilePending(kA, "policy set dual/two --auto-destroy-after-disabled 1s");
  EXPECT_EQ(Describe("dual/two")["policy"].value("auto_destroy_after_disabled_seconds", int64_t{0}),
            0);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(Describe("dual/two")["policy"].value("auto_destroy_after_disabled_seconds", int64_t{0}),
            1);

  // The compliance lock (minimum retention): raised freely, lowered only with approval.
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " policy set dual/two --min-retention 2d").exit_code, 0);
  EXPECT_EQ(Describe("dual/two")["policy"].value("minimum_retention_seconds", int64_t{0}), 172800);
  id = FilePending(kA, "policy set dual/two --min-retention 1d");
  EXPECT_EQ(Describe("dual/two")["policy"].value("minimum_retention_seconds", int64_t{0}), 172800);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(Describe("dual/two")["policy"].value("minimum_retention_seconds", int64_t{0}), 86400);

  // Scheduled re-encryption: from the daemon's setting (unknown to the check) any value waits;
  // a smaller N of its own is one admin's; off (0) or a clear waits again.
  auto reencrypt = [] {
    return Describe("dual/two")["policy"].value("reencrypt_versions_back", -2);
  };
  id = FilePending(kA, "policy set dual/two --reencrypt-versions-back 3");
  EXPECT_EQ(reencrypt(), -2);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(reencrypt(), 3);
  ASSERT_EQ(
      Run(kA, "--totp " + Code(kA) + " policy set dual/two --reencrypt-versions-back 1").exit_code,
      0);
  EXPECT_EQ(reencrypt(), 1);
  id = FilePending(kA, "policy set dual/two --reencrypt-versions-back 0");
  EXPECT_EQ(reencrypt(), 1);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(reencrypt(), 0);
  id = FilePending(kA, "policy set dual/two --reencrypt-versions-back daemon");
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(reencrypt(), -2);

  // Legal hold: set freely, cleared only with approval.
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " hold set dual/one").exit_code, 0);
  id = FilePending(kA, "hold clear dual/one");
  EXPECT_TRUE(Describe("dual/one").value("legal_hold", false));
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_FALSE(Describe("dual/one").value("legal_hold", true));

  // Retiring key versions.
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " key rotate dual/one --purpose records").exit_code, 0);
  id = FilePending(kA, "key retire dual/one --purpose records --below 2");
  auto state_of_v1 = [] {
    const json info = Describe("dual/one");
    for (const json& v : info["versions"]) {
      if (v.value("purpose", "") == "PURPOSE_RECORDS" && v.value("version", 0) == 1) {
        return v.value("state", std::string());
      }
    }
    return std::string();
  };
  EXPECT_NE(state_of_v1(), "KEY_RETIRED");
  Result approved = Approve(kB, id);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(state_of_v1(), "KEY_RETIRED");

  // Destruction.
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset disable dual/one").exit_code, 0);
  id = FilePending(kA, "dataset destroy dual/one");
  EXPECT_EQ(Describe("dual/one").value("state", ""), "DATASET_DISABLED");
  Result destroyed = Run(kB, "--totp " + Code(kB) + " dataset approve " + std::to_string(id));
  ASSERT_EQ(destroyed.exit_code, 0) << destroyed.err << destroyed.out;
  EXPECT_NE(destroyed.out.find("APPROVED"), std::string::npos) << destroyed.out;
  EXPECT_EQ(Describe("dual/one").value("state", ""), "DATASET_PENDING_DESTRUCTION");

  // A denied request changes nothing.
  id = FilePending(kA, "policy set dual/two --retention 1s");
  Result denied = Run(kB, "--totp " + Code(kB) + " request deny " + std::to_string(id));
  ASSERT_EQ(denied.exit_code, 0) << denied.err;
  EXPECT_EQ(Describe("dual/two")["policy"].value("retention_max_age_seconds", int64_t{0}), 0);
  // The same in human form: one line naming the request and how to approve it.
  Result human = Run(kA, "--totp " + Code(kA) + " policy set dual/two --retention 2s");
  EXPECT_EQ(human.exit_code, 5) << human.err;
  EXPECT_EQ(human.out.find("request "), 0u) << human.out;
  EXPECT_NE(human.out.find(" filed: "), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("keyctl request approve "), std::string::npos) << human.out;
  EXPECT_TRUE(human.err.empty()) << human.err;
  Result list_human = Run(kB, "request list");
  EXPECT_EQ(list_human.exit_code, 0) << list_human.err;
  EXPECT_NE(list_human.out.find("PENDING"), std::string::npos) << list_human.out;

  Result all = Run(kA, "--json request list --all");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_GE(all.JsonOrEmpty()["requests"].size(), 6u) << all.out;
}

// Issue 20 item 6: relaxing the access audit's failure policy (serve data requests while the
// audit log fails) needs a second admin and is audited; tightening it is one admin's.
TEST_F(DualControlTest, RelaxingTheAuditFailurePolicyWaitsForApproval) {
  auto policy = [] {
    Result r = Run(kA, "--json audit policy");
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    return r.JsonOrEmpty().value("access_failure", std::string());
  };
  EXPECT_EQ(policy(), "fail-closed");
  uint64_t id = FilePending(kA, "audit policy --access-failure serve-and-count");
  EXPECT_EQ(policy(), "fail-closed");
  // The second admin sees what they approve.
  Result list = Run(kB, "request list");
  EXPECT_NE(list.out.find("serve-and-count"), std::string::npos) << list.out;
  // The requester cannot approve their own request.
  Result own = Approve(kA, id);
  EXPECT_NE(own.exit_code, 0) << own.out;
  EXPECT_EQ(policy(), "fail-closed");
  Result approved = Approve(kB, id);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(policy(), "serve-and-count");
  Result status = Run(kA, "status");
  EXPECT_NE(status.out.find("serve-and-count"), std::string::npos) << status.out;

  // Back to fail-closed: one admin, at once.
  Result tightened = Run(kA, "--totp " + Code(kA) + " audit policy --access-failure fail-closed");
  ASSERT_EQ(tightened.exit_code, 0) << tightened.err << tightened.out;
  EXPECT_NE(tightened.out.find("fail-closed (was serve-and-count)"), std::string::npos)
      << tightened.out;
  EXPECT_EQ(policy(), "fail-closed");

  // Both changes are in the audit log as policy changes, each requested and completed (the
  // daemon-wide policy is the only one changed on no dataset: handle 0).
  Result entries = Run(kA, "--json audit search --limit 100000");
  ASSERT_EQ(entries.exit_code, 0) << entries.err;
  int requested = 0;
  int completed = 0;
  const json all = entries.JsonOrEmpty();
  for (const json& e : all["entries"]) {
    if (e.value("kind", "") != "POLICY_CHANGE" || e.value("dataset_handle", uint64_t{1}) != 0) {
      continue;
    }
    EXPECT_EQ(e.value("result_code", -1), 0) << e.dump();
    (e.value("stage", "") == "COMPLETED" ? completed : requested) += 1;
  }
  EXPECT_EQ(requested, 2) << entries.out;
  EXPECT_EQ(completed, 2) << entries.out;
}

TEST_F(DualControlTest, CodesAreRefusedWhenWrongReusedOrMissing) {
  // Wrong code: refused and audited.
  const std::string wrong = codes_.At(kA, daemon_->TotpStep() + 1000);
  Result bad = Run(kA, "--json --totp " + wrong + " dataset create dual/wrong");
  EXPECT_EQ(bad.exit_code, 3) << bad.err;
  EXPECT_EQ(bad.err.find(wrong), std::string::npos) << "the code is never printed";
  Result audit = Run(kA, "--json audit search --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  bool audited = false;
  const json entries = audit.JsonOrEmpty()["entries"];
  for (const json& e : entries) {
    if (e.value("kind", "") == "MFA_VERIFY" && e.value("result_code", 0) != 0) audited = true;
  }
  EXPECT_TRUE(audited) << "no failed MFA_VERIFY entry";

  // Replay across a restart.
  const std::string code = Code(kA);
  ASSERT_EQ(Run(kA, "--totp " + code + " dataset create dual/replay").exit_code, 0);
  daemon_->Stop();
  ASSERT_TRUE(daemon_->Start()) << daemon_->Logs();
  Result replay = Run(kA, "--json --totp " + code + " hold set dual/replay");
  EXPECT_EQ(replay.exit_code, 3) << replay.err;
  EXPECT_EQ(replay.CodeName(), "MFA_CODE_REUSED") << replay.out;

  // No code and no session (sessions end with the daemon): refused, told to pass --totp.
  Result missing = Run(kB, "hold set dual/replay");
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
  EXPECT_NE(missing.err.find("--totp"), std::string::npos) << missing.err;
  // Read-only commands need no code.
  EXPECT_EQ(Run(kB, "dataset list").exit_code, 0);
}

TEST_F(DualControlTest, PromptsForTheCodeOnATerminal) {
  // Sessions end with the daemon: restart so that B has none.
  daemon_->Stop();
  ASSERT_TRUE(daemon_->Start()) << daemon_->Logs();
  const std::string code = Code(kB) + "\n";
  Result r = KeyctlAs(kB, daemon_->keyctl(), daemon_->admin_socket(),
                      "dataset create dual/prompted", &code);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("TOTP code for nobody: "), std::string::npos) << r.out;
  // (Whether the pseudo-terminal echoes input that arrives before keyctl turns echo off depends
  // on timing, so echo is not checked here.)
  EXPECT_EQ(Describe("dual/prompted").value("name", ""), "dual/prompted");
}

TEST_F(DualControlTest, WholeLifecycleWithKeyctlAlone) {
  const std::string d = "dual/life";
  ASSERT_EQ(
      Run(kA, "--totp " + Code(kA) + " dataset create " + d + " --destruction-wait 1s").exit_code,
      0);
  const std::string salt = Describe(d).value("name_salt", "");
  ASSERT_EQ(salt.size(), 64u);
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " key rotate " + d).exit_code, 0);
  Result reenc = Run(kA, "--totp " + Code(kA) + " reencrypt start " + d + " --wait");
  ASSERT_EQ(reenc.exit_code, 0) << reenc.err;
  uint64_t id = FilePending(kA, "key retire " + d + " --purpose records --below 2");
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  Result backup = Run(kA, "--totp " + Code(kA) + " backup create");
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " hold set " + d).exit_code, 0);
  id = FilePending(kA, "hold clear " + d);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset disable " + d).exit_code, 0);
  id = FilePending(kA, "dataset destroy " + d);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);

  // Once the clock is past the one-second wait, a run of the rotation clock destroys it; its
  // data is erased and the receipt, fetched by the name it had, names B as the approver of
  // request `id`.
  daemon_->AdvanceClock(std::chrono::seconds(2));
  Result ran = Run(kA, "--totp " + Code(kA) + " job run rotation");
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Result receipt = Run(kA, "receipt get " + d);
  ASSERT_EQ(receipt.exit_code, 0) << receipt.err;
  const std::string receipt_file = daemon_->dir() + "/life.receipt";
  std::ofstream(receipt_file, std::ios::trunc) << receipt.out;
  chmod(receipt_file.c_str(), 0644);

  Result status = Run(kA, "--json status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const std::string pem_text = status.JsonOrEmpty().value("audit_public_key_pem", "");
  ASSERT_FALSE(pem_text.empty()) << "status carries no audit public key";
  const std::string pem = daemon_->dir() + "/dual-audit-public.pem";
  std::ofstream(pem, std::ios::trunc) << pem_text;
  Result verify = Run(kA, "audit verify --offline --public-key " + pem + " --audit-dir " +
                              daemon_->dir() + "/audit");
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  Result checked = Run(kB, "--json receipt verify " + receipt_file + " --public-key " + pem +
                               " --name " + d + " --name-salt " + salt);
  ASSERT_EQ(checked.exit_code, 0) << checked.err;
  const json body = checked.JsonOrEmpty()["receipt"];
  EXPECT_EQ(body["destruction_requested_by"].value("uid", 0u), kA) << checked.out;
  ASSERT_EQ(body["approvals"].size(), 1u) << checked.out;
  EXPECT_EQ(body["approvals"][0]["approver"].value("uid", 0u), kB) << checked.out;
  EXPECT_EQ(body["approvals"][0].value("request_id", ""), std::to_string(id)) << checked.out;

  Result audit = Run(kA, "--json audit search --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  std::map<uint32_t, int> admin_requests;
  bool schedule_names_approver = false;
  const json entries = audit.JsonOrEmpty()["entries"];
  for (const json& e : entries) {
    if (e.value("kind", "") == "ADMIN_REQUEST") ++admin_requests[e.value("uid", 0u)];
    if (e.value("kind", "") == "DESTRUCTION_SCHEDULE" && e.value("stage", "") == "REQUESTED" &&
        e.value("uid", 0u) == kA && e.value("approver_uid", 0u) == kB) {
      schedule_names_approver = true;
    }
  }
  EXPECT_TRUE(schedule_names_approver) << "no DESTRUCTION_SCHEDULE naming A and approver B";
  EXPECT_GT(admin_requests[kA], 0) << audit.out.substr(0, 2000);
  EXPECT_GT(admin_requests[kB], 0) << audit.out.substr(0, 2000);
}

}  // namespace
}  // namespace coffer::keyctl
