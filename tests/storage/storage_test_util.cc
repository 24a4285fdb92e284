#include "tests/storage/storage_test_util.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"

namespace coffer::storage::testing {

TempDir::TempDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/coffer-storage-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  char* made = mkdtemp(buffer.data());
  if (made == nullptr) std::abort();
  path_ = made;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::vector<std::string> ListFiles(const std::string& dir) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, ec)) {
    if (entry.is_regular_file()) files.push_back(entry.path().string());
  }
  return files;
}

namespace {

bool SstContains(const std::string& path, std::string_view needle) {
  rocksdb::Options options;
  rocksdb::SstFileReader reader(options);
  if (!reader.Open(path).ok()) {
    ADD_FAILURE() << "cannot decode " << path;
    return false;
  }
  std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    if (it->key().ToStringView().find(needle) != std::string_view::npos ||
        it->value().ToStringView().find(needle) != std::string_view::npos) {
      return true;
    }
  }
  return false;
}

}  // namespace

std::vector<std::string> FilesContaining(const std::string& dir, std::string_view needle) {
  std::vector<std::string> hits;
  for (const std::string& path : ListFiles(dir)) {
    std::ifstream in(path, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    bool hit = bytes.find(needle) != std::string::npos;
    if (!hit && path.size() > 4 && path.substr(path.size() - 4) == ".sst") {
      hit = SstContains(path, needle);
    }
    if (hit) hits.push_back(path);
  }
  return hits;
}

size_t CountKeys(DataDb* db, internal::Cf cf) {
  size_t count = 0;
  ScopedIterator it = db->NewIterator(cf);
  for (it->SeekToFirst(); it->Valid(); it->Next()) ++count;
  EXPECT_TRUE(it->status().ok());
  return count;
}

std::string SelfExecutablePath() {
  char resolved[4096];
  ssize_t n = readlink("/proc/self/exe", resolved, sizeof(resolved) - 1);
  return n > 0 ? std::string(resolved, static_cast<size_t>(n)) : "/proc/self/exe";
}

std::string PatternBytes(uint64_t seed, uint64_t offset, size_t length) {
  std::string bytes(length, '\0');
  for (size_t i = 0; i < length; ++i) {
    uint64_t x = (offset + i) * 0x9E3779B97F4A7C15ULL + seed;
    bytes[i] = static_cast<char>((x >> 29) ^ (x >> 47));
  }
  return bytes;
}

void StorageTest::SetUp() {
  options_.max_value_bytes = 1 << 20;
  options_.memtable_budget_bytes = 16 << 20;
  options_.block_cache_bytes = 8 << 20;
  for (uint64_t handle : {kDatasetA, kDatasetB}) {
    ASSERT_TRUE(keys_.CreateDataset(handle).ok());
    policies_.Set(handle, DatasetPolicy{});
  }
  Reopen();
}

void StorageTest::Reopen() {
  db_.reset();
  auto opened = DataDb::Open(dir_.Sub("data"), options_);
  ASSERT_TRUE(opened.ok()) << opened.status();
  db_ = std::move(*opened);
}

void StorageTest::RawPut(internal::Cf cf, std::string_view key, std::string_view value) {
  ASSERT_TRUE(db_->rocks()->Put(rocksdb::WriteOptions(), db_->cf(cf), key, value).ok());
}

std::string StorageTest::RawGet(internal::Cf cf, std::string_view key) {
  std::string value;
  bool found = false;
  EXPECT_TRUE(db_->Get(cf, key, &value, &found).ok());
  EXPECT_TRUE(found);
  return value;
}

void StorageTest::FlushAndCompact() {
  for (internal::Cf cf : internal::kAllCfs) {
    ASSERT_TRUE(db_->rocks()->Flush(rocksdb::FlushOptions(), db_->cf(cf)).ok());
    ASSERT_TRUE(db_->rocks()
                    ->CompactRange(rocksdb::CompactRangeOptions(), db_->cf(cf), nullptr, nullptr)
                    .ok());
  }
}

}  // namespace coffer::storage::testing
