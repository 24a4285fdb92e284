// Tests of keyctl run as a process against a running cofferd: test-cofferd on a temporary
// directory with a fresh SoftHSM2 token (tests/kms/cofferd/cofferd_harness.h, in development
// mode; run as root, the daemon runs as `nobody`), keyctl's output checked in both modes (JSON
// parsed with nlohmann) and its exit codes (docs/keyctl.md). Also the text conventions of
// kms/keyctl/output.h.

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"
#include "kms/client/client.h"
#include "kms/formats/receipt_file.h"
#include "kms/keyctl/admin_client.h"
#include "kms/keyctl/output.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"

namespace coffer::keyctl {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunShell;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

// A development-mode cofferd (test-cofferd: the test advances its clock).
std::unique_ptr<Cofferd> StartCofferd() { return Cofferd::Create(CofferdOptions()); }

size_t Lines(const std::string& text) {
  size_t n = 0;
  for (char c : text) n += c == '\n';
  return n;
}

// The primary version of `purpose` in a `key versions --json` document; 0 if none.
uint32_t PrimaryOf(const json& versions, const std::string& purpose) {
  for (const json& v : versions.at("versions")) {
    if (v.at("purpose") == purpose && v.at("state") == "KEY_PRIMARY") return v.at("version");
  }
  return 0;
}

class KeyctlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = StartCofferd().release(); }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(daemon_, nullptr) << "cofferd did not start"; }
  Result Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  // Creates `name` and fails the test unless keyctl succeeded.
  void Create(const std::string& name, const std::string& flags = "") {
    Result r = Run("dataset create " + name + " " + flags);
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }

  static Cofferd* daemon_;
};
Cofferd* KeyctlTest::daemon_ = nullptr;

TEST_F(KeyctlTest, DatasetCreateListDescribeInBothModes) {
  Result created = Run("dataset create crm/one --bin-days 7 --retention 30d");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(created.out.find("created dataset crm/one"), std::string::npos) << created.out;

  Result list = Run("dataset list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("NAME"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("crm/one"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("ACTIVE"), std::string::npos) << list.out;

  Result list_json = Run("dataset list --json");
  ASSERT_EQ(list_json.exit_code, 0) << list_json.err;
  bool found = false;
  const json datasets = list_json.Json();
  for (const json& d : datasets.at("datasets")) {
    if (d.at("name") != "crm/one") continue;
    found = true;
    EXPECT_EQ(d.at("state"), "DATASET_ACTIVE");
    EXPECT_EQ(d.at("legal_hold"), false);
  }
  EXPECT_TRUE(found) << list_json.out;

  Result describe = Run("--json dataset describe crm/one");
  ASSERT_EQ(describe.exit_code, 0) << describe.err;
  json info = describe.Json();
  EXPECT_EQ(info.at("name"), "crm/one");
  EXPECT_EQ(info.at("policy").at("bin_days"), 7);
  EXPECT_EQ(info.at("policy").at("retention_max_age_seconds"), 30 * 86400);
  EXPECT_EQ(info.at("records"), 0);
  EXPECT_GT(info.at("created_micros").get<int64_t>(), 0);
  EXPECT_GT(PrimaryOf(info, "PURPOSE_RECORDS"), 0u);

  Result human = Run("dataset describe crm/one");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("bin days"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("30d"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("PRIMARY"), std::string::npos) << human.out;
}

TEST_F(KeyctlTest, KeyRotateMakesANewPrimary) {
  Create("crm/rotate");
  Result before = Run("key versions crm/rotate --json");
  ASSERT_EQ(before.exit_code, 0) << before.err;
  const uint32_t old_primary = PrimaryOf(before.Json(), "PURPOSE_RECORDS");
  ASSERT_GT(old_primary, 0u);

  Result rotated = Run("key rotate crm/rotate --purpose records --json");
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  const json primaries = rotated.Json().at("new_primaries");
  ASSERT_EQ(primaries.size(), 1u) << rotated.out;
  EXPECT_EQ(primaries[0].at("purpose"), "PURPOSE_RECORDS");
  EXPECT_EQ(primaries[0].at("version"), old_primary + 1);

  Result after = Run("key versions crm/rotate --json");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(PrimaryOf(after.Json(), "PURPOSE_RECORDS"), old_primary + 1);
  bool old_decrypt_only = false;
  const json versions = after.Json();
  for (const json& v : versions.at("versions")) {
    if (v.at("purpose") == "PURPOSE_RECORDS" && v.at("version") == old_primary) {
      old_decrypt_only = v.at("state") == "KEY_DECRYPT_ONLY";
    }
  }
  EXPECT_TRUE(old_decrypt_only) << after.out;

  Result human = Run("key versions crm/rotate");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("DECRYPT_ONLY"), std::string::npos) << human.out;
}

TEST_F(KeyctlTest, PolicySetChangesOnlyTheGivenPolicies) {
  Create("crm/policy", "--bin-days 9");
  Result set = Run("policy set crm/policy --destruction-wait 12h --json");
  ASSERT_EQ(set.exit_code, 0) << set.err;
  json policy = set.Json().at("policy");
  EXPECT_EQ(policy.at("destruction_wait_seconds"), 12 * 3600);
  EXPECT_EQ(policy.at("bin_days"), 9);
}

TEST_F(KeyctlTest, InvalidDurationIsAUsageErrorOnOneLine) {
  Result r = Run("policy set crm/one --retention 30x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("invalid duration '30x'"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
}

TEST_F(KeyctlTest, UnknownSubcommandIsAUsageError) {
  Result r = Run("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find("frobnicate"), std::string::npos) << r.err;
  Result nested = Run("dataset frobnicate crm/one");
  EXPECT_EQ(nested.exit_code, 2);
  EXPECT_NE(nested.err.find("unknown command 'frobnicate'"), std::string::npos) << nested.err;
  Result sub = Run("dataset list --no-such-flag");
  EXPECT_EQ(sub.exit_code, 2) << sub.err;
}

TEST_F(KeyctlTest, DaemonNotRunningNamesTheSocket) {
  const std::string wrong = daemon_->dir() + "/no-such.sock";
  Result r = Keyctl(wrong, "status");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  EXPECT_NE(r.err.find(wrong), std::string::npos) << r.err;
}

TEST_F(KeyctlTest, DescribeOfAnUnknownDatasetIsNotFound) {
  Result r = Run("dataset describe crm/never-created");
  EXPECT_EQ(r.exit_code, 4) << r.err;
  EXPECT_EQ(Lines(r.err), 1u) << r.err;
  Result j = Run("dataset describe crm/never-created --json");
  EXPECT_EQ(j.exit_code, 4);
  EXPECT_EQ(j.Json().at("error").at("code_name"), "DATASET_NOT_FOUND") << j.out;
}

TEST_F(KeyctlTest, HoldSetThenClear) {
  Create("crm/hold");
  Result set = Run("hold set crm/hold --json");
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_EQ(set.Json().at("legal_hold"), true);
  Result described = Run("dataset describe crm/hold --json");
  EXPECT_EQ(described.Json().at("legal_hold"), true);
  Result clear = Run("hold clear crm/hold");
  ASSERT_EQ(clear.exit_code, 0) << clear.err;
  EXPECT_NE(clear.out.find("legal hold cleared"), std::string::npos) << clear.out;
  described = Run("dataset describe crm/hold --json");
  EXPECT_EQ(described.Json().at("legal_hold"), false);
}

TEST_F(KeyctlTest, BackupCreateThenList) {
  Result created = Run("backup create --json");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const uint32_t id = created.Json().at("id");
  Result list = Run("backup list --json");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  bool found = false;
  const json backups = list.Json();
  for (const json& b : backups.at("backups")) found = found || b.at("id") == id;
  EXPECT_TRUE(found) << list.out;
  Result human = Run("backup list");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("AUDIT SEQ"), std::string::npos) << human.out;
  // Not a terminal: progress is plain lines on stderr — a line per phase at least, each phase
  // in order, no carriage returns — and --json output on stdout is untouched by it.
  for (const char* phase : {"data ", "keys ", "audit "}) {
    EXPECT_NE(created.err.find(std::string("backup create: ") + phase), std::string::npos)
        << created.err;
  }
  EXPECT_LT(created.err.find("backup create: data "), created.err.find("backup create: audit "));
  EXPECT_EQ(created.err.find('\r'), std::string::npos) << created.err;
  Result verify = Run("backup verify " + std::to_string(id));
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_NE(verify.err.find("backup verify " + std::to_string(id) + ": keys "), std::string::npos)
      << verify.err;
  Result missing = Run("backup verify 999999");
  EXPECT_EQ(missing.exit_code, 4) << missing.err;
}

TEST_F(KeyctlTest, AuditSearchByDatasetShowsItsCreation) {
  Create("crm/audited");
  Result r = Run("audit search --dataset crm/audited --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  bool created = false;
  const json entries = r.Json();
  for (const json& e : entries.at("entries")) {
    EXPECT_EQ(e.at("dataset"), "crm/audited");
    created = created || e.at("kind") == "DATASET_CREATE";
  }
  EXPECT_TRUE(created) << r.out;
  Result human = Run("audit search --dataset crm/audited --since 1h");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("DATASET_CREATE"), std::string::npos) << human.out;
  Result verify = Run("audit verify --json");
  ASSERT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_GT(verify.Json().at("entries").get<uint64_t>(), 0u);
}

// Issue 20 item 9: breach scope and SIEM export. The test's uid reads three records (one twice)
// and one attachment; a failed read does not count; who-read gives it exactly that, and the
// export is one JSON entry per line, oldest first, ending where the log does.
TEST_F(KeyctlTest, AuditWhoReadSummarisesReadsAndExportStreamsJsonLines) {
  Create("crm/scoped");
  {
    auto client = coffer::client::Client::Connect(daemon_->dir() + "/data.sock");
    ASSERT_TRUE(client.ok()) << client.status();
    for (const char* id : {"s1", "s2", "s3"}) {
      ASSERT_TRUE((*client)->PutRecord("crm/scoped", id, "value").ok());
      ASSERT_TRUE((*client)->GetRecord("crm/scoped", id).ok());
    }
    ASSERT_TRUE((*client)->GetRecord("crm/scoped", "s1").ok());
    EXPECT_FALSE((*client)->GetRecord("crm/scoped", "missing").ok());
    auto writer = (*client)->BeginAttachment("crm/scoped", "scan.pdf", "application/pdf");
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(std::string(1000, 's')).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
    auto reader = (*client)->OpenAttachment("crm/scoped", "scan.pdf");
    ASSERT_TRUE(reader.ok()) << reader.status();
    ASSERT_TRUE((*reader)->ReadAll().ok());
  }
  Result who = Run("--json audit who-read crm/scoped --since 1h");
  ASSERT_EQ(who.exit_code, 0) << who.err;
  const json readers = who.Json().at("readers");
  ASSERT_EQ(readers.size(), 1u) << who.out;
  EXPECT_EQ(readers[0].at("uid").get<uint32_t>(), geteuid());
  EXPECT_EQ(readers[0].at("records").get<uint64_t>(), 4u) << who.out;
  EXPECT_EQ(readers[0].at("attachments").get<uint64_t>(), 1u) << who.out;
  EXPECT_EQ(readers[0].at("unclassified").get<uint64_t>(), 0u) << who.out;
  EXPECT_LE(readers[0].at("first_micros").get<int64_t>(),
            readers[0].at("last_micros").get<int64_t>());
  Result human = Run("audit who-read crm/scoped");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("ATTACHMENTS"), std::string::npos) << human.out;

  Result exported = Run("audit export --dataset crm/scoped");
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  std::istringstream lines(exported.out);
  uint64_t previous = 0;
  size_t count = 0;
  size_t reads = 0;
  for (std::string line; std::getline(lines, line);) {
    const json entry = json::parse(line);
    EXPECT_GT(entry.at("sequence").get<uint64_t>(), previous);
    previous = entry.at("sequence").get<uint64_t>();
    EXPECT_EQ(entry.at("dataset"), "crm/scoped");
    if (entry.at("kind") == "ACCESS_READ") ++reads;
    ++count;
  }
  EXPECT_EQ(reads, 6u);  // 4 record reads, 1 failed read, 1 download
  // The same entries as a search made after it (which also finds the export's own
  // ADMIN_REQUEST entries: its queries named the dataset).
  Result searched = Run("--json audit search --dataset crm/scoped --limit 100000");
  ASSERT_EQ(searched.exit_code, 0) << searched.err;
  const json later = searched.Json().at("entries");
  ASSERT_GT(later.size(), count);
  EXPECT_EQ(later[count - 1].at("sequence").get<uint64_t>(), previous);
  EXPECT_EQ(later[count].at("kind"), "ADMIN_REQUEST");
}

// Issue 20 item 3: the scheduled backup job makes a full backup and verifies it at once; a run
// 31 days later (on the daemon's clock) prunes the first, past the 30-day default, and keeps the
// newest.
TEST_F(KeyctlTest, TheScheduledBackupIsVerifiedAndPrunedPastItsAge) {
  Create("crm/backed-up");
  auto ids = [&] {
    std::vector<uint64_t> found;
    Result listed = Run("--json backup list");
    EXPECT_EQ(listed.exit_code, 0) << listed.err;
    for (const json& b : listed.JsonOrEmpty().value("backups", json::array())) {
      found.push_back(b.at("id").get<uint64_t>());
    }
    return found;
  };
  const size_t before = ids().size();
  Result first = daemon_->RunJobAfter(std::chrono::seconds(1), "backup");
  ASSERT_EQ(first.exit_code, 0) << first.out << first.err;
  const std::vector<uint64_t> after_first = ids();
  ASSERT_EQ(after_first.size(), before + 1);
  EXPECT_NE(daemon_->Logs().find("made and verified"), std::string::npos);

  Result second = daemon_->RunJobAfter(std::chrono::hours(24 * 31), "backup");
  ASSERT_EQ(second.exit_code, 0) << second.out << second.err;
  const std::vector<uint64_t> after_second = ids();
  ASSERT_EQ(after_second.size(), 1u);
  EXPECT_GT(after_second[0], after_first.back());
}

TEST_F(KeyctlTest, ReencryptStartAndWaitReportsTheEnd) {
  Create("crm/reencrypt");
  Result started = Run("reencrypt start crm/reencrypt --json");
  ASSERT_EQ(started.exit_code, 0) << started.err;
  const uint64_t id = started.Json().at("id");
  Result waited = Run("reencrypt wait " + std::to_string(id) + " --json");
  ASSERT_EQ(waited.exit_code, 0) << waited.err;
  EXPECT_EQ(waited.Json().at("state"), "JOB_DONE");
  // Not a terminal: progress is plain lines on stderr, no carriage returns.
  EXPECT_NE(waited.err.find("job " + std::to_string(id)), std::string::npos) << waited.err;
  EXPECT_EQ(waited.err.find('\r'), std::string::npos) << waited.err;
}

TEST_F(KeyctlTest, RewrapAndEmergencyRotation) {
  Create("crm/rewrap");
  Result rewrapped = Run("key rewrap crm/rewrap --json");
  ASSERT_EQ(rewrapped.exit_code, 0) << rewrapped.err;
  const json info = rewrapped.Json().at("dataset");
  ASSERT_FALSE(info.at("versions").empty()) << rewrapped.out;
  for (const json& v : info.at("versions")) {
    EXPECT_EQ(v.at("wrapping_version"), 2) << rewrapped.out;  // a new DWK version
  }
  // Progress counts DEK versions; the last line says all of them (4 purposes, one version each).
  EXPECT_NE(rewrapped.err.find("key rewrap crm/rewrap: rewrap 4/4 (100%) versions"),
            std::string::npos)
      << rewrapped.err;
  Result human = Run("key rewrap crm/rewrap");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("re-wrapped every key of crm/rewrap"), std::string::npos) << human.out;

  Result emergency = Run("key rotate crm/rewrap --emergency --wait --json");
  ASSERT_EQ(emergency.exit_code, 0) << emergency.err;
  // One document: the new primaries and the follow-up job as it ended.
  const json rotated = emergency.Json();
  EXPECT_EQ(rotated.at("new_primaries").size(), 4u) << emergency.out;
  EXPECT_EQ(rotated.at("follow_up").value("state", ""), "JOB_DONE") << emergency.out;
  EXPECT_EQ(rotated.at("follow_up").value("kind", ""), "JOB_EMERGENCY_ROTATION") << emergency.out;
  Result after = Run("key versions crm/rewrap --json");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  const json versions = after.Json();
  std::map<std::string, int> retired;
  for (const json& v : versions.at("versions")) {
    if (v.at("state") == "KEY_RETIRED") ++retired[v.at("purpose").get<std::string>()];
  }
  // Every purpose rotated; the dataset holds nothing, so the compromised records, attachments and
  // lookup versions are retired at once; the pseudonym version stays (docs/keyctl.md).
  for (const char* purpose :
       {"PURPOSE_RECORDS", "PURPOSE_ATTACHMENTS", "PURPOSE_LOOKUP", "PURPOSE_PSEUDONYM"}) {
    EXPECT_EQ(PrimaryOf(versions, purpose), 2u) << purpose;
  }
  EXPECT_EQ(retired["PURPOSE_RECORDS"], 1) << after.out;
  EXPECT_EQ(retired["PURPOSE_ATTACHMENTS"], 1) << after.out;
  EXPECT_EQ(retired["PURPOSE_LOOKUP"], 1) << after.out;
  EXPECT_EQ(retired["PURPOSE_PSEUDONYM"], 0) << after.out;
}

TEST_F(KeyctlTest, BackupRestorePruneAndJobStatus) {
  Result created = Run("backup create");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  EXPECT_NE(created.out.find("created backup"), std::string::npos) << created.out;
  Result list = Run("backup list --json");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const uint32_t id = list.Json().at("backups").back().at("id");
  // The daemon writes the restore, so the target is inside its own directory.
  const std::string target = daemon_->dir() + "/restored-" + std::to_string(id);
  Result restored = Run("backup restore " + std::to_string(id) + " " + target + " --json");
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  EXPECT_EQ(restored.Json().at("restored"), true);
  EXPECT_TRUE(fs::exists(target));
  const std::string label = "backup restore " + std::to_string(id) + ": ";
  for (const char* phase : {"verify ", "data ", "keys ", "audit ", "replay ", "rotate "}) {
    EXPECT_NE(restored.err.find(label + phase), std::string::npos) << restored.err;
  }
  Result again = Run("backup restore " + std::to_string(id) + " " + target);
  EXPECT_EQ(again.exit_code, 1) << again.err;
  EXPECT_EQ(Lines(again.err), 1u) << again.err;

  Result pruned = Run("backup prune --json");
  ASSERT_EQ(pruned.exit_code, 0) << pruned.err;
  EXPECT_TRUE(pruned.Json().at("deleted").is_array()) << pruned.out;

  Result jobs = Run("reencrypt status --json");
  ASSERT_EQ(jobs.exit_code, 0) << jobs.err;
  EXPECT_FALSE(jobs.Json().at("jobs").empty()) << jobs.out;  // the daemon's periodic jobs
  Result human = Run("reencrypt status");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("rotation"), std::string::npos) << human.out;
  Result unknown = Run("reencrypt status 999999");
  EXPECT_EQ(unknown.exit_code, 4) << unknown.err;
}

// On a terminal (script(1) gives keyctl a pseudo-terminal) progress is a bar redrawn in place.
TEST_F(KeyctlTest, ProgressIsABarOnATerminal) {
  if (RunShell("command -v script >/dev/null") != 0) GTEST_SKIP() << "script(1) is not installed";
  Create("crm/terminal");
  const std::string out = daemon_->dir() + "/terminal.out";
  const std::string command = std::string(KEYCTL_BINARY) + " --socket " + daemon_->admin_socket() +
                              " reencrypt start crm/terminal --wait";
  int status = RunShell("env -u COFFER_ADMIN_SOCKET script -qec '" + command + "' /dev/null >" +
                        out + " 2>&1 </dev/null");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string text = ReadWholeFile(out);
  EXPECT_NE(text.find("\r\033[K[##############################] job "), std::string::npos) << text;
  EXPECT_NE(text.find("DONE"), std::string::npos) << text;
}

// The same for an operation that reports progress frames rather than a job: a backup.
TEST_F(KeyctlTest, BackupProgressIsABarOnATerminal) {
  if (RunShell("command -v script >/dev/null") != 0) GTEST_SKIP() << "script(1) is not installed";
  const std::string out = daemon_->dir() + "/terminal-backup.out";
  const std::string command =
      std::string(KEYCTL_BINARY) + " --socket " + daemon_->admin_socket() + " backup create";
  int status = RunShell("env -u COFFER_ADMIN_SOCKET script -qec '" + command + "' /dev/null >" +
                        out + " 2>&1 </dev/null");
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string text = ReadWholeFile(out);
  EXPECT_NE(text.find("\r\033[K[##############################] backup create: audit "),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("created backup"), std::string::npos) << text;
}

TEST_F(KeyctlTest, Status) {
  Result r = Run("status --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json s = r.Json();
  EXPECT_FALSE(s.at("version").get<std::string>().empty());
  EXPECT_NE(s.at("admin_socket").get<std::string>().find("admin.sock"), std::string::npos);
  EXPECT_GT(s.at("audit_entries").get<uint64_t>(), 0u);
  Result human = Run("status");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("admin socket"), std::string::npos) << human.out;
}

TEST_F(KeyctlTest, LifecycleDisableDestroyCancelEnable) {
  Create("crm/lifecycle");
  Result refused = Run("dataset destroy crm/lifecycle");  // only a disabled dataset
  EXPECT_EQ(refused.exit_code, 1) << refused.err;
  EXPECT_EQ(Lines(refused.err), 1u) << refused.err;
  Result disabled = Run("dataset disable crm/lifecycle --json");
  ASSERT_EQ(disabled.exit_code, 0) << disabled.err;
  EXPECT_EQ(disabled.Json().at("state"), "DATASET_DISABLED");
  Result scheduled = Run("dataset destroy crm/lifecycle --json");
  ASSERT_EQ(scheduled.exit_code, 0) << scheduled.err;
  const json pending = scheduled.Json();
  EXPECT_EQ(pending.at("state"), "DATASET_PENDING_DESTRUCTION");
  EXPECT_GT(pending.at("destruction_due_micros").get<int64_t>(), NowMicros());
  Result cancelled = Run("dataset cancel-destroy crm/lifecycle");
  ASSERT_EQ(cancelled.exit_code, 0) << cancelled.err;
  EXPECT_NE(cancelled.out.find("DISABLED"), std::string::npos) << cancelled.out;
  Result enabled = Run("dataset enable crm/lifecycle --json");
  ASSERT_EQ(enabled.exit_code, 0) << enabled.err;
  EXPECT_EQ(enabled.Json().at("state"), "DATASET_ACTIVE");
}

TEST_F(KeyctlTest, KeyRetireAfterRotation) {
  Create("crm/retire");
  ASSERT_EQ(Run("key rotate crm/retire --purpose records").exit_code, 0);
  Result retired = Run("key retire crm/retire --purpose records --below 2 --json");
  ASSERT_EQ(retired.exit_code, 0) << retired.err;
  EXPECT_EQ(retired.Json().at("retired"), json::array({1})) << retired.out;
  Result again = Run("key retire crm/retire --purpose records --below 2");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.out.find("no records version below 2"), std::string::npos) << again.out;
  Result missing = Run("key retire crm/retire --below 2");  // --purpose is required
  EXPECT_EQ(missing.exit_code, 2) << missing.err;
}

TEST_F(KeyctlTest, PseudonymRetireNeedsTheTranslateConfirmation) {
  Create("crm/pseudo-retire");
  ASSERT_EQ(Run("key rotate crm/pseudo-retire --purpose pseudonym").exit_code, 0);
  Result unconfirmed = Run("key retire crm/pseudo-retire --purpose pseudonym --below 2");
  EXPECT_EQ(unconfirmed.exit_code, 1) << unconfirmed.err;
  EXPECT_NE(unconfirmed.err.find("--translate-done"), std::string::npos) << unconfirmed.err;
  Result misused = Run("key retire crm/pseudo-retire --purpose records --below 1 --translate-done");
  EXPECT_NE(misused.exit_code, 0) << misused.out;
  Result retired =
      Run("key retire crm/pseudo-retire --purpose pseudonym --below 2 --translate-done --json");
  ASSERT_EQ(retired.exit_code, 0) << retired.err;
  EXPECT_EQ(retired.Json().at("retired"), json::array({1})) << retired.out;
}

TEST_F(KeyctlTest, BinPurge) {
  Create("crm/bin");
  Result empty = Run("bin purge crm/bin --json");
  ASSERT_EQ(empty.exit_code, 0) << empty.err;
  EXPECT_EQ(empty.Json().at("records"), 0);
  Result absent = Run("bin purge crm/bin --record customer-1");
  EXPECT_EQ(absent.exit_code, 4) << absent.err;
  Result both = Run("bin purge crm/bin --record a --attachment b");
  EXPECT_EQ(both.exit_code, 2) << both.err;
}

TEST_F(KeyctlTest, ScrubWaitAndAuditShow) {
  Result scrub = Run("scrub --wait");
  ASSERT_EQ(scrub.exit_code, 0) << scrub.err;
  EXPECT_NE(scrub.out.find("items that failed authentication: 0"), std::string::npos) << scrub.out;
  Result show = Run("audit show --limit 3 --json");
  ASSERT_EQ(show.exit_code, 0) << show.err;
  const json entries = show.Json();
  ASSERT_EQ(entries.at("entries").size(), 3u) << show.out;
  // Oldest first, consecutive, and the newest: nothing follows the last one shown but what
  // keyctl's own requests may have added since.
  EXPECT_LT(entries.at("entries")[0].at("sequence").get<uint64_t>(),
            entries.at("entries")[2].at("sequence").get<uint64_t>());
  Result status = Run("status --json");
  EXPECT_LE(status.Json().at("audit_entries").get<uint64_t>(),
            entries.at("entries")[2].at("sequence").get<uint64_t>() + 3);
}

// Run as root: another uid without access to the socket, and an admin-socket user that is not an
// admin of the daemon, are both refused with exit code 3.
TEST_F(KeyctlTest, RefusedCallersExitThree) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run keyctl as another uid";
  const std::string as_other = "setpriv --reuid 41002 --regid 41002 --clear-groups ";
  const std::string command = std::string(KEYCTL_BINARY) + " --socket " + daemon_->admin_socket() +
                              " status >/dev/null 2>" + daemon_->dir() + "/refused.err";
  int status = RunShell(as_other + command);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_NE(ReadWholeFile(daemon_->dir() + "/refused.err").find("permission denied"),
            std::string::npos);
  struct stat st {};
  ASSERT_EQ(stat(daemon_->admin_socket().c_str(), &st), 0);
  status = RunShell("setpriv --reuid 41002 --regid 41002 --groups " + std::to_string(st.st_gid) +
                    " " + command);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 3);
  EXPECT_NE(ReadWholeFile(daemon_->dir() + "/refused.err").find("not an admin"), std::string::npos);
}

// ---- AdminClient against an in-test server --------------------------------------------------

// A Unix listener that answers each request with `answer(request)` and closes every connection
// after `per_connection` responses.
class FakeAdminServer {
 public:
  FakeAdminServer(std::string path, int per_connection,
                  std::function<coffer::v1::Response(const coffer::v1::Request&)> answer)
      : path_(std::move(path)) {
    listener_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
    ok_ = listener_ >= 0 &&
          bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          listen(listener_, 4) == 0;
    if (!ok_) return;
    thread_ = std::thread([this, per_connection, answer = std::move(answer)] {
      while (true) {
        int fd = accept(listener_, nullptr, nullptr);
        if (fd < 0) return;  // the listener was shut down
        ++connections_;
        api::FrameReader reader(fd, api::kDefaultMaxFrameBytes);
        for (int i = 0; i < per_connection; ++i) {
          coffer::v1::Request request;
          bool end = false;
          auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
          if (!reader.Read(&request, deadline, &end).ok() || end) break;
          if (!api::WriteFrame(fd, answer(request), deadline).ok()) break;
        }
        close(fd);
        ++closed_;
      }
    });
  }
  FakeAdminServer(const FakeAdminServer&) = delete;
  FakeAdminServer& operator=(const FakeAdminServer&) = delete;
  ~FakeAdminServer() {
    if (listener_ >= 0) shutdown(listener_, SHUT_RDWR);
    if (thread_.joinable()) thread_.join();
    if (listener_ >= 0) close(listener_);
    unlink(path_.c_str());
  }
  bool ok() const { return ok_; }
  int connections() const { return connections_.load(); }
  // Waits until the server closed `n` connections (a safety net of 30 s, never a measure).
  bool WaitClosed(int n) const {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (closed_.load() < n) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
  }

 private:
  std::string path_;
  int listener_ = -1;
  bool ok_ = false;
  std::atomic<int> connections_{0};
  std::atomic<int> closed_{0};
  std::thread thread_;
};

coffer::v1::Response StatusAnswer(const coffer::v1::Request& request) {
  coffer::v1::Response response;
  response.set_request_id(request.request_id());
  response.mutable_status()->set_version("fake");
  return response;
}

std::string FakeSocketPath(const std::string& name) {
  return "/tmp/keyctl-fake-" + std::to_string(getpid()) + "-" + name + ".sock";
}

TEST_F(KeyctlTest, TotpMustBeSixDigits) {
  for (const char* bad : {"12ab", "12345", "1234567"}) {
    Result r = Run(std::string("--totp ") + bad + " dataset list");
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.err;
    EXPECT_EQ(Lines(r.err), 1u) << r.err;
    EXPECT_NE(r.err.find("6 digits"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find(bad), std::string::npos) << "the code is never printed: " << r.err;
  }
}

TEST_F(KeyctlTest, PolicySetAutoDestroyAfterDisabled) {
  Create("crm/autodestroy");
  Result set = Run("policy set crm/autodestroy --auto-destroy-after-disabled 30d");
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_NE(set.out.find("auto-destroy after disabled"), std::string::npos) << set.out;
  Result describe = Run("dataset describe crm/autodestroy --json");
  ASSERT_EQ(describe.exit_code, 0) << describe.err;
  EXPECT_EQ(describe.Json().at("policy").at("auto_destroy_after_disabled_seconds"), 30 * 86400)
      << describe.out;
  Result bad = Run("policy set crm/autodestroy --auto-destroy-after-disabled soon");
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
}

// Lifecycle automation on the daemon's own clock (policy periods of seconds): a dataset left
// DISABLED is scheduled for destruction, then destroyed after the waiting period, each step
// audited; a legal hold keeps another one where it is. The suite has a daemon of its own, since
// it moves the clock on; the test runs the rotation clock itself (`keyctl job run rotation`)
// rather than wait for its tick, which the default minute keeps out of the way.
class KeyctlClockTest : public KeyctlTest {
 protected:
  static void SetUpTestSuite() { daemon_ = StartCofferd().release(); }
};

TEST_F(KeyctlClockTest, LifecycleAutomationDestroysADisabledDatasetUnlessHeld) {
  for (const char* name : {"crm/expired", "crm/held"}) {
    Create(name);
    Result set = Run(std::string("policy set ") + name +
                     " --auto-destroy-after-disabled 1s --destruction-wait 1s");
    ASSERT_EQ(set.exit_code, 0) << set.err;
  }
  ASSERT_EQ(Run("hold set crm/held").exit_code, 0);
  Result listed = Run("dataset list --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  uint64_t expired_handle = 0;
  const json datasets = listed.Json();
  for (const json& d : datasets.at("datasets")) {
    if (d.at("name") == "crm/expired") expired_handle = d.at("handle").get<uint64_t>();
  }
  ASSERT_NE(expired_handle, 0u) << listed.out;
  ASSERT_EQ(Run("dataset disable crm/expired").exit_code, 0);
  ASSERT_EQ(Run("dataset disable crm/held").exit_code, 0);

  // A destroyed dataset has no name any more: describe answers not found (exit 4). Past the
  // disabled period, a run of the rotation clock schedules the destruction (the dataset is
  // still there); past the destruction wait, the next run destroys it.
  Result first = daemon_->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(first.exit_code, 0) << first.err;
  Result describe = Run("dataset describe crm/expired --json");
  ASSERT_EQ(describe.exit_code, 0) << "destroyed before its wait: " << describe.err;
  Result second = daemon_->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(second.exit_code, 0) << second.err;
  describe = Run("dataset describe crm/expired --json");
  EXPECT_EQ(describe.exit_code, 4) << describe.err << describe.out;

  Result audit = Run("audit search --json --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  bool scheduled = false;
  bool destroyed = false;
  const json entries = audit.Json();
  for (const json& e : entries.at("entries")) {
    if (e.value("dataset_handle", uint64_t{0}) != expired_handle) continue;
    scheduled |= e.value("kind", "") == "DESTRUCTION_SCHEDULE" &&
                 e.value("detail", "") == "lifecycle automation";
    destroyed |= e.value("kind", "") == "DATASET_DESTROY";
  }
  EXPECT_TRUE(scheduled) << "no DESTRUCTION_SCHEDULE by lifecycle automation";
  EXPECT_TRUE(destroyed) << "no DATASET_DESTROY";

  // The held dataset had every tick the other one had, and is still only disabled.
  Result held = Run("dataset describe crm/held --json");
  ASSERT_EQ(held.exit_code, 0) << held.err;
  EXPECT_EQ(held.Json().at("state"), "DATASET_DISABLED") << held.out;
}

// A destroyed dataset's data is erased and a signed deletion receipt issued; keyctl fetches and
// verifies it, plain OpenSSL verifies it, and any change to any field breaks it.
TEST_F(KeyctlClockTest, DestructionErasesTheDataAndIssuesASignedReceipt) {
  const std::string name = "crm/receipt";
  Create(name, "--destruction-wait 1s");
  // The name salt, for the customer: the receipt commits to the name under it.
  Result described = Run("--json dataset describe " + name);
  ASSERT_EQ(described.exit_code, 0) << described.err;
  const std::string salt = described.Json().value("name_salt", "");
  ASSERT_EQ(salt.size(), 64u) << described.out;
  EXPECT_NE(Run("dataset describe " + name).out.find(salt), std::string::npos);
  {
    auto client = coffer::client::Client::Connect(daemon_->dir() + "/data.sock");
    ASSERT_TRUE(client.ok()) << client.status();
    for (const char* id : {"r1", "r2", "r3"}) {
      ASSERT_TRUE((*client)->PutRecord(name, id, std::string("value of ") + id).ok());
    }
    ASSERT_TRUE((*client)->DeleteRecord(name, "r3").ok());  // into the recycle bin
    for (const char* attachment : {"a1.pdf", "a2.pdf"}) {
      auto writer = (*client)->BeginAttachment(name, attachment, "application/pdf");
      ASSERT_TRUE(writer.ok()) << writer.status();
      ASSERT_TRUE((*writer)->Append(std::string(100'000, 'x')).ok());
      ASSERT_TRUE((*writer)->Commit().ok());
    }
    ASSERT_TRUE((*client)->DeleteAttachment(name, "a2.pdf").ok());
  }
  // Before destruction there is no receipt: a clear refusal, not an empty file.
  Result early = Run("receipt get " + name);
  EXPECT_EQ(early.exit_code, 4) << early.err;
  ASSERT_EQ(Run("dataset disable " + name).exit_code, 0);
  ASSERT_EQ(Run("dataset destroy " + name).exit_code, 0);

  const std::string file = daemon_->dir() + "/receipt.txt";
  // Past the destruction wait, the rotation clock's run destroys it and issues the receipt.
  Result ran = daemon_->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Result got = Run("receipt get " + name + " -o " + file);
  ASSERT_EQ(got.exit_code, 0) << got.err << daemon_->Logs();
  const std::string pem = daemon_->dir() + "/audit-public-key.pem";

  Result verified = Run("receipt verify " + file + " --public-key " + pem + " --name " + name +
                        " --name-salt " + salt + " --json");
  ASSERT_EQ(verified.exit_code, 0) << verified.err;
  // The name checks only with the salt: without it, a clear request for it; with another
  // salt or another name, a refusal. The file holds no bare hash of the name to guess against.
  Result unsalted = Run("receipt verify " + file + " --public-key " + pem + " --name " + name);
  EXPECT_NE(unsalted.exit_code, 0);
  EXPECT_NE(unsalted.err.find("--name-salt"), std::string::npos) << unsalted.err;
  std::string other_salt = salt;
  other_salt[0] = other_salt[0] == '0' ? '1' : '0';
  Result wrong_salt = Run("receipt verify " + file + " --public-key " + pem + " --name " + name +
                          " --name-salt " + other_salt);
  EXPECT_NE(wrong_salt.exit_code, 0);
  EXPECT_NE(wrong_salt.err.find("another name or salt"), std::string::npos) << wrong_salt.err;
  Result wrong_name = Run("receipt verify " + file + " --public-key " + pem +
                          " --name crm/other --name-salt " + salt);
  EXPECT_NE(wrong_name.exit_code, 0);
  const std::string receipt_text = ::coffer::testing::ReadWholeFile(file);
  EXPECT_EQ(receipt_text.find(salt), std::string::npos);
  EXPECT_EQ(receipt_text.find(coffer::kms::receipt::Sha256Hex(name)), std::string::npos);
  const json receipt = verified.Json().at("receipt");
  EXPECT_EQ(receipt.at("format"), "coffer-deletion-receipt-v2");
  EXPECT_EQ(receipt.at("records_purged"), "2");  // protobuf's JSON prints 64-bit as strings
  EXPECT_EQ(receipt.at("attachments_purged"), "1");
  EXPECT_EQ(receipt.at("bin_records_purged"), "1");
  EXPECT_EQ(receipt.at("bin_attachments_purged"), "1");
  EXPECT_EQ(receipt.at("purge_compaction_finished"), true);
  EXPECT_EQ(receipt.at("dataset_name_sha256"), "");
  EXPECT_EQ(receipt.at("dataset_name_commitment"),
            coffer::kms::receipt::NameCommitmentHex(absl::HexStringToBytes(salt), name));
  ASSERT_FALSE(receipt.at("wrapping_keys").empty());
  EXPECT_FALSE(receipt.at("wrapping_keys")[0].at("already_absent").get<bool>());
  EXPECT_EQ(receipt.at("key_versions_destroyed"), 4);  // records, attachments, lookup, pseudonym
  EXPECT_TRUE(receipt.at("approvals").empty());        // development mode: no second admin

  // The audit sequences name the entries that record each step.
  const json sequences = receipt.at("audit_sequences");
  Result audit = Run("audit search --json --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  const json entries = audit.Json().at("entries");
  auto kind_at = [&](const json& sequence) -> std::string {
    const uint64_t wanted = std::stoull(sequence.get<std::string>());
    for (const json& e : entries) {
      if (e.value("sequence", uint64_t{0}) == wanted) {
        return e.value("kind", "") + "/" + e.value("stage", "");
      }
    }
    return "none";
  };
  EXPECT_EQ(kind_at(sequences.at("destruction_scheduled")), "DESTRUCTION_SCHEDULE/REQUESTED");
  EXPECT_EQ(kind_at(sequences.at("destruction_started")), "DATASET_DESTROY/REQUESTED");
  EXPECT_EQ(kind_at(sequences.at("destruction_completed")), "DATASET_DESTROY/COMPLETED");
  EXPECT_EQ(kind_at(sequences.at("erasure_started")), "DATASET_ERASE/REQUESTED");
  EXPECT_EQ(kind_at(sequences.at("erasure_completed")), "DATASET_ERASE/COMPLETED");

  // The text form, and the wrong name.
  Result text = Run("receipt verify " + file + " --public-key " + pem);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("2 records, 1 attachments"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("purge compaction finished"), std::string::npos) << text.out;
  Result other = Run("receipt verify " + file + " --public-key " + pem +
                     " --name crm/other --name-salt " + salt);
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("another name"), std::string::npos) << other.err;

  // Plain OpenSSL, as docs/keyctl.md shows: the signed message is the receipt domain's label,
  // a NUL byte and the first line.
  const std::string dir = daemon_->dir();
  const std::string openssl = "{ printf 'coffer-deletion-receipt-v2\\0'; head -n 1 " + file +
                              "; } > " + dir + "/body && tail -n 1 " + file + " | base64 -d > " +
                              dir + "/sig && openssl dgst -sha256 -verify " + pem + " -signature " +
                              dir + "/sig " + dir + "/body >/dev/null";
  EXPECT_EQ(RunShell(openssl), 0);
  // The first line alone (how a v1 receipt was signed) does not verify.
  EXPECT_NE(RunShell("head -n 1 " + file + " > " + dir +
                     "/unlabelled && openssl dgst -sha256 "
                     "-verify " +
                     pem + " -signature " + dir + "/sig " + dir + "/unlabelled >/dev/null 2>&1"),
            0);

  // Any field changed: the signature fails, for keyctl, OpenSSL and the library alike.
  const std::string original = ReadWholeFile(file);
  const std::string from = "\"records_purged\":\"2\"";
  std::string changed_records = original;
  const size_t at = changed_records.find(from);
  ASSERT_NE(at, std::string::npos) << original;
  changed_records.replace(at, from.size(), "\"records_purged\":\"0\"");
  { std::ofstream(file, std::ios::trunc) << changed_records; }
  Result tampered = Run("receipt verify " + file + " --public-key " + pem);
  EXPECT_EQ(tampered.exit_code, 1);
  EXPECT_NE(tampered.err.find("does not verify"), std::string::npos) << tampered.err;
  EXPECT_NE(RunShell(openssl + " 2>/dev/null"), 0);
  const std::string public_key = ReadWholeFile(pem);
  ASSERT_TRUE(coffer::kms::receipt::VerifyFile(original, public_key).ok());
  const std::string body = original.substr(0, original.find('\n'));
  const json fields = json::parse(body);
  for (const auto& [key, value] : fields.items()) {
    json altered = fields;
    if (value.is_string()) {
      altered[key] = value.get<std::string>() + "0";
    } else if (value.is_boolean()) {
      altered[key] = !value.get<bool>();
    } else if (value.is_number()) {
      altered[key] = value.get<int64_t>() + 1;
    } else if (value.is_array()) {
      altered[key] = value.empty() ? json::array({json::object()}) : json::array();
    } else {
      altered[key] = json::object();
    }
    std::string forged = altered.dump() + original.substr(original.find('\n'));
    absl::StatusOr<coffer::v1::DeletionReceipt> result =
        coffer::kms::receipt::VerifyFile(forged, public_key);
    EXPECT_EQ(ErrorCodeOf(result.status()), ErrorCode::kReceiptInvalid) << key;
  }
  // The receipt itself, re-serialised identically, still verifies (the test's edits are real).
  EXPECT_TRUE(coffer::kms::receipt::VerifyFile(fields.dump() + original.substr(original.find('\n')),
                                               public_key)
                  .ok() == (fields.dump() == body));
}

TEST_F(KeyctlTest, AdminListInDevelopmentMode) {
  Result list = Run("admin list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("MFA: development mode (off)"), std::string::npos) << list.out;
  Result list_json = Run("admin list --json");
  ASSERT_EQ(list_json.exit_code, 0) << list_json.err;
  EXPECT_FALSE(list_json.Json().value("mfa_required", false)) << list_json.out;
  Result requests = Run("request list --all --json");
  EXPECT_EQ(requests.exit_code, 0) << requests.err;
}

TEST_F(KeyctlTest, KeyInventoryInBothModes) {
  Create("crm/inventory");
  Result inv = Run("key inventory --json");
  ASSERT_EQ(inv.exit_code, 0) << inv.err;
  const json keys = inv.Json().at("keys");
  int data_keys = 0, wrapping_keys = 0;
  bool audit_key = false;
  for (const json& k : keys) {
    const std::string kind = k.value("kind", "");
    if (kind == "data-key" && k.value("dataset", "") == "crm/inventory") {
      ++data_keys;
      EXPECT_FALSE(k.value("wrapped_by", "").empty()) << k.dump();
      EXPECT_FALSE(k.value("algorithm", "").empty()) << k.dump();
    }
    if (kind == "wrapping-key") ++wrapping_keys;
    if (kind == "audit-signing-key") {
      audit_key = true;
      EXPECT_EQ(k.value("fingerprint", "").size(), 64u) << k.dump();
    }
  }
  EXPECT_GE(data_keys, 2) << inv.out;  // records and attachments at least
  EXPECT_GE(wrapping_keys, 1) << inv.out;
  EXPECT_TRUE(audit_key) << inv.out;

  Result only = Run("key inventory --dataset crm/inventory --json");
  ASSERT_EQ(only.exit_code, 0) << only.err;
  const json only_keys = only.Json().at("keys");
  for (const json& k : only_keys) {
    if (k.value("kind", "") == "data-key") {
      EXPECT_EQ(k.value("dataset", ""), "crm/inventory");
    }
  }

  Result human = Run("key inventory --dataset crm/inventory");
  ASSERT_EQ(human.exit_code, 0) << human.err;
  EXPECT_NE(human.out.find("KIND"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("data-key"), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("crm/inventory"), std::string::npos) << human.out;
}

TEST_F(KeyctlTest, BinListAndRestore) {
  Create("crm/binlist");
  {
    // Content goes through the data socket (the test's uid holds a grant and is not enrolled).
    auto client = AdminClient::Connect(daemon_->data_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    for (const std::string& id : {std::string("customer-1"), std::string("\x01\xff", 2)}) {
      coffer::v1::Request put;
      put.mutable_record_put()->set_dataset("crm/binlist");
      put.mutable_record_put()->set_id(id);
      put.mutable_record_put()->set_value("value");
      ASSERT_TRUE((*client)->Call(put).ok());
      coffer::v1::Request del;
      del.mutable_record_delete()->set_dataset("crm/binlist");
      del.mutable_record_delete()->set_id(id);
      auto deleted = (*client)->Call(del);
      ASSERT_TRUE(deleted.ok()) << deleted.status();
    }
  }
  Result list = Run("bin list crm/binlist");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("customer-1"), std::string::npos) << list.out;
  EXPECT_NE(list.out.find("hex:01ff"), std::string::npos) << list.out;

  Result list_json = Run("bin list crm/binlist --json");
  ASSERT_EQ(list_json.exit_code, 0) << list_json.err;
  EXPECT_EQ(list_json.Json().at("items").size(), 2u) << list_json.out;
  EXPECT_FALSE(list_json.Json().at("more").get<bool>()) << list_json.out;

  // Paging: --limit 1 asks for one item, the daemon hands a page token for the rest.
  Result limited = Run("bin list crm/binlist --json --limit 1");
  EXPECT_EQ(limited.exit_code, 0) << limited.err;
  if (limited.exit_code == 0) {
    EXPECT_EQ(limited.Json().at("items").size(), 1u) << limited.out;
    EXPECT_TRUE(limited.Json().at("more").get<bool>()) << limited.out;
  }

  Result restored = Run("bin restore crm/binlist --record customer-1");
  ASSERT_EQ(restored.exit_code, 0) << restored.err;
  Result restored_hex = Run("bin restore crm/binlist --record hex:01ff --hex");
  ASSERT_EQ(restored_hex.exit_code, 0) << restored_hex.err;
  Result after = Run("bin list crm/binlist --json");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  EXPECT_EQ(after.Json().at("items").size(), 0u) << after.out;
  Result describe = Run("dataset describe crm/binlist --json");
  EXPECT_EQ(describe.Json().at("records"), 2) << describe.out;

  Result again = Run("bin restore crm/binlist --record customer-1");
  EXPECT_EQ(again.exit_code, 4) << again.err;
  Result neither = Run("bin restore crm/binlist");
  EXPECT_EQ(neither.exit_code, 2) << neither.err;
}

// The daemon's audit public key, from `keyctl status --json`, written to `path`.
void WriteAuditPublicKey(const std::string& socket, const std::string& path) {
  Result status = Keyctl(socket, "status --json");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const std::string pem = status.Json().value("audit_public_key_pem", "");
  ASSERT_FALSE(pem.empty()) << "status carries no audit_public_key_pem: " << status.out;
  std::ofstream(path, std::ios::trunc) << pem;
}

TEST_F(KeyctlTest, AuditVerifyOfflinePassesAndCatchesTampering) {
  Create("crm/auditoffline");
  {
    // Enough entries that the flipped byte below lands in an entry with successors (an edit
    // of the newest entries is caught only by a checkpoint, or online by the MACs).
    auto client = AdminClient::Connect(daemon_->admin_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    for (int i = 0; i < 40; ++i) {
      coffer::v1::Request request;
      request.mutable_dataset_describe()->set_name("crm/auditoffline");
      ASSERT_TRUE((*client)->Call(request).ok());
    }
  }
  const std::string pem = daemon_->dir() + "/test-audit-public.pem";
  WriteAuditPublicKey(daemon_->admin_socket(), pem);
  const std::string audit_dir = daemon_->dir() + "/audit";
  Result ok = Run("audit verify --offline --public-key " + pem + " --audit-dir " + audit_dir);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("verified offline"), std::string::npos) << ok.out;
  Result ok_json =
      Run("--json audit verify --offline --public-key " + pem + " --audit-dir " + audit_dir);
  ASSERT_EQ(ok_json.exit_code, 0) << ok_json.err;
  EXPECT_GT(ok_json.Json().at("entries").get<uint64_t>(), 0u) << ok_json.out;

  // A copy of the log with one byte flipped in the payload of an entry a third of the way into
  // its oldest segment (kms/audit/audit_format.h: a 72-byte header, then frames of length u32 BE |
  // payload | chain hash (32) | MAC (32); a MAC byte would be caught only online).
  const std::string copy = daemon_->dir() + "/audit-copy";
  fs::remove_all(copy);
  fs::copy(audit_dir, copy, fs::copy_options::recursive);
  std::vector<std::string> segments;
  for (const auto& entry : fs::directory_iterator(copy)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("audit-", 0) == 0 && entry.path().extension() == ".log") {
      segments.push_back(entry.path().string());
    }
  }
  ASSERT_FALSE(segments.empty());
  std::sort(segments.begin(), segments.end());
  const std::string victim = segments.front();
  std::string bytes = ReadWholeFile(victim);
  std::vector<size_t> payloads;  // offset of each payload's middle byte
  for (size_t at = 72; at + 4 <= bytes.size();) {
    const size_t length = (static_cast<size_t>(static_cast<unsigned char>(bytes[at])) << 24) |
                          (static_cast<size_t>(static_cast<unsigned char>(bytes[at + 1])) << 16) |
                          (static_cast<size_t>(static_cast<unsigned char>(bytes[at + 2])) << 8) |
                          static_cast<size_t>(static_cast<unsigned char>(bytes[at + 3]));
    if (length == 0 || at + 4 + length + 64 > bytes.size()) break;
    payloads.push_back(at + 4 + length / 2);
    at += 4 + length + 64;
  }
  ASSERT_GE(payloads.size(), 3u);
  const size_t flip = payloads[payloads.size() / 3];
  bytes[flip] = static_cast<char>(bytes[flip] ^ 0x01);
  {
    std::ofstream out(victim, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  Result bad = Run("audit verify --offline --public-key " + pem + " --audit-dir " + copy);
  EXPECT_NE(bad.exit_code, 0) << bad.out;
  EXPECT_EQ(Lines(bad.err), 1u) << bad.err;
  EXPECT_NE(bad.err.find("failed verification"), std::string::npos) << bad.err;

  Result no_key = Run("audit verify --offline");
  EXPECT_EQ(no_key.exit_code, 2) << no_key.err;
}

TEST(AdminClientTest, RedialsAfterTheDaemonClosedAnIdleConnection) {
  FakeAdminServer server(FakeSocketPath("redial"), 1, StatusAnswer);
  ASSERT_TRUE(server.ok());
  auto client = AdminClient::Connect(FakeSocketPath("redial"));
  ASSERT_TRUE(client.ok()) << client.status();
  for (int i = 0; i < 3; ++i) {
    coffer::v1::Request request;
    request.mutable_status();
    auto response = (*client)->Call(request);
    ASSERT_TRUE(response.ok()) << i << ": " << response.status();
    EXPECT_EQ(response->status().version(), "fake");
    // The server closes after each answer: the next call must notice and dial again.
    ASSERT_TRUE(server.WaitClosed(i + 1));
  }
  EXPECT_EQ(server.connections(), 3);
}

TEST(AdminClientTest, MapsErrorsAndProtocolBreaks) {
  FakeAdminServer server(FakeSocketPath("errors"), 100, [](const coffer::v1::Request& request) {
    coffer::v1::Response response;
    response.set_request_id(request.request_id());
    if (request.has_dataset_describe()) {
      response.mutable_error()->set_code(305);
      response.mutable_error()->set_code_name("DATASET_NOT_FOUND");
      response.mutable_error()->set_message("no dataset with this name");
    } else if (request.has_dataset_list()) {
      response.mutable_status();  // the wrong result
    } else {
      response.set_request_id(request.request_id() + 7);  // the wrong request id
      response.mutable_status();
    }
    return response;
  });
  ASSERT_TRUE(server.ok());
  auto client = AdminClient::Connect(FakeSocketPath("errors"));
  ASSERT_TRUE(client.ok()) << client.status();
  coffer::v1::Request describe;
  describe.mutable_dataset_describe()->set_name("x");
  auto described = (*client)->Call(describe);
  EXPECT_EQ(ErrorCodeOf(described.status()), ErrorCode::kDatasetNotFound);
  EXPECT_NE(described.status().message().find("no dataset with this name"), std::string::npos);
  coffer::v1::Request list;
  list.mutable_dataset_list();
  EXPECT_EQ(ErrorCodeOf((*client)->Call(list).status()), ErrorCode::kUnexpectedFrame);
  coffer::v1::Request status;
  status.mutable_status();
  EXPECT_EQ(ErrorCodeOf((*client)->Call(status).status()), ErrorCode::kUnexpectedFrame);
}

// ---- text conventions (no daemon) -------------------------------------------------------------

TEST(KeyctlFormatTest, Durations) {
  EXPECT_EQ(*ParseDuration("30d"), 30 * 86400);
  EXPECT_EQ(*ParseDuration("12h"), 12 * 3600);
  EXPECT_EQ(*ParseDuration("90s"), 90);
  EXPECT_EQ(*ParseDuration("1d12h"), 86400 + 12 * 3600);
  EXPECT_EQ(*ParseDuration("2w"), 14 * 86400);
  EXPECT_EQ(*ParseDuration("0"), 0);
  for (const char* bad : {"", "30", "d", "30x", "-1d", "1.5d", "30d ", "99999999999999999999s"}) {
    EXPECT_FALSE(ParseDuration(bad).ok()) << bad;
  }
  for (int64_t s : {int64_t{0}, int64_t{90}, int64_t{86400 + 3600 + 1}, int64_t{30} * 86400}) {
    EXPECT_EQ(*ParseDuration(FormatDuration(s)), s) << FormatDuration(s);
  }
  EXPECT_EQ(FormatDuration(int64_t{30} * 86400), "30d");
}

TEST(KeyctlFormatTest, TimePoints) {
  const int64_t now = int64_t{1'800'000'000} * 1'000'000;
  EXPECT_EQ(*ParseTimePoint("2h", now), now - int64_t{7200} * 1'000'000);
  auto day = ParseTimePoint("2026-01-02", now);
  auto minute = ParseTimePoint("2026-01-02T03:04", now);
  auto second = ParseTimePoint("2026-01-02 03:04:05", now);
  ASSERT_TRUE(day.ok() && minute.ok() && second.ok());
  EXPECT_EQ(*minute - *day, int64_t{3 * 3600 + 4 * 60} * 1'000'000);
  EXPECT_EQ(*second - *minute, int64_t{5} * 1'000'000);
  EXPECT_EQ(FormatLocalTime(*second), "2026-01-02 03:04:05");
  for (const char* bad : {"", "2026-1-02", "2026-13-01", "2026-01-02X03:04", "2026-01-02T3:04",
                          "yesterday", "2026-01-02T03:04:05Z"}) {
    EXPECT_FALSE(ParseTimePoint(bad, now).ok()) << bad;
  }
}

TEST(KeyctlFormatTest, AgesAndTable) {
  const int64_t now = int64_t{1'800'000'000} * 1'000'000;
  EXPECT_EQ(FormatAge(now - 300'000'000, now), "5m ago");
  EXPECT_EQ(FormatAge(now + (86400 + 3 * 3600) * int64_t{1'000'000}, now), "in 1d3h");
  EXPECT_EQ(FormatAge(0, now), "-");
  std::ostringstream out;
  Table table({"A", "LONGER"});
  table.AddRow({"wide-cell", "x"});
  table.Print(out);
  EXPECT_EQ(out.str(), "A          LONGER\nwide-cell  x\n");
}

TEST(KeyctlFormatTest, ExitCodes) {
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), 0);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kDatasetNotFound, "x")), 4);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kNotGranted, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kWrongSocket, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kDaemonUnavailable, "x")), 1);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kDatasetStateForbids, "x")), 1);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kApprovalPending, "x")), 5);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kMfaRequired, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kMfaCodeInvalid, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kMfaCodeReused, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kMfaLockedOut, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kApprovalForbidden, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kApprovalClosed, "x")), 3);
  EXPECT_EQ(ExitCodeFor(MakeError(ErrorCode::kApprovalNotFound, "x")), 4);
}

}  // namespace
}  // namespace coffer::keyctl
