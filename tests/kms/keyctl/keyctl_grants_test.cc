// Grants at run time (issue 20 item 12; kms/ops/runtime_grants.h, docs/keyctl.md "Grants")
// against a running test-cofferd with MFA and dual control on: `keyctl grant list|add|remove`
// as admins A (root) and B (nobody), each running keyctl as its own uid; the application is uid 2
// ("daemon" on Debian), which holds no grant of the configuration, and uid 1 ("C") enrols as a
// third admin half-way. Data-socket calls run the client library in a child process as uid 2.
// TOTP codes come from the enrolment URIs at test-cofferd's clock, which advances a step per
// code. The tests run in order on one daemon. Needs root; skipped otherwise.

#include <signal.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/keyctl/mfa_daemon_fixture.h"

namespace coffer::keyctl {
namespace {

using ::coffer::testing::CofferdOptions;
using ::coffer::testing::SecretOf;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

constexpr uid_t kApp = 2;  // the CRM backend: no grant in the configuration, no admin
constexpr char kDataset[] = "grants/crm";

std::string Outcome(const absl::Status& status) {
  return status.ok() ? "OK" : std::string(ErrorCodeName(ErrorCodeOf(status)));
}

class GrantsTest : public ::coffer::testing::MfaDaemonTest {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "keyctl-grants";
    // One configuration grant, so that grant list shows both origins.
    options.extra_config = [](const std::string&) {
      return "grants { principals { uid: 3 } datasets: \"grants/crm\" rights: METADATA }\n";
    };
    StartDaemon(std::move(options));
  }
  // The admins' bootstrap, then the suite's dataset.
  void Bootstrap() override {
    ASSERT_NO_FATAL_FAILURE(MfaDaemonTest::Bootstrap());
    Result created = Run(kA, "--totp " + Code(kA) + " dataset create " + kDataset);
    ASSERT_EQ(created.exit_code, 0) << created.err << created.out;
  }

  // A put then a get of one record in kDataset as the application's uid: "OK" or the first
  // refusal's code name.
  static std::string AppReadsAndWrites() {
    return ::coffer::testing::RunAsUid(kApp, daemon_->daemon_gid(), [] {
      auto client = client::Client::Connect(daemon_->data_socket());
      if (!client.ok()) return "connect: " + Outcome(client.status());
      absl::Status put = (*client)->PutRecord(kDataset, "contact/1", "Jane");
      if (!put.ok()) return Outcome(put);
      auto value = (*client)->GetRecord(kDataset, "contact/1");
      if (!value.ok()) return Outcome(value.status());
      return *value == "Jane" ? std::string("OK") : "wrong value " + *value;
    });
  }

  static json Grants() {
    Result r = Run(kB, "--json grant list");
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    return r.JsonOrEmpty().value("grants", json::array());
  }
  // The stored grants (origin STORED) of grant list.
  static json StoredGrants() {
    json stored = json::array();
    for (const json& g : Grants()) {
      if (g.value("origin", "") == "STORED") stored.push_back(g);
    }
    return stored;
  }

  static json AuditEntries() {
    Result audit = Run(kA, "--json audit search --limit 100000");
    EXPECT_EQ(audit.exit_code, 0) << audit.err;
    return audit.JsonOrEmpty().value("entries", json::array());
  }

  static uint64_t grant_id_;
};
uint64_t GrantsTest::grant_id_ = 0;

// grant add waits for a second admin; until it approves, the application is refused; after it,
// the application (another uid) reads and writes, grant list shows both origins, and the change
// is audited with its principal, dataset, rights and approver.
TEST_F(GrantsTest, AGrantAddWaitsForASecondAdminThenServesTheApplication) {
  EXPECT_EQ(AppReadsAndWrites(), "NOT_GRANTED");
  const uint64_t request =
      FilePending(kA, std::string("grant add uid:2 ") + kDataset + " read write");
  ASSERT_NE(request, 0u);
  Result pending = Run(kB, "request list");
  EXPECT_NE(pending.out.find("grant add uid 2: READ, WRITE on dataset grants/crm"),
            std::string::npos)
      << pending.out;
  EXPECT_EQ(AppReadsAndWrites(), "NOT_GRANTED") << "served before the second admin approved";
  EXPECT_TRUE(StoredGrants().empty());
  Result self = Approve(kA, request);
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;

  Result approved = Approve(kB, request);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  const json result = approved.JsonOrEmpty()["result"];
  ASSERT_TRUE(result.contains("grant_add")) << approved.out;
  grant_id_ = result["grant_add"]["grant"].value("id", uint64_t{0});
  EXPECT_NE(grant_id_, 0u);
  EXPECT_EQ(AppReadsAndWrites(), "OK");

  const json grants = Grants();
  ASSERT_EQ(grants.size(), 2u) << grants.dump();
  EXPECT_EQ(grants[0].value("origin", ""), "CONFIG");
  EXPECT_EQ(grants[0]["principals"][0].value("uid", 0u), 3u);
  EXPECT_EQ(grants[1].value("origin", ""), "STORED");
  EXPECT_EQ(grants[1].value("id", uint64_t{0}), grant_id_);
  EXPECT_EQ(grants[1]["principals"][0].value("uid", 0u), kApp);
  EXPECT_EQ(grants[1]["datasets"][0], kDataset);
  EXPECT_EQ(grants[1]["rights"], json::array({"READ", "WRITE"}));
  EXPECT_EQ(grants[1].value("requested_by_uid", 99u), kA);
  EXPECT_EQ(grants[1].value("approved_by_uid", 0u), kB);
  Result human = Run(kA, "grant list");
  EXPECT_NE(human.out.find("stored"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("config"), std::string::npos) << human.out;

  int requested = 0;
  int completed = 0;
  for (const json& e : AuditEntries()) {
    if (e.value("kind", "") != "ADMIN_REQUEST" ||
        e.value("detail", "") != "grant_add uid READ,WRITE on the dataset") {
      continue;
    }
    EXPECT_EQ(e.value("uid", 99u), kA) << e.dump();
    EXPECT_EQ(e.value("approver_uid", 0u), kB) << e.dump();
    EXPECT_EQ(e.value("record_count", 0u), kApp) << e.dump();
    EXPECT_EQ(e.value("dataset", ""), kDataset) << e.dump();
    requested += e.value("stage", "") == "REQUESTED";
    completed += e.value("stage", "") == "COMPLETED" && e.value("result_code", -1) == 0;
  }
  EXPECT_EQ(requested, 1);
  EXPECT_EQ(completed, 1);
}

// The stored grant is kept by a SIGHUP (which reloads the configuration's grants) and by a
// restart.
TEST_F(GrantsTest, AStoredGrantSurvivesAReloadAndARestart) {
  ASSERT_NE(grant_id_, 0u) << "needs the grant of the previous test";
  daemon_->WriteConfig();
  size_t log_size = daemon_->Logs().size();
  ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_->WaitForLog("grants, admins and rate limits reloaded", log_size));
  EXPECT_EQ(AppReadsAndWrites(), "OK");
  EXPECT_EQ(StoredGrants().size(), 1u);

  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(AppReadsAndWrites(), "OK");
  const json stored = StoredGrants();
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0].value("id", uint64_t{0}), grant_id_);
}

// A grant to an enrolled admin's uid (or user, or a group an admin belongs to) is refused when
// asked; one filed while its uid was no admin is refused when the approved change runs.
TEST_F(GrantsTest, AGrantToAnEnrolledAdminIsRefusedWhenAskedAndWhenItRuns) {
  for (const std::string principal : {"uid:65534", "user:nobody", "uid:0", "gid:0"}) {
    Result r =
        Run(kA, "--json --totp " + Code(kA) + " grant add " + principal + " " + kDataset + " read");
    EXPECT_EQ(r.exit_code, 1) << principal << ": " << r.err << r.out;
    EXPECT_EQ(r.CodeName(), "FAILED_PRECONDITION") << principal << ": " << r.out;
    EXPECT_NE(r.out.find("enrolled admin"), std::string::npos) << r.out;
  }
  // Filed while uid 1 is no admin...
  const uint64_t request = FilePending(kA, std::string("grant add uid:1 ") + kDataset + " read");
  ASSERT_NE(request, 0u);
  // ...then uid 1 enrols (its invitation under dual control, as two admins are enrolled)...
  const uint64_t invite = FilePending(kA, "admin enroll --uid 1");
  ASSERT_EQ(Approve(kB, invite).exit_code, 0);
  Result claimed = Run(kC, "--json admin enroll");
  ASSERT_EQ(claimed.exit_code, 0) << claimed.err << claimed.out;
  codes_.SetSecret(kC, SecretOf(claimed.JsonOrEmpty().value("otpauth_uri", "")));
  // ...so the approved change is refused as it runs, and stores nothing.
  Result approved = Approve(kB, request);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  const json body = approved.JsonOrEmpty();
  EXPECT_EQ(body["request"].value("state", ""), "APPROVAL_STATE_FAILED") << approved.out;
  EXPECT_EQ(body["result"]["error"].value("code_name", ""), "FAILED_PRECONDITION") << approved.out;
  for (const json& g : StoredGrants()) {
    EXPECT_NE(g["principals"][0].value("uid", 0u), kC) << g.dump();
  }
}

// Bad input is refused before anything is filed, each with a message saying what is wrong.
TEST_F(GrantsTest, BadInputIsRefusedClearly) {
  struct Case {
    std::string args;
    int exit_code;
    std::string says;
  };
  const Case cases[] = {
      {"grant add uid:2 grants/no-such-dataset read", 4, "no dataset with that name"},
      {std::string("grant add uid:2 ") + kDataset + " read fly", 2, "unknown right 'fly'"},
      {std::string("grant add crm ") + kDataset + " read", 2, "PRINCIPAL 'crm'"},
      {std::string("grant add uid:x ") + kDataset + " read", 2, "PRINCIPAL 'uid:x'"},
      {std::string("grant add user:no-such-user-7q ") + kDataset + " read", 1,
       "no such user on this system"},
      {std::string("grant add group:no-such-group-7q ") + kDataset + " read", 1,
       "no such group on this system"},
      {"grant remove 999", 4, "no stored grant with that id"},
      {std::string("grant add uid:2 ") + kDataset + " read write", 1, "already gives"},
  };
  for (const Case& c : cases) {
    Result r = Run(kA, "--totp " + Code(kA) + " " + c.args);
    EXPECT_EQ(r.exit_code, c.exit_code) << c.args << ": " << r.err << r.out;
    EXPECT_NE((r.err + r.out).find(c.says), std::string::npos) << c.args << ": " << r.err << r.out;
  }
  Result list = Run(kB, "--json request list");
  for (const json& pending : list.JsonOrEmpty().value("requests", json::array())) {
    EXPECT_EQ(pending["request"].count("grant_add"), 0u) << "a bad grant was filed: " << list.out;
  }
}

// An approved removal cuts the application off on its next request, and is audited.
TEST_F(GrantsTest, AnApprovedRemovalCutsTheApplicationOff) {
  ASSERT_NE(grant_id_, 0u) << "needs the grant of the first test";
  ASSERT_EQ(AppReadsAndWrites(), "OK");
  const uint64_t request = FilePending(kA, "grant remove " + std::to_string(grant_id_));
  ASSERT_NE(request, 0u);
  EXPECT_EQ(AppReadsAndWrites(), "OK") << "cut before the second admin approved";
  Result approved = Approve(kB, request);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(approved.JsonOrEmpty()["request"].value("state", ""), "APPROVAL_STATE_APPROVED")
      << approved.out;
  EXPECT_EQ(AppReadsAndWrites(), "NOT_GRANTED");
  EXPECT_TRUE(StoredGrants().empty());
  int completed = 0;
  for (const json& e : AuditEntries()) {
    completed += e.value("kind", "") == "ADMIN_REQUEST" &&
                 e.value("detail", "") == "grant_remove uid READ,WRITE on the dataset" &&
                 e.value("stage", "") == "COMPLETED" && e.value("approver_uid", 0u) == kB;
  }
  EXPECT_EQ(completed, 1);
}

}  // namespace
}  // namespace coffer::keyctl
