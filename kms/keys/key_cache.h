// KeyCache: the key manager's bounded cache of unwrapped data keys.
//
// Keys are cached by (dataset handle, purpose, version) as shared_ptr<const storage::DataKey>:
// the DataKey owns its key bytes in the secure heap and its keyed OpenSSL contexts, so a hit
// hands out a ready-to-use key with no HSM call and no re-keying.
//
// Bounds: at most `max_entries` keys and `max_bytes` (DataKey::MemoryBytes) at any moment,
// across the whole cache. The cache is split into shards by dataset handle, each with its own
// mutex and an equal share of both bounds, so a hit locks only its shard, never a lock shared
// by all datasets, and the sum of the shards can never exceed the global bound. Within a shard,
// the least recently used entry is evicted first.
//
// Time-to-live: an entry older than `ttl` (by the injected clock) is a miss and is dropped, so
// a key unwrapped once does not stay in memory for ever. A lookup drops only the entry it finds;
// DropExpired (the key manager's scheduler tick) drops every expired entry, so a key nobody asks
// for again leaves memory too.
//
// Wiping: eviction, Erase and EraseDataset drop the cache's reference at once; the key bytes are
// wiped when the last holder (an in-flight request) releases its shared_ptr.
//
// Thread safety: all methods may be called from any number of threads. A loader runs without
// any shard lock held, so a slow HSM unwrap never blocks hits on other keys; two threads missing
// the same key at once may both load it, and the first insert wins.

#ifndef COFFER_KMS_KEYS_KEY_CACHE_H_
#define COFFER_KMS_KEYS_KEY_CACHE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "storage/data_key.h"

namespace coffer::kms {

struct KeyCacheKey {
  uint64_t dataset_handle = 0;
  storage::KeyPurpose purpose = storage::KeyPurpose::kRecords;
  uint32_t version = 0;

  bool operator==(const KeyCacheKey&) const = default;
};

struct KeyCacheOptions {
  size_t max_entries = 4096;
  size_t max_bytes = size_t{8} << 20;  // 8 MiB of key material and contexts
  std::chrono::seconds ttl{3600};
  size_t shards = 16;
};

struct KeyCacheStats {
  size_t entries = 0;
  size_t bytes = 0;
  uint64_t hits = 0;
  uint64_t misses = 0;
  uint64_t evictions = 0;
  uint64_t expirations = 0;
};

class KeyCache {
 public:
  using Loader = std::function<absl::StatusOr<std::shared_ptr<const storage::DataKey>>()>;

  // `clock` must outlive the cache. Bounds of zero are raised to the smallest useful value (one
  // entry per shard). INVALID_ARGUMENT is not possible: options are clamped, not rejected.
  KeyCache(const KeyCacheOptions& options, const Clock* clock);
  KeyCache(const KeyCache&) = delete;
  KeyCache& operator=(const KeyCache&) = delete;

  // Returns the cached key, or calls `loader` (no lock held) on a miss and caches what it
  // returns. A loader error is returned as is and nothing is cached. A loaded key larger than a
  // shard's byte share is returned but not cached.
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> GetOrLoad(const KeyCacheKey& key,
                                                                    const Loader& loader);

  // Returns the cached key, or null on a miss (counts as a hit or miss).
  std::shared_ptr<const storage::DataKey> Lookup(const KeyCacheKey& key);

  // Drops one key; every key of a dataset (on disable, destroy, rotation of a compromised
  // version); everything.
  void Erase(const KeyCacheKey& key);
  void EraseDataset(uint64_t dataset_handle);
  void Clear();

  // Drops every entry older than the time-to-live (counted as expirations); returns how many.
  // Locks one shard at a time.
  size_t DropExpired();

  KeyCacheStats Stats() const;

  size_t max_entries() const { return per_shard_entries_ * shards_.size(); }
  size_t max_bytes() const { return per_shard_bytes_ * shards_.size(); }

 private:
  struct KeyHash {
    size_t operator()(const KeyCacheKey& key) const;
  };
  struct Entry {
    KeyCacheKey key;
    std::shared_ptr<const storage::DataKey> value;
    size_t bytes = 0;
    std::chrono::system_clock::time_point loaded;
  };
  using Lru = std::list<Entry>;  // front = most recently used
  struct Shard {
    mutable std::mutex mu;
    Lru lru;                                                        // guarded by mu
    std::unordered_map<KeyCacheKey, Lru::iterator, KeyHash> map;    // guarded by mu
    size_t bytes = 0;                                               // guarded by mu
    uint64_t hits = 0, misses = 0, evictions = 0, expirations = 0;  // guarded by mu
  };

  Shard& ShardFor(uint64_t dataset_handle);
  // Returns the live entry for `key`, dropping it if expired. Requires shard.mu.
  std::shared_ptr<const storage::DataKey> FindLocked(Shard& shard, const KeyCacheKey& key);
  void RemoveLocked(Shard& shard, Lru::iterator it);
  void InsertLocked(Shard& shard, const KeyCacheKey& key,
                    std::shared_ptr<const storage::DataKey> value);

  const Clock* clock_;
  std::chrono::seconds ttl_;
  size_t per_shard_entries_;
  size_t per_shard_bytes_;
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_KEY_CACHE_H_
