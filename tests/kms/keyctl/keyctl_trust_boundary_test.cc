// The trust boundary against a running cofferd with MFA and dual control on (docs/threat-model.md,
// "Rogue admin"): what one admin cannot do alone, each tried for real. Three admin uids — root
// (0, "A"), nobody (65534, "B") and uid 1 ("C") — run keyctl as themselves; the application is
// uid 2 ("daemon" on Debian), which holds a grant on every dataset and is no admin. A and C hold
// READ grants too, to show that a grant does not give an enrolled admin content. Data-socket
// calls run the client library in a child process as the caller's uid. TOTP codes come from the
// enrolment URIs at test-cofferd's clock, which advances a step per code. Needs root; skipped
// otherwise.

#include <unistd.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/keyctl/mfa_daemon_fixture.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::keyctl {
namespace {

using ::coffer::testing::CofferdOptions;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

constexpr uid_t kApp = 2;  // the CRM backend: grants, no admin

// "OK" or the error code's name.
std::string Outcome(const absl::Status& status) {
  return status.ok() ? "OK" : std::string(ErrorCodeName(ErrorCodeOf(status)));
}

class TrustBoundaryTest : public ::coffer::testing::MfaDaemonTest {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "keyctl-trust";
    options.extra_config = [](const std::string&) {
      return "grants { principals { uid: 2 } datasets: \"*\" rights: READ rights: WRITE "
             "rights: DELETE }\n"
             "grants { principals { uid: 0 } principals { uid: 1 } datasets: \"*\" "
             "rights: READ }\n";
    };
    StartDaemon(std::move(options));
  }

  // Runs `body` with a client library connected to `socket`, in a child process as `uid` (its
  // group: the daemon's, which may use both sockets), and returns what the body returned.
  static std::string AsUid(uid_t uid, const std::string& socket,
                           const std::function<std::string(client::Client&)>& body) {
    return ::coffer::testing::RunAsUid(uid, daemon_->daemon_gid(), [&] {
      auto client = client::Client::Connect(socket);
      return client.ok() ? body(**client) : "connect: " + Outcome(client.status());
    });
  }
  static std::string GetAs(uid_t uid, const std::string& socket, const std::string& dataset,
                           const std::string& id) {
    return AsUid(uid, socket, [&](client::Client& c) {
      auto value = c.GetRecord(dataset, id);
      return value.ok() ? "value:" + *value : Outcome(value.status());
    });
  }
  static std::string Data() { return daemon_->data_socket(); }
  static std::string Admin() { return daemon_->admin_socket(); }

  static json Entries(const std::string& dataset) {
    Result audit = Run(kA, "--json audit search --limit 100000 --dataset " + dataset);
    EXPECT_EQ(audit.exit_code, 0) << audit.err;
    return audit.JsonOrEmpty()["entries"];
  }
};

// Item 2 of the trust boundary: an admin role gives no content, on either socket, and a grant
// does not give it back; enrolling a uid takes its content away at once.
TEST_F(TrustBoundaryTest, AnAdminGetsNoContentOnEitherSocketWhateverItsGrants) {
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create tb/content");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(AsUid(kApp, Data(),
                  [](client::Client& c) {
                    return Outcome(c.PutRecord("tb/content", "customer-1", "private notes"));
                  }),
            "OK");
  EXPECT_EQ(GetAs(kApp, Data(), "tb/content", "customer-1"), "value:private notes");

  // A is an enrolled admin with a READ grant: nothing on the data socket, nothing on the admin
  // socket (even within its MFA session).
  EXPECT_EQ(GetAs(kA, Data(), "tb/content", "customer-1"), "NOT_GRANTED");
  EXPECT_EQ(AsUid(kA, Data(),
                  [](client::Client& c) {
                    auto page = c.ListRecords("tb/content", "");
                    auto exists = c.RecordExists("tb/content", "customer-1");
                    return Outcome(page.status()) + " " + Outcome(exists.status());
                  }),
            "NOT_GRANTED NOT_GRANTED");
  EXPECT_EQ(GetAs(kA, Admin(), "tb/content", "customer-1"), "WRONG_SOCKET");
  EXPECT_EQ(AsUid(kA, Admin(),
                  [](client::Client& c) {
                    return Outcome(c.PutRecord("tb/content", "customer-2", "forged"));
                  }),
            "WRONG_SOCKET");
  // Metadata stays: the dataset is described on both sockets.
  EXPECT_EQ(
      AsUid(kA, Data(),
            [](client::Client& c) { return Outcome(c.DescribeDataset("tb/content").status()); }),
      "OK");

  // C holds a READ grant and is not yet an admin: it reads. Enrolled (invited by A, approved by
  // B, claimed), it reads nothing more.
  EXPECT_EQ(GetAs(kC, Data(), "tb/content", "customer-1"), "value:private notes");
  const uint64_t invite = FilePending(kA, "admin enroll --uid 1");
  ASSERT_NE(invite, 0u);
  Result approved = Decide(kB, "approve", invite);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  ASSERT_NO_FATAL_FAILURE(Claim(kC));
  EXPECT_EQ(GetAs(kC, Data(), "tb/content", "customer-1"), "NOT_GRANTED");
  EXPECT_EQ(GetAs(kApp, Data(), "tb/content", "customer-1"), "value:private notes");

  // Each refusal is in the audit log under the refused uid.
  Result audit = Run(kB, "--json audit search --limit 100000 --caller 0");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  int refused_data = 0;
  int refused_admin = 0;
  const json entries = audit.JsonOrEmpty()["entries"];
  for (const json& entry : entries) {
    if (entry.value("kind", "") != "REQUEST_REFUSED") continue;
    const int code = entry.value("result_code", 0);
    if (entry.value("socket", "") == "data" && code == 502) ++refused_data;
    if (entry.value("socket", "") == "admin" && code == 504) ++refused_admin;
  }
  EXPECT_GE(refused_data, 1) << audit.out;
  EXPECT_GE(refused_admin, 1) << audit.out;
}

// Item 1: a purge, of one item or of the whole bin, waits for a second admin, and its audit
// entries name the admin who asked and the one who approved (not the daemon).
TEST_F(TrustBoundaryTest, PurgeWaitsForASecondAdminAndItsEntriesNameBoth) {
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create tb/purge");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(AsUid(kApp, Data(),
                  [](client::Client& c) {
                    std::string out;
                    for (const char* id : {"p-1", "p-2", "p-3"}) {
                      out += Outcome(c.PutRecord("tb/purge", id, "v")) + " ";
                    }
                    out += Outcome(c.DeleteRecord("tb/purge", "p-2")) + " ";
                    out += Outcome(c.DeleteRecord("tb/purge", "p-3"));
                    return out;
                  }),
            "OK OK OK OK OK");

  // One item: filed, nothing deleted until B approves.
  const uint64_t one = FilePending(kA, "bin purge tb/purge --record p-1");
  ASSERT_NE(one, 0u);
  EXPECT_EQ(GetAs(kApp, Data(), "tb/purge", "p-1"), "value:v");
  Result self = Decide(kA, "approve", one);
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;
  EXPECT_EQ(GetAs(kApp, Data(), "tb/purge", "p-1"), "value:v");
  Result approved = Decide(kB, "approve", one);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(GetAs(kApp, Data(), "tb/purge", "p-1"), "RECORD_NOT_FOUND");

  // The whole bin: denied, it changes nothing; approved, it empties the bin.
  auto bin_items = [] {
    Result list = Run(kB, "--json --totp " + Code(kB) + " bin list tb/purge");
    EXPECT_EQ(list.exit_code, 0) << list.err;
    return list.JsonOrEmpty()["items"].size();
  };
  EXPECT_EQ(bin_items(), 2u);
  const uint64_t denied_id = FilePending(kA, "bin purge tb/purge");
  ASSERT_NE(denied_id, 0u);
  ASSERT_EQ(Decide(kB, "deny", denied_id).exit_code, 0);
  EXPECT_EQ(bin_items(), 2u);
  const uint64_t empty = FilePending(kA, "bin purge tb/purge");
  ASSERT_NE(empty, 0u);
  Result emptied = Decide(kB, "approve", empty);
  ASSERT_EQ(emptied.exit_code, 0) << emptied.err << emptied.out;
  EXPECT_EQ(bin_items(), 0u);

  // Three RECORD_PURGE entries, each naming A on the admin socket and B as approver.
  int purges = 0;
  for (const json& entry : Entries("tb/purge")) {
    if (entry.value("kind", "") != "RECORD_PURGE") continue;
    ++purges;
    EXPECT_EQ(entry.value("uid", -1), 0) << entry.dump();
    EXPECT_EQ(entry.value("socket", ""), "admin") << entry.dump();
    EXPECT_EQ(entry.value("approver_uid", -1), 65534) << entry.dump();
  }
  EXPECT_EQ(purges, 3);
}

// Item 8: a dataset's name (often a customer's name) is nowhere in the clear in what the daemon
// wrote — not in the key DB, nor in a pending approval request naming it, nor in the events its
// lifecycle raised — only in the operator's configuration, which this test leaves out.
TEST_F(TrustBoundaryTest, ADiskThiefFindsNoDatasetNameInKeysApprovalsOrEvents) {
  const std::string name = "tb/hooli-xyz-marker";
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create " + name);
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(AsUid(kApp, Data(),
                  [&name](client::Client& c) {
                    std::string out = Outcome(c.PutRecord(name, "r-1", "v"));
                    return out + " " + Outcome(c.DeleteRecord(name, "r-1"));
                  }),
            "OK OK");
  const uint64_t pending = FilePending(kA, "bin purge " + name);  // left pending
  ASSERT_NE(pending, 0u);
  Result disabled = Run(kA, "--totp " + Code(kA) + " dataset disable " + name);  // an event
  ASSERT_EQ(disabled.exit_code, 0) << disabled.err << disabled.out;
  std::vector<std::string> hits;
  for (const std::string& path :
       storage::testing::FilesContaining(daemon_->dir(), "hooli-xyz-marker")) {
    if (!path.ends_with(".conf")) hits.push_back(path);
  }
  EXPECT_TRUE(hits.empty()) << "the name is in the clear in " << ::testing::PrintToString(hits);
  // The approval still shows the name to an admin who reads it.
  Result list = Run(kB, "--json request list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("hooli-xyz-marker"), std::string::npos) << list.out;
}

// Item 1: raising the usage limit or lengthening a rotation period weakens protection and
// waits for a second admin; tightening them does not.
TEST_F(TrustBoundaryTest, WeakeningRotationOrUsageLimitWaitsForASecondAdmin) {
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create tb/policy");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  auto policy = [] {
    Result r = Run(kB, "--json dataset describe tb/policy");
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.JsonOrEmpty()["policy"];
  };
  const int64_t rotation = policy().value("records_rotation_seconds", int64_t{0});
  const uint64_t limit = policy().value("usage_limit", uint64_t{0});
  ASSERT_GT(rotation, 86400);
  ASSERT_GT(limit, 1000u);

  // Tightening runs at once.
  Result shorter =
      Run(kA, "--totp " + Code(kA) + " policy set tb/policy --rotation-days 1 --usage-limit 1000");
  ASSERT_EQ(shorter.exit_code, 0) << shorter.err << shorter.out;
  EXPECT_EQ(policy().value("records_rotation_seconds", int64_t{0}), 86400);
  EXPECT_EQ(policy().value("usage_limit", uint64_t{0}), 1000u);

  // Loosening either is filed; nothing changes until B approves.
  const uint64_t longer = FilePending(kA, "policy set tb/policy --rotation-days 365");
  ASSERT_NE(longer, 0u);
  const uint64_t higher = FilePending(kA, "policy set tb/policy --usage-limit 5000000");
  ASSERT_NE(higher, 0u);
  EXPECT_EQ(policy().value("records_rotation_seconds", int64_t{0}), 86400);
  EXPECT_EQ(policy().value("usage_limit", uint64_t{0}), 1000u);
  ASSERT_EQ(Decide(kB, "approve", longer).exit_code, 0);
  ASSERT_EQ(Decide(kB, "approve", higher).exit_code, 0);
  EXPECT_EQ(policy().value("records_rotation_seconds", int64_t{0}), 365 * 86400);
  EXPECT_EQ(policy().value("usage_limit", uint64_t{0}), 5000000u);
}

}  // namespace
}  // namespace coffer::keyctl
