#include "kms/audit/audit_log.h"

#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <type_traits>

#include "crypto/hmac.h"
#include "gtest/gtest.h"
#include "kms/audit/verifier.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::kms::audit {
namespace {

using ::coffer::audit::v1::AuditEntry;
using testing::AccessEvent;
using testing::KeyEvent;
using testing::TestLogEnv;

VerifyReport Verify(TestLogEnv& env, bool with_anchors = true) {
  VerifyOptions options;
  options.public_key_pem = env.public_key_pem;
  if (with_anchors) options.anchors = env.anchors.anchors();
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

TEST(AuditLogTest, RoundTripAppendReadVerify) {
  TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok()) << log.status();
  for (uint64_t i = 0; i < 12; ++i) {
    absl::StatusOr<uint64_t> sequence = (*log)->Append(KeyEvent(i));
    ASSERT_TRUE(sequence.ok()) << sequence.status();
  }
  ASSERT_TRUE((*log)->Close().ok());

  std::vector<AuditEntry> entries = Entries(env);
  ASSERT_GE(entries.size(), 14u);
  EXPECT_EQ(entries[0].kind(), v1::LOG_EPOCH);
  EXPECT_EQ(entries[0].epoch().reason(), v1::Epoch::LOG_CREATED);
  int rotations = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    EXPECT_EQ(entries[i].sequence(), i);
    EXPECT_EQ(entries[i].time_micros(), ToUnixMicros(env.clock.Now()));
    if (entries[i].kind() != v1::KEY_ROTATE) continue;
    EXPECT_EQ(entries[i].dataset_handle(), 100u + rotations);
    EXPECT_EQ(entries[i].key_version(), 1u + rotations);
    EXPECT_EQ(entries[i].actor().admin_name(), "alice");
    EXPECT_EQ(entries[i].detail(), "rotation requested by an admin");
    ++rotations;
  }
  EXPECT_EQ(rotations, 12);
  EXPECT_EQ(entries.back().kind(), v1::LOG_CHECKPOINT);
  EXPECT_TRUE(entries.back().checkpoint().closing());

  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_TRUE(report.closed_cleanly);
  EXPECT_FALSE(report.uncovered_from.has_value());
  EXPECT_EQ(report.entries, entries.size());
  EXPECT_EQ(report.macs_verified, entries.size());
  EXPECT_GE(report.checkpoints_verified, 3u);  // every 5 entries, plus the closing one
  EXPECT_EQ(report.anchors_verified, env.anchors.anchors().size());
}

TEST(AuditLogTest, AnchorsNameEachCheckpointEntryOnceDurable) {
  TestLogEnv env;
  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/3));
  ASSERT_TRUE(log.ok());
  for (uint64_t i = 0; i < 7; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
  ASSERT_TRUE((*log)->Close().ok());
  std::vector<AuditEntry> entries = Entries(env);
  std::vector<CheckpointAnchor> anchors = env.anchors.anchors();
  std::vector<uint64_t> checkpoint_sequences;
  for (const AuditEntry& entry : entries) {
    if (entry.kind() == v1::LOG_CHECKPOINT) checkpoint_sequences.push_back(entry.sequence());
  }
  ASSERT_EQ(anchors.size(), checkpoint_sequences.size());
  for (size_t i = 0; i < anchors.size(); ++i) {
    EXPECT_EQ(anchors[i].sequence, checkpoint_sequences[i]);
    EXPECT_EQ(anchors[i].log_id, (*log)->log_id());
  }
  EXPECT_EQ((*log)->stats().checkpoints_written, anchors.size());
}

TEST(AuditLogTest, ReopenAfterCloseContinuesTheChainInANewEpoch) {
  TestLogEnv env;
  LogId first_id{};
  {
    auto log = AuditLog::Open(env.Options());
    ASSERT_TRUE(log.ok());
    first_id = (*log)->log_id();
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    ASSERT_TRUE((*log)->Close().ok());
  }
  const size_t before = Entries(env).size();
  {
    auto log = AuditLog::Open(env.Options());
    ASSERT_TRUE(log.ok()) << log.status();
    EXPECT_EQ((*log)->log_id(), first_id);
    absl::StatusOr<uint64_t> sequence = (*log)->Append(KeyEvent(9));
    ASSERT_TRUE(sequence.ok());
    EXPECT_EQ(*sequence, before + 1);  // after the new LOG_EPOCH entry
    ASSERT_TRUE((*log)->Close().ok());
  }
  std::vector<AuditEntry> entries = Entries(env);
  ASSERT_GT(entries.size(), before);
  EXPECT_EQ(entries[before].kind(), v1::LOG_EPOCH);
  EXPECT_EQ(entries[before].epoch().reason(), v1::Epoch::REOPENED_AFTER_CLEAN_CLOSE);
  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_TRUE(report.closed_cleanly);
}

TEST(AuditLogTest, ReopenAfterCrashSignsTheUncoveredTail) {
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
    ASSERT_TRUE(log.ok());
    for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  VerifyReport crashed = Verify(env);
  EXPECT_TRUE(crashed.ok());
  ASSERT_TRUE(crashed.uncovered_from.has_value());
  EXPECT_EQ(*crashed.uncovered_from, 0u);

  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
  ASSERT_TRUE(log.ok()) << log.status();
  std::vector<AuditEntry> entries = Entries(env);
  ASSERT_EQ(entries.size(), 7u);  // 0 epoch, 1-4 events, 5 epoch, 6 checkpoint
  EXPECT_EQ(entries[5].epoch().reason(), v1::Epoch::REOPENED_AFTER_CRASH);
  EXPECT_EQ(entries[6].kind(), v1::LOG_CHECKPOINT);
  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_FALSE(report.uncovered_from.has_value());
}

void AppendBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::app);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(AuditLogTest, TornFinalFrameIsTruncatedAndReported) {
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options());
    ASSERT_TRUE(log.ok());
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  const std::string path = testing::LastSegmentPath(env.log_dir());
  const auto clean_size = std::filesystem::file_size(path);
  // The first 30 bytes of a 100-byte frame reached the disk before the crash.
  std::string torn = std::string("\0\0\0\x64", 4) + std::string(26, 'x');
  AppendBytes(path, torn);

  VerifyReport before = Verify(env);
  EXPECT_TRUE(before.ok()) << before.ToStatus();
  EXPECT_EQ(before.torn_tail_bytes, torn.size());

  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->stats().torn_bytes_dropped_at_open, torn.size());
  ASSERT_TRUE((*log)->Close().ok());
  EXPECT_GT(std::filesystem::file_size(path), clean_size);
  std::vector<AuditEntry> entries = Entries(env);
  ASSERT_GE(entries.size(), 5u);
  EXPECT_EQ(entries[4].kind(), v1::LOG_EPOCH);
  EXPECT_EQ(entries[4].epoch().reason(), v1::Epoch::REOPENED_AFTER_CRASH);
  EXPECT_EQ(entries[4].epoch().torn_bytes_dropped(), torn.size());
  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();
  EXPECT_EQ(report.torn_tail_bytes, 0u);
}

TEST(AuditLogTest, ZeroFilledTailIsTreatedAsTorn) {
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options());
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Append(KeyEvent(0)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  AppendBytes(testing::LastSegmentPath(env.log_dir()), std::string(200, '\0'));
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok()) << log.status();
  EXPECT_EQ((*log)->stats().torn_bytes_dropped_at_open, 200u);
  ASSERT_TRUE((*log)->Close().ok());
  EXPECT_TRUE(Verify(env).ok());
}

TEST(AuditLogTest, DamageBeforeTheTailRefusesToOpen) {
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
    ASSERT_TRUE(log.ok());
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  const std::string path = testing::LastSegmentPath(env.log_dir());
  testing::RawSegment segment = testing::ReadSegment(path);
  AuditEntry entry = segment.frames[2].Entry();
  entry.set_dataset_handle(999);
  segment.frames[2].payload = entry.SerializeAsString();
  testing::WriteSegment(path, segment);

  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(ErrorCodeOf(log.status()), ErrorCode::kAuditLogCorrupt);
}

TEST(AuditLogTest, RehashedUnsignedTailFailsItsMacAndRefusesToOpen) {
  // An attacker without the HSM edits an entry that no checkpoint covers yet and re-hashes the
  // chain. Signing over it at the next open would launder the edit; the MAC check refuses.
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
    ASSERT_TRUE(log.ok());
    for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
    testing::SimulateCrash(*std::move(log), env.log_dir(), env.anchors);
  }
  const std::string path = testing::LastSegmentPath(env.log_dir());
  testing::RawSegment segment = testing::ReadSegment(path);
  AuditEntry entry = segment.frames[2].Entry();
  entry.set_result_code(static_cast<int>(ErrorCode::kPermissionDenied));
  segment.frames[2].payload = entry.SerializeAsString();
  testing::Rehash(segment, 2);
  testing::WriteSegment(path, segment);

  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
  ASSERT_FALSE(log.ok());
  EXPECT_EQ(ErrorCodeOf(log.status()), ErrorCode::kAuditLogCorrupt);
  EXPECT_NE(log.status().message().find("entry 2 fails its MAC"), std::string::npos)
      << log.status();
}

TEST(AuditLogTest, CheckpointsFollowTheClockWhenAnIntervalIsSet) {
  TestLogEnv env;
  AuditLogOptions options = env.Options(/*checkpoint_every_entries=*/1000);
  options.checkpoint_interval = std::chrono::seconds(60);
  auto log = AuditLog::Open(std::move(options));
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(KeyEvent(0)).ok());
  ASSERT_TRUE((*log)->CheckpointIfDue().ok());
  EXPECT_EQ((*log)->stats().checkpoints_written, 0u);
  env.clock.Advance(std::chrono::seconds(61));
  ASSERT_TRUE((*log)->CheckpointIfDue().ok());
  EXPECT_EQ((*log)->stats().checkpoints_written, 1u);
  // Nothing new since: no checkpoint however much time passes.
  env.clock.Advance(std::chrono::seconds(600));
  ASSERT_TRUE((*log)->CheckpointIfDue().ok());
  EXPECT_EQ((*log)->stats().checkpoints_written, 1u);
}

TEST(AuditLogTest, SegmentsRotateBySizeAndVerifyAcrossFiles) {
  TestLogEnv env;
  AuditLogOptions options = env.Options(/*checkpoint_every_entries=*/7);
  options.max_segment_bytes = 4096;
  auto log = AuditLog::Open(std::move(options));
  ASSERT_TRUE(log.ok());
  for (uint64_t i = 0; i < 120; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
  ASSERT_TRUE((*log)->Close().ok());
  size_t segments = 0;
  for (const auto& file : std::filesystem::directory_iterator(env.log_dir())) {
    if (ParseSegmentFileName(file.path().filename().string())) ++segments;
  }
  EXPECT_GE(segments, 3u);
  VerifyReport report = Verify(env);
  EXPECT_TRUE(report.ok()) << report.ToStatus();

  // Reopen resumes in the last segment.
  auto reopened = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/7));
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  ASSERT_TRUE((*reopened)->Append(KeyEvent(500)).ok());
  ASSERT_TRUE((*reopened)->Close().ok());
  EXPECT_TRUE(Verify(env).ok());
}

TEST(AuditLogTest, FailedWriteFailsClosedUntilReopened) {
  TestLogEnv env;
  testing::FailingFileSystem fs;
  AuditLogOptions options = env.Options();
  options.file_system = &fs;
  auto log = AuditLog::Open(options);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(KeyEvent(0)).ok());

  fs.fail_append = true;
  fs.partial_write = true;  // half the frame reaches the file, as on a full disk
  absl::StatusOr<uint64_t> failed = (*log)->Append(KeyEvent(1));
  ASSERT_FALSE(failed.ok());
  EXPECT_EQ(ErrorCodeOf(failed.status()), ErrorCode::kAuditNotDurable);
  EXPECT_TRUE((*log)->stats().failed);

  fs.fail_append = false;  // the disk has room again: still refused, no hole in the sequence
  absl::StatusOr<uint64_t> refused = (*log)->Append(KeyEvent(2));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kAuditLogClosed);
  EXPECT_EQ(ErrorCodeOf((*log)->Checkpoint()), ErrorCode::kAuditLogClosed);
  EXPECT_FALSE((*log)->Close().ok());
  log->reset();

  auto reopened = AuditLog::Open(options);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_GT((*reopened)->stats().torn_bytes_dropped_at_open, 0u);
  absl::StatusOr<uint64_t> sequence = (*reopened)->Append(KeyEvent(3));
  ASSERT_TRUE(sequence.ok());
  ASSERT_TRUE((*reopened)->Close().ok());
  std::vector<AuditEntry> entries = Entries(env);
  for (const AuditEntry& entry : entries) {
    EXPECT_NE(entry.dataset_handle(), 101u) << "the failed entry must not appear";
    EXPECT_NE(entry.dataset_handle(), 102u) << "the refused entry must not appear";
  }
  EXPECT_TRUE(Verify(env).ok());
}

// Recovery: a failed log reopens itself, in process, once kAuditReopenInterval has passed on its
// clock since the failure (or since its last attempt): while the disk still fails, the attempt
// fails and is counted; once it has room, the log continues in a new epoch, with no trace of
// the failed or the refused entries, and verifies.
TEST(AuditLogTest, AFailedLogReopensItselfWhenTheDiskRecovers) {
  TestLogEnv env;
  testing::FailingFileSystem fs;
  AuditLogOptions options = env.Options();
  options.file_system = &fs;
  auto log = AuditLog::Open(options);
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Append(KeyEvent(0)).ok());
  const uint64_t epoch = (*log)->stats().epoch;

  fs.fail_append = true;
  fs.partial_write = true;
  EXPECT_EQ(ErrorCodeOf((*log)->Append(KeyEvent(1)).status()), ErrorCode::kAuditNotDurable);
  env.clock.Advance(kAuditReopenInterval);
  // Due, but the disk still fails: the attempt fails, and the next is a full interval later.
  EXPECT_EQ(ErrorCodeOf((*log)->Append(KeyEvent(2)).status()), ErrorCode::kAuditNotDurable);
  EXPECT_EQ((*log)->stats().reopen_failures, 1u);
  EXPECT_TRUE((*log)->stats().failed);
  fs.fail_append = false;
  EXPECT_EQ(ErrorCodeOf((*log)->Append(KeyEvent(3)).status()), ErrorCode::kAuditLogClosed);

  env.clock.Advance(kAuditReopenInterval);
  absl::StatusOr<uint64_t> resumed = (*log)->Append(KeyEvent(4));
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_FALSE((*log)->stats().failed);
  EXPECT_EQ((*log)->stats().reopens, 1u);
  EXPECT_GT((*log)->stats().epoch, epoch);
  ASSERT_TRUE((*log)->Append(KeyEvent(5)).ok());
  ASSERT_TRUE((*log)->Close().ok());
  std::vector<uint64_t> handles;
  for (const AuditEntry& entry : Entries(env)) {
    if (entry.dataset_handle() != 0) handles.push_back(entry.dataset_handle());
  }
  EXPECT_EQ(handles, (std::vector<uint64_t>{100, 104, 105}));
  EXPECT_TRUE(Verify(env).ok());
}

TEST(AuditLogTest, FailedSyncFailsClosed) {
  TestLogEnv env;
  testing::FailingFileSystem fs;
  AuditLogOptions options = env.Options();
  options.file_system = &fs;
  auto log = AuditLog::Open(options);
  ASSERT_TRUE(log.ok());
  fs.fail_sync = true;
  absl::StatusOr<uint64_t> failed = (*log)->Append(KeyEvent(0));
  EXPECT_EQ(ErrorCodeOf(failed.status()), ErrorCode::kAuditNotDurable);
  fs.fail_sync = false;
  EXPECT_EQ(ErrorCodeOf((*log)->Append(KeyEvent(1)).status()), ErrorCode::kAuditLogClosed);
}

TEST(AuditLogTest, ReadOnlySegmentFailsToOpenForAppending) {
  if (geteuid() == 0) GTEST_SKIP() << "root ignores file modes; FailedWriteFailsClosed covers it";
  TestLogEnv env;
  {
    auto log = AuditLog::Open(env.Options());
    ASSERT_TRUE(log.ok());
    ASSERT_TRUE((*log)->Close().ok());
  }
  ASSERT_EQ(chmod(testing::LastSegmentPath(env.log_dir()).c_str(), 0400), 0);
  auto log = AuditLog::Open(env.Options());
  EXPECT_FALSE(log.ok());
}

TEST(AuditLogTest, ClosedLogRefusesAppends) {
  TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  ASSERT_TRUE((*log)->Close().ok());
  EXPECT_TRUE((*log)->Close().ok());  // idempotent
  EXPECT_EQ(ErrorCodeOf((*log)->Append(KeyEvent(0)).status()), ErrorCode::kAuditLogClosed);
}

class FailingSigner final : public CheckpointSigner {
 public:
  explicit FailingSigner(CheckpointSigner& inner) : inner_(inner) {}
  bool fail = false;
  absl::StatusOr<std::string> Sign(std::string_view message) override {
    if (fail) return MakeError(ErrorCode::kHsmDeviceError, "token unplugged");
    return inner_.Sign(message);
  }
  absl::StatusOr<std::string> PublicKeyPem() override { return inner_.PublicKeyPem(); }

 private:
  CheckpointSigner& inner_;
};

TEST(AuditLogTest, SignerFailureSkipsTheCheckpointButNotTheEntry) {
  TestLogEnv env;
  FailingSigner signer(*env.signer);
  AuditLogOptions options = env.Options(/*checkpoint_every_entries=*/2);
  options.signer = &signer;
  auto log = AuditLog::Open(options);
  ASSERT_TRUE(log.ok());
  signer.fail = true;
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*log)->Append(KeyEvent(i)).ok());
  EXPECT_GT((*log)->stats().checkpoint_failures, 0u);
  EXPECT_EQ((*log)->stats().checkpoints_written, 0u);
  EXPECT_FALSE((*log)->Checkpoint().ok());
  signer.fail = false;
  ASSERT_TRUE((*log)->Append(KeyEvent(4)).ok());
  EXPECT_GT((*log)->stats().checkpoints_written, 0u);
  ASSERT_TRUE((*log)->Close().ok());
  EXPECT_TRUE(Verify(env).ok());
}

TEST(AuditLogTest, RejectsEventsTheCallerMayNotWrite) {
  TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  AuditEvent forged = KeyEvent(0);
  forged.kind = v1::LOG_CHECKPOINT;
  EXPECT_EQ(ErrorCodeOf((*log)->Append(forged).status()), ErrorCode::kInvalidArgument);
  AuditEvent record_on_key_op = KeyEvent(0);
  record_on_key_op.record_count = 1;
  EXPECT_EQ(ErrorCodeOf((*log)->Append(record_on_key_op).status()), ErrorCode::kInvalidArgument);
  AuditEvent spaced_name = KeyEvent(0);
  spaced_name.actor.admin_name = "alice\nFAKE ENTRY";
  EXPECT_EQ(ErrorCodeOf((*log)->Append(spaced_name).status()), ErrorCode::kInvalidArgument);
  AuditEvent policy_without_kind = KeyEvent(0);
  policy_without_kind.policy_change = AuditPolicyChange{"retention_days", 30, 10};
  EXPECT_EQ(ErrorCodeOf((*log)->Append(policy_without_kind).status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ((*log)->stats().failed, false);
  std::vector<AuditEvent> batch = {KeyEvent(1), forged};
  EXPECT_FALSE((*log)->AppendBatch(batch).ok());
  ASSERT_TRUE((*log)->Close().ok());
  for (const AuditEntry& entry : Entries(env)) EXPECT_NE(entry.dataset_handle(), 101u);
}

// Every kind is exactly one of: the log's own, a (synchronous) key operation, an access.
TEST(AuditEventTest, EveryKindHasOneClass) {
  EXPECT_TRUE(IsKeyOperationKind(v1::CLOCK_WENT_BACKWARDS));
  EXPECT_FALSE(IsAccessKind(v1::CLOCK_WENT_BACKWARDS));
  const auto* descriptor = v1::EventKind_descriptor();
  for (int i = 0; i < descriptor->value_count(); ++i) {
    const auto kind = static_cast<v1::EventKind>(descriptor->value(i)->number());
    const bool log_own =
        kind == v1::LOG_EPOCH || kind == v1::LOG_CHECKPOINT || kind == v1::EVENT_KIND_UNSPECIFIED;
    EXPECT_EQ(int{log_own} + int{IsKeyOperationKind(kind)} + int{IsAccessKind(kind)}, 1)
        << descriptor->value(i)->name();
  }
}

// The API has no place for secrets or request data: texts are compile-time literals and a
// record is named only by a 32-byte reference.
static_assert(!std::is_constructible_v<AuditText, std::string>);
static_assert(!std::is_constructible_v<AuditText, std::string_view>);
static_assert(!std::is_assignable_v<decltype(AuditEvent::record_ref)&, std::string>);

TEST(AuditLogTest, RecordIdsNeverReachTheFilesOnlyTheirReference) {
  TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  const std::string record_id = "CUSTOMER-4711-MARKER-do-not-log";
  auto lookup_key = crypto::SecretBytes::CopyFrom(std::vector<uint8_t>(32, 0x11));
  ASSERT_TRUE(lookup_key.ok());
  auto hmac = crypto::HmacSha256::Create(*lookup_key);
  ASSERT_TRUE(hmac.ok());
  auto reference = hmac->Compute(record_id);
  ASSERT_TRUE(reference.ok());
  AuditEvent event = AccessEvent(1);
  event.record_ref = *reference;
  AuditPolicyChange change{"retention_days", 30, 10};
  AuditEvent policy = KeyEvent(2);
  policy.kind = v1::POLICY_CHANGE;
  policy.policy_change = change;
  ASSERT_TRUE((*log)->Append(event).ok());
  ASSERT_TRUE((*log)->Append(policy).ok());
  ASSERT_TRUE((*log)->Close().ok());

  std::string all_bytes;
  for (const auto& file : std::filesystem::directory_iterator(env.log_dir())) {
    std::ifstream in(file.path(), std::ios::binary);
    all_bytes.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_EQ(all_bytes.find(record_id), std::string::npos);
  EXPECT_EQ(all_bytes.find("CUSTOMER-4711"), std::string::npos);
  EXPECT_NE(all_bytes.find(std::string(AsStringView(*reference))), std::string::npos);
  EXPECT_NE(all_bytes.find("retention_days"), std::string::npos);
}

}  // namespace
}  // namespace coffer::kms::audit
