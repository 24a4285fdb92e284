// Issue 19 item 9 against a running cofferd (test-cofferd, fresh SoftHSM2 token, real RocksDB,
// real sockets; tests/kms/cofferd/cofferd_harness.h): one record's stored bytes are altered on
// disk while the daemon is stopped. After a restart, record_list returns every good id and
// damaged = 1 with the item's reference; record_get of that id keeps failing with
// CIPHERTEXT_CORRUPT; a scrub and a re-encryption report the same reference and finish; and
// EVENT_DAMAGED_ITEM appears exactly once, however often the item is met.

#include "storage/damaged_item.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "rocksdb/db.h"
#include "storage/data_db.h"
#include "storage/internal/layout.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"
#include "tests/testing/process.h"

namespace coffer {
namespace {

using ::coffer::testing::JsonNumber;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kDataset[] = "crm/damaged";
constexpr int kRecords = 12;

std::string Id(int i) { return "rec-" + std::to_string(i); }
std::string Value(int i) { return "value of record " + std::to_string(i); }

class DamagedItemTest : public coffer::testing::OneDatasetDaemonTest {
 protected:
  DamagedItemTest() : OneDatasetDaemonTest("cofferd-damaged", kDataset) {}

  // With the daemon stopped: flips the bit `mask` of byte `at(value size)` of the first entry of
  // `cf` whose key `pick` accepts (the real storage code opens the data DB; the daemon's user
  // keeps owning every file). Returns its key; "" when there is none.
  std::string AlterOnDisk(storage::internal::Cf cf,
                          const std::function<bool(std::string_view key)>& pick,
                          const std::function<size_t(size_t size)>& at, char mask) {
    const std::string path = daemon_->dir() + "/data";
    struct stat owner {};
    EXPECT_EQ(stat(path.c_str(), &owner), 0) << path;
    std::string key;
    {
      auto db = storage::DataDb::Open(path, storage::DataDbOptions{});
      EXPECT_TRUE(db.ok()) << db.status();
      if (!db.ok()) return "";
      std::string value;
      {
        storage::ScopedIterator it = (*db)->NewIterator(cf);
        for (it->SeekToFirst(); it->Valid() && key.empty(); it->Next()) {
          if (!pick(it->key().ToStringView())) continue;
          key = it->key().ToString();
          value = it->value().ToString();
        }
      }
      EXPECT_FALSE(key.empty()) << "no entry to alter";
      if (key.empty()) return "";
      value[at(value.size())] ^= mask;
      rocksdb::Status put = (*db)->rocks()->Put((*db)->write_options(), (*db)->cf(cf), key, value);
      EXPECT_TRUE(put.ok()) << put.ToString();
      if (!put.ok()) return "";
    }
    for (const auto& entry : fs::recursive_directory_iterator(path)) {
      EXPECT_EQ(lchown(entry.path().c_str(), owner.st_uid, owner.st_gid), 0) << entry.path();
    }
    return key;
  }
  // One bit of the tag of the first record.
  std::string AlterFirstRecordOnDisk() {
    return AlterOnDisk(
        storage::internal::Cf::kRecords, [](std::string_view) { return true; },
        [](size_t size) { return size - 3; }, 0x40);
  }
  // One bit in the middle of the second segment (index 1) of the only attachment that has one.
  bool AlterSecondSegmentOnDisk() {
    return !AlterOnDisk(
                storage::internal::Cf::kAttachmentSegments,
                [](std::string_view key) {
                  // Segment key: handle ‖ upload id ‖ index (4 bytes, big-endian).
                  return key.substr(storage::internal::kSegmentKeySize - 4) ==
                         std::string_view("\0\0\0\1", 4);
                },
                [](size_t size) { return size / 2; }, 0x01)
                .empty();
  }

  // The EVENT_DAMAGED_ITEM events subscriber "damaged-watch" has not seen yet (acknowledged).
  std::vector<json> NewDamagedEvents() {
    return ::coffer::testing::UnseenEvents(daemon_->admin_socket(), "damaged-watch",
                                           "EVENT_DAMAGED_ITEM");
  }
};

TEST_F(DamagedItemTest, OneDamagedRecordIsSkippedReportedAndRaisedOnce) {
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(c->PutRecord(kDataset, Id(i), Value(i)).ok());
  }
  EXPECT_TRUE(NewDamagedEvents().empty());  // the subscriber starts here
  ASSERT_TRUE(daemon_->Stop());
  const std::string key = AlterFirstRecordOnDisk();
  ASSERT_FALSE(key.empty());
  ASSERT_TRUE(daemon_->Start());
  const std::string ref = storage::DamagedRef("records", key);

  auto c = Connect();
  ASSERT_NE(c, nullptr);
  // Every good id, in pages of 5 (the damaged record must not end or shorten the listing).
  std::set<std::string> listed;
  uint64_t damaged = 0;
  std::vector<std::string> refs;
  std::string token;
  do {
    auto page = c->ListRecords(kDataset, token, 5);
    ASSERT_TRUE(page.ok()) << page.status();
    listed.insert(page->ids.begin(), page->ids.end());
    damaged += page->damaged;
    refs.insert(refs.end(), page->damaged_refs.begin(), page->damaged_refs.end());
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_EQ(listed.size(), static_cast<size_t>(kRecords - 1));
  EXPECT_EQ(damaged, 1u);
  EXPECT_EQ(refs, std::vector<std::string>{ref});

  // The one id not listed is the damaged record: reading it keeps failing with its error.
  int damaged_id = -1;
  for (int i = 0; i < kRecords; ++i) {
    if (listed.count(Id(i)) == 0) damaged_id = i;
  }
  ASSERT_GE(damaged_id, 0);
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, Id(damaged_id)).status()),
            ErrorCode::kCiphertextCorrupt);
  for (int i = 0; i < kRecords; ++i) {
    if (i == damaged_id) continue;
    auto value = c->GetRecord(kDataset, Id(i));
    ASSERT_TRUE(value.ok()) << Id(i) << ": " << value.status();
    EXPECT_EQ(*value, Value(i));
  }

  // Raised once, naming the reference and the dataset, never the id.
  std::vector<json> events = NewDamagedEvents();
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].value("damaged_ref", ""), ref);
  EXPECT_EQ(events[0].value("dataset", ""), kDataset);
  EXPECT_EQ(events[0].dump().find(Id(damaged_id)), std::string::npos);
  // Listing again reports it again, but raises nothing new.
  auto again = c->ListRecords(kDataset, "", 1000);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->ids.size(), static_cast<size_t>(kRecords - 1));
  EXPECT_EQ(again->damaged, 1u);
  EXPECT_TRUE(NewDamagedEvents().empty());

  // A scrub reports the same reference.
  KeyctlResult scrub = Run("scrub " + std::string(kDataset) + " --wait --json");
  ASSERT_EQ(scrub.exit_code, 0) << scrub.err << scrub.out;
  const json scrubbed = scrub.Json();
  EXPECT_EQ(scrubbed.value("state", ""), "JOB_DONE") << scrub.out;
  EXPECT_EQ(JsonNumber(scrubbed.at("damaged")), 1u) << scrub.out;
  ASSERT_EQ(scrubbed.at("damaged_items").size(), 1u) << scrub.out;
  EXPECT_EQ(scrubbed.at("damaged_items")[0].value("ref", ""), ref);
  EXPECT_EQ(scrubbed.at("damaged_items")[0].value("code_name", ""), "CIPHERTEXT_CORRUPT");

  // A re-encryption after a rotation moves every good record and finishes, reporting it.
  KeyctlResult rotated = Run("key rotate " + std::string(kDataset) + " --purpose records");
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  KeyctlResult reencrypt = Run("reencrypt start " + std::string(kDataset) + " --wait --json");
  ASSERT_EQ(reencrypt.exit_code, 0) << reencrypt.err << reencrypt.out;
  const json reencrypted = reencrypt.Json();
  EXPECT_EQ(reencrypted.value("state", ""), "JOB_DONE") << reencrypt.out;
  EXPECT_EQ(JsonNumber(reencrypted.at("damaged")), 1u) << reencrypt.out;
  ASSERT_EQ(reencrypted.at("damaged_items").size(), 1u) << reencrypt.out;
  EXPECT_EQ(reencrypted.at("damaged_items")[0].value("ref", ""), ref);
  // The human form of job status shows the count and the reference too.
  KeyctlResult status = Run("reencrypt status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  EXPECT_NE(status.out.find(ref), std::string::npos) << status.out;

  // Still one event in all: the jobs met the same item.
  EXPECT_TRUE(NewDamagedEvents().empty());
  for (int i = 0; i < kRecords; ++i) {
    if (i == damaged_id) continue;
    auto value = c->GetRecord(kDataset, Id(i));
    ASSERT_TRUE(value.ok()) << Id(i) << ": " << value.status();
    EXPECT_EQ(*value, Value(i));
  }
}

// An export leaves out a record whose bytes were altered and an attachment one of whose
// segments was, reports both with the references scrub gives them, and archives every good item;
// the damaged attachment is found before its archive entry begins, so the archive opens.
TEST_F(DamagedItemTest, ExportLeavesOutADamagedRecordAndAnAttachmentDamagedInASegment) {
  const std::string big(200'000, 'b');  // four 64 KiB segments
  const std::string small = "a small attachment that stays readable";
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(c->PutRecord(kDataset, Id(i), Value(i)).ok());
    for (const auto& [name, data] : {std::pair<std::string, std::string>{"big.bin", big},
                                     std::pair<std::string, std::string>{"small.txt", small}}) {
      auto writer = c->BeginAttachment(kDataset, name, "application/octet-stream");
      ASSERT_TRUE(writer.ok()) << writer.status();
      ASSERT_TRUE((*writer)->Append(data).ok());
      ASSERT_TRUE((*writer)->Commit().ok());
    }
  }
  ASSERT_TRUE(daemon_->Stop());
  const std::string record_key = AlterFirstRecordOnDisk();
  ASSERT_FALSE(record_key.empty());
  ASSERT_TRUE(AlterSecondSegmentOnDisk());
  ASSERT_TRUE(daemon_->Start());

  // Scrub finds both; their references are what the export must report.
  KeyctlResult scrub = Run("scrub " + std::string(kDataset) + " --wait --json");
  ASSERT_EQ(scrub.exit_code, 0) << scrub.err << scrub.out;
  const json scrub_result = scrub.Json();
  std::set<std::string> scrubbed;
  for (const json& item : scrub_result.at("damaged_items")) scrubbed.insert(item.value("ref", ""));
  ASSERT_EQ(scrubbed.size(), 2u) << scrub.out;
  EXPECT_EQ(scrubbed.count(storage::DamagedRef("records", record_key)), 1u) << scrub.out;

  ASSERT_EQ(Run("dataset disable " + std::string(kDataset)).exit_code, 0);
  ::coffer::testing::WriteKeyPair(daemon_->dir(), "recipient", "RSA");
  const std::string archive = daemon_->dir() + "/export.cfx";
  KeyctlResult exported =
      Run("--json dataset export " + std::string(kDataset) + " --recipient-key " + daemon_->dir() +
          "/recipient.pub.pem --out " + archive);
  ASSERT_EQ(exported.exit_code, 0) << exported.err << exported.out;
  const json summary = exported.JsonOrEmpty();
  EXPECT_EQ(summary.value("records", 0), kRecords - 1) << exported.out;
  EXPECT_EQ(summary.value("attachments", 0), 1) << exported.out;
  EXPECT_EQ(JsonNumber(summary.at("damaged")), 2u) << exported.out;
  std::set<std::string> reported;
  for (const json& item : summary.at("damaged_items")) reported.insert(item.value("ref", ""));
  EXPECT_EQ(reported, scrubbed) << exported.out;

  // The archive opens and holds the good attachment whole.
  const std::string out = daemon_->dir() + "/opened";
  KeyctlResult opened = Run("export open " + archive + " --private-key " + daemon_->dir() +
                            "/recipient.pem --out-dir " + out);
  ASSERT_EQ(opened.exit_code, 0) << opened.err << opened.out;
  const json manifest = json::parse(::coffer::testing::ReadWholeFile(out + "/manifest.json"));
  EXPECT_EQ(manifest.at("records").get<uint64_t>(), static_cast<uint64_t>(kRecords - 1));
  EXPECT_EQ(manifest.at("attachments").get<uint64_t>(), 1u);
  const std::string index = ::coffer::testing::ReadWholeFile(out + "/attachments.jsonl");
  const json entry = json::parse(index.substr(0, index.find('\n')));
  EXPECT_EQ(::coffer::testing::ReadWholeFile(out + "/" + entry.at("file").get<std::string>()),
            small);
}

// Issue 20 item 2: the scheduled scrub (jobs.scrub_interval_seconds, daily in the harness) finds
// the damaged record with no listing or admin asking, raises EVENT_DAMAGED_ITEM for it once, and
// not again on its next run.
TEST_F(DamagedItemTest, TheScheduledScrubRaisesADamagedItemOnce) {
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(c->PutRecord(kDataset, Id(i), Value(i)).ok());
  }
  ASSERT_TRUE(daemon_->Stop());
  const std::string key = AlterFirstRecordOnDisk();
  ASSERT_FALSE(key.empty());
  ASSERT_TRUE(daemon_->Start());
  EXPECT_TRUE(NewDamagedEvents().empty());
  KeyctlResult ran = Run("job run scrub");
  ASSERT_EQ(ran.exit_code, 0) << ran.out << ran.err << daemon_->Logs();
  std::vector<json> raised = NewDamagedEvents();
  ASSERT_EQ(raised.size(), 1u);
  EXPECT_EQ(raised[0].value("damaged_ref", ""), storage::DamagedRef("records", key));
  ASSERT_EQ(Run("job run scrub").exit_code, 0);
  EXPECT_TRUE(NewDamagedEvents().empty());
  EXPECT_NE(daemon_->Logs().find("scheduled scrub checked"), std::string::npos);
}

// What an admin does with a reference when no client knows the id: `keyctl bin purge --damaged`
// purges the damaged record and the attachment damaged in a segment (its segments with it), a
// later scrub finds nothing, every good item stays, and an unknown reference is NOT_FOUND.
TEST_F(DamagedItemTest, AnAdminPurgesDamagedItemsByTheirReferences) {
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kRecords; ++i) ASSERT_TRUE(c->PutRecord(kDataset, Id(i), Value(i)).ok());
    auto writer = c->BeginAttachment(kDataset, "big.bin", "application/octet-stream");
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->Append(std::string(200'000, 'b')).ok());
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_FALSE(AlterFirstRecordOnDisk().empty());
  ASSERT_TRUE(AlterSecondSegmentOnDisk());
  ASSERT_TRUE(daemon_->Start());

  auto scrubbed = [&] {
    KeyctlResult scrub = Run("scrub " + std::string(kDataset) + " --wait --json");
    EXPECT_EQ(scrub.exit_code, 0) << scrub.err << scrub.out;
    std::vector<std::string> refs;
    for (const json& item : scrub.JsonOrEmpty().value("damaged_items", json::array())) {
      refs.push_back(item.value("ref", ""));
    }
    return refs;
  };
  const std::vector<std::string> refs = scrubbed();
  ASSERT_EQ(refs.size(), 2u);
  KeyctlResult unknown =
      Run("--json bin purge " + std::string(kDataset) + " --damaged dmg-000000000000000000000000");
  EXPECT_EQ(unknown.CodeName(), "NOT_FOUND") << unknown.out << unknown.err;
  size_t records = 0;
  size_t attachments = 0;
  for (const std::string& ref : refs) {
    KeyctlResult purged = Run("--json bin purge " + std::string(kDataset) + " --damaged " + ref);
    ASSERT_EQ(purged.exit_code, 0) << purged.out << purged.err << daemon_->Logs();
    records += JsonNumber(purged.JsonOrEmpty().value("records", json(0)));
    attachments += JsonNumber(purged.JsonOrEmpty().value("attachments", json(0)));
  }
  EXPECT_EQ(records, 1u);
  EXPECT_EQ(attachments, 1u);
  EXPECT_TRUE(scrubbed().empty());

  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto page = c->ListRecords(kDataset, "", 1000);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->ids.size(), static_cast<size_t>(kRecords - 1));
  EXPECT_EQ(page->damaged, 0u);
  EXPECT_EQ(ErrorCodeOf(c->AttachmentMetadata(kDataset, "big.bin").status()),
            ErrorCode::kAttachmentNotFound);
}

}  // namespace
}  // namespace coffer
