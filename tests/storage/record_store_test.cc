#include "storage/record_store.h"

#include <set>
#include <string>

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

class RecordStoreTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    store_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
  }
  void Reopen() {
    store_.reset();
    StorageTest::Reopen();
    store_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
  }
  std::string Key(uint64_t handle, std::string_view id) {
    auto key = internal::StoredKeyFor(&keys_, handle, id);
    EXPECT_TRUE(key.ok());
    return *key;
  }
  ErrorCode GetCode(uint64_t handle, std::string_view id) {
    return ErrorCodeOf(store_->Get(handle, id).status());
  }
  std::unique_ptr<RecordStore> store_;
};

TEST_F(RecordStoreTest, RoundTripsValuesOfEverySize) {
  for (size_t size : {size_t{0}, size_t{1}, size_t{1024}, options_.max_value_bytes}) {
    std::string id = "customer-" + std::to_string(size);
    std::string value(size, 'v');
    for (size_t i = 0; i < size; ++i) value[i] = static_cast<char>(i * 7);
    ASSERT_TRUE(store_->Put(kDatasetA, id, value).ok());
    auto got = store_->Get(kDatasetA, id);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(*got, value);
  }
  Reopen();  // from the WAL
  EXPECT_EQ(store_->Get(kDatasetA, "customer-1").value().size(), 1u);
}

TEST_F(RecordStoreTest, ReplaceKeepsTheLastValueAndDatasetsAreSeparate) {
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "first").ok());
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "second").ok());
  ASSERT_TRUE(store_->Put(kDatasetB, "id", "other").ok());
  EXPECT_EQ(store_->Get(kDatasetA, "id").value(), "second");
  EXPECT_EQ(store_->Get(kDatasetB, "id").value(), "other");
  EXPECT_EQ(GetCode(kDatasetA, "missing"), ErrorCode::kRecordNotFound);
  EXPECT_TRUE(store_->Exists(kDatasetA, "id").value());
  EXPECT_FALSE(store_->Exists(kDatasetA, "missing").value());
}

TEST_F(RecordStoreTest, ReadsOlderVersionsAfterRotationAndWritesTheNewPrimary) {
  ASSERT_TRUE(store_->Put(kDatasetA, "old", "under v1").ok());
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).value(), 2u);
  ASSERT_TRUE(store_->Put(kDatasetA, "new", "under v2").ok());
  EXPECT_EQ(store_->Get(kDatasetA, "old").value(), "under v1");
  EXPECT_EQ(store_->Get(kDatasetA, "new").value(), "under v2");
  EXPECT_EQ(
      internal::EntryKeyVersion(Cf::kRecords, RawGet(Cf::kRecords, Key(kDatasetA, "old"))).value(),
      1u);
  EXPECT_EQ(
      internal::EntryKeyVersion(Cf::kRecords, RawGet(Cf::kRecords, Key(kDatasetA, "new"))).value(),
      2u);
  EXPECT_EQ(keys_.Encryptions(kDatasetA, KeyPurpose::kRecords, 2), 1u);
}

// GetMany answers each id exactly as Get does, in order: values under older key versions, ids
// still under an older lookup version (MultiGet misses them; Get's own path finds them),
// missing, repeated, too long and damaged ids.
TEST_F(RecordStoreTest, GetManyAnswersEachIdAsGetDoesInOrder) {
  ASSERT_TRUE(store_->Put(kDatasetA, "alice", "under v1").ok());
  ASSERT_TRUE(store_->Put(kDatasetA, "bob", "bob's record").ok());
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).value(), 2u);
  ASSERT_EQ(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).value(), 2u);  // alice, bob: lookup v1
  ASSERT_TRUE(store_->Put(kDatasetA, "carol", "under v2").ok());
  ASSERT_TRUE(store_->Put(kDatasetB, "dave", "another dataset").ok());
  // Damaged: carol's entry copied over a new id's place.
  RawPut(Cf::kRecords, Key(kDatasetA, "erin"), RawGet(Cf::kRecords, Key(kDatasetA, "carol")));

  const std::string too_long(1025, 'x');
  const std::vector<std::string_view> ids = {"carol", "alice",  "missing", "dave",
                                             "erin",  too_long, "bob",     "carol"};
  std::vector<absl::StatusOr<std::string>> got = store_->GetMany(kDatasetA, ids);
  ASSERT_EQ(got.size(), ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StatusOr<std::string> single = store_->Get(kDatasetA, ids[i]);
    EXPECT_EQ(ErrorCodeOf(got[i].status()), ErrorCodeOf(single.status())) << i;
    if (single.ok() && got[i].ok()) {
      EXPECT_EQ(*got[i], *single) << i;
    }
  }
  EXPECT_EQ(got[0].value_or(""), "under v2");
  EXPECT_EQ(got[1].value_or(""), "under v1");
  EXPECT_EQ(ErrorCodeOf(got[2].status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(got[3].status()), ErrorCode::kRecordNotFound);  // B's, not A's
  EXPECT_EQ(ErrorCodeOf(got[4].status()), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(got[5].status()), ErrorCode::kIdTooLong);
  EXPECT_EQ(got[6].value_or(""), "bob's record");
  EXPECT_EQ(got[7].value_or(""), "under v2");
  EXPECT_TRUE(store_->GetMany(kDatasetA, {}).empty());
}

TEST_F(RecordStoreTest, ListsIdsPageByPage) {
  std::set<std::string> expected;
  for (int i = 0; i < 25; ++i) {
    std::string id = "id-" + std::to_string(i);
    ASSERT_TRUE(store_->Put(kDatasetA, id, "x").ok());
    expected.insert(id);
  }
  ASSERT_TRUE(store_->Put(kDatasetB, "elsewhere", "x").ok());
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->ListIds(kDatasetA, token, 7);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->ids.size(), 7u);
    for (const std::string& id : page->ids) EXPECT_TRUE(seen.insert(id).second) << "repeated";
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(pages, 4);
  EXPECT_EQ(ErrorCodeOf(store_->ListIds(kDatasetA, "short", 7).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_TRUE(store_->ListIds(0x7777, "", 7).status().code() == absl::StatusCode::kNotFound);
}

// A ciphertext moved at the RocksDB level — to another id, dataset, purpose or column family —
// must fail, never return the other record's value.
TEST_F(RecordStoreTest, RelocatedValuesFailToOpen) {
  ASSERT_TRUE(store_->Put(kDatasetA, "alice", "alice's record").ok());
  ASSERT_TRUE(store_->Put(kDatasetA, "bob", "bob's record").ok());
  ASSERT_TRUE(store_->Put(kDatasetB, "alice", "B's alice").ok());
  std::string alice_a = RawGet(Cf::kRecords, Key(kDatasetA, "alice"));

  // Another id of the same dataset.
  RawPut(Cf::kRecords, Key(kDatasetA, "bob"), alice_a);
  EXPECT_EQ(GetCode(kDatasetA, "bob"), ErrorCode::kCiphertextCorrupt);
  // Another dataset (same id, same key version numbers).
  RawPut(Cf::kRecords, Key(kDatasetB, "alice"), alice_a);
  EXPECT_NE(GetCode(kDatasetB, "alice"), ErrorCode::kOk);
  // A fresh id (no record there before).
  RawPut(Cf::kRecords, Key(kDatasetA, "carol"), alice_a);
  EXPECT_EQ(GetCode(kDatasetA, "carol"), ErrorCode::kCiphertextCorrupt);

  // Another purpose: the same plaintext sealed under the attachments key, stored as a record.
  std::string stored = Key(kDatasetA, "dave");
  auto wrong_purpose = internal::SealEntry(&keys_, Cf::kRecords, KeyPurpose::kAttachments, stored,
                                           0, {}, "dave", "value");
  ASSERT_TRUE(wrong_purpose.ok());
  RawPut(Cf::kRecords, stored, *wrong_purpose);
  EXPECT_EQ(GetCode(kDatasetA, "dave"), ErrorCode::kCiphertextCorrupt);

  // Another column family: sealed for the attachment pointers, stored as a record.
  auto wrong_cf = internal::SealEntry(&keys_, Cf::kAttachmentPointers, KeyPurpose::kRecords, stored,
                                      0, {}, "dave", "value");
  ASSERT_TRUE(wrong_cf.ok());
  RawPut(Cf::kRecords, stored, *wrong_cf);
  EXPECT_EQ(GetCode(kDatasetA, "dave"), ErrorCode::kCiphertextCorrupt);
  // The record moved into the recycle bin's column family is not a bin entry.
  RawPut(Cf::kRecycleBin, internal::BinKey(Cf::kRecords, Key(kDatasetA, "alice")), alice_a);
  ASSERT_TRUE(store_->Delete(kDatasetA, "alice").ok());  // overwrites the forged entry
  ASSERT_TRUE(store_->Restore(kDatasetA, "alice").ok());
  EXPECT_EQ(store_->Get(kDatasetA, "alice").value(), "alice's record");
}

// An entry whose tag is valid for its stored key but which seals another id (a lookup-key
// mix-up, or a writer holding the data key) fails the id check, on the get path and in the
// generic open used by listing and jobs.
TEST_F(RecordStoreTest, AnEntrySealingAnotherIdFailsTheIdCheck) {
  const std::string stored = Key(kDatasetA, "erin");
  for (std::string_view other : {"mallory", "erim", "erin-", ""}) {
    auto forged = internal::SealEntry(&keys_, Cf::kRecords, KeyPurpose::kRecords, stored, 0, {},
                                      other, "value");
    ASSERT_TRUE(forged.ok());
    RawPut(Cf::kRecords, stored, *forged);
    EXPECT_EQ(GetCode(kDatasetA, "erin"), ErrorCode::kCiphertextCorrupt) << other;
    EXPECT_EQ(
        ErrorCodeOf(internal::OpenEntry(&keys_, Cf::kRecords, KeyPurpose::kRecords, stored, *forged)
                        .status()),
        ErrorCode::kCiphertextCorrupt)
        << other;
  }
  auto genuine = internal::SealEntry(&keys_, Cf::kRecords, KeyPurpose::kRecords, stored, 0, {},
                                     "erin", "value");
  ASSERT_TRUE(genuine.ok());
  RawPut(Cf::kRecords, stored, *genuine);
  EXPECT_EQ(store_->Get(kDatasetA, "erin").value(), "value");
}

TEST_F(RecordStoreTest, EveryAlteredByteOfAStoredValueIsDetected) {
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "some value").ok());
  std::string key = Key(kDatasetA, "id");
  std::string good = RawGet(Cf::kRecords, key);
  for (size_t i = 0; i < good.size(); ++i) {
    std::string bad = good;
    bad[i] = static_cast<char>(bad[i] ^ 0x01);
    RawPut(Cf::kRecords, key, bad);
    ErrorCode code = GetCode(kDatasetA, "id");
    EXPECT_TRUE(
        code == ErrorCode::kCiphertextCorrupt || code == ErrorCode::kUnsupportedFormat ||
        code == ErrorCode::kKeyVersionNotFound)  // a flipped version byte names a missing version
        << "byte " << i << ": " << static_cast<int>(code);
  }
  RawPut(Cf::kRecords, key, good.substr(0, good.size() - 1));
  EXPECT_EQ(GetCode(kDatasetA, "id"), ErrorCode::kCiphertextCorrupt);
  RawPut(Cf::kRecords, key, good);
  EXPECT_EQ(store_->Get(kDatasetA, "id").value(), "some value");
}

TEST_F(RecordStoreTest, NoPlaintextReachesAnyFile) {
  const std::string marker = "MARKER-7f3a9c-plaintext";
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(store_
                    ->Put(kDatasetA, marker + "-id-" + std::to_string(i),
                          "value " + marker + " " + std::to_string(i))
                    .ok());
  }
  ASSERT_TRUE(store_->Delete(kDatasetA, marker + "-id-3").ok());  // a bin entry too
  // In the WAL only.
  EXPECT_TRUE(testing::FilesContaining(dir_.path(), marker).empty());
  FlushAndCompact();
  std::vector<std::string> files = testing::ListFiles(dir_.path());
  bool has_sst = false;
  for (const std::string& file : files) has_sst |= file.ends_with(".sst");
  ASSERT_TRUE(has_sst);
  EXPECT_TRUE(testing::FilesContaining(dir_.path(), marker).empty());
  // The scanner itself finds what is there: the ciphertext of a value.
  std::string stored = RawGet(Cf::kRecords, Key(kDatasetA, marker + "-id-7"));
  EXPECT_FALSE(testing::FilesContaining(dir_.path(), stored.substr(20, 24)).empty());
}

TEST_F(RecordStoreTest, BadInputFailsWithStableCodesAndWritesNothing) {
  EXPECT_EQ(ErrorCodeOf(store_->Put(kDatasetA, std::string(1025, 'i'), "v")),
            ErrorCode::kIdTooLong);
  EXPECT_TRUE(store_->Put(kDatasetA, std::string(1024, 'i'), "v").ok());
  EXPECT_EQ(ErrorCodeOf(store_->Put(kDatasetA, "", "v")), ErrorCode::kInvalidArgument);
  EXPECT_EQ(
      ErrorCodeOf(store_->Put(kDatasetA, "big", std::string(options_.max_value_bytes + 1, 'v'))),
      ErrorCode::kValueTooLarge);
  EXPECT_FALSE(store_->Exists(kDatasetA, "big").value());
  EXPECT_EQ(ErrorCodeOf(store_->Put(0x9999, "id", "v")), ErrorCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(store_->Get(0x9999, "id").status()), ErrorCode::kNotFound);

  ASSERT_TRUE(store_->Put(kDatasetB, "id", "v").ok());
  keys_.SetDisabled(kDatasetB, true);
  EXPECT_EQ(ErrorCodeOf(store_->Put(kDatasetB, "id", "w")), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(GetCode(kDatasetB, "id"), ErrorCode::kFailedPrecondition);
  keys_.SetDisabled(kDatasetB, false);
  EXPECT_EQ(store_->Get(kDatasetB, "id").value(), "v");
  keys_.Destroy(kDatasetB);
  EXPECT_EQ(GetCode(kDatasetB, "id"), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(ErrorCodeOf(store_->Put(kDatasetB, "id", "w")), ErrorCode::kKeyDestroyed);
}

TEST_F(RecordStoreTest, DeleteMovesToTheBinAndRestoreBringsItBack) {
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "value").ok());
  ASSERT_TRUE(store_->Delete(kDatasetA, "id").ok());
  EXPECT_EQ(GetCode(kDatasetA, "id"), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(store_->Delete(kDatasetA, "id")), ErrorCode::kRecordNotFound);
  EXPECT_TRUE(store_->ListIds(kDatasetA, "", 10).value().ids.empty());
  ASSERT_TRUE(store_->Restore(kDatasetA, "id").ok());
  EXPECT_EQ(store_->Get(kDatasetA, "id").value(), "value");
  EXPECT_EQ(ErrorCodeOf(store_->Restore(kDatasetA, "id")), ErrorCode::kNotInRecycleBin);

  ASSERT_TRUE(store_->Delete(kDatasetA, "id").ok());
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "newer").ok());
  EXPECT_EQ(ErrorCodeOf(store_->Restore(kDatasetA, "id")), ErrorCode::kAlreadyExists);
  EXPECT_EQ(store_->Get(kDatasetA, "id").value(), "newer");
}

TEST_F(RecordStoreTest, ComplianceLockForbidsDeletingUntilTheMinimumRetentionPassed) {
  DatasetPolicy policy;
  policy.min_retention = std::chrono::hours(24 * 365);
  policies_.Set(kDatasetA, policy);
  ASSERT_TRUE(store_->Put(kDatasetA, "id", "value").ok());
  clock_.Advance(std::chrono::hours(24 * 364));
  EXPECT_EQ(ErrorCodeOf(store_->Delete(kDatasetA, "id")), ErrorCode::kComplianceLocked);
  EXPECT_EQ(store_->Get(kDatasetA, "id").value(), "value");
  clock_.Advance(std::chrono::hours(24));
  EXPECT_TRUE(store_->Delete(kDatasetA, "id").ok());
}

}  // namespace
}  // namespace coffer::storage
