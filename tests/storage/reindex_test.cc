// Lookup rotation on a real RocksDB: every read, write, bin move and purge finds an id under
// every live lookup version, and the re-index job moves everything to the primary.
#include "storage/reindex.h"

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/purge_journal.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"
#include "storage/scrub.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using testing::kDatasetA;
using testing::RecordingJournal;

class ReindexTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    MakeStores();
  }
  void MakeStores() {
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_, 1024);
    bin_ = std::make_unique<RecycleBin>(db_.get(), &keys_, &policies_, &clock_);
  }
  void TearDown() override {
    bin_.reset();
    records_.reset();
    attachments_.reset();
    StorageTest::TearDown();
  }
  absl::Status Upload(std::string_view name, uint64_t seed, uint64_t size) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(kDatasetA, name, "text/x-test"));
    COFFER_RETURN_IF_ERROR(upload->Append(testing::PatternBytes(seed, 0, size)));
    return upload->Commit();
  }
  void ExpectContent(std::string_view name, uint64_t seed, uint64_t size) {
    auto reader = attachments_->Open(kDatasetA, name);
    ASSERT_TRUE(reader.ok()) << name << ": " << reader.status();
    EXPECT_EQ((*reader)->info().size, size);
    std::string out;
    ASSERT_TRUE((*reader)->Read(0, size, &out).ok());
    EXPECT_TRUE(out == testing::PatternBytes(seed, 0, size)) << name;
  }
  std::map<uint32_t, uint64_t> Census() {
    auto census = CountLookupVersions(db_.get(), &keys_, kDatasetA);
    EXPECT_TRUE(census.ok()) << census.status();
    return census.ok() ? *census : std::map<uint32_t, uint64_t>{};
  }
  absl::StatusOr<ReindexProgress> RunReindex(ReindexOptions options = {}) {
    ReindexJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, std::move(options));
    return job.Run();
  }
  // 40 live records, 10 binned records, 3 live attachments, 2 binned attachments.
  void Populate() {
    for (int i = 0; i < 50; ++i) {
      ASSERT_TRUE(records_->Put(kDatasetA, "id-" + std::to_string(i), absl::StrCat("v", i)).ok());
    }
    for (int i = 40; i < 50; ++i) {
      ASSERT_TRUE(records_->Delete(kDatasetA, "id-" + std::to_string(i)).ok());
    }
    for (int i = 0; i < 5; ++i) {
      ASSERT_TRUE(Upload("doc-" + std::to_string(i), i, 2500 + i).ok());
    }
    for (int i = 3; i < 5; ++i) {
      ASSERT_TRUE(attachments_->Delete(kDatasetA, "doc-" + std::to_string(i)).ok());
    }
  }
  // Everything Populate wrote reads back: live items by id, binned ones in the bin list.
  void ExpectPopulated() {
    for (int i = 0; i < 40; ++i) {
      auto value = records_->Get(kDatasetA, "id-" + std::to_string(i));
      ASSERT_TRUE(value.ok()) << i << ": " << value.status();
      EXPECT_EQ(*value, absl::StrCat("v", i));
    }
    for (int i = 40; i < 50; ++i) {
      EXPECT_FALSE(*records_->Exists(kDatasetA, "id-" + std::to_string(i)));
    }
    for (int i = 0; i < 3; ++i) ExpectContent("doc-" + std::to_string(i), i, 2500 + i);
    auto ids = records_->ListIds(kDatasetA, "", 1000);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(ids->ids.size(), 40u);
    auto listed = bin_->List(kDatasetA, "", 100);
    ASSERT_TRUE(listed.ok()) << listed.status();
    EXPECT_EQ(listed->items.size(), 12u);
  }

  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
  std::unique_ptr<RecycleBin> bin_;
};

TEST_F(ReindexTest, ReadsListsAndBinFindItemsUnderAnOlderLiveLookupVersion) {
  Populate();
  ASSERT_EQ(*keys_.Rotate(kDatasetA, KeyPurpose::kLookup), 2u);
  ExpectPopulated();
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{1, 55}}));
  auto scrub = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->findings.empty());

  // Bin restores, deletes and purges find the old-version entries.
  ASSERT_TRUE(records_->Restore(kDatasetA, "id-40").ok());
  EXPECT_EQ(*records_->Get(kDatasetA, "id-40"), "v40");
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "id-40")), ErrorCode::kNotInRecycleBin);
  ASSERT_TRUE(attachments_->Restore(kDatasetA, "doc-3").ok());
  ExpectContent("doc-3", 3, 2503);
  ASSERT_TRUE(records_->Delete(kDatasetA, "id-0").ok());
  EXPECT_FALSE(*records_->Exists(kDatasetA, "id-0"));
  ASSERT_TRUE(records_->Restore(kDatasetA, "id-0").ok());
  ASSERT_TRUE(bin_->PurgeRecord(kDatasetA, "id-1").ok());
  EXPECT_FALSE(*records_->Exists(kDatasetA, "id-1"));
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "id-1")), ErrorCode::kNotInRecycleBin);
  ASSERT_TRUE(bin_->PurgeAttachment(kDatasetA, "doc-4").ok());
  EXPECT_EQ(ErrorCodeOf(attachments_->Restore(kDatasetA, "doc-4")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{1, 53}}));
}

TEST_F(ReindexTest, WritesAfterARotationReplaceTheOldVersionEntryWithoutADuplicate) {
  ASSERT_TRUE(records_->Put(kDatasetA, "id", "old").ok());
  ASSERT_TRUE(Upload("doc", 1, 3000).ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "binned", "x").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "binned").ok());
  const size_t segments = testing::CountKeys(db_.get(), Cf::kAttachmentSegments);
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());

  ASSERT_TRUE(records_->Put(kDatasetA, "id", "new").ok());
  EXPECT_EQ(*records_->Get(kDatasetA, "id"), "new");
  ASSERT_TRUE(Upload("doc", 2, 3000).ok());
  ExpectContent("doc", 2, 3000);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecords), 1u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentPointers), 1u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), segments);  // old ones gone
  // A deletion under the new version replaces the old version's bin entry.
  ASSERT_TRUE(records_->Put(kDatasetA, "binned", "y").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "binned").ok());
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecycleBin), 1u);
  ASSERT_TRUE(records_->Restore(kDatasetA, "binned").ok());
  EXPECT_EQ(*records_->Get(kDatasetA, "binned"), "y");
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, 3}}));
}

TEST_F(ReindexTest, ReindexMovesRecordsAttachmentsAndBinEntriesThenTheOldVersionCanGo) {
  Populate();
  const size_t segments = testing::CountKeys(db_.get(), Cf::kAttachmentSegments);
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  auto progress = RunReindex();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->finished);
  EXPECT_EQ(progress->total, 55u);
  EXPECT_EQ(progress->moved, 55u);
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, 55}}));
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecords), 40u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentPointers), 3u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecycleBin), 12u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), segments);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kJobs), 0u);

  // With version 1 retired, everything still reads, restores and lists.
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  Reopen();
  MakeStores();
  ExpectPopulated();
  ASSERT_TRUE(records_->Restore(kDatasetA, "id-45").ok());
  EXPECT_EQ(*records_->Get(kDatasetA, "id-45"), "v45");
  ASSERT_TRUE(attachments_->Restore(kDatasetA, "doc-4").ok());
  ExpectContent("doc-4", 4, 2504);
  auto scrub = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->findings.empty());
  // A second run has nothing to do.
  progress = RunReindex();
  ASSERT_TRUE(progress.ok());
  EXPECT_EQ(progress->moved, 0u);
}

TEST_F(ReindexTest, RetiringTheOldVersionBeforeTheReindexLeavesEntriesTheCensusCannotOpen) {
  // Retiring the old lookup version before the re-index makes its items unreadable: the census
  // is what the key manager consults to refuse that (tests/kms/keys).
  Populate();
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  EXPECT_EQ(Census().count(1), 1u);
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  EXPECT_FALSE(CountLookupVersions(db_.get(), &keys_, kDatasetA).ok());
}

TEST_F(ReindexTest, ACancelledReindexResumesFromItsSavedCursorAfterAReopen) {
  Populate();
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  std::atomic<bool> cancel{false};
  ReindexOptions options;
  options.batch_size = 8;
  {
    ReindexJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, options);
    auto first = job.Run(&cancel, [&](const ReindexProgress&) { cancel = true; });
    EXPECT_EQ(ErrorCodeOf(first.status()), ErrorCode::kCancelled);
    auto saved = job.SavedProgress();
    ASSERT_TRUE(saved.ok());
    EXPECT_EQ(saved->done, 8u);
    EXPECT_EQ(saved->moved, 8u);
  }
  // Half-way: both versions in use, and everything reads.
  auto census = Census();
  EXPECT_EQ(census[1], 47u);
  EXPECT_EQ(census[2], 8u);
  ExpectPopulated();

  Reopen();
  MakeStores();
  ReindexJob resumed(db_.get(), &keys_, attachments_.get(), kDatasetA, options);
  auto progress = resumed.Run();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->finished);
  EXPECT_EQ(progress->moved, 55u);  // counted across the resume: nothing moved twice
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, 55}}));
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  ExpectPopulated();
}

TEST_F(ReindexTest, AClientWriteBetweenResealAndWriteWinsOverTheJobsCopy) {
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(records_->Put(kDatasetA, "id-" + std::to_string(i), "old").ok());
  }
  ASSERT_TRUE(Upload("doc", 1, 3000).ok());
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  ReindexOptions options;
  bool raced = false;
  options.before_record_write = [&] {
    if (raced) return;
    raced = true;
    // Writes, a delete and a re-put that the job's re-sealed copies must not overwrite.
    ASSERT_TRUE(records_->Put(kDatasetA, "id-3", "client").ok());
    ASSERT_TRUE(records_->Delete(kDatasetA, "id-4").ok());
    ASSERT_TRUE(records_->Delete(kDatasetA, "id-5").ok());
    ASSERT_TRUE(records_->Restore(kDatasetA, "id-5").ok());
  };
  bool replaced = false;
  options.before_attachment_flip = [&] {
    if (replaced) return;
    replaced = true;
    ASSERT_TRUE(Upload("doc", 2, 3100).ok());
  };
  auto progress = RunReindex(options);
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(raced);
  EXPECT_TRUE(replaced);
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, 21}}));
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  EXPECT_EQ(*records_->Get(kDatasetA, "id-3"), "client");
  EXPECT_FALSE(*records_->Exists(kDatasetA, "id-4"));
  EXPECT_EQ(*records_->Get(kDatasetA, "id-5"), "old");
  EXPECT_EQ(*records_->Get(kDatasetA, "id-6"), "old");
  ExpectContent("doc", 2, 3100);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecords), 19u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
}

TEST_F(ReindexTest, ConcurrentWritersNeverLoseAnAcknowledgedWrite) {
  constexpr int kIds = 200;
  for (int i = 0; i < kIds; ++i) {
    ASSERT_TRUE(records_->Put(kDatasetA, "id-" + std::to_string(i), "0").ok());
  }
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  std::atomic<bool> stop{false};
  std::vector<int> acknowledged(kIds, 0);
  std::thread writer([&] {
    for (int round = 1; !stop.load() || round < 3; ++round) {
      for (int i = 0; i < kIds; i += 7) {
        if (records_->Put(kDatasetA, "id-" + std::to_string(i), std::to_string(round)).ok()) {
          acknowledged[i] = round;
        }
      }
    }
  });
  ReindexOptions options;
  options.batch_size = 16;
  auto progress = RunReindex(options);
  stop = true;
  writer.join();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, kIds}}));
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  for (int i = 0; i < kIds; ++i) {
    auto value = records_->Get(kDatasetA, "id-" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
    EXPECT_EQ(*value, std::to_string(acknowledged[i])) << i;
  }
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecords), static_cast<size_t>(kIds));
}

TEST_F(ReindexTest, AnUploadBegunBeforeTheRotationCommitsAndIsMovedByTheReindex) {
  ASSERT_TRUE(Upload("doc", 1, 2000).ok());
  auto upload = attachments_->BeginUpload(kDatasetA, "doc", "text/x-test");
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append(testing::PatternBytes(7, 0, 2100)).ok());
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  // Written under the new version meanwhile, then replaced by the commit under the old one.
  ASSERT_TRUE(Upload("doc", 2, 2200).ok());
  ASSERT_TRUE((*upload)->Commit().ok());
  upload->reset();
  ExpectContent("doc", 7, 2100);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentPointers), 1u);
  ASSERT_TRUE(RunReindex().ok());
  EXPECT_EQ(Census(), (std::map<uint32_t, uint64_t>{{2, 1}}));
  keys_.RetireBelow(kDatasetA, KeyPurpose::kLookup, 2);
  ExpectContent("doc", 7, 2100);
}

TEST_F(ReindexTest, APurgeAfterTheReindexReplaysIntoABackupHoldingTheOldVersionsEntry) {
  // The "backup": a data DB written before the rotation, so it holds both records under lookup
  // version 1 (same keys, as a restored key DB has them).
  auto backup = DataDb::Open(dir_.Sub("backup"), options_);
  ASSERT_TRUE(backup.ok()) << backup.status();
  RecordStore backup_records(backup->get(), &keys_, &policies_, &clock_);
  for (RecordStore* store : {records_.get(), &backup_records}) {
    ASSERT_TRUE(store->Put(kDatasetA, "purged", "x").ok());
    ASSERT_TRUE(store->Put(kDatasetA, "swept", "y").ok());
    ASSERT_TRUE(store->Put(kDatasetA, "kept", "z").ok());
  }
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  ASSERT_TRUE(RunReindex().ok());  // the live copies are under version 2 now

  RecordingJournal journal;
  ASSERT_TRUE(bin_->PurgeRecord(kDatasetA, "purged", &journal).ok());
  // A sweep journals the same way: the item's own ref and the other live version's.
  RecycleBin sweeping(db_.get(), &keys_, &policies_, &clock_, &journal);
  ASSERT_TRUE(records_->Delete(kDatasetA, "swept").ok());
  DatasetPolicy policy;
  policy.recycle_bin_period = std::chrono::hours(1);
  policies_.Set(kDatasetA, policy);
  clock_.Advance(std::chrono::hours(2));
  auto swept = sweeping.PurgeExpired();
  ASSERT_TRUE(swept.ok()) << swept.status();
  EXPECT_EQ(swept->records, 1u);
  ASSERT_EQ(journal.items.size(), 2u);
  for (const PurgedItem& item : journal.items) EXPECT_EQ(item.other_refs.size(), 1u);

  // The items' own refs alone (version 2, where the live copies were) miss the backup's copies.
  std::vector<crypto::HmacSha256Tag> own;
  for (const PurgedItem& item : journal.items) own.push_back(item.ref);
  EXPECT_EQ(*RecycleBin::ReplayPurges(backup->get(), kDatasetA, PurgedItemKind::kRecord, own), 0u);
  auto replayed =
      RecycleBin::ReplayPurges(backup->get(), kDatasetA, PurgedItemKind::kRecord, journal.Refs());
  ASSERT_TRUE(replayed.ok()) << replayed.status();
  EXPECT_EQ(*replayed, 2u);
  EXPECT_FALSE(*backup_records.Exists(kDatasetA, "purged"));
  EXPECT_FALSE(*backup_records.Exists(kDatasetA, "swept"));
  EXPECT_EQ(*backup_records.Get(kDatasetA, "kept"), "z");
}

}  // namespace
}  // namespace coffer::storage
