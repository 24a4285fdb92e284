#include "crypto/internal/context_pool.h"

#include <atomic>
#include <cstdint>

#include "crypto/pooled_contexts.h"

namespace coffer::crypto {
namespace {

std::atomic<int64_t> g_pooled_contexts{0};

}  // namespace

namespace internal {

void CountPooledContext(int delta) {
  g_pooled_contexts.fetch_add(delta, std::memory_order_relaxed);
}

}  // namespace internal

int64_t PooledKeyedContexts() { return g_pooled_contexts.load(std::memory_order_relaxed); }

}  // namespace coffer::crypto
