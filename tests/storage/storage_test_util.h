// Shared fixtures of the storage tests: a temporary directory, a data DB opened over the fakes
// (storage/testing/fakes.h), and the plaintext scanner that proves nothing readable reached disk.

#ifndef COFFER_TESTS_STORAGE_STORAGE_TEST_UTIL_H_
#define COFFER_TESTS_STORAGE_STORAGE_TEST_UTIL_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/data_db.h"
#include "storage/purge_journal.h"
#include "storage/testing/fakes.h"
#include "tests/testing/peak_rss.h"

namespace coffer::storage::testing {

// A fresh directory under $TEST_TMPDIR (or /tmp), removed with everything in it.
class TempDir {
 public:
  TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Paths of every file under `dir` whose raw bytes contain `needle`, or — for SST files — whose
// decoded keys or values (read with rocksdb::SstFileReader) do.
std::vector<std::string> FilesContaining(const std::string& dir, std::string_view needle);

// Number of live SST and WAL files under `dir` (for "was anything written" checks).
std::vector<std::string> ListFiles(const std::string& dir);

// Number of keys in column family `cf` of `db`.
size_t CountKeys(DataDb* db, internal::Cf cf);

// Deterministic bytes for attachment contents: byte i of stream `seed`.
std::string PatternBytes(uint64_t seed, uint64_t offset, size_t length);

// The absolute path of the running test binary, for tests that re-execute it as a child.
std::string SelfExecutablePath();

using ::coffer::testing::PeakRssBytes;  // tests/testing/peak_rss.h
using ::coffer::testing::ResetPeakRss;

// Dataset handles the fixtures create.
inline constexpr uint64_t kDatasetA = 0x1001;
inline constexpr uint64_t kDatasetB = 0x2002;

class StorageTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override { db_.reset(); }
  // Closes and reopens the data DB over the same directory.
  void Reopen();
  // Copies `value` verbatim to `key` in column family `cf`, as an attacker with the files could.
  void RawPut(internal::Cf cf, std::string_view key, std::string_view value);
  std::string RawGet(internal::Cf cf, std::string_view key);
  // Flushes every column family and compacts everything.
  void FlushAndCompact();

  DataDbOptions options_;
  TempDir dir_;
  FakeKeyProvider keys_;
  FakeDatasetPolicies policies_;
  FakeClock clock_;
  std::unique_ptr<DataDb> db_;
};

// A purge journal that records every item it is told of; WillPurge fails while `fail` is set.
class RecordingJournal final : public PurgeJournal {
 public:
  absl::Status WillPurge(const PurgedItem& item) override {
    if (fail) return MakeError(ErrorCode::kAuditNotDurable, "journal down");
    items.push_back(item);
    ++open;
    return absl::OkStatus();
  }
  void PurgeWritten(const PurgedItem& /*item*/) override { --open; }
  // Every ref of every journaled item, as a restore replays them.
  std::vector<crypto::HmacSha256Tag> Refs() const {
    std::vector<crypto::HmacSha256Tag> refs;
    for (const PurgedItem& item : items) {
      refs.push_back(item.ref);
      refs.insert(refs.end(), item.other_refs.begin(), item.other_refs.end());
    }
    return refs;
  }

  bool fail = false;
  int open = 0;
  std::vector<PurgedItem> items;
};

}  // namespace coffer::storage::testing

#endif  // COFFER_TESTS_STORAGE_STORAGE_TEST_UTIL_H_
