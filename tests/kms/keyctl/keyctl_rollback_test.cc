// Tail truncation against a running cofferd (docs/threat-model.md, "Root who rolls files back";
// docs/audit.md, "Tail truncation and rollback"). test-cofferd on a fresh SoftHSM2 token with
// `audit_anchor_file` set; the test plays the journal host: after each run it writes the
// anchors of the log's checkpoints (as `journalctl -t cofferd-audit -o cat` would hold them) into
// that file. Then, playing root on the machine, it cuts the log at a frame boundary, or deletes
// its newest segment — and shows that start-up refuses the shorter log, and so does
// `keyctl audit verify --offline --anchors FILE` (and `--min-sequence`), while the same log
// passes both checks without the anchor: only the anchor kept off the machine shows the cut.

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "hsm/hsm_client.h"
#include "kms/audit/anchor.h"
#include "kms/audit/anchor_check.h"
#include "kms/audit/audit_format.h"
#include "kms/keys/full_backup.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"

namespace coffer::kms {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::RunShell;
using Result = ::coffer::testing::KeyctlResult;

// The log's segment files, oldest first.
std::vector<std::string> Segments(const std::string& audit_dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(audit_dir)) {
    if (audit::ParseSegmentFileName(entry.path().filename().string())) {
      names.push_back(entry.path().string());
    }
  }
  std::sort(names.begin(), names.end());
  return names;
}

// What the journal host holds: one anchor line per checkpoint of the log, syslog-prefixed.
std::string JournalAnchors(const std::string& audit_dir, audit::CheckpointAnchor* newest) {
  std::string text;
  for (const std::string& path : Segments(audit_dir)) {
    const audit::testing::RawSegment segment = audit::testing::ReadSegment(path);
    for (const audit::testing::RawFrame& frame : segment.frames) {
      const auto entry = frame.Entry();
      if (entry.kind() != audit::v1::LOG_CHECKPOINT) continue;
      audit::CheckpointAnchor anchor{segment.header.log_id, entry.sequence(), frame.hash,
                                     entry.time_micros()};
      text += "Jan 15 10:00:00 host cofferd-audit[7]: " + audit::FormatAnchorLine(anchor) + "\n";
      *newest = anchor;
    }
  }
  return text;
}

// The token of the daemon in `dir`, opened here as an operator holding its user PIN would.
std::unique_ptr<hsm::HsmClient> OpenToken(const std::string& dir) {
  setenv("SOFTHSM2_CONF", (dir + "/hsm/softhsm2.conf").c_str(), 1);
  hsm::HsmOptions options;
  options.token_label = "coffer";
  options.pin = hsm::PinSource::FromFile(dir + "/hsm/user.pin");
  auto token = hsm::HsmClient::Open(options);
  EXPECT_TRUE(token.ok()) << token.status();
  if (!token.ok()) return nullptr;
  return *std::move(token);
}

class KeyctlRollbackTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CofferdOptions options;
    options.name = "keyctl-rollback";
    options.extra_config = [](const std::string&) {
      return std::string("audit_anchor_file: \"anchors.txt\"\n");
    };
    // A new installation: the anchors file exists and is empty.
    options.prepare = [](const std::string& dir) {
      std::ofstream(dir + "/anchors.txt", std::ios::trunc);
      chmod((dir + "/anchors.txt").c_str(), 0644);
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    audit_dir_ = daemon_->dir() + "/audit";
    anchors_ = daemon_->dir() + "/anchors.txt";
  }

  Result Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }

  // Some key operations, a clean stop, then the journal host's copy of the anchors.
  void WorkStopAndForwardAnchors(const std::string& dataset) {
    ASSERT_EQ(Run("dataset create " + dataset).exit_code, 0);
    ASSERT_EQ(Run("key rotate " + dataset + " --purpose records").exit_code, 0);
    ASSERT_EQ(Run("dataset disable " + dataset).exit_code, 0);
    ASSERT_TRUE(daemon_->Stop());
    std::ofstream(anchors_, std::ios::trunc) << JournalAnchors(audit_dir_, &newest_);
  }

  Result VerifyOffline(const std::string& extra) {
    return Run("--json audit verify --offline --public-key " + daemon_->dir() +
               "/audit-public-key.pem --audit-dir " + audit_dir_ + " " + extra);
  }

  std::unique_ptr<Cofferd> daemon_;
  std::string audit_dir_;
  std::string anchors_;
  audit::CheckpointAnchor newest_;
};

TEST_F(KeyctlRollbackTest, ALogCutAtAFrameBoundaryIsRefusedGivenTheAnchor) {
  ASSERT_NO_FATAL_FAILURE(WorkStopAndForwardAnchors("roll/one"));
  // The intact log starts and verifies against the anchors.
  ASSERT_TRUE(daemon_->Start());
  ASSERT_NO_FATAL_FAILURE(WorkStopAndForwardAnchors("roll/two"));
  Result intact = VerifyOffline("--anchors " + anchors_);
  ASSERT_EQ(intact.exit_code, 0) << intact.out << intact.err;
  EXPECT_GE(intact.Json().at("anchors").get<uint64_t>(), 2u);
  ASSERT_EQ(RunShell("cp -a " + audit_dir_ + " " + daemon_->dir() + "/audit.saved"), 0);

  // Root cuts the newest segment at a frame boundary: the closing checkpoint and the last
  // operations go. The shorter log is well formed: it verifies alone.
  const std::string newest = Segments(audit_dir_).back();
  audit::testing::RawSegment segment = audit::testing::ReadSegment(newest);
  ASSERT_GE(segment.frames.size(), 4u);
  segment.frames.resize(segment.frames.size() - 3);
  audit::testing::WriteSegment(newest, segment);
  Result alone = VerifyOffline("");
  EXPECT_EQ(alone.exit_code, 0) << alone.out << alone.err;

  // Given the anchor, keyctl refuses it, and so does --min-sequence.
  Result anchored = VerifyOffline("--anchors " + anchors_);
  EXPECT_NE(anchored.exit_code, 0) << anchored.out;
  EXPECT_EQ(anchored.CodeName(), "AUDIT_TAMPERED") << anchored.out << anchored.err;
  EXPECT_NE((anchored.out + anchored.err).find("truncated"), std::string::npos)
      << anchored.out << anchored.err;
  Result by_sequence = VerifyOffline("--min-sequence " + std::to_string(newest_.sequence));
  EXPECT_EQ(by_sequence.CodeName(), "AUDIT_TAMPERED") << by_sequence.out << by_sequence.err;

  // And the daemon will not start on it (nor sign a checkpoint over the shorter chain).
  auto [code, log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(code, 1) << log;
  EXPECT_NE(log.find("before the anchor at sequence " + std::to_string(newest_.sequence)),
            std::string::npos)
      << log;
  EXPECT_EQ(audit::testing::ReadSegment(newest).frames.size(), segment.frames.size())
      << "the refused start wrote to the log";

  // The real log back: it starts again.
  ASSERT_EQ(
      RunShell("rm -rf " + audit_dir_ + " && mv " + daemon_->dir() + "/audit.saved " + audit_dir_),
      0);
  EXPECT_TRUE(daemon_->Start());
}

TEST_F(KeyctlRollbackTest, ADeletedNewestSegmentIsRefusedGivenTheAnchor) {
  ASSERT_NO_FATAL_FAILURE(WorkStopAndForwardAnchors("roll/three"));
  const std::vector<std::string> segments = Segments(audit_dir_);
  ASSERT_FALSE(segments.empty());
  // Root deletes the newest segment (here the only one: the log would start afresh).
  ASSERT_EQ(RunShell("rm " + segments.back()), 0);
  auto [code, log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(code, 1) << log;
  EXPECT_NE(log.find("AUDIT_TAMPERED"), std::string::npos) << log;
  EXPECT_TRUE(Segments(audit_dir_).empty()) << "a new log was started in its place";
  Result anchored = VerifyOffline("--anchors " + anchors_);
  EXPECT_NE(anchored.exit_code, 0) << anchored.out;

  // A damaged anchors file is not "no anchor": start-up refuses it too.
  std::ofstream(anchors_, std::ios::app) << "coffer-audit-anchor v1 log=zz seq=1\n";
  auto [damaged_code, damaged_log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(damaged_code, 1) << damaged_log;
  EXPECT_NE(damaged_log.find("audit_anchor_file"), std::string::npos) << damaged_log;
}

// What `keyctl --json dataset describe` printed ("" when refused).
std::string Described(const Result& described) {
  return described.exit_code == 0 ? described.out : "";
}

// A key DB older than the log (docs/threat-model.md, "Root who rolls files back"): root stops
// cofferd, puts back an older copy of the key DB directory (undoing a rotation and a disable)
// and starts it. The log's checkpoints recorded a newer key-DB generation, so cofferd refuses
// (before anything writes to the old copy: kms_key_manager_test
// AKeyDbOlderThanTheLogSaysIsRefusedBeforeAnythingIsWritten), and keeps refusing; the current
// key DB starts again.
// No anchor is needed: the audit log on the machine is what the key DB is compared with.
TEST_F(KeyctlRollbackTest, AKeyDbOlderThanTheLogIsRefusedAtStartUp) {
  const std::string keys = daemon_->dir() + "/keys";
  ASSERT_EQ(Run("dataset create gen/one").exit_code, 0);
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_EQ(RunShell("cp -a " + keys + " " + keys + ".old"), 0);

  ASSERT_TRUE(daemon_->Start());
  ASSERT_EQ(Run("key rotate gen/one --purpose records").exit_code, 0);
  ASSERT_EQ(Run("dataset disable gen/one").exit_code, 0);
  ASSERT_TRUE(daemon_->Stop());
  Result verified = VerifyOffline("");
  ASSERT_EQ(verified.exit_code, 0) << verified.out << verified.err;
  const uint64_t recorded = verified.Json().at("key_db_generation").get<uint64_t>();
  EXPECT_GT(recorded, 0u) << "the closing checkpoint records the key DB's generation";

  // Root puts the old copy back.
  ASSERT_EQ(RunShell("mv " + keys + " " + keys + ".current && cp -a " + keys + ".old " + keys), 0);
  for (int attempt = 0; attempt < 2; ++attempt) {
    // Refused every time: a refused start closes its log without lowering the recorded value.
    auto [code, log] = daemon_->RunToExit({daemon_->UserArg()});
    EXPECT_EQ(code, 1) << log;
    EXPECT_NE(log.find("KEY_DB_ROLLED_BACK"), std::string::npos) << log;
    EXPECT_NE(log.find("older than generation " + std::to_string(recorded)), std::string::npos)
        << log;
    EXPECT_EQ(log.find("gen/one"), std::string::npos) << "a dataset name in the log:\n" << log;
  }

  // The current key DB back: it starts, with the rotation and the disable in place.
  ASSERT_EQ(RunShell("rm -rf " + keys + " && mv " + keys + ".current " + keys), 0);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_NE(Described(Run("--json dataset describe gen/one")).find("DATASET_DISABLED"),
            std::string::npos);
}

// A restore is the legitimate way back (docs/key-manager.md, "Key DB generation"): the backup's
// own key-DB copy — sealed, so it does not even open without the token — is older than the log
// and refused like any old copy once opened, but `keyctl backup restore` gives the restored key DB
// a generation above the log's, so the restored directory is served beside the live log — and then
// the old live key DB is the older one.
TEST_F(KeyctlRollbackTest, ARestoredDirectoryStartsAboveTheLogAndIsServed) {
  const std::string dir = daemon_->dir();
  ASSERT_EQ(Run("dataset create gen/restored").exit_code, 0);
  Result backup = Run("--json backup create");
  ASSERT_EQ(backup.exit_code, 0) << backup.out << backup.err;
  const uint64_t id = backup.JsonOrEmpty().value("id", uint64_t{0});
  ASSERT_NE(id, 0u) << backup.out;
  ASSERT_EQ(Run("key rotate gen/restored --purpose records").exit_code, 0);
  ASSERT_EQ(Run("dataset disable gen/restored").exit_code, 0);
  const std::string target = dir + "/restored";
  Result restored = Run("backup restore " + std::to_string(id) + " " + target);
  ASSERT_EQ(restored.exit_code, 0) << restored.out << restored.err << daemon_->Logs();
  ASSERT_TRUE(daemon_->Stop());

  // The backup's raw key-DB copy in place of the live one: refused — sealed, it is no key DB.
  ASSERT_EQ(RunShell("mv " + dir + "/keys " + dir + "/keys.live && cp -a " + dir +
                     "/backups/full/" + std::to_string(id) + "/keys " + dir + "/keys"),
            0);
  auto [sealed_code, sealed_log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(sealed_code, 1) << sealed_log;
  EXPECT_NE(sealed_log.find("sealed key-DB files (*.sealed), not a key DB"), std::string::npos)
      << sealed_log;
  // Opened with the token (kms::FullBackups::ExtractKeyDb), it is older than the log: refused.
  // (Extracted into a directory of this process's own, as ExtractKeyDb's target rules ask.)
  ASSERT_EQ(RunShell("rm -rf " + dir + "/keys && mkdir -m 0700 " + dir + "/extract"), 0);
  {
    auto token = OpenToken(dir);
    ASSERT_NE(token, nullptr);
    absl::Status extracted =
        kms::FullBackups::ExtractKeyDb(dir + "/backups", static_cast<uint32_t>(id),
                                       token->row_authenticator(), dir + "/extract/keys");
    ASSERT_TRUE(extracted.ok()) << extracted;
  }
  ASSERT_EQ(RunShell("mv " + dir + "/extract/keys " + dir + "/keys && rmdir " + dir +
                     "/extract && chown -R --reference=" + dir + "/keys.live " + dir + "/keys"),
            0);
  auto [raw_code, raw_log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(raw_code, 1) << raw_log;
  EXPECT_NE(raw_log.find("KEY_DB_ROLLED_BACK"), std::string::npos) << raw_log;

  // The restored directory's key DB and data DB, beside the live log: served, in the backup's
  // state (the dataset active again: the restore is audited as FULL_RESTORE).
  ASSERT_EQ(RunShell("rm -rf " + dir + "/keys && mv " + dir + "/data " + dir + "/data.live && mv " +
                     target + "/keys " + dir + "/keys && mv " + target + "/data " + dir + "/data"),
            0);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_NE(Described(Run("--json dataset describe gen/restored")).find("DATASET_ACTIVE"),
            std::string::npos);
  ASSERT_EQ(Run("key rotate gen/restored --purpose records").exit_code, 0);
  ASSERT_TRUE(daemon_->Stop());

  // Now the old live key DB is the older one.
  ASSERT_EQ(RunShell("mv " + dir + "/keys " + dir + "/keys.restored && mv " + dir + "/keys.live " +
                     dir + "/keys"),
            0);
  auto [live_code, live_log] = daemon_->RunToExit({daemon_->UserArg()});
  EXPECT_EQ(live_code, 1) << live_log;
  EXPECT_NE(live_log.find("KEY_DB_ROLLED_BACK"), std::string::npos) << live_log;
}

}  // namespace
}  // namespace coffer::kms
