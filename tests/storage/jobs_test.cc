// Re-encryption and scrub on a real RocksDB.
#include <atomic>
#include <random>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/internal/envelope.h"
#include "storage/record_store.h"
#include "storage/reencryption.h"
#include "storage/scrub.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using testing::kDatasetA;
using testing::kDatasetB;

ReencryptionOptions Batches(size_t batch_size) {
  ReencryptionOptions options;
  options.batch_size = batch_size;
  return options;
}

class JobsTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    MakeStores();
  }
  void MakeStores() {
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_, 1024);
  }
  void TearDown() override {
    records_.reset();
    attachments_.reset();
    StorageTest::TearDown();
  }
  std::map<uint32_t, uint64_t> RecordVersions(uint64_t handle) {
    auto census = CountKeyVersions(db_.get(), handle);
    EXPECT_TRUE(census.ok()) << census.status();
    return census.ok() ? census->records : std::map<uint32_t, uint64_t>{};
  }
  std::map<uint32_t, uint64_t> AttachmentVersions(uint64_t handle) {
    auto census = CountKeyVersions(db_.get(), handle);
    EXPECT_TRUE(census.ok()) << census.status();
    return census.ok() ? census->attachments : std::map<uint32_t, uint64_t>{};
  }
  absl::Status Upload(std::string_view name, uint64_t seed, uint64_t size) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(kDatasetA, name, "text/x-test"));
    for (uint64_t offset = 0; offset < size; offset += 3000) {
      COFFER_RETURN_IF_ERROR(upload->Append(testing::PatternBytes(
          seed, offset, static_cast<size_t>(std::min<uint64_t>(3000, size - offset)))));
    }
    return upload->Commit();
  }
  void ExpectContent(std::string_view name, uint64_t seed, uint64_t size) {
    auto reader = attachments_->Open(kDatasetA, name);
    ASSERT_TRUE(reader.ok()) << name << ": " << reader.status();
    EXPECT_EQ((*reader)->info().size, size);
    EXPECT_EQ((*reader)->info().content_type, "text/x-test");
    std::string out;
    ASSERT_TRUE((*reader)->Read(0, size, &out).ok());
    EXPECT_TRUE(out == testing::PatternBytes(seed, 0, size)) << name;
  }
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
};

TEST_F(JobsTest, ReencryptionMovesLiveAndBinnedRecordsOntoThePrimary) {
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(
        records_->Put(kDatasetA, "id-" + std::to_string(i), "value " + std::to_string(i)).ok());
  }
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(records_->Delete(kDatasetA, "id-" + std::to_string(i)).ok());
  ASSERT_TRUE(records_->Put(kDatasetB, "untouched", "v").ok());
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).value(), 2u);
  EXPECT_EQ(RecordVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{1, 300}}));

  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(64));
  std::vector<ReencryptionProgress> seen;
  auto result = job.Run(nullptr, [&](const ReencryptionProgress& p) { seen.push_back(p); });
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->finished);
  EXPECT_EQ(result->total, 300u);
  EXPECT_EQ(result->reencrypted, 300u);
  EXPECT_GE(seen.size(), 5u);  // 300 / 64 batches, then the final report
  EXPECT_EQ(RecordVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{2, 300}}));
  EXPECT_EQ(RecordVersions(kDatasetB), (std::map<uint32_t, uint64_t>{{1, 1}}));
  EXPECT_EQ(job.SavedProgress()->done, 0u);
  EXPECT_EQ(records_->Get(kDatasetA, "id-150").value(), "value 150");
  ASSERT_TRUE(records_->Restore(kDatasetA, "id-3").ok());
  EXPECT_EQ(records_->Get(kDatasetA, "id-3").value(), "value 3");
  // Running again finds nothing to do.
  EXPECT_EQ(job.Run()->reencrypted, 300u - 300u + 0u);
}

TEST_F(JobsTest, ReencryptionResumesFromItsSavedProgress) {
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(records_->Put(kDatasetA, std::to_string(i), "v").ok());
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).ok());
  std::atomic<bool> cancel{false};
  {
    ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(50));
    auto result = job.Run(&cancel, [&](const ReencryptionProgress&) { cancel = true; });
    EXPECT_EQ(ErrorCodeOf(result.status()), ErrorCode::kCancelled);
    EXPECT_EQ(job.SavedProgress()->reencrypted, 50u);
  }
  attachments_.reset();
  Reopen();  // as after a crash: only the persisted state survives
  MakeStores();
  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(50));
  auto result = job.Run();
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->reencrypted, 200u);  // 50 before the crash + 150 after, none twice
  EXPECT_EQ(RecordVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{2, 200}}));
}

// 8 writers overwrite, delete and restore 1,000 hot ids while the job runs and is stopped twice:
// every id ends in its last acknowledged state and no record is left on an old version. Restores
// move entries from the bin back into the live family while the job walks and takes its census
// (a census that walked the families at different times could miss such an entry).
TEST_F(JobsTest, WritersAndReencryptionNeverRace) {
  constexpr int kWriters = 8;
  constexpr int kIds = 1000;
  // Each writer owns the ids i with i % kWriters == w, so it knows their last acknowledged state:
  // the live value and the value waiting in the recycle bin.
  std::vector<std::optional<std::string>> expected(kIds);
  std::vector<std::optional<std::string>> binned(kIds);
  for (int i = 0; i < kIds; ++i) {
    expected[i] = "initial " + std::to_string(i);
    ASSERT_TRUE(records_->Put(kDatasetA, "hot-" + std::to_string(i), *expected[i]).ok());
    if (i % 10 == 0) {
      ASSERT_TRUE(records_->Delete(kDatasetA, "hot-" + std::to_string(i)).ok());
      binned[i] = std::move(expected[i]);
      expected[i].reset();
    }
  }
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::vector<std::thread> writers;
  writers.reserve(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      std::mt19937 random(w);
      for (uint64_t op = 0; !stop || op < 500; ++op) {
        int i = static_cast<int>(random() % (kIds / kWriters)) * kWriters + w;
        std::string id = "hot-" + std::to_string(i);
        uint32_t dice = random() % 8;
        if (dice < 2 && expected[i].has_value()) {
          if (!records_->Delete(kDatasetA, id).ok()) ++failures;
          binned[i] = std::move(expected[i]);
          expected[i].reset();
        } else if (dice == 2 && !expected[i].has_value() && binned[i].has_value()) {
          if (!records_->Restore(kDatasetA, id).ok()) ++failures;
          expected[i] = std::move(binned[i]);
          binned[i].reset();
        } else {
          std::string value = std::to_string(w);  // (GCC 12 -Wrestrict misfires on "w" + …)
          value.append(1, '/').append(std::to_string(op));
          if (!records_->Put(kDatasetA, id, value).ok()) ++failures;
          expected[i] = value;
        }
      }
    });
  }
  for (int stopped = 0; stopped < 2; ++stopped) {
    std::atomic<bool> cancel{false};
    int batches = 0;
    ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(100));
    auto result = job.Run(&cancel, [&](const ReencryptionProgress&) {
      if (++batches == 2 + stopped) cancel = true;
    });
    EXPECT_EQ(ErrorCodeOf(result.status()), ErrorCode::kCancelled);
  }
  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(100));
  auto result = job.Run();
  stop = true;
  for (std::thread& writer : writers) writer.join();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(failures.load(), 0);
  for (int i = 0; i < kIds; ++i) {
    auto got = records_->Get(kDatasetA, "hot-" + std::to_string(i));
    if (expected[i].has_value()) {
      ASSERT_TRUE(got.ok()) << i << ": " << got.status();
      EXPECT_EQ(*got, *expected[i]) << i;
    } else {
      EXPECT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound) << i;
    }
  }
  std::map<uint32_t, uint64_t> versions = RecordVersions(kDatasetA);
  EXPECT_EQ(versions.count(1), 0u) << "records left on version 1";
  // The bin holds each id's last deleted value, re-encrypted or not.
  for (int i = 0; i < kIds; ++i) {
    if (expected[i].has_value() || !binned[i].has_value()) continue;
    ASSERT_TRUE(records_->Restore(kDatasetA, "hot-" + std::to_string(i)).ok()) << i;
    EXPECT_EQ(records_->Get(kDatasetA, "hot-" + std::to_string(i)).value(), *binned[i]) << i;
  }
}

TEST_F(JobsTest, ReencryptionMovesLiveAndBinnedAttachmentsOntoThePrimary) {
  // Sizes around the 1 KiB segment: empty, one short segment, exact, one over, many.
  const std::vector<uint64_t> sizes = {0, 1, 1023, 1024, 1025, 10240, 204807};
  for (size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(Upload("att-" + std::to_string(i), i + 1, sizes[i]).ok());
  }
  ASSERT_TRUE(Upload("binned", 77, 5000).ok());
  ASSERT_TRUE(attachments_->Delete(kDatasetA, "binned").ok());
  ASSERT_TRUE(records_->Put(kDatasetA, "record", "value").ok());
  const size_t segments_before = testing::CountKeys(db_.get(), Cf::kAttachmentSegments);
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kAttachments).value(), 2u);
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).value(), 2u);
  EXPECT_EQ(AttachmentVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{1, 8}}));

  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, Batches(3));
  auto result = job.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->finished);
  EXPECT_EQ(result->total, 9u);
  EXPECT_EQ(result->reencrypted, 9u);
  EXPECT_EQ(AttachmentVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{2, 8}}));
  EXPECT_EQ(RecordVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{2, 1}}));
  // Same number of segments (the old ones were deleted with the flip), no pending uploads.
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), segments_before);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
  for (size_t i = 0; i < sizes.size(); ++i) {
    ExpectContent("att-" + std::to_string(i), i + 1, sizes[i]);
    EXPECT_EQ(attachments_->Metadata(kDatasetA, "att-" + std::to_string(i))->key_version, 2u);
  }
  ASSERT_TRUE(attachments_->Restore(kDatasetA, "binned").ok());
  ExpectContent("binned", 77, 5000);
  EXPECT_EQ(attachments_->Metadata(kDatasetA, "binned")->key_version, 2u);
  // Old keys are no longer needed: a second run finds nothing to move.
  EXPECT_EQ(job.Run()->reencrypted, 0u);
}

TEST_F(JobsTest, AttachmentReplacedDuringItsCopyKeepsTheReplacement) {
  ASSERT_TRUE(Upload("doc", 1, 51200).ok());
  ASSERT_TRUE(Upload("gone", 2, 4096).ok());
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kAttachments).ok());
  int flips = 0;
  ReencryptionOptions options = Batches(16);
  // Between the copy of the first stream (whichever name sorts first by its HMAC) and its
  // pointer flip, a client replaces "doc" and deletes "gone": the stale copy must be dropped,
  // never flipped in; "gone" is then moved from the bin.
  options.before_attachment_flip = [&] {
    if (++flips == 1) {
      ASSERT_TRUE(Upload("doc", 3, 30 * 1024 + 5).ok());
      ASSERT_TRUE(attachments_->Delete(kDatasetA, "gone").ok());
    }
  };
  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, options);
  auto result = job.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(flips, 2);  // the dropped copy, then "gone" in the bin
  EXPECT_EQ(result->reencrypted, 1u);
  ExpectContent("doc", 3, 30 * 1024 + 5);
  EXPECT_EQ(ErrorCodeOf(attachments_->Open(kDatasetA, "gone").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(AttachmentVersions(kDatasetA), (std::map<uint32_t, uint64_t>{{2, 2}}));
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
  // Exactly the segments of the two current streams: 31 + 4.
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 35u);
  ASSERT_TRUE(attachments_->Restore(kDatasetA, "gone").ok());
  ExpectContent("gone", 2, 4096);
}

TEST_F(JobsTest, ScrubReportsExactlyTheCorruptedValue) {
  AttachmentStore& attachments = *attachments_;
  for (int i = 0; i < 50; ++i) ASSERT_TRUE(records_->Put(kDatasetA, std::to_string(i), "v").ok());
  ASSERT_TRUE(records_->Delete(kDatasetA, "7").ok());
  {
    auto upload = attachments.BeginUpload(kDatasetA, "doc", "");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(testing::PatternBytes(1, 0, 5000)).ok());
    ASSERT_TRUE((*upload)->Commit().ok());
  }
  auto clean = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(clean->entries_checked, 51u);
  EXPECT_EQ(clean->segments_checked, 5u);
  EXPECT_TRUE(clean->findings.empty());

  std::string key = internal::StoredKeyFor(&keys_, kDatasetA, "23").value();
  std::string value = RawGet(Cf::kRecords, key);
  value[value.size() - 3] ^= 0x40;
  RawPut(Cf::kRecords, key, value);
  auto report = Scrub(db_.get(), &keys_, std::nullopt);
  ASSERT_TRUE(report.ok());
  ASSERT_EQ(report->findings.size(), 1u);
  EXPECT_EQ(report->findings[0].column_family, "records");
  EXPECT_EQ(report->findings[0].dataset_handle, kDatasetA);
  EXPECT_EQ(report->findings[0].code, ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(report->findings[0].key_hex.size(), 80u);

  // A segment damaged, and an entry naming a version the provider does not have.
  std::string segment_key;
  {
    ScopedIterator it = db_->NewIterator(Cf::kAttachmentSegments);
    it->SeekToFirst();
    it->Next();
    segment_key = it->key().ToString();
  }
  std::string segment = RawGet(Cf::kAttachmentSegments, segment_key);
  segment[0] ^= 1;
  RawPut(Cf::kAttachmentSegments, segment_key, segment);
  std::string other = internal::StoredKeyFor(&keys_, kDatasetA, "24").value();
  std::string entry = RawGet(Cf::kRecords, other);
  entry[internal::kEntryHeaderSize + 4] = 9;  // key version 1 → 9
  RawPut(Cf::kRecords, other, entry);
  report = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_EQ(report->findings.size(), 3u);
  std::multiset<ErrorCode> codes;
  for (const ScrubFinding& finding : report->findings) codes.insert(finding.code);
  EXPECT_EQ(codes,
            (std::multiset<ErrorCode>{ErrorCode::kCiphertextCorrupt, ErrorCode::kCiphertextCorrupt,
                                      ErrorCode::kKeyVersionNotFound}));
  EXPECT_EQ(records_->Get(kDatasetA, "0").value(), "v");  // scrub changed nothing
}

}  // namespace
}  // namespace coffer::storage
