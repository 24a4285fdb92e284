// One damaged item never blocks the rest (issue 19 item 9): a record whose stored bytes were
// altered, or that names a key version the provider does not have, is skipped, counted and
// reported by listing, re-encryption, re-index and scrub, which carry on with every good item;
// reading that record keeps failing with its error. Real RocksDB, fake keys.
#include <map>
#include <set>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/damaged_item.h"
#include "storage/internal/envelope.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"
#include "storage/scrub.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using testing::kDatasetA;

constexpr int kRecords = 40;

std::string Id(int i) { return "id-" + std::to_string(i); }
std::string Value(int i) { return "value " + std::to_string(i); }

// Forwards to the fake, but the key store is "unreachable" for records version 1: an error of
// the environment, not of any item.
class UnreachableVersionOne : public KeyProvider {
 public:
  explicit UnreachableVersionOne(KeyProvider* inner) : inner_(inner) {}
  absl::StatusOr<std::shared_ptr<const DataKey>> PrimaryKey(uint64_t handle, KeyPurpose purpose,
                                                            uint64_t encryptions) override {
    return inner_->PrimaryKey(handle, purpose, encryptions);
  }
  absl::StatusOr<std::shared_ptr<const DataKey>> KeyForVersion(uint64_t handle, KeyPurpose purpose,
                                                               uint32_t version) override {
    if (purpose == KeyPurpose::kRecords && version == 1) {
      return MakeError(ErrorCode::kHsmDeviceError, "the key store does not answer");
    }
    return inner_->KeyForVersion(handle, purpose, version);
  }
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t handle, KeyPurpose purpose) override {
    return inner_->LiveVersions(handle, purpose);
  }

 private:
  KeyProvider* inner_;
};

class DamagedItemsTest : public testing::StorageTest {
 protected:
  void SetUp() override {
    StorageTest::SetUp();
    records_ = std::make_unique<RecordStore>(db_.get(), &keys_, &policies_, &clock_);
    attachments_ = std::make_unique<AttachmentStore>(db_.get(), &keys_, &policies_, &clock_, 1024);
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(records_->Put(kDatasetA, Id(i), Value(i)).ok());
  }
  void TearDown() override {
    records_.reset();
    attachments_.reset();
    StorageTest::TearDown();
  }
  std::string KeyOf(int i) { return internal::StoredKeyFor(&keys_, kDatasetA, Id(i)).value(); }
  // Flips a bit of the tag: the value no longer authenticates.
  void AlterBytes(int i) {
    std::string value = RawGet(Cf::kRecords, KeyOf(i));
    value[value.size() - 3] ^= 0x40;
    RawPut(Cf::kRecords, KeyOf(i), value);
  }
  // Makes the entry name records key version 9, which the provider never had.
  void NameMissingVersion(int i) {
    std::string value = RawGet(Cf::kRecords, KeyOf(i));
    value[internal::kEntryHeaderSize + 4] = 9;
    RawPut(Cf::kRecords, KeyOf(i), value);
  }
  struct Listed {
    std::set<std::string> ids;
    uint64_t damaged = 0;
    std::vector<DamagedItem> items;
  };
  // Every page of the listing, `page_size` ids at a time.
  Listed ListAll(size_t page_size) {
    Listed listed;
    std::string token;
    do {
      auto page = records_->ListIds(kDatasetA, token, page_size);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      EXPECT_LE(page->ids.size(), page_size);
      listed.ids.insert(page->ids.begin(), page->ids.end());
      listed.damaged += page->damaged.count();
      for (const DamagedItem& item : page->damaged.listed()) listed.items.push_back(item);
      token = page->next_page_token;
    } while (!token.empty());
    return listed;
  }
  std::set<std::string> GoodIdsExcept(std::set<int> damaged) {
    std::set<std::string> ids;
    for (int i = 0; i < kRecords; ++i) {
      if (damaged.count(i) == 0) ids.insert(Id(i));
    }
    return ids;
  }
  void ExpectGoodRecordsRead(std::set<int> damaged) {
    for (int i = 0; i < kRecords; ++i) {
      if (damaged.count(i) != 0) continue;
      auto value = records_->Get(kDatasetA, Id(i));
      ASSERT_TRUE(value.ok()) << Id(i) << ": " << value.status();
      EXPECT_EQ(*value, Value(i));
    }
  }
  std::unique_ptr<RecordStore> records_;
  std::unique_ptr<AttachmentStore> attachments_;
};

TEST_F(DamagedItemsTest, TheReferenceIsOpaqueAndStable) {
  std::string ref = DamagedRef("records", KeyOf(3));
  EXPECT_EQ(ref.size(), 4u + 24u);
  EXPECT_EQ(ref.substr(0, 4), "dmg-");
  EXPECT_EQ(ref.find_first_not_of("0123456789abcdef", 4), std::string::npos);
  EXPECT_EQ(ref, DamagedRef("records", KeyOf(3)));
  EXPECT_NE(ref, DamagedRef("records", KeyOf(4)));
  EXPECT_NE(ref, DamagedRef("recycle_bin", KeyOf(3)));
  EXPECT_EQ(ref.find(Id(3)), std::string::npos);
}

TEST_F(DamagedItemsTest, ListingSkipsARecordWhoseBytesWereAlteredAndListsEveryGoodId) {
  AlterBytes(7);
  for (size_t page_size : {size_t{1}, size_t{7}, size_t{1000}}) {
    SCOPED_TRACE(page_size);
    Listed listed = ListAll(page_size);
    EXPECT_EQ(listed.ids, GoodIdsExcept({7}));
    EXPECT_EQ(listed.damaged, 1u);
    ASSERT_EQ(listed.items.size(), 1u);
    EXPECT_EQ(listed.items[0].ref, DamagedRef("records", KeyOf(7)));
    EXPECT_EQ(listed.items[0].code, ErrorCode::kCiphertextCorrupt);
    EXPECT_EQ(listed.items[0].column_family, "records");
  }
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, Id(7)).status()), ErrorCode::kCiphertextCorrupt);
  ExpectGoodRecordsRead({7});
}

TEST_F(DamagedItemsTest, ListingSkipsARecordNamingAMissingKeyVersion) {
  NameMissingVersion(12);
  Listed listed = ListAll(5);
  EXPECT_EQ(listed.ids, GoodIdsExcept({12}));
  EXPECT_EQ(listed.damaged, 1u);
  ASSERT_EQ(listed.items.size(), 1u);
  EXPECT_EQ(listed.items[0].code, ErrorCode::kKeyVersionNotFound);
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, Id(12)).status()), ErrorCode::kKeyVersionNotFound);
  ExpectGoodRecordsRead({12});
}

TEST_F(DamagedItemsTest, AnUnreachableKeyStoreStillFailsTheListing) {
  // Not damage: every record is fine, the environment is not.
  UnreachableVersionOne keys(&keys_);
  RecordStore records(db_.get(), &keys, &policies_, &clock_);
  auto page = records.ListIds(kDatasetA, "", 100);
  EXPECT_EQ(ErrorCodeOf(page.status()), ErrorCode::kHsmDeviceError);
}

TEST_F(DamagedItemsTest, ReencryptionSkipsDamagedRecordsAndFinishes) {
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).ok());
  AlterBytes(7);
  NameMissingVersion(8);
  ReencryptionOptions options;
  options.batch_size = 6;
  ReencryptionJob job(db_.get(), &keys_, attachments_.get(), kDatasetA, options);
  auto progress = job.Run();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->finished);
  EXPECT_EQ(progress->reencrypted, static_cast<uint64_t>(kRecords - 2));
  EXPECT_EQ(progress->damaged, 2u);
  std::set<std::string> refs;
  for (const DamagedItem& item : progress->damaged_items) refs.insert(item.ref);
  EXPECT_EQ(refs, (std::set<std::string>{DamagedRef("records", KeyOf(7)),
                                         DamagedRef("records", KeyOf(8))}));
  auto census = CountKeyVersions(db_.get(), kDatasetA);
  ASSERT_TRUE(census.ok());
  EXPECT_EQ(census->records, (std::map<uint32_t, uint64_t>{{1, 1}, {2, kRecords - 2}, {9, 1}}));
  ExpectGoodRecordsRead({7, 8});
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, Id(7)).status()), ErrorCode::kCiphertextCorrupt);
}

TEST_F(DamagedItemsTest, ReencryptionStillFailsWhenTheKeyStoreIsUnreachable) {
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kRecords).ok());
  UnreachableVersionOne keys(&keys_);
  ReencryptionJob job(db_.get(), &keys, attachments_.get(), kDatasetA);
  EXPECT_EQ(ErrorCodeOf(job.Run().status()), ErrorCode::kHsmDeviceError);
}

TEST_F(DamagedItemsTest, ReindexSkipsADamagedRecordAndFinishes) {
  const std::string damaged_key = KeyOf(7);  // under lookup version 1, before the rotation
  AlterBytes(7);
  ASSERT_TRUE(keys_.Rotate(kDatasetA, KeyPurpose::kLookup).ok());
  // Without a place for damaged items, the census refuses to guess (a retirement stays refused).
  EXPECT_EQ(ErrorCodeOf(CountLookupVersions(db_.get(), &keys_, kDatasetA).status()),
            ErrorCode::kCiphertextCorrupt);
  ReindexJob job(db_.get(), &keys_, attachments_.get(), kDatasetA);
  auto progress = job.Run();
  ASSERT_TRUE(progress.ok()) << progress.status();
  EXPECT_TRUE(progress->finished);
  EXPECT_EQ(progress->moved, static_cast<uint64_t>(kRecords - 1));
  EXPECT_EQ(progress->damaged, 1u);
  ASSERT_EQ(progress->damaged_items.size(), 1u);
  EXPECT_EQ(progress->damaged_items[0].ref, DamagedRef("records", damaged_key));
  DamagedItems uncounted;
  auto census = CountLookupVersions(db_.get(), &keys_, kDatasetA, &uncounted);
  ASSERT_TRUE(census.ok()) << census.status();
  EXPECT_EQ(*census, (std::map<uint32_t, uint64_t>{{2, kRecords - 1}}));
  EXPECT_EQ(uncounted.count(), 1u);
  ExpectGoodRecordsRead({7});
}

TEST_F(DamagedItemsTest, ScrubReportsTheSameReferenceAsTheListing) {
  AlterBytes(7);
  NameMissingVersion(8);
  auto report = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->entries_checked, static_cast<uint64_t>(kRecords));
  std::map<std::string, ErrorCode> found;
  for (const ScrubFinding& finding : report->findings) found[finding.ref] = finding.code;
  EXPECT_EQ(found, (std::map<std::string, ErrorCode>{
                       {DamagedRef("records", KeyOf(7)), ErrorCode::kCiphertextCorrupt},
                       {DamagedRef("records", KeyOf(8)), ErrorCode::kKeyVersionNotFound}}));
  Listed listed = ListAll(100);
  std::set<std::string> listed_refs;
  for (const DamagedItem& item : listed.items) listed_refs.insert(item.ref);
  EXPECT_EQ(listed_refs, (std::set<std::string>{DamagedRef("records", KeyOf(7)),
                                                DamagedRef("records", KeyOf(8))}));
}

// An attachment whose pointer opens but one of whose segments was altered: Open succeeds (the
// pointer is fine), Verify finds the segment before any plaintext is handed out, and the damage
// is reported under the pointer's reference, the one scrub gives it.
TEST_F(DamagedItemsTest, VerifyFindsAnAlteredSegmentUnderThePointersReference) {
  auto upload = attachments_->BeginUpload(kDatasetA, "scan.pdf", "application/pdf");
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(std::string(3000, 'x')).ok());  // three 1 KiB segments
  ASSERT_TRUE((*upload)->Commit().ok());
  {
    auto whole = attachments_->Open(kDatasetA, "scan.pdf");
    ASSERT_TRUE(whole.ok()) << whole.status();
    EXPECT_TRUE((*whole)->Verify().ok());
  }
  // The second segment (segment keys sort by index within the upload).
  std::vector<std::pair<std::string, std::string>> segments;
  {
    ScopedIterator it = db_->NewIterator(Cf::kAttachmentSegments);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      segments.emplace_back(it->key().ToString(), it->value().ToString());
    }
  }
  ASSERT_EQ(segments.size(), 3u);
  segments[1].second[segments[1].second.size() - 5] ^= 0x01;
  RawPut(Cf::kAttachmentSegments, segments[1].first, segments[1].second);

  auto reader = attachments_->Open(kDatasetA, "scan.pdf");
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::Status verified = (*reader)->Verify();
  EXPECT_EQ(ErrorCodeOf(verified), ErrorCode::kCiphertextCorrupt);
  ASSERT_TRUE(IsItemDamage(verified));
  DamagedItems damaged;
  (*reader)->AddDamageTo(&damaged, verified);
  ASSERT_EQ(damaged.listed().size(), 1u);
  auto report = Scrub(db_.get(), &keys_, kDatasetA);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->findings.size(), 1u);
  EXPECT_EQ(damaged.listed()[0].ref, report->findings[0].ref);
  EXPECT_EQ(damaged.listed()[0].column_family, "attachment_pointers");
  // The first segment still reads; the altered one fails with the same error.
  std::string out;
  EXPECT_TRUE((*reader)->Read(0, 1024, &out).ok());
  EXPECT_EQ(ErrorCodeOf((*reader)->Read(1024, 10, &out)), ErrorCode::kCiphertextCorrupt);
  EXPECT_TRUE(out.empty());
}

// The reference is what an admin acts on: PurgeDamaged removes exactly the damaged item it
// names — live or binned, journaled like any purge — and refuses a healthy item, an unknown
// reference, and a dataset under a legal hold or (when the write time cannot be read) under a
// minimum retention.
TEST_F(DamagedItemsTest, PurgeDamagedRemovesOnlyTheDamagedItemItsReferenceNames) {
  testing::RecordingJournal journal;
  RecycleBin bin(db_.get(), &keys_, &policies_, &clock_, &journal);
  AlterBytes(7);
  const std::string ref = DamagedRef("records", KeyOf(7));

  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(kDatasetA, DamagedRef("records", KeyOf(8))).status()),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(kDatasetA, "dmg-000000000000000000000000").status()),
            ErrorCode::kNotFound);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(testing::kDatasetB, ref).status()), ErrorCode::kNotFound);
  DatasetPolicy held = policies_.PolicyFor(kDatasetA).value();
  held.legal_hold = true;
  policies_.Set(kDatasetA, held);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(kDatasetA, ref).status()), ErrorCode::kLegalHold);
  held.legal_hold = false;
  policies_.Set(kDatasetA, held);
  EXPECT_TRUE(journal.items.empty());

  auto purged = bin.PurgeDamaged(kDatasetA, ref);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(*purged, PurgedItemKind::kRecord);
  ASSERT_EQ(journal.items.size(), 1u);
  EXPECT_EQ(journal.items[0].ref, internal::RefOf(KeyOf(7)));
  Listed listed = ListAll(1000);
  EXPECT_EQ(listed.damaged, 0u);
  EXPECT_EQ(listed.ids, GoodIdsExcept({7}));
  EXPECT_EQ(ErrorCodeOf(records_->Get(kDatasetA, Id(7)).status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(kDatasetA, ref).status()), ErrorCode::kNotFound);
  ExpectGoodRecordsRead({7});

  // Binned, with its header unreadable: under a minimum retention it stays; without, it goes.
  ASSERT_TRUE(records_->Delete(kDatasetA, Id(9)).ok());
  const std::string bin_key = internal::BinKey(Cf::kRecords, KeyOf(9));
  std::string binned = RawGet(Cf::kRecycleBin, bin_key);
  binned[internal::kBinValueHeaderSize] = 0x7f;  // the entry's format byte
  RawPut(Cf::kRecycleBin, bin_key, binned);
  const std::string bin_ref = DamagedRef("recycle_bin", bin_key);
  DatasetPolicy locked = policies_.PolicyFor(kDatasetA).value();
  locked.min_retention = std::chrono::hours(24);
  policies_.Set(kDatasetA, locked);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeDamaged(kDatasetA, bin_ref).status()),
            ErrorCode::kComplianceLocked);
  locked.min_retention = std::chrono::seconds(0);
  policies_.Set(kDatasetA, locked);
  purged = bin.PurgeDamaged(kDatasetA, bin_ref);
  ASSERT_TRUE(purged.ok()) << purged.status();
  EXPECT_EQ(ErrorCodeOf(records_->Restore(kDatasetA, Id(9))), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(journal.items.size(), 2u);
}

TEST_F(DamagedItemsTest, MergingPagesCountsEachItemOnce) {
  DamagedItems one;
  DamagedItems two;
  one.Add("records", "a", MakeError(ErrorCode::kCiphertextCorrupt, "x"));
  two.Add("records", "a", MakeError(ErrorCode::kCiphertextCorrupt, "x"));
  two.Add("records", "b", MakeError(ErrorCode::kKeyVersionNotFound, "y"));
  one.Merge(two);
  EXPECT_EQ(one.count(), 2u);
  EXPECT_EQ(one.listed().size(), 2u);
  EXPECT_FALSE(IsItemDamage(MakeError(ErrorCode::kHsmDeviceError, "z")));
  EXPECT_FALSE(IsItemDamage(MakeError(ErrorCode::kDataDbError, "z")));
  EXPECT_TRUE(IsItemDamage(MakeError(ErrorCode::kKeyCommitmentMismatch, "z")));
}

}  // namespace
}  // namespace coffer::storage
