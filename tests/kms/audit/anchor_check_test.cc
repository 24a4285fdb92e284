// Tail truncation (kms/audit/anchor_check.h, AuditLogOptions::minimum_anchor): anchors files
// parse as the journal holds them; a log cut at a frame boundary, missing its newest segment,
// missing every segment, rewritten at the anchored sequence, or another log is refused at open
// given the newest anchor — while without it the shorter log opens and would be signed over.

#include "kms/audit/anchor_check.h"

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/verifier.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::kms::audit {
namespace {

namespace fs = std::filesystem;
using testing::KeyEvent;

CheckpointAnchor Anchor(uint64_t sequence, uint8_t log_byte = 1) {
  CheckpointAnchor anchor;
  anchor.log_id.fill(log_byte);
  anchor.sequence = sequence;
  anchor.head.fill(0xab);
  anchor.time_micros = 1'800'000'000'000'000;
  return anchor;
}

TEST(AnchorCheckTest, AnAnchorsFileIsReadAsTheJournalHoldsIt) {
  const std::string text =
      "-- Journal begins --\n"
      "Jan 15 10:00:00 host cofferd-audit[42]: " +
      FormatAnchorLine(Anchor(9)) + "\n" + "\n" + FormatAnchorLine(Anchor(24)) + "\r\n" +
      "an unrelated line\n" + FormatAnchorLine(Anchor(14));  // no final newline
  auto anchors = ParseAnchorsFile(text);
  ASSERT_TRUE(anchors.ok()) << anchors.status();
  ASSERT_EQ(anchors->size(), 3u);
  EXPECT_EQ((*anchors)[0], Anchor(9));
  EXPECT_EQ(NewestAnchor(*anchors)->sequence, 24u);
  EXPECT_FALSE(NewestAnchor({}).has_value());
  EXPECT_TRUE(ParseAnchorsFile("no anchors here\n")->empty());

  // A damaged anchor line is an error naming its line, never "no anchor".
  std::string damaged = FormatAnchorLine(Anchor(30));
  damaged.replace(damaged.find("seq=30"), 6, "seq=3x");
  auto bad = ParseAnchorsFile("x\n" + FormatAnchorLine(Anchor(9)) + "\n" + damaged + "\n");
  EXPECT_EQ(ErrorCodeOf(bad.status()), ErrorCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("line 3"), std::string::npos) << bad.status();
  EXPECT_EQ(ErrorCodeOf(ReadAnchorsFile("/nonexistent/anchors").status()), ErrorCode::kNotFound);
}

TEST(AnchorCheckTest, TheNewestAnchorOfAFileOrNoneWithoutOne) {
  // No anchors file configured: no anchor, not an error.
  auto none = ReadNewestAnchor("");
  ASSERT_TRUE(none.ok()) << none.status();
  EXPECT_FALSE(none->has_value());

  const std::string path = ::testing::TempDir() + "/anchors-" + std::to_string(getpid());
  {
    std::ofstream out(path, std::ios::trunc);
    out << FormatAnchorLine(Anchor(9)) << "\n"
        << FormatAnchorLine(Anchor(24)) << "\n"
        << FormatAnchorLine(Anchor(14)) << "\n";
  }
  auto newest = ReadNewestAnchor(path);
  ASSERT_TRUE(newest.ok()) << newest.status();
  ASSERT_TRUE(newest->has_value());
  EXPECT_EQ(**newest, Anchor(24));
  {
    std::ofstream out(path, std::ios::trunc);  // an empty file: a new installation
  }
  newest = ReadNewestAnchor(path);
  ASSERT_TRUE(newest.ok()) << newest.status();
  EXPECT_FALSE(newest->has_value());
  fs::remove(path);
  // A configured file that is missing is an error, never "no anchor".
  EXPECT_EQ(ErrorCodeOf(ReadNewestAnchor(path).status()), ErrorCode::kNotFound);
}

TEST(AnchorCheckTest, ALogMustBeTheAnchorsLogAndReachIt) {
  const CheckpointAnchor anchor = Anchor(24);
  EXPECT_TRUE(CheckLogReachesAnchor({anchor.log_id, 24}, anchor).ok());
  EXPECT_TRUE(CheckLogReachesAnchor({anchor.log_id, 90}, anchor).ok());
  const absl::Status short_log = CheckLogReachesAnchor({anchor.log_id, 23}, anchor);
  EXPECT_EQ(ErrorCodeOf(short_log), ErrorCode::kAuditTampered);
  EXPECT_NE(short_log.message().find("ends at sequence 23, before the anchor at sequence 24"),
            std::string::npos)
      << short_log;
  EXPECT_EQ(ErrorCodeOf(CheckLogReachesAnchor({anchor.log_id, std::nullopt}, anchor)),
            ErrorCode::kAuditTampered);
  EXPECT_EQ(ErrorCodeOf(CheckLogReachesAnchor({Anchor(24, 2).log_id, 90}, anchor)),
            ErrorCode::kAuditTampered);
}

// A closed log with checkpoints (and so anchors) every 5 entries, in several segments.
class AnchoredOpenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto log = AuditLog::Open(Options());
    ASSERT_TRUE(log.ok()) << log.status();
    for (uint64_t i = 0; i < 120; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    ASSERT_TRUE((*log)->Close().ok());
    ASSERT_FALSE(env_.anchors.anchors().empty());
    newest_ = *NewestAnchor(env_.anchors.anchors());
  }

  AuditLogOptions Options(std::optional<CheckpointAnchor> minimum = std::nullopt) {
    AuditLogOptions options = env_.Options(/*checkpoint_every_entries=*/5);
    options.max_segment_bytes = 4096;
    options.minimum_anchor = minimum;
    return options;
  }

  std::vector<std::string> Segments() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(env_.log_dir())) {
      names.push_back(entry.path().string());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  absl::Status OpenWithAnchor() {
    auto log = AuditLog::Open(Options(newest_));
    if (!log.ok()) return log.status();
    return (*log)->Close();
  }

  testing::TestLogEnv env_;
  CheckpointAnchor newest_;
};

TEST_F(AnchoredOpenTest, AnIntactLogOpensAtItsNewestAnchor) {
  ASSERT_GE(Segments().size(), 3u);
  EXPECT_TRUE(OpenWithAnchor().ok());
  // And again, now that it has grown past the anchor.
  EXPECT_TRUE(OpenWithAnchor().ok());
}

TEST_F(AnchoredOpenTest, ATailCutAtAFrameBoundaryIsRefused) {
  const std::string last = Segments().back();
  testing::RawSegment segment = testing::ReadSegment(last);
  ASSERT_GE(segment.frames.size(), 3u);
  segment.frames.resize(segment.frames.size() - 2);  // the closing checkpoint goes with the cut
  testing::WriteSegment(last, segment);

  const absl::Status refused = OpenWithAnchor();
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kAuditTampered) << refused;
  EXPECT_NE(
      refused.message().find("before the anchor at sequence " + std::to_string(newest_.sequence)),
      std::string::npos)
      << refused;
  // Nothing was written: the same refusal again, and the verifier agrees.
  EXPECT_EQ(ErrorCodeOf(OpenWithAnchor()), ErrorCode::kAuditTampered);
  VerifyOptions verify;
  verify.public_key_pem = env_.public_key_pem;
  verify.anchors = {newest_};
  auto report = VerifyAuditLog(env_.log_dir(), verify);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->failure, AuditFailure::kTruncated) << report->ToStatus();

  // Without the anchor the cut log opens and signs a checkpoint over the shorter chain: the
  // hole the anchor closes. Then the anchored sequence holds another entry: still refused.
  auto unanchored = AuditLog::Open(Options());
  ASSERT_TRUE(unanchored.ok()) << unanchored.status();
  for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE((*unanchored)->Append(KeyEvent(i)).ok());
  ASSERT_TRUE((*unanchored)->Close().ok());
  const absl::Status rewritten = OpenWithAnchor();
  EXPECT_EQ(ErrorCodeOf(rewritten), ErrorCode::kAuditTampered) << rewritten;
  EXPECT_NE(rewritten.message().find("not the entry the newest anchor names"), std::string::npos)
      << rewritten;
}

TEST_F(AnchoredOpenTest, ADeletedNewestSegmentIsRefused) {
  const std::vector<std::string> segments = Segments();
  ASSERT_GE(segments.size(), 3u);
  ASSERT_EQ(unlink(segments.back().c_str()), 0);
  const absl::Status refused = OpenWithAnchor();
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kAuditTampered) << refused;
  EXPECT_NE(refused.message().find("newest segments deleted"), std::string::npos) << refused;
  // Without the anchor it would open.
  auto unanchored = AuditLog::Open(Options());
  EXPECT_TRUE(unanchored.ok()) << unanchored.status();
}

TEST_F(AnchoredOpenTest, ALogWithEverySegmentDeletedIsNotStartedAfresh) {
  for (const std::string& segment : Segments()) ASSERT_EQ(unlink(segment.c_str()), 0);
  const absl::Status refused = OpenWithAnchor();
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kAuditTampered) << refused;
  EXPECT_NE(refused.message().find("holds no entry"), std::string::npos) << refused;
  EXPECT_TRUE(Segments().empty()) << "a new log was created";
}

TEST_F(AnchoredOpenTest, AnotherLogsAnchorIsRefused) {
  CheckpointAnchor other = newest_;
  other.log_id[0] ^= 1;
  auto log = AuditLog::Open(Options(other));
  EXPECT_EQ(ErrorCodeOf(log.status()), ErrorCode::kAuditTampered);
}

}  // namespace
}  // namespace coffer::kms::audit
