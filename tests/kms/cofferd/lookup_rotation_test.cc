// Issue 17: a lookup rotation against a running cofferd (test-cofferd, fresh SoftHSM2 token,
// real RocksDB, real sockets; tests/kms/cofferd/cofferd_harness.h). Records, attachments and bin
// items written under lookup version 1 are all read right after the rotation to version 2, before
// any re-index; retiring version 1 is refused while items are under it; `keyctl reindex start
// --wait` moves them all; then version 1 retires, the daemon restarts, and everything reads again.
// Admin steps go through keyctl, data through the client library.

#include <unistd.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"

namespace coffer {
namespace {

using ::coffer::testing::JsonNumber;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using json = nlohmann::json;

constexpr char kDataset[] = "crm/reindex";
constexpr int kRecords = 30;  // "rec-0".."rec-29"; rec-25.. are deleted to the bin
constexpr int kBinnedFrom = 25;
constexpr int kAttachments = 3;             // "att-0".."att-2"; att-2 is deleted to the bin
constexpr size_t kAttachmentSize = 150000;  // three 64 KiB segments

std::string RecordValue(int i) { return "value of record " + std::to_string(i); }

std::string AttachmentBytes(int i) {
  std::string bytes(kAttachmentSize, '\0');
  for (size_t k = 0; k < bytes.size(); ++k) bytes[k] = static_cast<char>((k * 31 + i * 7) & 0xff);
  return bytes;
}

class LookupRotationTest : public coffer::testing::OneDatasetDaemonTest {
 protected:
  LookupRotationTest() : OneDatasetDaemonTest("cofferd-reindex", kDataset) {}

  void WriteEverything() {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kRecords; ++i) {
      ASSERT_TRUE(c->PutRecord(kDataset, "rec-" + std::to_string(i), RecordValue(i)).ok());
    }
    for (int i = 0; i < kAttachments; ++i) {
      auto writer = c->BeginAttachment(kDataset, "att-" + std::to_string(i), "text/plain");
      ASSERT_TRUE(writer.ok()) << writer.status();
      ASSERT_TRUE((*writer)->Append(AttachmentBytes(i)).ok());
      ASSERT_TRUE((*writer)->Commit().ok());
    }
    for (int i = kBinnedFrom; i < kRecords; ++i) {
      ASSERT_TRUE(c->DeleteRecord(kDataset, "rec-" + std::to_string(i)).ok());
    }
    ASSERT_TRUE(c->DeleteAttachment(kDataset, "att-2").ok());
  }

  // Every item reads: live records by id and in the listing, live attachments byte for byte, and
  // the bin's records and attachment in `keyctl bin list` (names decrypted, so each was opened).
  void ReadEverything() {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kBinnedFrom; ++i) {
      auto value = c->GetRecord(kDataset, "rec-" + std::to_string(i));
      ASSERT_TRUE(value.ok()) << "rec-" << i << ": " << value.status();
      EXPECT_EQ(*value, RecordValue(i));
      EXPECT_TRUE(*c->RecordExists(kDataset, "rec-" + std::to_string(i)));
    }
    for (int i = kBinnedFrom; i < kRecords; ++i) {
      EXPECT_FALSE(*c->RecordExists(kDataset, "rec-" + std::to_string(i)));
    }
    auto page = c->ListRecords(kDataset, "", 1000);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->ids.size(), static_cast<size_t>(kBinnedFrom));
    for (int i = 0; i < 2; ++i) {
      auto reader = c->OpenAttachment(kDataset, "att-" + std::to_string(i));
      ASSERT_TRUE(reader.ok()) << "att-" << i << ": " << reader.status();
      auto bytes = (*reader)->ReadAll();
      ASSERT_TRUE(bytes.ok()) << bytes.status();
      EXPECT_TRUE(*bytes == AttachmentBytes(i)) << "att-" << i;
    }
    KeyctlResult bin = Run("bin list " + std::string(kDataset) + " --json");
    ASSERT_EQ(bin.exit_code, 0) << bin.err;
    std::multiset<std::string> binned;
    const json listed = bin.Json();
    for (const json& item : listed.at("items")) binned.insert(item.at("id_text"));
    EXPECT_EQ(binned, (std::multiset<std::string>{"rec-25", "rec-26", "rec-27", "rec-28", "rec-29",
                                                  "att-2"}))
        << bin.out;
  }
};

TEST_F(LookupRotationTest, RotateReadReindexRetireRestartReadAgain) {
  WriteEverything();
  ReadEverything();

  KeyctlResult rotated = Run("key rotate " + std::string(kDataset) + " --purpose lookup");
  ASSERT_EQ(rotated.exit_code, 0) << rotated.err;
  EXPECT_NE(rotated.out.find("keyctl reindex start"), std::string::npos) << rotated.out;
  // Nothing was re-indexed yet: every item is under lookup version 1, and all of them read.
  ReadEverything();

  // Retiring version 1 now would lose them all: refused, naming the re-index.
  KeyctlResult early =
      Run("key retire " + std::string(kDataset) + " --purpose lookup --below 2 --json");
  EXPECT_NE(early.exit_code, 0);
  EXPECT_EQ(early.CodeName(), "KEY_VERSION_IN_USE") << early.out << early.err;
  EXPECT_NE((early.out + early.err).find("re-index"), std::string::npos) << early.out << early.err;

  // A write after the rotation replaces the old version's entry instead of adding one.
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->PutRecord(kDataset, "rec-0", RecordValue(0)).ok());
  }

  KeyctlResult reindexed = Run("reindex start " + std::string(kDataset) + " --wait --json");
  ASSERT_EQ(reindexed.exit_code, 0) << reindexed.err;
  const json job = reindexed.Json();
  EXPECT_EQ(job.at("state"), "JOB_DONE") << reindexed.out;
  EXPECT_EQ(job.at("kind"), "JOB_REINDEX") << reindexed.out;
  std::map<uint64_t, uint64_t> per_version;
  for (const json& count : job.at("version_counts")) {
    EXPECT_EQ(count.at("purpose"), "PURPOSE_LOOKUP");
    per_version[JsonNumber(count.at("version"))] = JsonNumber(count.at("items"));
  }
  // 25 live records, 5 binned, 2 live attachments, 1 binned: all under version 2.
  EXPECT_EQ(per_version, (std::map<uint64_t, uint64_t>{{2, 33}})) << reindexed.out;
  EXPECT_NE(reindexed.err.find("job "), std::string::npos) << reindexed.err;  // progress shown

  KeyctlResult retired =
      Run("key retire " + std::string(kDataset) + " --purpose lookup --below 2 --json");
  ASSERT_EQ(retired.exit_code, 0) << retired.out << retired.err;
  ReadEverything();

  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  ReadEverything();
  // And the bin items come back whole.
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->RestoreRecord(kDataset, "rec-27").ok());
  EXPECT_EQ(*c->GetRecord(kDataset, "rec-27"), RecordValue(27));
  ASSERT_TRUE(c->RestoreAttachment(kDataset, "att-2").ok());
  auto reader = c->OpenAttachment(kDataset, "att-2");
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto bytes = (*reader)->ReadAll();
  ASSERT_TRUE(bytes.ok());
  EXPECT_TRUE(*bytes == AttachmentBytes(2));
}

// A re-index that a stop interrupted carries on by itself when cofferd starts again: no keyctl
// start after the restart, and the old version then retires. The job is started at 1 item a
// second, so after its first batch of 256 it is still pausing when the daemon stops; the stop
// does not wait the pause out.
TEST_F(LookupRotationTest, AnInterruptedReindexResumesAtStartUp) {
  constexpr int kMany = 300;
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (int i = 0; i < kMany; ++i) {
      ASSERT_TRUE(c->PutRecord(kDataset, "many-" + std::to_string(i), RecordValue(i)).ok());
    }
  }
  ASSERT_EQ(Run("key rotate " + std::string(kDataset) + " --purpose lookup").exit_code, 0);
  KeyctlResult started = Run("reindex start " + std::string(kDataset) + " --rate 1 --json");
  ASSERT_EQ(started.exit_code, 0) << started.err;
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  EXPECT_NE(daemon_->Logs().find("jobs: resumed the re-index"), std::string::npos);

  KeyctlResult listed = Run("reindex status --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  uint64_t resumed = 0;
  const json all = listed.Json();
  for (const json& job : all.at("jobs")) {
    if (job.at("kind") == "JOB_REINDEX") resumed = JsonNumber(job.at("id"));
  }
  ASSERT_NE(resumed, 0u) << listed.out;
  KeyctlResult waited = Run("reindex wait " + std::to_string(resumed) + " --json");
  ASSERT_EQ(waited.exit_code, 0) << waited.err;
  const json job = waited.Json();
  EXPECT_EQ(job.at("state"), "JOB_DONE") << waited.out;
  // Every item examined at least once (an item moved ahead of the walk's cursor is examined
  // again, as current, so `done` may pass `total`).
  EXPECT_GE(JsonNumber(job.at("done")), static_cast<uint64_t>(kMany)) << waited.out;
  std::map<uint64_t, uint64_t> per_version;
  for (const json& count : job.at("version_counts")) {
    per_version[JsonNumber(count.at("version"))] = JsonNumber(count.at("items"));
  }
  EXPECT_EQ(per_version, (std::map<uint64_t, uint64_t>{{2, kMany}})) << waited.out;

  KeyctlResult retired =
      Run("key retire " + std::string(kDataset) + " --purpose lookup --below 2 --json");
  ASSERT_EQ(retired.exit_code, 0) << retired.out << retired.err;
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < kMany; i += 37) {
    auto value = c->GetRecord(kDataset, "many-" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << "many-" << i << ": " << value.status();
    EXPECT_EQ(*value, RecordValue(i));
  }
}

}  // namespace
}  // namespace coffer
