#include "storage/recycle_bin.h"

#include <atomic>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/internal/envelope.h"
#include "storage/record_store.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using std::chrono::hours;
using testing::kDatasetA;
using testing::kDatasetB;
using testing::RecordingJournal;

constexpr auto kDay = hours(24);

class RecycleBinTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_, 1024);
    bin_ = std::make_unique<RecycleBin>(db_.get(), &keys_, &policies_, &clock_);
  }
  void TearDown() override {
    bin_.reset();
    attachments_.reset();
    records_.reset();
    StorageTest::TearDown();
  }
  void SetPolicy(uint64_t handle, const std::function<void(DatasetPolicy*)>& change) {
    DatasetPolicy policy = policies_.PolicyFor(handle).value();
    change(&policy);
    policies_.Set(handle, policy);
  }
  absl::Status PutAttachment(uint64_t handle, std::string_view name, size_t size) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(handle, name, ""));
    COFFER_RETURN_IF_ERROR(upload->Append(testing::PatternBytes(3, 0, size)));
    return upload->Commit();
  }
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
  std::unique_ptr<RecycleBin> bin_;
};

TEST_F(RecycleBinTest, BinEntriesExpireAfterTheDatasetsBinPeriod) {
  SetPolicy(kDatasetB, [](DatasetPolicy* p) { p->recycle_bin_period = kDay; });
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "kept", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetB, "b", "v").ok());
  ASSERT_TRUE(PutAttachment(kDatasetA, "doc", 3000).ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "a").ok());
  ASSERT_TRUE(records_->Delete(kDatasetB, "b").ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetA, "doc").ok());

  clock_.Advance(kDay);  // B's one day has passed, A's 30 days have not
  auto report = bin_->PurgeExpired();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->records, 1u);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetB, "b")), ErrorCode::kNotInRecycleBin);

  clock_.Advance(hours(24 * 29) - std::chrono::seconds(1));
  EXPECT_EQ(bin_->PurgeExpired()->records, 0u);
  clock_.Advance(std::chrono::seconds(1));
  report = bin_->PurgeExpired();
  EXPECT_EQ(report->records, 1u);
  EXPECT_EQ(report->attachments, 1u);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "a")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(attachments_->Restore(kDatasetA, "doc")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 0u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecycleBin), 0u);
  EXPECT_EQ(records_->Get(kDatasetA, "kept").value(), "v");
}

TEST_F(RecycleBinTest, ListPagesThroughRecordsThenAttachmentsWithPurgeTimes) {
  SetPolicy(kDatasetA, [](DatasetPolicy* p) { p->recycle_bin_period = kDay * 7; });
  std::set<std::string> want_records;
  for (int i = 0; i < 7; ++i) {
    std::string id = "rec-" + std::to_string(i);
    ASSERT_TRUE(records_->Put(kDatasetA, id, "v").ok());
    ASSERT_TRUE(records_->Delete(kDatasetA, id).ok());
    want_records.insert(id);
  }
  ASSERT_TRUE(records_->Put(kDatasetA, "live", "v").ok());
  const int64_t deleted_at = ToUnixMicros(clock_.Now());
  clock_.Advance(hours(1));
  ASSERT_TRUE(PutAttachment(kDatasetA, "doc1", 3000).ok());
  ASSERT_TRUE(PutAttachment(kDatasetA, "doc2", 10).ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetA, "doc1").ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetA, "doc2").ok());
  const int64_t att_deleted_at = ToUnixMicros(clock_.Now());
  ASSERT_TRUE(records_->Put(kDatasetB, "other", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetB, "other").ok());

  const int64_t week_us = std::chrono::duration_cast<std::chrono::microseconds>(kDay * 7).count();
  for (size_t page_size : {1u, 2u, 3u, 9u, 0u}) {
    std::vector<BinEntry> all;
    std::string token;
    int pages = 0;
    do {
      absl::StatusOr<BinPage> page = bin_->List(kDatasetA, token, page_size);
      ASSERT_TRUE(page.ok()) << page.status();
      if (page_size != 0) {
        ASSERT_LE(page->items.size(), page_size);
      }
      all.insert(all.end(), page->items.begin(), page->items.end());
      token = page->next_page_token;
      ASSERT_LT(++pages, 20);
    } while (!token.empty());
    ASSERT_EQ(all.size(), 9u) << page_size;
    std::set<std::string> records;
    std::set<std::string> attachments;
    for (size_t i = 0; i < all.size(); ++i) {
      const BinEntry& e = all[i];
      if (i < 7) {
        EXPECT_EQ(e.kind, BinEntry::Kind::kRecord);
        records.insert(e.id);
        EXPECT_EQ(e.deleted_micros, deleted_at);
        EXPECT_EQ(e.purge_after_micros, deleted_at + week_us);
      } else {
        EXPECT_EQ(e.kind, BinEntry::Kind::kAttachment);
        attachments.insert(e.id);
        EXPECT_EQ(e.deleted_micros, att_deleted_at);
        EXPECT_EQ(e.purge_after_micros, att_deleted_at + week_us);
      }
    }
    EXPECT_EQ(records, want_records);  // no duplicates, no gaps, no live or other-dataset items
    EXPECT_EQ(attachments, (std::set<std::string>{"doc1", "doc2"}));
  }

  // Restored items leave the list; the other dataset sees only its own bin.
  ASSERT_TRUE(records_->Restore(kDatasetA, "rec-3").ok());
  ASSERT_TRUE(attachments_->Restore(kDatasetA, "doc2").ok());
  absl::StatusOr<BinPage> page = bin_->List(kDatasetA, "", 0);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_TRUE(page->next_page_token.empty());
  ASSERT_EQ(page->items.size(), 7u);
  for (const BinEntry& e : page->items) {
    EXPECT_NE(e.id, "rec-3");
    EXPECT_NE(e.id, "doc2");
  }
  absl::StatusOr<BinPage> other = bin_->List(kDatasetB, "", 10);
  ASSERT_TRUE(other.ok()) << other.status();
  ASSERT_EQ(other->items.size(), 1u);
  EXPECT_EQ(other->items[0].id, "other");
  EXPECT_EQ(other->items[0].purge_after_micros,
            other->items[0].deleted_micros +
                std::chrono::duration_cast<std::chrono::microseconds>(kDay * 30).count());
}

TEST_F(RecycleBinTest, ListRefusesBadTokensAndSizes) {
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "a").ok());
  EXPECT_EQ(ErrorCodeOf(bin_->List(kDatasetA, "nope", 10).status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(bin_->List(kDatasetA, std::string(33, '\x09'), 10).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(bin_->List(kDatasetA, "", 10001).status()), ErrorCode::kInvalidArgument);
  absl::StatusOr<BinPage> page = bin_->List(kDatasetA, "", 10000);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->items.size(), 1u);
  // An empty bin is an empty last page.
  absl::StatusOr<BinPage> empty = bin_->List(kDatasetB, "", 5);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->items.empty());
  EXPECT_TRUE(empty->next_page_token.empty());
}

TEST_F(RecycleBinTest, LegalHoldBlocksEveryPurge) {
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "live", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "a").ok());
  SetPolicy(kDatasetA, [](DatasetPolicy* p) {
    p->legal_hold = true;
    p->max_age = kDay;
  });
  clock_.Advance(kDay * 31);
  auto report = bin_->PurgeExpired();
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->records, 0u);
  EXPECT_EQ(report->datasets_on_hold, 1u);
  EXPECT_EQ(bin_->EnforceMaxAge(kDatasetA)->records, 0u);
  EXPECT_EQ(ErrorCodeOf(bin_->EmptyBin(kDatasetA).status()), ErrorCode::kLegalHold);
  EXPECT_EQ(ErrorCodeOf(bin_->PurgeRecord(kDatasetA, "live")), ErrorCode::kLegalHold);
  EXPECT_EQ(records_->Get(kDatasetA, "live").value(), "v");
  ASSERT_TRUE(records_->Restore(kDatasetA, "a").ok());  // still there
  ASSERT_TRUE(records_->Delete(kDatasetA, "a").ok());

  SetPolicy(kDatasetA, [](DatasetPolicy* p) { p->legal_hold = false; });
  EXPECT_EQ(bin_->PurgeExpired()->records, 0u);  // "a" was deleted again just now
  // Both were written 31 days ago, beyond the one-day maximum age, binned or not.
  EXPECT_EQ(bin_->EnforceMaxAge(kDatasetA)->records, 2u);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "a")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "live").status()), ErrorCode::kRecordNotFound);
}

TEST_F(RecycleBinTest, MaxAgePurgesOnlyOldItemsLiveOrBinned) {
  SetPolicy(kDatasetA, [](DatasetPolicy* p) { p->max_age = kDay * 10; });
  ASSERT_TRUE(records_->Put(kDatasetA, "old", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "old-binned", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "old-binned").ok());
  ASSERT_TRUE(PutAttachment(kDatasetA, "old-doc", 5000).ok());
  clock_.Advance(kDay * 5);
  ASSERT_TRUE(records_->Put(kDatasetA, "young", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetB, "other", "v").ok());  // B has no max age
  clock_.Advance(kDay * 5);
  auto report = bin_->EnforceMaxAge(kDatasetA);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->records, 2u);
  EXPECT_EQ(report->attachments, 1u);
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "old").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "old-binned")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(records_->Get(kDatasetA, "young").value(), "v");
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 0u);
  EXPECT_EQ(bin_->EnforceMaxAge(kDatasetB)->records, 0u);
  EXPECT_EQ(records_->Get(kDatasetB, "other").value(), "v");
}

TEST_F(RecycleBinTest, ComplianceLockKeepsItemsFromEveryKindOfPurge) {
  SetPolicy(kDatasetA, [](DatasetPolicy* p) {
    p->min_retention = kDay * 60;
    p->max_age = kDay * 20;
  });
  ASSERT_TRUE(records_->Put(kDatasetA, "r", "v").ok());
  clock_.Advance(kDay * 30);
  EXPECT_EQ(ErrorCodeOf(records_->Delete(kDatasetA, "r")), ErrorCode::kComplianceLocked);
  EXPECT_EQ(ErrorCodeOf(bin_->PurgeRecord(kDatasetA, "r")), ErrorCode::kComplianceLocked);
  auto report = bin_->EnforceMaxAge(kDatasetA);
  EXPECT_EQ(report->records, 0u);
  EXPECT_EQ(report->compliance_locked, 1u);
  EXPECT_EQ(records_->Get(kDatasetA, "r").value(), "v");
  clock_.Advance(kDay * 30);  // 60 days since the write
  EXPECT_EQ(bin_->EnforceMaxAge(kDatasetA)->records, 1u);
}

TEST_F(RecycleBinTest, AdminPurgeAndEmptyBin) {
  ASSERT_TRUE(records_->Put(kDatasetA, "live", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "binned", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "other", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "binned").ok());
  ASSERT_TRUE(bin_->PurgeRecord(kDatasetA, "live").ok());
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "live").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(bin_->PurgeRecord(kDatasetA, "live")), ErrorCode::kRecordNotFound);
  ASSERT_TRUE(PutAttachment(kDatasetA, "doc", 2500).ok());
  ASSERT_TRUE(bin_->PurgeAttachment(kDatasetA, "doc").ok());
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 0u);
  auto report = bin_->EmptyBin(kDatasetA);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->records, 1u);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "binned")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(records_->Get(kDatasetA, "other").value(), "v");
}

// The purge must wait for an iterator that can see the data, and only then compact: after it
// returns, the ciphertext is in no live SST or WAL.
TEST_F(RecycleBinTest, PhysicalPurgeWaitsForOpenIteratorsAndLeavesNoCiphertext) {
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(records_->Put(kDatasetA, "id-" + std::to_string(i), std::string(500, 'x')).ok());
    ASSERT_TRUE(records_->Put(kDatasetB, "id-" + std::to_string(i), std::string(500, 'y')).ok());
  }
  std::string stored = internal::StoredKeyFor(&keys_, kDatasetA, "id-42").value();
  std::string value = RawGet(Cf::kRecords, stored);
  std::string ciphertext = value.substr(40, 64);  // well inside the sealed bytes
  ASSERT_FALSE(testing::FilesContaining(dir_.path(), ciphertext).empty());  // in the WAL
  ASSERT_TRUE(db_->rocks()->Flush(rocksdb::FlushOptions(), db_->cf(Cf::kRecords)).ok());
  // Also written a second time, in the WAL after the flush and in the bin.
  ASSERT_TRUE(records_->Delete(kDatasetA, "id-42").ok());

  std::optional<ScopedIterator> reader(db_->NewIterator(Cf::kRecycleBin));
  (*reader)->SeekToFirst();
  ASSERT_TRUE((*reader)->Valid());

  std::atomic<bool> done{false};
  absl::Status purged;
  std::thread purge([&] {
    purged = bin_->PurgeRecord(kDatasetA, "id-42");
    done = true;
  });
  while (db_->purges_waiting() == 0 && !done) std::this_thread::yield();
  EXPECT_FALSE(done.load()) << "the purge did not wait for the open iterator";
  EXPECT_FALSE(testing::FilesContaining(dir_.path(), ciphertext).empty());
  reader.reset();
  purge.join();
  ASSERT_TRUE(purged.ok()) << purged;
  EXPECT_TRUE(testing::FilesContaining(dir_.path(), ciphertext).empty());
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "id-42")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(records_->Get(kDatasetB, "id-42").value(), std::string(500, 'y'));
  EXPECT_EQ(records_->Get(kDatasetA, "id-41").value(), std::string(500, 'x'));
}

}  // namespace
}  // namespace coffer::storage

namespace coffer::storage {
namespace {

class RecycleBinJournalTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_, 1024);
    bin_ = std::make_unique<RecycleBin>(db_.get(), &keys_, &policies_, &clock_, &journal_);
  }
  void TearDown() override {
    bin_.reset();
    attachments_.reset();
    records_.reset();
    StorageTest::TearDown();
  }
  absl::Status PutAttachment(uint64_t handle, std::string_view name, size_t size) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(handle, name, ""));
    COFFER_RETURN_IF_ERROR(upload->Append(testing::PatternBytes(3, 0, size)));
    return upload->Commit();
  }
  crypto::HmacSha256Tag RefOf(uint64_t handle, std::string_view id) {
    std::string stored = internal::StoredKeyFor(&keys_, handle, id).value();
    crypto::HmacSha256Tag ref{};
    std::string_view mac = internal::MacOf(stored);
    std::copy(mac.begin(), mac.end(), ref.begin());
    return ref;
  }

  RecordingJournal journal_;
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
  std::unique_ptr<RecycleBin> bin_;
};

TEST_F(RecycleBinJournalTest, AFailingJournalPurgesNothing) {
  ASSERT_TRUE(records_->Put(kDatasetA, "live", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "binned", "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "binned").ok());
  ASSERT_TRUE(PutAttachment(kDatasetA, "doc", 3000).ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetA, "doc").ok());
  const size_t segments = testing::CountKeys(db_.get(), Cf::kAttachmentSegments);
  journal_.fail = true;

  EXPECT_EQ(ErrorCodeOf(bin_->PurgeRecord(kDatasetA, "live")), ErrorCode::kAuditNotDurable);
  EXPECT_EQ(ErrorCodeOf(bin_->EmptyBin(kDatasetA).status()), ErrorCode::kAuditNotDurable);
  clock_.Advance(hours(24 * 31));
  EXPECT_EQ(ErrorCodeOf(bin_->PurgeExpired().status()), ErrorCode::kAuditNotDurable);

  EXPECT_EQ(records_->Get(kDatasetA, "live").value(), "v");
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kRecycleBin), 2u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), segments);
  EXPECT_TRUE(journal_.items.empty());
  EXPECT_EQ(journal_.open, 0);
  ASSERT_TRUE(records_->Restore(kDatasetA, "binned").ok());
  EXPECT_EQ(records_->Get(kDatasetA, "binned").value(), "v");
}

TEST_F(RecycleBinJournalTest, EveryPurgeIsJournaledByItsStoredKeyAndCanBeReplayed) {
  ASSERT_TRUE(records_->Put(kDatasetA, "CUSTOMER-MARKER-1", "v").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "gone-later", "v").ok());
  ASSERT_TRUE(PutAttachment(kDatasetB, "doc", 3000).ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetB, "doc").ok());
  ASSERT_TRUE(bin_->PurgeRecord(kDatasetA, "CUSTOMER-MARKER-1").ok());
  ASSERT_TRUE(bin_->EmptyBin(kDatasetB).ok());
  ASSERT_EQ(journal_.items.size(), 2u);
  EXPECT_EQ(journal_.open, 0);
  EXPECT_EQ(journal_.items[0].dataset_handle, kDatasetA);
  EXPECT_EQ(journal_.items[0].kind, PurgedItemKind::kRecord);
  EXPECT_EQ(journal_.items[0].ref, RefOf(kDatasetA, "CUSTOMER-MARKER-1"));
  EXPECT_EQ(journal_.items[1].dataset_handle, kDatasetB);
  EXPECT_EQ(journal_.items[1].kind, PurgedItemKind::kAttachment);
  EXPECT_EQ(journal_.items[1].ref, RefOf(kDatasetB, "doc"));

  // Replay: the named items go (live and binned, segments too); unknown refs are skipped.
  ASSERT_TRUE(PutAttachment(kDatasetB, "doc", 3000).ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "gone-later").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "stays", "v").ok());
  std::vector<crypto::HmacSha256Tag> records = {RefOf(kDatasetA, "gone-later"),
                                                RefOf(kDatasetA, "never-written")};
  auto purged = RecycleBin::ReplayPurges(db_.get(), kDatasetA, PurgedItemKind::kRecord, records);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 1u);
  std::vector<crypto::HmacSha256Tag> attachments = {RefOf(kDatasetB, "doc")};
  purged = RecycleBin::ReplayPurges(db_.get(), kDatasetB, PurgedItemKind::kAttachment, attachments);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, 1u);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "gone-later")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(attachments_->Metadata(kDatasetB, "doc").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 0u);
  EXPECT_EQ(records_->Get(kDatasetA, "stays").value(), "v");
  EXPECT_EQ(journal_.items.size(), 2u);  // a replay journals nothing
}

// A restore's replay of client deletes and restores (kms/keys/full_backup.h): the stores report
// the refs the replay finds items by; a replayed delete bins the live item at the logged time
// (replacing an older binned upload, segments and all), a replayed restore brings it back, and
// a move with nothing to move is counted.
TEST_F(RecycleBinJournalTest, ReplayedDeletesAndRestoresMoveItemsByTheRefsTheStoresReport) {
  crypto::HmacSha256Tag put_ref{};
  crypto::HmacSha256Tag delete_ref{};
  crypto::HmacSha256Tag restore_ref{};
  ASSERT_TRUE(records_->Put(kDatasetA, "a", "value a", &put_ref).ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "a", &delete_ref).ok());
  ASSERT_TRUE(records_->Restore(kDatasetA, "a", &restore_ref).ok());
  EXPECT_EQ(put_ref, RefOf(kDatasetA, "a"));
  EXPECT_EQ(delete_ref, put_ref);
  EXPECT_EQ(restore_ref, put_ref);
  ASSERT_TRUE(records_->Put(kDatasetA, "b", "value b").ok());
  ASSERT_TRUE(PutAttachment(kDatasetB, "doc", 3000).ok());  // 3 segments of 1 KiB, then binned
  crypto::HmacSha256Tag doc_ref{};
  ASSERT_TRUE(attachments_->Delete(kDatasetB, "doc", &doc_ref).ok());
  EXPECT_EQ(doc_ref, RefOf(kDatasetB, "doc"));
  ASSERT_TRUE(PutAttachment(kDatasetB, "doc", 2000).ok());  // 2 segments, live
  ASSERT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 5u);

  const int64_t at = 1'700'000'000'123'456;
  const std::vector<BinMove> record_moves = {{RefOf(kDatasetA, "a"), true, at},
                                             {RefOf(kDatasetA, "b"), false, at},
                                             {RefOf(kDatasetA, "never"), true, at}};
  auto moved =
      RecycleBin::ReplayBinMoves(db_.get(), kDatasetA, PurgedItemKind::kRecord, record_moves);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->to_bin, 1u);
  EXPECT_EQ(moved->from_bin, 0u);
  EXPECT_EQ(moved->not_found, 2u);  // b is not in the bin; nothing is stored for "never"
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "a").status()), ErrorCode::kRecordNotFound);
  auto page = bin_->List(kDatasetA, "", 10);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->items.size(), 1u);
  EXPECT_EQ(page->items[0].id, "a");
  EXPECT_EQ(page->items[0].deleted_micros, at);
  EXPECT_EQ(records_->Get(kDatasetA, "b").value(), "value b");

  const std::vector<BinMove> doc_moves = {{doc_ref, true, at}};
  moved = RecycleBin::ReplayBinMoves(db_.get(), kDatasetB, PurgedItemKind::kAttachment, doc_moves);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->to_bin, 1u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 2u);  // the older upload went
  const std::vector<BinMove> back = {{doc_ref, false, at}};
  moved = RecycleBin::ReplayBinMoves(db_.get(), kDatasetB, PurgedItemKind::kAttachment, back);
  ASSERT_TRUE(moved.ok()) << moved.status();
  EXPECT_EQ(moved->from_bin, 1u);
  EXPECT_EQ(attachments_->Metadata(kDatasetB, "doc").value().size, 2000u);

  const std::vector<crypto::HmacSha256Tag> written = {RefOf(kDatasetA, "a"), RefOf(kDatasetA, "b"),
                                                      RefOf(kDatasetA, "never"),
                                                      RefOf(kDatasetA, "b")};
  auto stored = RecycleBin::CountStored(db_.get(), kDatasetA, PurgedItemKind::kRecord, written);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->distinct, 3u);       // a, b and never
  EXPECT_EQ(stored->held, 2u);           // a (binned) and b (live), each once
  EXPECT_EQ(journal_.items.size(), 0u);  // a replay journals nothing
}

}  // namespace
}  // namespace coffer::storage
