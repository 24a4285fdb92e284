// Issue 20 item 1 against a running cofferd (test-cofferd, fresh SoftHSM2 token, real RocksDB,
// real sockets): `keyctl key rotate --emergency DATASET --wait` rotates records, attachments,
// lookup and pseudonym keys, marks the older records, attachments and lookup versions
// COMPROMISED, and one job re-encrypts, re-indexes and retires them once nothing uses them; every
// item still reads back, an old pseudonym token still re-identifies (its version stays until the
// operator confirms the translate run), and the audit log holds one trail of the admin's uid.
// Issue 20 item 2: with jobs.reencrypt_versions_back, data lagging that many versions behind the
// primary is re-encrypted in the background (a rate-limited job started by the daemon); a
// dataset's own policy reencrypt_versions_back overrides the daemon's setting, and a policy
// format 2 key DB records it across a restart.

#include <unistd.h>

#include <algorithm>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using json = nlohmann::json;

constexpr char kDataset[] = "crm/breached";
constexpr int kRecords = 30;

std::string Id(int i) { return "contact-" + std::to_string(i); }
std::string Value(int i) { return "customer record " + std::to_string(i); }

class EmergencyRotationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CofferdOptions options;
    options.name = "cofferd-emergency";
    const std::string me = std::to_string(geteuid());
    options.extra_config = [me](const std::string&) {
      return "grants { principals { uid: " + me +
             " } datasets: \"*\" rights: PSEUDONYMIZE rights: REIDENTIFY }\n";
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    ASSERT_EQ(Run("dataset create " + std::string(kDataset)).exit_code, 0);
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }
  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }

  // purpose name -> version -> state, from `key versions --json`.
  std::map<std::string, std::map<int, std::string>> Versions() {
    KeyctlResult listed = Run("--json key versions " + std::string(kDataset));
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    std::map<std::string, std::map<int, std::string>> states;
    for (const json& v : listed.JsonOrEmpty().value("versions", json::array())) {
      states[v.value("purpose", "")][v.value("version", 0)] = v.value("state", "");
    }
    return states;
  }

  std::unique_ptr<Cofferd> daemon_;
};

TEST_F(EmergencyRotationTest, OneCommandRotatesEveryPurposeAndRetiresWhatWasCompromised) {
  auto c = client::Client::Connect(daemon_->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < kRecords; ++i) ASSERT_TRUE((*c)->PutRecord(kDataset, Id(i), Value(i)).ok());
  {
    auto writer = (*c)->BeginAttachment(kDataset, "passport.jpg", "image/jpeg");
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(std::string(200'000, 'j')).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  auto token = (*c)->Pseudonymize(kDataset, {"alice@example.com"});
  ASSERT_TRUE(token.ok()) << token.status();

  KeyctlResult rotated = Run("key rotate " + std::string(kDataset) + " --emergency --wait");
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err << rotated.out;
  EXPECT_NE(rotated.out.find("emergency rotation of crm/breached"), std::string::npos)
      << rotated.out;
  EXPECT_NE(rotated.out.find("re-encrypts, re-indexes, then retires"), std::string::npos)
      << rotated.out;

  // Every purpose has a new primary; the compromised versions are retired (their keys gone),
  // the old pseudonym version stays for the CRM's stored tokens.
  auto versions = Versions();
  for (const char* purpose : {"PURPOSE_RECORDS", "PURPOSE_ATTACHMENTS", "PURPOSE_LOOKUP"}) {
    SCOPED_TRACE(purpose);
    EXPECT_EQ(versions[purpose][1], "KEY_RETIRED");
    EXPECT_EQ(versions[purpose][2], "KEY_PRIMARY");
  }
  EXPECT_EQ(versions["PURPOSE_PSEUDONYM"][2], "KEY_PRIMARY");
  EXPECT_NE(versions["PURPOSE_PSEUDONYM"][1], "KEY_RETIRED");

  // Nothing was lost: every record and the attachment read back under the new keys, and the old
  // token still re-identifies.
  for (int i = 0; i < kRecords; ++i) {
    EXPECT_EQ((*c)->GetRecord(kDataset, Id(i)).value_or("<missing>"), Value(i)) << Id(i);
  }
  auto reader = (*c)->OpenAttachment(kDataset, "passport.jpg");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->ReadAll().value_or("").size(), 200'000u);
  auto identified = (*c)->Reidentify(kDataset, token->tokens);
  ASSERT_TRUE(identified.ok()) << identified.status();
  EXPECT_EQ(identified->front(), "alice@example.com");

  // One trail: four emergency rotations and three retirements, all by the admin who asked.
  KeyctlResult trail =
      Run("--json audit search --dataset " + std::string(kDataset) + " --limit 1000");
  ASSERT_EQ(trail.exit_code, 0) << trail.err;
  int rotations = 0;
  int retirements = 0;
  for (const json& e : trail.JsonOrEmpty().value("entries", json::array())) {
    const std::string kind = e.value("kind", "");
    const std::string stage = e.value("stage", "");
    if (kind == "KEY_ROTATE" && e.value("detail", "").find("emergency") != std::string::npos &&
        stage != "REQUESTED") {
      ++rotations;
      EXPECT_EQ(e.value("uid", 0u), geteuid()) << e.dump();
    }
    if (kind == "KEY_RETIRE" && stage != "REQUESTED" && e.value("result_code", 0) == 0) {
      ++retirements;
      EXPECT_EQ(e.value("uid", 0u), geteuid()) << e.dump();
    }
  }
  EXPECT_EQ(rotations, 4) << trail.out;
  EXPECT_EQ(retirements, 3) << trail.out;
}

TEST_F(EmergencyRotationTest, WaitWithoutEmergencyIsRefused) {
  KeyctlResult refused = Run("key rotate " + std::string(kDataset) + " --wait");
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("--wait goes with --emergency"), std::string::npos) << refused.err;
  KeyctlResult both = Run("key rotate " + std::string(kDataset) + " --emergency --purpose lookup");
  EXPECT_NE(both.exit_code, 0);
  EXPECT_NE(both.err.find("give no --purpose"), std::string::npos) << both.err;
}

// A cofferd whose jobs re-encrypt data more than one version behind (the daemon's setting), at
// 5000 items/s; the test's uid is its admin and may read, write and delete every dataset.
std::unique_ptr<Cofferd> ScheduledReencryptionDaemon(const std::string& name) {
  CofferdOptions options;
  options.name = name;
  const std::string me = std::to_string(geteuid());
  options.config_body = [me](const std::string&, const std::string&) {
    return "grants { principals { uid: " + me +
           " } datasets: \"*\" rights: READ rights: WRITE rights: DELETE }\n"
           "admins { uid: " +
           me +
           " }\n"
           "jobs { reencrypt_versions_back: 1 reencrypt_items_per_second: 5000 }\n"
           "mfa { required: false }\n";
  };
  return Cofferd::Create(std::move(options));
}

TEST(ScheduledReencryptionTest, DataLaggingBehindThePolicyIsReencryptedInTheBackground) {
  auto daemon = ScheduledReencryptionDaemon("cofferd-sched-reencrypt");
  ASSERT_NE(daemon, nullptr);
  auto run = [&](const std::string& args) { return Keyctl(daemon->admin_socket(), args); };
  ASSERT_EQ(run("dataset create " + std::string(kDataset)).exit_code, 0);
  auto c = client::Client::Connect(daemon->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i = 0; i < kRecords; ++i) ASSERT_TRUE((*c)->PutRecord(kDataset, Id(i), Value(i)).ok());
  // The re-encryption jobs the daemon holds (on demand ones: the periodic jobs aside).
  auto reencryptions = [&] {
    KeyctlResult listed = run("--json reencrypt status");
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    std::vector<json> found;
    for (const json& job : listed.JsonOrEmpty().value("jobs", json::array())) {
      if (job.value("kind", "") == "JOB_REENCRYPT") found.push_back(job);
    }
    return found;
  };
  const std::string rotate = "key rotate " + std::string(kDataset) + " --purpose records";

  // One version behind: within the policy, nothing starts.
  ASSERT_EQ(run(rotate).exit_code, 0);
  KeyctlResult tick = run("job run reencrypt");
  ASSERT_EQ(tick.exit_code, 0) << tick.err << tick.out;
  EXPECT_TRUE(reencryptions().empty());

  // Two behind: the daemon re-encrypts, rate-limited, once for these primaries.
  ASSERT_EQ(run(rotate).exit_code, 0);
  tick = run("job run reencrypt");
  ASSERT_EQ(tick.exit_code, 0) << tick.err << tick.out;
  std::vector<json> started = reencryptions();
  ASSERT_EQ(started.size(), 1u);
  const uint64_t id = started.front().value("id", uint64_t{0});
  KeyctlResult waited = run("--json reencrypt wait " + std::to_string(id));
  ASSERT_EQ(waited.exit_code, 0) << waited.err << waited.out;
  // The census after the run: every record under the primary (v3), none under v1 or v2.
  uint64_t under_primary = 0;
  for (const json& count : waited.JsonOrEmpty().value("version_counts", json::array())) {
    if (count.value("purpose", "") != "PURPOSE_RECORDS") continue;
    if (count.value("version", 0) == 3) {
      under_primary = count.value("items", uint64_t{0});
    } else {
      EXPECT_EQ(count.value("items", uint64_t{0}), 0u) << waited.out;
    }
  }
  EXPECT_EQ(under_primary, static_cast<uint64_t>(kRecords)) << waited.out;
  ASSERT_EQ(run("job run reencrypt").exit_code, 0);
  EXPECT_EQ(reencryptions().size(), 1u);  // not again for the same primaries
  for (int i = 0; i < kRecords; ++i) {
    EXPECT_EQ((*c)->GetRecord(kDataset, Id(i)).value_or("<missing>"), Value(i)) << Id(i);
  }
  if (HasFailure()) std::cerr << "cofferd's log:\n" << daemon->Logs();
}

TEST(ScheduledReencryptionTest, ADatasetsOwnPolicyOverridesTheDaemonsSetting) {
  auto daemon = ScheduledReencryptionDaemon("cofferd-sched-reencrypt-policy");
  ASSERT_NE(daemon, nullptr);
  auto run = [&](const std::string& args) { return Keyctl(daemon->admin_socket(), args); };
  // never: its own 0; daemon: no value of its own (the daemon's 1); three: its own 3.
  ASSERT_EQ(run("dataset create crm/never --reencrypt-versions-back 0").exit_code, 0);
  ASSERT_EQ(run("dataset create crm/daemon").exit_code, 0);
  ASSERT_EQ(run("dataset create crm/three --reencrypt-versions-back 3").exit_code, 0);
  auto c = client::Client::Connect(daemon->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* dataset : {"crm/never", "crm/daemon", "crm/three"}) {
    for (int i = 0; i < 5; ++i) ASSERT_TRUE((*c)->PutRecord(dataset, Id(i), Value(i)).ok());
  }
  // The datasets the daemon has started a re-encryption of.
  auto reencrypted = [&] {
    KeyctlResult listed = run("--json reencrypt status");
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    std::vector<std::string> found;
    for (const json& job : listed.JsonOrEmpty().value("jobs", json::array())) {
      if (job.value("kind", "") == "JOB_REENCRYPT") found.push_back(job.value("dataset", ""));
    }
    std::sort(found.begin(), found.end());
    return found;
  };
  auto rotate = [&](const std::string& dataset, int times) {
    for (int i = 0; i < times; ++i) {
      ASSERT_EQ(run("key rotate " + dataset + " --purpose records").exit_code, 0);
    }
  };
  auto tick = [&] {
    KeyctlResult ran = run("job run reencrypt");
    ASSERT_EQ(ran.exit_code, 0) << ran.err << ran.out;
  };
  // The description shows a dataset's own value, and none for one that follows the daemon.
  KeyctlResult three = run("--json dataset describe crm/three");
  ASSERT_EQ(three.exit_code, 0) << three.err;
  EXPECT_EQ(three.JsonOrEmpty()["policy"].value("reencrypt_versions_back", -2), 3) << three.out;
  KeyctlResult plain = run("--json dataset describe crm/daemon");
  EXPECT_FALSE(plain.JsonOrEmpty()["policy"].contains("reencrypt_versions_back")) << plain.out;
  KeyctlResult human = run("dataset describe crm/three");
  EXPECT_NE(human.out.find("over 3 versions behind"), std::string::npos) << human.out;

  // Two versions behind everywhere: only the dataset on the daemon's setting (1) is moved.
  for (const char* dataset : {"crm/never", "crm/daemon", "crm/three"}) rotate(dataset, 2);
  tick();
  EXPECT_EQ(reencrypted(), std::vector<std::string>{"crm/daemon"});
  // Four behind: crm/three's 3 is exceeded; crm/never's 0 still means never.
  rotate("crm/never", 2);
  rotate("crm/three", 2);
  tick();
  EXPECT_EQ(reencrypted(), (std::vector<std::string>{"crm/daemon", "crm/three"}));

  // A dataset's own value survives a restart (the key DB is policy format 2), and -1 ("daemon")
  // clears it: crm/never then follows the daemon's 1 and is moved.
  ASSERT_TRUE(daemon->Stop());
  ASSERT_TRUE(daemon->Start());
  KeyctlResult after = run("--json dataset describe crm/never");
  EXPECT_EQ(after.JsonOrEmpty()["policy"].value("reencrypt_versions_back", -2), 0) << after.out;
  KeyctlResult cleared = run("policy set crm/never --reencrypt-versions-back daemon");
  ASSERT_EQ(cleared.exit_code, 0) << cleared.err << cleared.out;
  EXPECT_NE(cleared.out.find("daemon's setting"), std::string::npos) << cleared.out;
  tick();
  std::vector<std::string> now = reencrypted();
  EXPECT_NE(std::find(now.begin(), now.end(), "crm/never"), now.end()) << cleared.out;
  KeyctlResult bad = run("policy set crm/never --reencrypt-versions-back -3");
  EXPECT_NE(bad.exit_code, 0);
  if (HasFailure()) std::cerr << "cofferd's log:\n" << daemon->Logs();
}

}  // namespace
}  // namespace coffer
