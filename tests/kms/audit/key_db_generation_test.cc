// The key-DB generation in the audit log (docs/audit.md, "Key DB generation"): segment format 2
// records it in every checkpoint and every epoch entry, never lower than before, and a log
// reopened knows the newest one even when no checkpoint follows its newest epoch; segments of
// format 1 are still read, verified and continued (in a new segment of format 2).

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/verifier.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::kms::audit {
namespace {

using ::coffer::audit::v1::AuditEntry;
using testing::KeyEvent;
using testing::TestLogEnv;

VerifyReport Verify(TestLogEnv& env) {
  VerifyOptions options;
  options.public_key_pem = env.public_key_pem;
  options.anchors = env.anchors.anchors();
  options.epoch_keys = testing::TestEpochKeys();
  absl::StatusOr<VerifyReport> report = VerifyAuditLog(env.log_dir(), options);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : VerifyReport{};
}

std::vector<AuditEntry> Entries(TestLogEnv& env) {
  absl::StatusOr<std::vector<AuditEntry>> entries = ReadAuditEntries(env.log_dir());
  EXPECT_TRUE(entries.ok()) << entries.status();
  return entries.ok() ? *entries : std::vector<AuditEntry>{};
}

std::vector<std::string> SegmentPaths(const std::string& log_dir) {
  std::vector<std::string> paths;
  for (const auto& entry : std::filesystem::directory_iterator(log_dir)) {
    if (ParseSegmentFileName(entry.path().filename().string())) {
      paths.push_back(entry.path().string());
    }
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

// The options of a log whose key DB is at `*generation`.
AuditLogOptions WithGeneration(TestLogEnv& env, std::atomic<uint64_t>* generation,
                               uint64_t checkpoint_every_entries = 100) {
  AuditLogOptions options = env.Options(checkpoint_every_entries);
  options.key_db_generation = [generation] { return generation->load(); };
  return options;
}

TEST(KeyDbGenerationTest, CheckpointsRecordTheGenerationAndNeverLowerIt) {
  TestLogEnv env;
  std::atomic<uint64_t> generation{7};
  auto log = AuditLog::Open(WithGeneration(env, &generation));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_FALSE((*log)->recorded_key_db_generation().has_value());  // a new log: none yet
  EXPECT_EQ((*log)->newest_key_db_generation(), 7u);
  ASSERT_TRUE((*log)->Append(KeyEvent(1)).ok());
  ASSERT_TRUE((*log)->Checkpoint().ok());
  EXPECT_EQ((*log)->recorded_key_db_generation(), 7u);

  generation = 9;
  ASSERT_TRUE((*log)->Append(KeyEvent(2)).ok());
  ASSERT_TRUE((*log)->Checkpoint().ok());
  EXPECT_EQ((*log)->recorded_key_db_generation(), 9u);

  // A lower value (a key DB put back while the log stays open) never lowers the record.
  generation = 4;
  ASSERT_TRUE((*log)->Append(KeyEvent(3)).ok());
  ASSERT_TRUE((*log)->Close().ok());

  std::vector<uint64_t> recorded;
  for (const AuditEntry& entry : Entries(env)) {
    if (entry.kind() == v1::LOG_CHECKPOINT) {
      recorded.push_back(entry.checkpoint().key_db_generation());
    }
  }
  EXPECT_EQ(recorded, (std::vector<uint64_t>{7, 9, 9}));
  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_EQ(report.key_db_generation, 9u);
}

TEST(KeyDbGenerationTest, AReopenedLogKnowsTheNewestGenerationEvenWithoutACheckpointSince) {
  TestLogEnv env;
  std::atomic<uint64_t> generation{12};
  {
    auto log = AuditLog::Open(WithGeneration(env, &generation));
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(KeyEvent(1)).ok());
    ASSERT_TRUE((*log)->Close().ok());  // the closing checkpoint records 12
  }
  // Reopened before any key DB is wired (as the daemon opens the log first), then crashed
  // before any checkpoint: only the new LOG_EPOCH entry follows the closing checkpoint.
  {
    auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->recorded_key_db_generation(), 12u);
    ASSERT_TRUE((*log)->Append(KeyEvent(2)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  std::vector<AuditEntry> entries = Entries(env);
  ASSERT_GE(entries.size(), 2u);
  const AuditEntry& epoch = entries[entries.size() - 2];
  ASSERT_EQ(epoch.kind(), v1::LOG_EPOCH);
  EXPECT_EQ(epoch.epoch().key_db_generation(), 12u);  // carried forward

  // The next open reads back only to that epoch's start, and still knows 12; the checkpoint
  // it writes over the crashed tail (no key DB wired) records 12 too.
  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->recorded_key_db_generation(), 12u);
  entries = Entries(env);
  ASSERT_EQ(entries.back().kind(), v1::LOG_CHECKPOINT);
  EXPECT_EQ(entries.back().checkpoint().key_db_generation(), 12u);
  ASSERT_TRUE((*log)->Close().ok());
  EXPECT_EQ(Verify(env).key_db_generation, 12u);
}

TEST(KeyDbGenerationTest, AFormatOneLogStillVerifiesAndContinuesInAFormatTwoSegment) {
  TestLogEnv env;
  {
    // Without a generation source, epoch and checkpoint entries leave key_db_generation at 0,
    // which proto3 does not serialise: the entries are byte for byte what a format-1 build
    // wrote. Only the header says 2; set it back to 1, and the segment is a format-1 segment
    // (the header's version is covered by no hash).
    auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/3));
    ASSERT_TRUE(log.ok());
    for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    ASSERT_TRUE((*log)->Close().ok());
  }
  ASSERT_EQ(SegmentPaths(env.log_dir()).size(), 1u);
  const std::string first = SegmentPaths(env.log_dir()).front();
  testing::RawSegment segment = testing::ReadSegment(first);
  segment.header.format_version = 1;
  testing::WriteSegment(first, segment);
  ASSERT_EQ(testing::ReadSegment(first).header.format_version, 1u);
  const size_t format_one_frames = segment.frames.size();

  VerifyReport old = Verify(env);
  EXPECT_TRUE(old.ok()) << old.ToStatus();
  EXPECT_TRUE(old.closed_cleanly);
  EXPECT_EQ(old.key_db_generation, 0u);

  // A build with generations reopens it: nothing recorded yet, and its entries go to a new
  // segment of format 2; the format-1 segment is left exactly as it was.
  std::atomic<uint64_t> generation{3};
  {
    auto log = AuditLog::Open(WithGeneration(env, &generation));
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_FALSE((*log)->recorded_key_db_generation().has_value());
    ASSERT_TRUE((*log)->Append(KeyEvent(9)).ok());
    ASSERT_TRUE((*log)->Close().ok());
  }
  const std::vector<std::string> paths = SegmentPaths(env.log_dir());
  ASSERT_EQ(paths.size(), 2u);
  testing::RawSegment kept = testing::ReadSegment(paths[0]);
  EXPECT_EQ(kept.header.format_version, 1u);
  EXPECT_EQ(kept.frames.size(), format_one_frames);
  testing::RawSegment added = testing::ReadSegment(paths[1]);
  EXPECT_EQ(added.header.format_version, 2u);
  ASSERT_FALSE(added.frames.empty());
  EXPECT_EQ(added.frames.front().Entry().kind(), v1::LOG_EPOCH);
  EXPECT_EQ(added.frames.back().Entry().checkpoint().key_db_generation(), 3u);

  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_TRUE(report.closed_cleanly);
  EXPECT_EQ(report.key_db_generation, 3u);
  auto reopened = AuditLog::Open(env.Options());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->recorded_key_db_generation(), 3u);
  ASSERT_TRUE((*reopened)->Close().ok());
}

}  // namespace
}  // namespace coffer::kms::audit
