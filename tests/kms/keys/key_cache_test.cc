#include "kms/keys/key_cache.h"

#include <atomic>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/pooled_contexts.h"
#include "crypto/random.h"
#include "gtest/gtest.h"

namespace coffer::kms {
namespace {

class ManualClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override { return now_.load(); }
  void Advance(std::chrono::seconds by) { now_.store(now_.load() + by); }

 private:
  std::atomic<std::chrono::system_clock::time_point> now_{std::chrono::system_clock::time_point{} +
                                                          std::chrono::hours(24 * 365 * 56)};
};

absl::StatusOr<std::shared_ptr<const storage::DataKey>> MakeKey(uint32_t version) {
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes bytes, crypto::RandomSecret(32));
  return storage::DataKey::Create(storage::KeyPurpose::kRecords, version, std::move(bytes));
}

KeyCache::Loader CountingLoader(std::atomic<int>* calls, uint32_t version) {
  return [calls, version]() {
    calls->fetch_add(1);
    return MakeKey(version);
  };
}

TEST(KeyCacheTest, MissLoadsOnceThenHits) {
  ManualClock clock;
  KeyCache cache(KeyCacheOptions{}, &clock);
  std::atomic<int> calls{0};
  KeyCacheKey key{7, storage::KeyPurpose::kRecords, 1};
  auto first = cache.GetOrLoad(key, CountingLoader(&calls, 1));
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = cache.GetOrLoad(key, CountingLoader(&calls, 1));
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->get(), second->get());
  EXPECT_EQ(calls.load(), 1);
  KeyCacheStats stats = cache.Stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.entries, 1u);
}

TEST(KeyCacheTest, LoaderErrorsAreReturnedAndNotCached) {
  ManualClock clock;
  KeyCache cache(KeyCacheOptions{}, &clock);
  KeyCacheKey key{7, storage::KeyPurpose::kRecords, 1};
  auto failed = cache.GetOrLoad(key, [] {
    return absl::StatusOr<std::shared_ptr<const storage::DataKey>>(
        MakeError(ErrorCode::kKeyDestroyed, "destroyed"));
  });
  EXPECT_EQ(ErrorCodeOf(failed.status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(cache.Lookup(key), nullptr);
  EXPECT_EQ(cache.Stats().entries, 0u);
}

TEST(KeyCacheTest, EntriesExpireAfterTheirTimeToLive) {
  ManualClock clock;
  KeyCacheOptions options;
  options.ttl = std::chrono::seconds(60);
  KeyCache cache(options, &clock);
  std::atomic<int> calls{0};
  KeyCacheKey key{1, storage::KeyPurpose::kRecords, 1};
  ASSERT_TRUE(cache.GetOrLoad(key, CountingLoader(&calls, 1)).ok());
  clock.Advance(std::chrono::seconds(59));
  EXPECT_NE(cache.Lookup(key), nullptr);
  clock.Advance(std::chrono::seconds(1));
  EXPECT_EQ(cache.Lookup(key), nullptr);
  EXPECT_EQ(cache.Stats().expirations, 1u);
  ASSERT_TRUE(cache.GetOrLoad(key, CountingLoader(&calls, 1)).ok());
  EXPECT_EQ(calls.load(), 2);
}

TEST(KeyCacheTest, NeverExceedsItsEntryAndByteBounds) {
  ManualClock clock;
  KeyCacheOptions options;
  options.max_entries = 64;
  options.shards = 8;
  auto probe = MakeKey(1);
  ASSERT_TRUE(probe.ok());
  options.max_bytes = (*probe)->MemoryBytes() * 40;  // the byte bound bites before the count
  KeyCache cache(options, &clock);
  std::atomic<int> calls{0};
  for (uint64_t dataset = 0; dataset < 500; ++dataset) {
    for (uint32_t version = 1; version <= 3; ++version) {
      ASSERT_TRUE(cache
                      .GetOrLoad({dataset, storage::KeyPurpose::kRecords, version},
                                 CountingLoader(&calls, version))
                      .ok());
      KeyCacheStats stats = cache.Stats();
      ASSERT_LE(stats.entries, options.max_entries);
      ASSERT_LE(stats.bytes, options.max_bytes);
    }
  }
  EXPECT_GT(cache.Stats().evictions, 0u);
  EXPECT_GT(cache.Stats().entries, 0u);
}

TEST(KeyCacheTest, BoundsHoldUnderConcurrentLoads) {
  ManualClock clock;
  KeyCacheOptions options;
  options.max_entries = 32;
  options.shards = 4;
  KeyCache cache(options, &clock);
  std::atomic<bool> over_bound{false};
  std::vector<std::thread> threads;
  threads.reserve(8);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      std::atomic<int> calls{0};
      for (uint64_t i = 0; i < 400; ++i) {
        uint64_t dataset = (i * 7 + static_cast<uint64_t>(t)) % 97;
        auto key =
            cache.GetOrLoad({dataset, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1));
        if (!key.ok() || (*key)->version() != 1) over_bound = true;
        if (cache.Stats().entries > options.max_entries) over_bound = true;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_FALSE(over_bound.load());
}

// Issue 19 item 5: before DropExpired, an expired key was dropped only when someone looked it
// up again, so a dataset nobody read any more kept its keys in memory for good.
TEST(KeyCacheTest, DropExpiredFreesKeysNobodyAsksForAgain) {
  ManualClock clock;
  KeyCacheOptions options;
  options.ttl = std::chrono::seconds(60);
  KeyCache cache(options, &clock);
  std::atomic<int> calls{0};
  const size_t heap_before = crypto::SecureHeapUsedBytes();
  for (uint64_t dataset = 1; dataset <= 3; ++dataset) {
    ASSERT_TRUE(
        cache.GetOrLoad({dataset, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1))
            .ok());
  }
  clock.Advance(std::chrono::seconds(30));
  ASSERT_TRUE(
      cache.GetOrLoad({4, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1)).ok());
  EXPECT_EQ(cache.DropExpired(), 0u);
  clock.Advance(std::chrono::seconds(30));
  EXPECT_EQ(cache.DropExpired(), 3u);  // loaded 60 s ago; the fourth only 30 s ago
  KeyCacheStats stats = cache.Stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.expirations, 3u);
  EXPECT_NE(cache.Lookup({4, storage::KeyPurpose::kRecords, 1}), nullptr);
  clock.Advance(std::chrono::seconds(30));
  EXPECT_EQ(cache.DropExpired(), 1u);
  // Nothing holds them any more: their secure-heap bytes were freed (and wiped).
  EXPECT_EQ(crypto::SecureHeapUsedBytes(), heap_before);
}

TEST(KeyCacheTest, EraseDatasetDropsOnlyThatDatasetAndWipesWithTheLastHolder) {
  ManualClock clock;
  KeyCache cache(KeyCacheOptions{}, &clock);
  std::atomic<int> calls{0};
  size_t heap_before = crypto::SecureHeapUsedBytes();
  std::shared_ptr<const storage::DataKey> held;
  for (uint32_t version = 1; version <= 3; ++version) {
    auto key = cache.GetOrLoad({5, storage::KeyPurpose::kRecords, version},
                               CountingLoader(&calls, version));
    ASSERT_TRUE(key.ok());
    if (version == 2) held = *key;
  }
  ASSERT_TRUE(
      cache.GetOrLoad({6, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1)).ok());
  cache.EraseDataset(5);
  for (uint32_t version = 1; version <= 3; ++version) {
    EXPECT_EQ(cache.Lookup({5, storage::KeyPurpose::kRecords, version}), nullptr);
  }
  EXPECT_NE(cache.Lookup({6, storage::KeyPurpose::kRecords, 1}), nullptr);
  // The in-flight holder keeps a usable key; it is wiped when released.
  EXPECT_EQ(held->key().size(), 32u);
  cache.Clear();
  size_t with_holder = crypto::SecureHeapUsedBytes();
  EXPECT_GT(with_holder, heap_before);
  held.reset();
  EXPECT_EQ(crypto::SecureHeapUsedBytes(), heap_before);
}

TEST(KeyCacheTest, EraseOneKey) {
  ManualClock clock;
  KeyCache cache(KeyCacheOptions{}, &clock);
  std::atomic<int> calls{0};
  KeyCacheKey v1{9, storage::KeyPurpose::kAttachments, 1};
  KeyCacheKey v2{9, storage::KeyPurpose::kAttachments, 2};
  ASSERT_TRUE(cache.GetOrLoad(v1, CountingLoader(&calls, 1)).ok());
  ASSERT_TRUE(cache.GetOrLoad(v2, CountingLoader(&calls, 2)).ok());
  cache.Erase(v1);
  EXPECT_EQ(cache.Lookup(v1), nullptr);
  EXPECT_NE(cache.Lookup(v2), nullptr);
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> MakeKeyOf(storage::KeyPurpose purpose) {
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes bytes, crypto::RandomSecret(32));
  return storage::DataKey::Create(purpose, 1, std::move(bytes));
}

// Seals and opens records and computes lookup HMACs with a dataset's cached keys from four
// threads at once, so that both keys' pools hold keyed contexts (crypto/pooled_contexts.h).
void UseFromThreads(KeyCache& cache, uint64_t dataset) {
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&cache, dataset] {
      for (int i = 0; i < 100; ++i) {
        auto records = cache.GetOrLoad({dataset, storage::KeyPurpose::kRecords, 1},
                                       [] { return MakeKeyOf(storage::KeyPurpose::kRecords); });
        auto lookup = cache.GetOrLoad({dataset, storage::KeyPurpose::kLookup, 1},
                                      [] { return MakeKeyOf(storage::KeyPurpose::kLookup); });
        ASSERT_TRUE(records.ok() && lookup.ok());
        auto aead = (*records)->record_aead();
        auto hmac = (*lookup)->hmac();
        ASSERT_TRUE(aead.ok() && hmac.ok());
        auto sealed = (*aead)->Seal("value", "ad");
        ASSERT_TRUE(sealed.ok());
        auto opened = (*aead)->Open(*sealed, "ad");
        ASSERT_TRUE(opened.ok());
        EXPECT_EQ(*opened, "value");
        ASSERT_TRUE((*hmac)->Compute("id").ok());
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
}

// A keyed context holds the key schedule, whose first round keys are the key: the contexts a
// key's calls keep for reuse belong to its DataKey and go (wiped by EVP_*_free) when the cache
// has dropped it and the last holder lets go, however it leaves: retired (Erase), evicted,
// expired or destroyed (EraseDataset). No thread keeps one.
TEST(KeyCacheTest, KeyedContextsGoWithTheirKeyWhenErasedEvictedExpiredOrDestroyed) {
  const int64_t before = crypto::PooledKeyedContexts();
  ManualClock clock;
  KeyCacheOptions options;
  options.shards = 1;
  options.max_entries = 4;
  options.ttl = std::chrono::seconds(60);
  KeyCache cache(options, &clock);
  const KeyCacheKey records1{1, storage::KeyPurpose::kRecords, 1};
  const KeyCacheKey lookup1{1, storage::KeyPurpose::kLookup, 1};

  // Retired: Erase drops the cache's reference; an in-flight holder keeps its key usable, with
  // its contexts, until it lets go.
  UseFromThreads(cache, 1);
  EXPECT_GT(crypto::PooledKeyedContexts(), before);
  std::shared_ptr<const storage::DataKey> held = cache.Lookup(records1);
  ASSERT_NE(held, nullptr);
  std::weak_ptr<const storage::DataKey> watched = held;
  cache.Erase(records1);
  cache.Erase(lookup1);
  EXPECT_GT(crypto::PooledKeyedContexts(), before);
  ASSERT_TRUE((*held->record_aead())->Seal("in flight", "ad").ok());
  held.reset();
  EXPECT_TRUE(watched.expired());
  EXPECT_EQ(crypto::PooledKeyedContexts(), before);

  // Evicted: four other keys push dataset 2's two out of the four-entry cache.
  UseFromThreads(cache, 2);
  EXPECT_GT(crypto::PooledKeyedContexts(), before);
  std::atomic<int> calls{0};
  for (uint64_t dataset = 10; dataset < 14; ++dataset) {
    ASSERT_TRUE(
        cache.GetOrLoad({dataset, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1))
            .ok());
  }
  EXPECT_EQ(cache.Lookup({2, storage::KeyPurpose::kRecords, 1}), nullptr);
  EXPECT_EQ(crypto::PooledKeyedContexts(), before);

  // Expired.
  UseFromThreads(cache, 3);
  EXPECT_GT(crypto::PooledKeyedContexts(), before);
  clock.Advance(std::chrono::seconds(61));
  EXPECT_GT(cache.DropExpired(), 0u);
  EXPECT_EQ(crypto::PooledKeyedContexts(), before);

  // Destroyed: the key manager erases every key of the dataset.
  UseFromThreads(cache, 4);
  EXPECT_GT(crypto::PooledKeyedContexts(), before);
  cache.EraseDataset(4);
  EXPECT_EQ(crypto::PooledKeyedContexts(), before);
}

TEST(KeyCacheTest, ZeroBoundsAreClampedToAUsableCache) {
  ManualClock clock;
  KeyCacheOptions options;
  options.max_entries = 0;
  options.shards = 0;
  KeyCache cache(options, &clock);
  EXPECT_GE(cache.max_entries(), 1u);
  std::atomic<int> calls{0};
  ASSERT_TRUE(
      cache.GetOrLoad({1, storage::KeyPurpose::kRecords, 1}, CountingLoader(&calls, 1)).ok());
  EXPECT_LE(cache.Stats().entries, cache.max_entries());
}

}  // namespace
}  // namespace coffer::kms
