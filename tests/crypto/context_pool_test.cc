// KeyedContextPool and PooledContextLease (crypto/internal/context_pool.h) over a stand-in
// context type that records when it is freed: a context is reused only when given back, never
// by two callers at once, freed when the pool is full, when its lease is discarded and when the
// pool goes, each exactly once; crypto::PooledKeyedContexts counts them back to where it was.
// The pools inside AesGcm256 and HmacSha256 are shown against their vectors in aes_gcm_test.cc
// and hmac_test.cc.

#include "crypto/internal/context_pool.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "crypto/pooled_contexts.h"
#include "gtest/gtest.h"

namespace coffer::crypto::internal {
namespace {

struct FakeContext {
  int id = 0;
  std::atomic<bool> in_use{false};
};

std::mutex g_freed_mu;
std::map<int, int> g_times_freed;  // by FakeContext::id

void FreeFake(FakeContext* ctx) {
  {
    std::lock_guard<std::mutex> lock(g_freed_mu);
    ++g_times_freed[ctx->id];
  }
  delete ctx;
}

int TimesFreed(int id) {
  std::lock_guard<std::mutex> lock(g_freed_mu);
  auto it = g_times_freed.find(id);
  return it == g_times_freed.end() ? 0 : it->second;
}

using Pool = KeyedContextPool<FakeContext, FreeFake>;
using Lease = PooledContextLease<Pool, FakeContext>;

// A new context registered for a pool, as AesGcm256 and HmacSha256 make one from their
// template when the pool has none free.
FakeContext* NewContext(int id) {
  auto* ctx = new FakeContext;
  ctx->id = id;
  Pool::Adopt();
  return ctx;
}

TEST(KeyedContextPoolTest, GivesBackOnlyWhatWasGivenAndFreesTheRestWithThePool) {
  const int64_t before = PooledKeyedContexts();
  {
    Pool pool;
    EXPECT_EQ(pool.Take(), nullptr);
    FakeContext* first = NewContext(101);
    pool.Give(first);
    EXPECT_EQ(pool.Take(), first);
    EXPECT_EQ(pool.Take(), nullptr) << "one context handed out twice";
    // A full pool frees what it is given beyond its slots.
    for (int i = 0; i < static_cast<int>(Pool::kSlots) + 1; ++i) {
      pool.Give(i == 0 ? first : NewContext(102 + i));
    }
    const int beyond = 102 + static_cast<int>(Pool::kSlots);
    EXPECT_EQ(TimesFreed(beyond), 1);
    EXPECT_EQ(PooledKeyedContexts(), before + static_cast<int64_t>(Pool::kSlots));
    EXPECT_EQ(TimesFreed(101), 0);
  }
  EXPECT_EQ(TimesFreed(101), 1);
  for (int i = 1; i < static_cast<int>(Pool::kSlots); ++i) EXPECT_EQ(TimesFreed(102 + i), 1);
  EXPECT_EQ(PooledKeyedContexts(), before);
}

TEST(KeyedContextPoolTest, ALeaseReturnsItsContextUnlessDiscarded) {
  const int64_t before = PooledKeyedContexts();
  Pool pool;
  FakeContext* kept = NewContext(201);
  { Lease lease(&pool, kept); }
  EXPECT_EQ(pool.Take(), kept) << "a finished call's context was not kept for reuse";
  {
    Lease lease(&pool, kept);
    lease.Discard();  // as after a failed OpenSSL call
  }
  EXPECT_EQ(TimesFreed(201), 1);
  EXPECT_EQ(pool.Take(), nullptr) << "a discarded context went back to the pool";
  EXPECT_EQ(PooledKeyedContexts(), before);
  // A moved-from lease gives nothing back; the one it moved to does.
  FakeContext* moved = NewContext(202);
  {
    Lease from(&pool, moved);
    Lease to(std::move(from));
    EXPECT_EQ(to.get(), moved);
  }
  EXPECT_EQ(pool.Take(), moved);
  EXPECT_EQ(TimesFreed(202), 0);
  Pool::Destroy(moved);
  EXPECT_EQ(PooledKeyedContexts(), before);
}

TEST(KeyedContextPoolTest, ConcurrentCallersNeverShareAContextAndEachIsFreedOnce) {
  const int64_t before = PooledKeyedContexts();
  constexpr int kThreads = 4;
  constexpr int kCalls = 20000;
  std::atomic<int> next_id{1000};
  std::atomic<int> shared{0};
  std::vector<int> made[kThreads];
  {
    Pool pool;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        for (int i = 0; i < kCalls; ++i) {
          FakeContext* ctx = pool.Take();
          if (ctx == nullptr) {
            ctx = NewContext(next_id.fetch_add(1));
            made[t].push_back(ctx->id);
          }
          Lease lease(&pool, ctx);
          if (ctx->in_use.exchange(true)) ++shared;
          std::this_thread::yield();
          ctx->in_use.store(false);
          if (i % 97 == 0) lease.Discard();
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
    EXPECT_LE(PooledKeyedContexts(), before + static_cast<int64_t>(Pool::kSlots));
  }
  EXPECT_EQ(shared.load(), 0);
  int total = 0;
  for (const std::vector<int>& ids : made) {
    for (int id : ids) {
      EXPECT_EQ(TimesFreed(id), 1) << "context " << id;
      ++total;
    }
  }
  EXPECT_GT(total, 0);
  EXPECT_EQ(PooledKeyedContexts(), before);
}

}  // namespace
}  // namespace coffer::crypto::internal
