#include "kms/keys/key_cache.h"

#include <algorithm>
#include <utility>

namespace coffer::kms {
namespace {

// A 64-bit mix (splitmix64's finalizer), so consecutive dataset handles spread over shards.
uint64_t Mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

}  // namespace

size_t KeyCache::KeyHash::operator()(const KeyCacheKey& key) const {
  uint64_t h = Mix(key.dataset_handle);
  h = Mix(h ^ (static_cast<uint64_t>(key.purpose) << 32 | key.version));
  return static_cast<size_t>(h);
}

KeyCache::KeyCache(const KeyCacheOptions& options, const Clock* clock)
    : clock_(clock), ttl_(options.ttl) {
  size_t shard_count = std::max<size_t>(1, options.shards);
  // Fewer shards than entries would leave shards with no room at all.
  shard_count = std::min(shard_count, std::max<size_t>(1, options.max_entries));
  per_shard_entries_ = std::max<size_t>(1, options.max_entries / shard_count);
  per_shard_bytes_ = std::max<size_t>(1, options.max_bytes / shard_count);
  shards_.reserve(shard_count);
  for (size_t i = 0; i < shard_count; ++i) shards_.push_back(std::make_unique<Shard>());
}

KeyCache::Shard& KeyCache::ShardFor(uint64_t dataset_handle) {
  return *shards_[Mix(dataset_handle) % shards_.size()];
}

std::shared_ptr<const storage::DataKey> KeyCache::FindLocked(Shard& shard, const KeyCacheKey& key) {
  auto found = shard.map.find(key);
  if (found == shard.map.end()) return nullptr;
  auto it = found->second;
  if (clock_->Now() - it->loaded >= ttl_) {
    ++shard.expirations;
    RemoveLocked(shard, it);
    return nullptr;
  }
  shard.lru.splice(shard.lru.begin(), shard.lru, it);
  return it->value;
}

void KeyCache::RemoveLocked(Shard& shard, Lru::iterator it) {
  shard.bytes -= it->bytes;
  shard.map.erase(it->key);
  shard.lru.erase(it);
}

void KeyCache::InsertLocked(Shard& shard, const KeyCacheKey& key,
                            std::shared_ptr<const storage::DataKey> value) {
  size_t bytes = value->MemoryBytes();
  if (bytes > per_shard_bytes_) return;  // would break the bound on its own
  while (!shard.lru.empty() &&
         (shard.map.size() + 1 > per_shard_entries_ || shard.bytes + bytes > per_shard_bytes_)) {
    ++shard.evictions;
    RemoveLocked(shard, std::prev(shard.lru.end()));
  }
  shard.lru.push_front(Entry{key, std::move(value), bytes, clock_->Now()});
  shard.map.emplace(key, shard.lru.begin());
  shard.bytes += bytes;
}

absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyCache::GetOrLoad(const KeyCacheKey& key,
                                                                            const Loader& loader) {
  Shard& shard = ShardFor(key.dataset_handle);
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (auto hit = FindLocked(shard, key)) {
      ++shard.hits;
      return hit;
    }
    ++shard.misses;
  }
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> loaded = loader();
  if (!loaded.ok()) return loaded.status();
  std::lock_guard<std::mutex> lock(shard.mu);
  if (auto raced = FindLocked(shard, key)) return raced;  // another thread loaded it first
  InsertLocked(shard, key, *loaded);
  return loaded;
}

std::shared_ptr<const storage::DataKey> KeyCache::Lookup(const KeyCacheKey& key) {
  Shard& shard = ShardFor(key.dataset_handle);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto hit = FindLocked(shard, key);
  ++(hit ? shard.hits : shard.misses);
  return hit;
}

void KeyCache::Erase(const KeyCacheKey& key) {
  Shard& shard = ShardFor(key.dataset_handle);
  std::lock_guard<std::mutex> lock(shard.mu);
  auto found = shard.map.find(key);
  if (found != shard.map.end()) RemoveLocked(shard, found->second);
}

void KeyCache::EraseDataset(uint64_t dataset_handle) {
  Shard& shard = ShardFor(dataset_handle);
  std::lock_guard<std::mutex> lock(shard.mu);
  for (auto it = shard.lru.begin(); it != shard.lru.end();) {
    auto next = std::next(it);
    if (it->key.dataset_handle == dataset_handle) RemoveLocked(shard, it);
    it = next;
  }
}

size_t KeyCache::DropExpired() {
  const auto now = clock_->Now();
  size_t dropped = 0;
  for (auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    for (auto it = shard->lru.begin(); it != shard->lru.end();) {
      auto next = std::next(it);
      if (now - it->loaded >= ttl_) {
        ++shard->expirations;
        ++dropped;
        RemoveLocked(*shard, it);
      }
      it = next;
    }
  }
  return dropped;
}

void KeyCache::Clear() {
  for (auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    shard->lru.clear();
    shard->map.clear();
    shard->bytes = 0;
  }
}

KeyCacheStats KeyCache::Stats() const {
  KeyCacheStats stats;
  for (const auto& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard->mu);
    stats.entries += shard->map.size();
    stats.bytes += shard->bytes;
    stats.hits += shard->hits;
    stats.misses += shard->misses;
    stats.evictions += shard->evictions;
    stats.expirations += shard->expirations;
  }
  return stats;
}

}  // namespace coffer::kms
