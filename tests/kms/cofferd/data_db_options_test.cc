// Issue 18 item 2 against a running cofferd (test-cofferd, fresh SoftHSM2 token, real RocksDB):
// the data DB it opens has a whole-key bloom filter in every column family and a block cache of
// storage.block_cache_bytes, as RocksDB itself records them in the data directory (the options
// file it writes at open, and the table options it prints to its LOG).

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;

constexpr char kCacheBytes[] = "50331648";  // 48 MiB: neither the default nor a bound

std::string ReadFile(const fs::path& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

size_t Occurrences(const std::string& text, const std::string& needle) {
  size_t count = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) {
    ++count;
  }
  return count;
}

TEST(DataDbOptionsTest, CofferdOpensTheDataDbWithBloomFiltersAndTheConfiguredBlockCache) {
  CofferdOptions options;
  options.name = "cofferd-data-db";
  options.extra_config = [](const std::string&) {
    return std::string("storage { block_cache_bytes: ") + kCacheBytes + " }\n";
  };
  std::unique_ptr<Cofferd> daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  const fs::path data = daemon->dir() + "/data";

  // The newest options file (RocksDB writes one per open and keeps the last two).
  fs::path newest;
  for (const fs::directory_entry& entry : fs::directory_iterator(data)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("OPTIONS-", 0) == 0 && !name.ends_with(".dbtmp") &&
        (newest.empty() || name > newest.filename().string())) {
      newest = entry.path();
    }
  }
  ASSERT_FALSE(newest.empty()) << "no OPTIONS file in " << data;
  const std::string rocks_options = ReadFile(newest);
  // The default column family and the six of storage/internal/layout.h.
  EXPECT_EQ(Occurrences(rocks_options, "filter_policy=bloomfilter"), 7u) << rocks_options;
  EXPECT_EQ(Occurrences(rocks_options, "whole_key_filtering=true"), 7u) << rocks_options;

  const std::string log = ReadFile(data / "LOG");
  EXPECT_NE(log.find(std::string("capacity : ") + kCacheBytes), std::string::npos)
      << "the block cache is not storage.block_cache_bytes: " << log.substr(0, 4000);
}

}  // namespace
}  // namespace coffer
