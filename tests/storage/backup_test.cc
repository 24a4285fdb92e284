// Data-DB backups (storage/backup.h) on a real RocksDB: round trip through a restore, checksum
// verification, pruning on a fake clock, purges not resurrected, no plaintext in backups,
// progress reports.
#include "storage/backup.h"

#include <filesystem>
#include <fstream>
#include <iterator>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"
#include "tests/storage/storage_test_util.h"
#include "tests/testing/progress_log.h"

namespace coffer::storage {
namespace {

using ::coffer::testing::ProgressLog;
using internal::Cf;
using testing::kDatasetA;
using testing::PatternBytes;

constexpr std::string_view kMarker = "PLAINTEXT-MARKER-7f3a";
constexpr uint64_t kMiB = uint64_t{1} << 20;

class BackupTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    MakeStores(db_.get());
    DataBackupOptions options;
    options.sync = false;
    auto opened = DataDbBackups::Open(dir_.Sub("backups"), &clock_, options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    backups_ = std::move(*opened);
  }
  void TearDown() override {
    DropStores();
    restored_.reset();
    StorageTest::TearDown();
  }
  void MakeStores(DataDb* db) {
    records_ = std::make_unique<RecordStore>(db, &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db, &keys_, &policies_, &clock_, 4096);
  }
  void DropStores() {
    records_.reset();
    attachments_.reset();
  }
  absl::Status Upload(const std::string& name, uint64_t seed, uint64_t size) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(kDatasetA, name, "text/plain"));
    COFFER_RETURN_IF_ERROR(upload->Append(PatternBytes(seed, 0, size)));
    return upload->Commit();
  }
  // Restores backup `id` into a new directory and points the stores at it.
  void RestoreAndOpen(uint32_t id, const std::string& name, const ProgressFn& progress = {}) {
    DropStores();
    restored_.reset();
    ASSERT_TRUE(backups_->RestoreInto(id, dir_.Sub(name), progress).ok());
    auto opened = DataDb::Open(dir_.Sub(name), options_);
    ASSERT_TRUE(opened.ok()) << opened.status();
    restored_ = std::move(*opened);
    MakeStores(restored_.get());
  }

  std::unique_ptr<DataDbBackups> backups_;
  std::unique_ptr<DataDb> restored_;
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
};

TEST_F(BackupTest, RoundTripThroughARestoreIntoANewDirectory) {
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(
        records_->Put(kDatasetA, "id-" + std::to_string(i), "value " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(records_->Delete(kDatasetA, "id-7").ok());
  const std::vector<uint64_t> sizes = {0, 5000, 300 * 1024 + 1};
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(Upload("att-" + std::to_string(i), i, sizes[i]).ok());
  }
  auto created = backups_->Create(db_.get(), R"({"audit_sequence":42})");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->created, clock_.Now());
  EXPECT_GT(created->size_bytes, 300u * 1024);
  auto listed = backups_->List();
  ASSERT_TRUE(listed.ok());
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].id, created->id);
  EXPECT_EQ((*listed)[0].metadata, R"({"audit_sequence":42})");
  EXPECT_EQ((*listed)[0].size_bytes, created->size_bytes);
  EXPECT_TRUE(backups_->Verify(created->id).ok());

  // The live DB is lost.
  DropStores();
  db_.reset();
  std::filesystem::remove_all(dir_.Sub("data"));
  RestoreAndOpen(created->id, "restored");
  for (int i = 0; i < 300; ++i) {
    auto got = records_->Get(kDatasetA, "id-" + std::to_string(i));
    if (i == 7) {
      EXPECT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound);
    } else {
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(*got, "value " + std::to_string(i));
    }
  }
  ASSERT_TRUE(records_->Restore(kDatasetA, "id-7").ok());
  EXPECT_EQ(records_->Get(kDatasetA, "id-7").value(), "value 7");
  for (size_t i = 0; i < sizes.size(); ++i) {
    auto reader = attachments_->Open(kDatasetA, "att-" + std::to_string(i));
    ASSERT_TRUE(reader.ok()) << reader.status();
    std::string out;
    ASSERT_TRUE((*reader)->Read(0, sizes[i], &out).ok());
    EXPECT_TRUE(out == PatternBytes(i, 0, sizes[i])) << i;
  }
  // A restore never writes over existing files.
  EXPECT_EQ(ErrorCodeOf(backups_->RestoreInto(created->id, dir_.Sub("restored"))),
            ErrorCode::kRestoreTargetNotEmpty);
  EXPECT_EQ(ErrorCodeOf(backups_->RestoreInto(created->id + 1, dir_.Sub("other"))),
            ErrorCode::kBackupNotFound);
}

TEST_F(BackupTest, VerifyDetectsACorruptedFile) {
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(records_->Put(kDatasetA, std::to_string(i), "v").ok());
  auto created = backups_->Create(db_.get(), "");
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_TRUE(backups_->Verify(created->id).ok());
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(created->id + 1)), ErrorCode::kBackupNotFound);

  // Flip one byte in the middle of the largest SST file of the backup.
  std::string victim;
  uintmax_t largest = 0;
  for (const std::string& path : testing::ListFiles(dir_.Sub("backups"))) {
    if (path.size() > 4 && path.substr(path.size() - 4) == ".sst" &&
        std::filesystem::file_size(path) > largest) {
      largest = std::filesystem::file_size(path);
      victim = path;
    }
  }
  ASSERT_FALSE(victim.empty());
  {
    std::fstream file(victim, std::ios::in | std::ios::out | std::ios::binary);
    file.seekg(static_cast<std::streamoff>(largest / 2));
    char byte = 0;
    file.read(&byte, 1);
    file.seekp(static_cast<std::streamoff>(largest / 2));
    byte = static_cast<char>(byte ^ 0x20);
    file.write(&byte, 1);
  }
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(created->id)), ErrorCode::kBackupCorrupt);
}

TEST_F(BackupTest, PruneDeletesExpiredBackupsButAlwaysKeepsTheNewest) {
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "1").ok());
  auto first = backups_->Create(db_.get(), "first");
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Advance(std::chrono::hours(24 * 10));
  ASSERT_TRUE(records_->Put(kDatasetA, "b", "2").ok());
  auto second = backups_->Create(db_.get(), "second");
  ASSERT_TRUE(second.ok());
  EXPECT_TRUE(backups_->PruneExpired()->empty());  // 10 and 0 days old

  clock_.Advance(std::chrono::hours(24 * 20));  // exactly 30 days after the first
  EXPECT_EQ(backups_->PruneExpired().value(), std::vector<uint32_t>{first->id});
  clock_.Advance(std::chrono::hours(24 * 100));  // the newest is old, but it is the newest
  EXPECT_TRUE(backups_->PruneExpired()->empty());
  auto listed = backups_->List();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].metadata, "second");
  EXPECT_TRUE(backups_->Verify(second->id).ok());  // its shared files survived the prune

  auto third = backups_->Create(db_.get(), "third");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(backups_->PruneExpired().value(), std::vector<uint32_t>{second->id});
  RestoreAndOpen(third->id, "restored");
  EXPECT_EQ(records_->Get(kDatasetA, "a").value(), "1");
  EXPECT_EQ(records_->Get(kDatasetA, "b").value(), "2");
}

TEST_F(BackupTest, DeleteRemovesOneBackupAndKeepsTheOthersWhole) {
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "1").ok());
  auto first = backups_->Create(db_.get(), "first");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(records_->Put(kDatasetA, "b", "2").ok());
  auto second = backups_->Create(db_.get(), "second");
  ASSERT_TRUE(second.ok()) << second.status();

  ASSERT_TRUE(backups_->Delete(first->id).ok());
  EXPECT_EQ(ErrorCodeOf(backups_->Delete(first->id)), ErrorCode::kBackupNotFound);
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(first->id)), ErrorCode::kBackupNotFound);
  ASSERT_EQ(backups_->List()->size(), 1u);
  EXPECT_TRUE(backups_->Verify(second->id).ok());  // shared files it needs survived
  RestoreAndOpen(second->id, "restored");
  EXPECT_EQ(records_->Get(kDatasetA, "a").value(), "1");
  EXPECT_EQ(records_->Get(kDatasetA, "b").value(), "2");
}

TEST_F(BackupTest, PurgedRecordIsAbsentFromABackupTakenAfterThePurge) {
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(records_->Put(kDatasetA, std::to_string(i), "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "doomed", "doomed value").ok());
  ASSERT_TRUE(Upload("doomed.pdf", 9, 20000).ok());
  auto before = backups_->Create(db_.get(), "before");
  ASSERT_TRUE(before.ok()) << before.status();
  RecycleBin bin(db_.get(), &keys_, &policies_, &clock_);
  ASSERT_TRUE(records_->Delete(kDatasetA, "doomed").ok());
  ASSERT_TRUE(bin.PurgeRecord(kDatasetA, "doomed").ok());
  ASSERT_TRUE(bin.PurgeAttachment(kDatasetA, "doomed.pdf").ok());
  auto after = backups_->Create(db_.get(), "after");
  ASSERT_TRUE(after.ok()) << after.status();

  RestoreAndOpen(after->id, "after");
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "doomed").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "doomed")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(attachments_->Open(kDatasetA, "doomed.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(testing::CountKeys(restored_.get(), Cf::kRecords), 50u);
  EXPECT_EQ(testing::CountKeys(restored_.get(), Cf::kRecycleBin), 0u);
  EXPECT_EQ(testing::CountKeys(restored_.get(), Cf::kAttachmentSegments), 0u);
  EXPECT_EQ(records_->Get(kDatasetA, "7").value(), "v");

  // The older backup still holds it (it leaves backups when they are pruned): the check above
  // can tell the difference.
  RestoreAndOpen(before->id, "before");
  EXPECT_EQ(records_->Get(kDatasetA, "doomed").value(), "doomed value");
}

TEST_F(BackupTest, BackupFilesHoldNoPlaintext) {
  const std::string marker(kMarker);
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        records_->Put(kDatasetA, marker + "-id-" + std::to_string(i), marker + " value").ok());
  }
  {
    auto upload = attachments_->BeginUpload(kDatasetA, marker + ".txt", "text/" + marker);
    ASSERT_TRUE(upload.ok());
    for (int i = 0; i < 200; ++i) ASSERT_TRUE((*upload)->Append(marker + " attachment ").ok());
    ASSERT_TRUE((*upload)->Commit().ok());
  }
  ASSERT_TRUE(records_->Delete(kDatasetA, marker + "-id-3").ok());
  auto created = backups_->Create(db_.get(), "{}");
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_FALSE(testing::ListFiles(dir_.Sub("backups")).empty());
  EXPECT_EQ(testing::FilesContaining(dir_.Sub("backups"), kMarker), std::vector<std::string>{});
  // The scanner does see the marker where it is in the clear (the scan can fail).
  std::ofstream(dir_.Sub("backups") + "/probe.txt") << marker;
  EXPECT_EQ(testing::FilesContaining(dir_.Sub("backups"), kMarker).size(), 1u);
}

// Create, Verify and RestoreInto each report one phase, "data", in bytes: from 0 to the total
// (Create's an estimate, Verify's and RestoreInto's the backup's size), with reports along the
// way but not more than about one per MiB.
TEST_F(BackupTest, CreateVerifyAndRestoreReportTheDataPhaseInBytes) {
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(Upload("big-" + std::to_string(i), i, 2 * kMiB).ok());
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(records_->Put(kDatasetA, std::to_string(i), "v").ok());

  ProgressLog create_log;
  auto created = backups_->Create(db_.get(), "", create_log.Function());
  ASSERT_TRUE(created.ok()) << created.status();
  ProgressLog verify_log;
  ASSERT_TRUE(backups_->Verify(created->id, verify_log.Function()).ok());
  ProgressLog restore_log;
  RestoreAndOpen(created->id, "restored", restore_log.Function());
  EXPECT_EQ(records_->Get(kDatasetA, "7").value(), "v");

  for (const ProgressLog* log : {&create_log, &verify_log, &restore_log}) {
    EXPECT_TRUE(log->KeepsTheContract());
    EXPECT_EQ(log->Phases(), std::vector<std::string>{"data"});
    const std::vector<Progress> reports = log->Of("data");
    ASSERT_GE(reports.size(), 3u);  // the start, at least one step, the end
    EXPECT_EQ(reports.front().done, 0u);
    EXPECT_GT(reports.front().total, 6 * kMiB);
    EXPECT_LE(reports.size(), reports.front().total / kMiB + 2);  // throttled
  }
  EXPECT_EQ(verify_log.reports().back().total, created->size_bytes);
  EXPECT_EQ(restore_log.reports().back().total, created->size_bytes);
}

TEST_F(BackupTest, AnEmptyProgressFunctionIsNoReports) {
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "1").ok());
  auto created = backups_->Create(db_.get(), "", ProgressFn());
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(backups_->Verify(created->id, ProgressFn()).ok());
  RestoreAndOpen(created->id, "restored", ProgressFn());
  EXPECT_EQ(records_->Get(kDatasetA, "a").value(), "1");
}

// A failed operation leaves its phase unfinished: no report claims done == total.
TEST_F(BackupTest, AFailedVerificationDoesNotReportTheEnd) {
  ASSERT_TRUE(Upload("big", 1, 3 * kMiB).ok());
  auto created = backups_->Create(db_.get(), "");
  ASSERT_TRUE(created.ok()) << created.status();
  for (const std::string& path : testing::ListFiles(dir_.Sub("backups"))) {
    if (path.ends_with(".sst")) std::filesystem::resize_file(path, 100);
  }
  ProgressLog log;
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(created->id, log.Function())), ErrorCode::kBackupCorrupt);
  ASSERT_FALSE(log.reports().empty());
  EXPECT_EQ(log.reports().front().done, 0u);
  EXPECT_LT(log.reports().back().done, log.reports().back().total);
}

}  // namespace
}  // namespace coffer::storage
