// KeyedContextPool: a few keyed OpenSSL contexts kept for reuse by the object that owns the key
// (AesGcm256, HmacSha256), so that a call takes a ready context instead of duplicating a keyed
// template (EVP_CIPHER_CTX_copy, EVP_MAC_CTX_dup: allocations, a copy of the key schedule and,
// for HMAC, a secure-heap copy of the key under OpenSSL's global secure-heap lock).
//
// Ownership and wiping: every context the pool hands out or holds belongs to the pool's owner,
// and so to the key: a context is either in a slot or leased to one call in progress (which
// itself holds the owner, e.g. through a shared_ptr<const DataKey>). It never outlives the
// owner: the destructor frees every pooled context with `Free` (EVP_CIPHER_CTX_free,
// EVP_MAC_CTX_free), which cleanses the key schedule, and a lease gives its context back before
// the call returns. A DataKey's contexts therefore go exactly when its key bytes go: when the
// key cache has dropped it (eviction, expiry, Erase on retirement or destruction) and the last
// request holding it lets go. No context is kept per thread.
//
// A context is reused only after a call that left it in a state the next call re-initialises
// (a nonce set anew, EVP_MAC_init); a call that fails inside OpenSSL discards its context.
//
// Thread safety: Take and Give are lock-free and may run concurrently; when every slot is
// empty Take returns null (the caller duplicates the template), and when every slot is full
// Give frees the context.

#ifndef COFFER_CRYPTO_INTERNAL_CONTEXT_POOL_H_
#define COFFER_CRYPTO_INTERNAL_CONTEXT_POOL_H_

#include <array>
#include <atomic>
#include <cstddef>

#include "crypto/pooled_contexts.h"

namespace coffer::crypto::internal {

// Counts contexts created for a KeyedContextPool and not yet freed, in the whole process
// (crypto/pooled_contexts.h exposes it).
void CountPooledContext(int delta);

template <typename Ctx, void (*Free)(Ctx*)>
class KeyedContextPool {
 public:
  static constexpr size_t kSlots = kPooledContextsPerKey;

  KeyedContextPool() = default;
  KeyedContextPool(const KeyedContextPool&) = delete;
  KeyedContextPool& operator=(const KeyedContextPool&) = delete;
  ~KeyedContextPool() {
    for (std::atomic<Ctx*>& slot : slots_) {
      Ctx* ctx = slot.exchange(nullptr, std::memory_order_acquire);
      if (ctx != nullptr) Destroy(ctx);
    }
  }

  // A pooled context, or null when none is free.
  Ctx* Take() {
    for (std::atomic<Ctx*>& slot : slots_) {
      if (slot.load(std::memory_order_relaxed) == nullptr) continue;
      Ctx* ctx = slot.exchange(nullptr, std::memory_order_acquire);
      if (ctx != nullptr) return ctx;
    }
    return nullptr;
  }

  // Registers a context just duplicated from the owner's template for this pool.
  static void Adopt() { CountPooledContext(1); }

  // Returns a context this pool handed out or adopted; frees it when every slot is taken.
  void Give(Ctx* ctx) {
    for (std::atomic<Ctx*>& slot : slots_) {
      Ctx* empty = nullptr;
      if (slot.compare_exchange_strong(empty, ctx, std::memory_order_release,
                                       std::memory_order_relaxed)) {
        return;
      }
    }
    Destroy(ctx);
  }

  // Frees (and so wipes) a context of this pool.
  static void Destroy(Ctx* ctx) {
    Free(ctx);
    CountPooledContext(-1);
  }

 private:
  std::array<std::atomic<Ctx*>, kSlots> slots_{};
};

// One call's context: given back to the pool when the call ends, or freed if Discard was
// called (an OpenSSL failure left it in an unknown state). Move-only.
template <typename Pool, typename Ctx>
class PooledContextLease {
 public:
  PooledContextLease(Pool* pool, Ctx* ctx) : pool_(pool), ctx_(ctx) {}
  PooledContextLease(PooledContextLease&& other) noexcept
      : pool_(other.pool_), ctx_(other.ctx_), discard_(other.discard_) {
    other.ctx_ = nullptr;
  }
  PooledContextLease& operator=(PooledContextLease&&) = delete;
  PooledContextLease(const PooledContextLease&) = delete;
  PooledContextLease& operator=(const PooledContextLease&) = delete;
  ~PooledContextLease() {
    if (ctx_ == nullptr) return;
    if (discard_) {
      Pool::Destroy(ctx_);
    } else {
      pool_->Give(ctx_);
    }
  }

  Ctx* get() const { return ctx_; }
  void Discard() { discard_ = true; }

 private:
  Pool* pool_;
  Ctx* ctx_;
  bool discard_ = false;
};

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_CONTEXT_POOL_H_
