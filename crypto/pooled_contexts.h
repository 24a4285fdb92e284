// PooledKeyedContexts: how many keyed OpenSSL contexts the per-key pools of AesGcm256 (under
// RecordAead) and HmacSha256 hold in this process, leased or idle (crypto/internal/
// context_pool.h). Each holds a key schedule, and each belongs to the object that owns its key:
// once every such object is destroyed the count is back where it was. Tests use it to show that
// no context of an evicted or destroyed key survives; it is cheap enough for a metric.
//
// Thread safety: may be called from any thread; the value is a snapshot.

#ifndef COFFER_CRYPTO_POOLED_CONTEXTS_H_
#define COFFER_CRYPTO_POOLED_CONTEXTS_H_

#include <cstddef>
#include <cstdint>

namespace coffer::crypto {

// Contexts an AesGcm256 or HmacSha256 keeps at most for reuse: enough for the concurrent calls
// of a few workers; calls beyond them duplicate the keyed template. Memory estimates
// (DataKey::MemoryBytes) count them.
inline constexpr size_t kPooledContextsPerKey = 4;

int64_t PooledKeyedContexts();

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_POOLED_CONTEXTS_H_
