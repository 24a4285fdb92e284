// The data DB's read path (issue 18 item 2): every column family opens with a whole-key bloom
// filter and the block cache sized by DataDbOptions::block_cache_bytes (cofferd's
// storage.block_cache_bytes), and the filter is written into the SST files and consulted by
// gets: a get of an absent key is answered from the filter without a data block read.

#include "storage/data_db.h"

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "rocksdb/cache.h"
#include "rocksdb/filter_policy.h"
#include "rocksdb/perf_context.h"
#include "rocksdb/perf_level.h"
#include "rocksdb/table.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;

constexpr size_t kCacheBytes = size_t{24} << 20;

std::string KeyOf(const char* kind, int i) { return std::string(kind) + "-" + std::to_string(i); }

TEST(DataDbTest, EveryColumnFamilyHasAWholeKeyBloomFilterAndTheConfiguredBlockCache) {
  testing::TempDir dir;
  DataDbOptions options;
  options.block_cache_bytes = kCacheBytes;
  auto db = DataDb::Open(dir.Sub("data"), options);
  ASSERT_TRUE(db.ok()) << db.status();
  for (Cf cf : internal::kAllCfs) {
    SCOPED_TRACE(std::string(internal::CfName(cf)));
    rocksdb::Options opened = (*db)->rocks()->GetOptions((*db)->cf(cf));
    ASSERT_NE(opened.table_factory, nullptr);
    const auto* table = opened.table_factory->GetOptions<rocksdb::BlockBasedTableOptions>();
    ASSERT_NE(table, nullptr) << "not a block-based table";
    ASSERT_NE(table->filter_policy, nullptr) << "no filter policy";
    EXPECT_NE(std::string(table->filter_policy->CompatibilityName()).find("Bloom"),
              std::string::npos)
        << table->filter_policy->CompatibilityName();
    EXPECT_TRUE(table->whole_key_filtering);
    ASSERT_NE(table->block_cache, nullptr);
    EXPECT_EQ(table->block_cache->GetCapacity(), kCacheBytes);
  }
}

TEST(DataDbTest, GetsOfAbsentKeysAreAnsweredByTheBloomFilterOfEachFile) {
  testing::TempDir dir;
  auto db = DataDb::Open(dir.Sub("data"), DataDbOptions{});
  ASSERT_TRUE(db.ok()) << db.status();
  rocksdb::DB* rocks = (*db)->rocks();
  rocksdb::ColumnFamilyHandle* records = (*db)->cf(Cf::kRecords);
  for (int i = 0; i < 2000; ++i) {
    ASSERT_TRUE(rocks->Put({}, records, KeyOf("present", i), std::string(100, 'v')).ok());
  }
  ASSERT_TRUE(rocks->Flush({}, records).ok());

  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kEnableCount);
  rocksdb::get_perf_context()->Reset();
  int found = 0;
  for (int i = 0; i < 1000; ++i) {
    std::string value;
    bool present = false;
    ASSERT_TRUE((*db)->Get(Cf::kRecords, KeyOf("absent", i), &value, &present).ok());
    found += present ? 1 : 0;
  }
  const uint64_t filtered = rocksdb::get_perf_context()->bloom_sst_miss_count;
  const uint64_t passed = rocksdb::get_perf_context()->bloom_sst_hit_count;
  std::string value;
  bool present = false;
  ASSERT_TRUE((*db)->Get(Cf::kRecords, KeyOf("present", 7), &value, &present).ok());
  rocksdb::SetPerfLevel(rocksdb::PerfLevel::kDisable);
  EXPECT_EQ(found, 0);
  EXPECT_TRUE(present);
  // 10 bits a key: about 1% of absent keys pass the filter; at most 5% here, fixed keys.
  EXPECT_GE(filtered, 950u) << passed << " passed the filter";
}

}  // namespace
}  // namespace coffer::storage
