#include "storage/attachment_store.h"

#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/internal/envelope.h"
#include "storage/internal/layout.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using testing::kDatasetA;
using testing::kDatasetB;
using testing::PatternBytes;

constexpr uint64_t kSmallSegment = 1024;  // the format's minimum: many segments, small data

class AttachmentStoreTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    store_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_);
    small_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_,
                                               static_cast<uint32_t>(kSmallSegment));
  }
  void TearDown() override {
    store_.reset();
    small_.reset();
    StorageTest::TearDown();
  }

  // Uploads `size` pattern bytes in chunks of `chunk` bytes.
  absl::Status Upload(AttachmentStore* store, uint64_t handle, std::string_view name, uint64_t size,
                      uint64_t seed, size_t chunk = 1000,
                      std::string_view type = "application/pdf") {
    COFFER_ASSIGN_OR_RETURN(auto upload, store->BeginUpload(handle, name, type));
    for (uint64_t offset = 0; offset < size; offset += chunk) {
      size_t length = static_cast<size_t>(std::min<uint64_t>(chunk, size - offset));
      COFFER_RETURN_IF_ERROR(upload->Append(PatternBytes(seed, offset, length)));
    }
    return upload->Commit();
  }

  std::string ReadAll(AttachmentStore* store, uint64_t handle, std::string_view name) {
    auto reader = store->Open(handle, name);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!reader.ok()) return {};
    std::string out;
    EXPECT_TRUE((*reader)->Read(0, (*reader)->info().size, &out).ok());
    return out;
  }

  std::string Key(uint64_t handle, std::string_view name) {
    return internal::StoredKeyFor(&keys_, handle, name).value();
  }

  std::unique_ptr<AttachmentStore> store_;
  std::unique_ptr<AttachmentStore> small_;
};

TEST_F(AttachmentStoreTest, RoundTripsAroundSegmentBoundaries) {
  const uint64_t s = crypto::kDefaultStreamSegmentSize;
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, s - 1, s, s + 1, 3 * s + 17}) {
    std::string name = "file-" + std::to_string(size);
    ASSERT_TRUE(Upload(store_.get(), kDatasetA, name, size, size, 4093).ok());
    EXPECT_EQ(ReadAll(store_.get(), kDatasetA, name), PatternBytes(size, 0, size)) << size;
    auto info = store_->Metadata(kDatasetA, name);
    ASSERT_TRUE(info.ok());
    EXPECT_EQ(info->size, size);
    EXPECT_EQ(info->content_type, "application/pdf");
    EXPECT_EQ(info->created, clock_.Now());
  }
  // Exactly one segment is one stored segment; empty is one (empty, last) segment.
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 1u + 1 + 1 + 1 + 2 + 4);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
}

TEST_F(AttachmentStoreTest, RangesAcrossSegmentBoundaries) {
  const uint64_t size = 5 * kSmallSegment + 300;
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "doc", size, 7, 777).ok());
  auto reader = small_->Open(kDatasetA, "doc");
  ASSERT_TRUE(reader.ok());
  std::string out;
  for (uint64_t offset : {uint64_t{0}, uint64_t{1}, uint64_t{kSmallSegment - 1},
                          uint64_t{kSmallSegment}, uint64_t{2 * kSmallSegment + 5}, size - 1}) {
    for (uint64_t length : {uint64_t{0}, uint64_t{1}, uint64_t{2}, uint64_t{kSmallSegment},
                            uint64_t{3 * kSmallSegment + 1}}) {
      if (offset + length > size) continue;
      ASSERT_TRUE((*reader)->Read(offset, length, &out).ok()) << offset << "+" << length;
      EXPECT_EQ(out, PatternBytes(7, offset, length)) << offset << "+" << length;
    }
  }
  EXPECT_TRUE((*reader)->Read(size, 0, &out).ok());
  EXPECT_EQ(ErrorCodeOf((*reader)->Read(size - 1, 2, &out)), ErrorCode::kRangeBeyondEnd);
  EXPECT_EQ(ErrorCodeOf((*reader)->Read(size + 1, 0, &out)), ErrorCode::kRangeBeyondEnd);
  EXPECT_EQ(ErrorCodeOf((*reader)->Read(UINT64_MAX, 2, &out)), ErrorCode::kRangeBeyondEnd);
  EXPECT_TRUE(out.empty());
}

TEST_F(AttachmentStoreTest, ReplaceIsAtomicAndReadersKeepTheirVersion) {
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "doc", 4 * kSmallSegment, 1).ok());
  auto old_reader = small_->Open(kDatasetA, "doc");
  ASSERT_TRUE(old_reader.ok());
  auto upload = small_->BeginUpload(kDatasetA, "doc", "text/plain");
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append(PatternBytes(2, 0, 2 * kSmallSegment + 1)).ok());
  // Not visible before the flip.
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "doc"), PatternBytes(1, 0, 4 * kSmallSegment));
  ASSERT_TRUE((*upload)->Commit().ok());
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "doc"), PatternBytes(2, 0, 2 * kSmallSegment + 1));
  EXPECT_EQ(small_->Metadata(kDatasetA, "doc")->content_type, "text/plain");
  // The old version's segments are gone from the live view (3 new segments remain)...
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 3u);
  // ...but a reader opened before the replace still reads the version it opened.
  std::string out;
  ASSERT_TRUE((*old_reader)->Read(0, 4 * kSmallSegment, &out).ok());
  EXPECT_EQ(out, PatternBytes(1, 0, 4 * kSmallSegment));
}

TEST_F(AttachmentStoreTest, AbortAndAbandonLeaveNothing) {
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "kept", 2 * kSmallSegment, 1).ok());
  {
    auto upload = small_->BeginUpload(kDatasetA, "kept", "");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(PatternBytes(9, 0, 5 * kSmallSegment)).ok());
    EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 1u);
    ASSERT_TRUE((*upload)->Abort().ok());
    EXPECT_EQ(ErrorCodeOf((*upload)->Append("x")), ErrorCode::kUploadClosed);
    EXPECT_EQ(ErrorCodeOf((*upload)->Commit()), ErrorCode::kUploadClosed);
  }
  {
    auto upload = small_->BeginUpload(kDatasetA, "never", "");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(PatternBytes(9, 0, 3 * kSmallSegment)).ok());
  }  // destroyed without Commit
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "kept"), PatternBytes(1, 0, 2 * kSmallSegment));
  EXPECT_EQ(ErrorCodeOf(small_->Open(kDatasetA, "never").status()), ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 2u);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
}

TEST_F(AttachmentStoreTest, ChunkAfterCommitAndOtherBadInput) {
  auto upload = small_->BeginUpload(kDatasetA, "doc", "");
  ASSERT_TRUE(upload.ok());
  ASSERT_TRUE((*upload)->Append("abc").ok());
  ASSERT_TRUE((*upload)->Commit().ok());
  EXPECT_EQ(ErrorCodeOf((*upload)->Append("more")), ErrorCode::kUploadClosed);
  EXPECT_EQ(ErrorCodeOf((*upload)->Commit()), ErrorCode::kUploadClosed);
  EXPECT_EQ(ErrorCodeOf((*upload)->Abort()), ErrorCode::kUploadClosed);
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "doc"), "abc");

  EXPECT_EQ(ErrorCodeOf(small_->BeginUpload(kDatasetA, std::string(1025, 'n'), "").status()),
            ErrorCode::kIdTooLong);
  EXPECT_EQ(ErrorCodeOf(small_->BeginUpload(kDatasetA, "doc", std::string(256, 't')).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(small_->BeginUpload(0x9999, "doc", "").status()), ErrorCode::kNotFound);
  keys_.SetDisabled(kDatasetB, true);
  EXPECT_EQ(ErrorCodeOf(small_->BeginUpload(kDatasetB, "doc", "").status()),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(small_->Open(kDatasetA, "missing").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kUploads), 0u);
}

TEST_F(AttachmentStoreTest, DeleteToTheBinAndRestore) {
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "doc", 3 * kSmallSegment, 4).ok());
  ASSERT_TRUE(small_->Delete(kDatasetA, "doc").ok());
  EXPECT_EQ(ErrorCodeOf(small_->Open(kDatasetA, "doc").status()), ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(ErrorCodeOf(small_->Delete(kDatasetA, "doc")), ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 3u);  // kept for a restore
  ASSERT_TRUE(small_->Restore(kDatasetA, "doc").ok());
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "doc"), PatternBytes(4, 0, 3 * kSmallSegment));
  // Deleting a second version drops the first version's segments with its bin entry.
  ASSERT_TRUE(small_->Delete(kDatasetA, "doc").ok());
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "doc", kSmallSegment, 5).ok());
  ASSERT_TRUE(small_->Delete(kDatasetA, "doc").ok());
  EXPECT_EQ(testing::CountKeys(db_.get(), Cf::kAttachmentSegments), 1u);
  ASSERT_TRUE(small_->Restore(kDatasetA, "doc").ok());
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, "doc"), PatternBytes(5, 0, kSmallSegment));
}

TEST_F(AttachmentStoreTest, MovedPointersAndSegmentsFail) {
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "a", 3 * kSmallSegment, 1).ok());
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "b", 3 * kSmallSegment, 2).ok());
  // The pointer of "a" copied onto "b", and onto "a" in another dataset.
  std::string pointer_a = RawGet(Cf::kAttachmentPointers, Key(kDatasetA, "a"));
  RawPut(Cf::kAttachmentPointers, Key(kDatasetA, "b"), pointer_a);
  EXPECT_EQ(ErrorCodeOf(small_->Open(kDatasetA, "b").status()), ErrorCode::kCiphertextCorrupt);
  RawPut(Cf::kAttachmentPointers, Key(kDatasetB, "a"), pointer_a);
  EXPECT_NE(ErrorCodeOf(small_->Open(kDatasetB, "a").status()), ErrorCode::kOk);
  // A record-format entry is not a pointer.
  RawPut(Cf::kRecords, Key(kDatasetA, "a"), pointer_a);
  EXPECT_NE(ErrorCodeOf(internal::OpenEntry(&keys_, Cf::kRecords, KeyPurpose::kRecords,
                                            Key(kDatasetA, "a"), pointer_a)
                            .status()),
            ErrorCode::kOk);

  // Segment 1 of "a" swapped with segment 2: the index is in the nonce.
  ASSERT_TRUE(Upload(small_.get(), kDatasetA, "c", 3 * kSmallSegment, 3).ok());
  std::vector<std::string> keys;
  {
    ScopedIterator it = db_->NewIterator(Cf::kAttachmentSegments);
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.push_back(it->key().ToString());
  }
  ASSERT_EQ(keys.size(), 9u);  // a, b and c: 3 each, grouped by upload id
  // Upload ids are random, so which group belongs to which name is unknown: swap segments 1
  // and 2 inside every group, and both readable attachments ("a" and "c") must fail.
  for (size_t group = 0; group < keys.size(); group += 3) {
    std::string seg1 = RawGet(Cf::kAttachmentSegments, keys[group + 1]);
    RawPut(Cf::kAttachmentSegments, keys[group + 1],
           RawGet(Cf::kAttachmentSegments, keys[group + 2]));
    RawPut(Cf::kAttachmentSegments, keys[group + 2], seg1);
  }
  int failures = 0;
  for (const char* name : {"a", "c"}) {
    auto reader = small_->Open(kDatasetA, name);
    if (!reader.ok()) {  // a reader that checks segments at open fails here instead
      if (ErrorCodeOf(reader.status()) == ErrorCode::kCiphertextCorrupt) ++failures;
      continue;
    }
    std::string out;
    if (ErrorCodeOf((*reader)->Read(0, 3 * kSmallSegment, &out)) == ErrorCode::kCiphertextCorrupt) {
      ++failures;
      EXPECT_TRUE(out.empty());
    }
  }
  EXPECT_EQ(failures, 2);
}

TEST_F(AttachmentStoreTest, NoPlaintextNameContentOrTypeReachesAnyFile) {
  const std::string marker = "MARKER-att-51c2e";
  std::string content;
  for (int i = 0; i < 200; ++i) content += marker + std::to_string(i);
  {
    auto upload = small_->BeginUpload(kDatasetA, marker + ".pdf", "type/" + marker);
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append(content).ok());
    ASSERT_TRUE((*upload)->Commit().ok());
  }
  {
    auto pending = small_->BeginUpload(kDatasetA, marker + "-pending", "");
    ASSERT_TRUE(pending.ok());
    ASSERT_TRUE((*pending)->Append(content).ok());
    EXPECT_TRUE(testing::FilesContaining(dir_.path(), marker).empty());
    FlushAndCompact();
    EXPECT_TRUE(testing::FilesContaining(dir_.path(), marker).empty());
  }
  EXPECT_EQ(ReadAll(small_.get(), kDatasetA, marker + ".pdf"), content);
}

TEST_F(AttachmentStoreTest, StreamsLargeAttachmentsWithBoundedMemory) {
  constexpr uint64_t kSize = 256ULL << 20;
  constexpr size_t kChunk = 1 << 20;
  std::string chunk;
  if (!testing::ResetPeakRss()) GTEST_SKIP() << "cannot reset the peak RSS here";
  size_t baseline = testing::PeakRssBytes();
  {
    auto upload = store_->BeginUpload(kDatasetA, "big", "video/mp4");
    ASSERT_TRUE(upload.ok());
    for (uint64_t offset = 0; offset < kSize; offset += kChunk) {
      chunk = PatternBytes(11, offset, kChunk);
      ASSERT_TRUE((*upload)->Append(chunk).ok());
    }
    ASSERT_TRUE((*upload)->Commit().ok());
  }
  auto reader = store_->Open(kDatasetA, "big");
  ASSERT_TRUE(reader.ok());
  ASSERT_EQ((*reader)->info().size, kSize);
  std::string out;
  for (uint64_t offset = 0; offset < kSize; offset += kChunk) {
    ASSERT_TRUE((*reader)->Read(offset, kChunk, &out).ok());
    ASSERT_EQ(out, PatternBytes(11, offset, kChunk)) << offset;
  }
  size_t growth = testing::PeakRssBytes() - baseline;
#if defined(__SANITIZE_ADDRESS__)
  (void)growth;  // ASan's quarantine keeps freed blocks resident
#else
  // Memtables (16 MiB budget here) + block cache (8 MiB) + buffers, nowhere near 256 MiB.
  EXPECT_LT(growth, size_t{96} << 20) << "peak RSS grew by " << (growth >> 20) << " MiB";
#endif
}

}  // namespace
}  // namespace coffer::storage
