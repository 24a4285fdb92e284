// QuotaMeter (storage/quota_meter.h) with the record and attachment stores over a real RocksDB:
// a quota is never exceeded, an overwrite at the limit is not a new record, room freed by a
// delete or purge counts from the next census (taken no more often than the clock allows), a
// quota set on a dataset that already holds data starts from a census, an upload beyond the
// storage quota fails and leaves nothing, and concurrent writers together stop exactly at it.

#include "storage/quota_meter.h"

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/record_store.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using std::chrono::seconds;
using testing::kDatasetA;
using testing::kDatasetB;

std::string Name(std::string prefix, int i) {
  prefix.append(std::to_string(i));
  return prefix;
}

class QuotaMeterTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    meter_ = std::make_unique<QuotaMeter>(db_.get(), &policies_, &clock_);
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    records_->set_quota_meter(meter_.get());
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_,
                                                     /*segment_size=*/4096);
    attachments_->set_quota_meter(meter_.get());
  }
  void TearDown() override {
    attachments_.reset();
    records_.reset();
    meter_.reset();
    StorageTest::TearDown();
  }
  void SetQuota(uint64_t handle, uint64_t records, uint64_t bytes) {
    DatasetPolicy policy;
    policy.max_records = records;
    policy.max_stored_bytes = bytes;
    policies_.Set(handle, policy);
  }
  ErrorCode PutCode(uint64_t handle, const std::string& id, const std::string& value = "v") {
    return ErrorCodeOf(records_->Put(handle, id, value));
  }
  DatasetUsage Usage(uint64_t handle) {
    auto usage = CountDatasetUsage(*db_, handle);
    EXPECT_TRUE(usage.ok()) << usage.status();
    return usage.value_or(DatasetUsage());
  }
  std::unique_ptr<QuotaMeter> meter_;
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
};

TEST_F(QuotaMeterTest, ARecordQuotaHoldsOverwritesFitAndFreedRoomCountsFromTheNextCensus) {
  SetQuota(kDatasetA, 3, 0);
  for (const char* id : {"a", "b", "c"}) ASSERT_EQ(PutCode(kDatasetA, id), ErrorCode::kOk);
  absl::Status refused = records_->Put(kDatasetA, "d", "v");
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kQuotaExceeded);
  EXPECT_NE(std::string(refused.message()).find("3 live records"), std::string::npos) << refused;
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, "d").status()), ErrorCode::kRecordNotFound);
  // An overwrite at the limit adds no record.
  EXPECT_EQ(PutCode(kDatasetA, "a", "changed"), ErrorCode::kOk);
  EXPECT_EQ(records_->Get(kDatasetA, "a").value_or(""), "changed");
  // Other datasets are not limited by it.
  EXPECT_EQ(PutCode(kDatasetB, "d"), ErrorCode::kOk);

  // A delete frees a record; the room shows only at the next census, which the meter takes no
  // sooner than its interval (5 s on its clock) after the last one.
  ASSERT_TRUE(records_->Delete(kDatasetA, "a").ok());
  EXPECT_EQ(PutCode(kDatasetA, "d"), ErrorCode::kQuotaExceeded);
  clock_.Advance(seconds(5));
  EXPECT_EQ(PutCode(kDatasetA, "d"), ErrorCode::kOk);
  // A restore from the bin is one more live record: refused at the limit.
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "a")), ErrorCode::kQuotaExceeded);
  EXPECT_EQ(Usage(kDatasetA).records, 3u);

  // Raised: the same meter admits at once (the estimate is checked against the new limit).
  SetQuota(kDatasetA, 4, 0);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, "a")), ErrorCode::kOk);
  EXPECT_EQ(Usage(kDatasetA).records, 4u);
}

TEST_F(QuotaMeterTest, AQuotaSetOnADatasetWithDataStartsFromACensus) {
  for (int i = 0; i < 10; ++i) ASSERT_EQ(PutCode(kDatasetA, Name("id", i)), ErrorCode::kOk);
  SetQuota(kDatasetA, 10, 0);
  EXPECT_EQ(PutCode(kDatasetA, "one-more"), ErrorCode::kQuotaExceeded);
  EXPECT_EQ(PutCode(kDatasetA, "id3", "overwrite"), ErrorCode::kOk);
  // Removed and set again later: counted afresh, including what was written meanwhile.
  SetQuota(kDatasetA, 0, 0);
  EXPECT_EQ(PutCode(kDatasetA, "one-more"), ErrorCode::kOk);
  SetQuota(kDatasetA, 11, 0);
  EXPECT_EQ(PutCode(kDatasetA, "and-another"), ErrorCode::kQuotaExceeded);
  EXPECT_EQ(Usage(kDatasetA).records, 11u);
}

TEST_F(QuotaMeterTest, AStorageQuotaCountsEveryByteAndAnUploadBeyondItLeavesNothing) {
  const std::string value(1000, 'x');
  for (int i = 0; i < 5; ++i) ASSERT_EQ(PutCode(kDatasetA, Name("r", i), value), ErrorCode::kOk);
  const uint64_t used = Usage(kDatasetA).stored_bytes;
  ASSERT_GT(used, 5000u);
  SetQuota(kDatasetA, 0, used + 20000);
  // An attachment of 64 KiB does not fit: the upload fails at the segment that would cross it.
  auto upload = attachments_->BeginUpload(kDatasetA, "big.pdf", "application/pdf");
  ASSERT_TRUE(upload.ok()) << upload.status();
  absl::Status appended = absl::OkStatus();
  for (int i = 0; i < 16 && appended.ok(); ++i)
    appended = (*upload)->Append(std::string(4096, 'p'));
  if (appended.ok()) appended = (*upload)->Commit();
  EXPECT_EQ(ErrorCodeOf(appended), ErrorCode::kQuotaExceeded) << appended;
  upload->reset();  // aborts
  EXPECT_EQ(ErrorCodeOf(attachments_->Metadata(kDatasetA, "big.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_LE(Usage(kDatasetA).stored_bytes, used + 20000);
  // A small one fits (once the census interval lets the aborted upload's bytes go).
  clock_.Advance(seconds(5));
  auto small = attachments_->BeginUpload(kDatasetA, "note.txt", "text/plain");
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE((*small)->Append(std::string(3000, 'n')).ok());
  ASSERT_TRUE((*small)->Commit().ok());
  EXPECT_LE(Usage(kDatasetA).stored_bytes, used + 20000);
  // Records are held to it too: a bigger value over an existing one counts only the growth.
  EXPECT_EQ(PutCode(kDatasetA, "r0", std::string(1200, 'y')), ErrorCode::kOk);
  EXPECT_EQ(PutCode(kDatasetA, "huge", std::string(30000, 'z')), ErrorCode::kQuotaExceeded);
  EXPECT_LE(Usage(kDatasetA).stored_bytes, used + 20000);
}

TEST_F(QuotaMeterTest, ConcurrentWritersStopExactlyAtTheQuota) {
  SetQuota(kDatasetA, 50, 0);
  std::atomic<int> stored{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 8; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        ErrorCode code = PutCode(kDatasetA, Name("w", t * 100 + i));
        if (code == ErrorCode::kOk) ++stored;
        if (code == ErrorCode::kQuotaExceeded) ++refused;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(stored.load(), 50);
  EXPECT_EQ(refused.load(), 160 - 50);
  EXPECT_EQ(Usage(kDatasetA).records, 50u);
}

TEST_F(QuotaMeterTest, ADatasetWithoutAQuotaIsNotLimited) {
  for (int i = 0; i < 100; ++i) ASSERT_EQ(PutCode(kDatasetA, Name("id", i)), ErrorCode::kOk);
  EXPECT_EQ(Usage(kDatasetA).records, 100u);
}

}  // namespace
}  // namespace coffer::storage
