// HMAC-SHA256 (RFC 2104) with a pre-keyed OpenSSL context.
//
// HmacSha256 keys an EVP_MAC_CTX once, at Create: OpenSSL 3 fetches the algorithm and re-keys
// on every one-shot HMAC() call, which cost 20-30% on the record hot path (docs in
// /work/shared/design.md, "Performance notes"). Compute and Verify take a keyed context from
// the object's pool (crypto/internal/context_pool.h) and re-initialise it with the key it holds
// (EVP_MAC_init with no key), duplicating the keyed template only when every pooled one is in
// use; StartIncremental always duplicates it. Keyless re-initialisation restarts an HMAC only
// from OpenSSL 3.0.3 on (openssl/openssl#17811); a check run once per process finds out, and
// where it does not, every call duplicates the template and frees its copy afterwards.
//
// Security contract: a 256-bit tag; keys must be at least 16 bytes (128-bit security). Tags
// are compared in constant time by Verify, which accepts only full 32-byte tags (no
// truncation). Use one key per purpose.
//
// Thread safety: an HmacSha256 is immutable after Create; its const methods may run
// concurrently from any number of threads. An IncrementalHmacSha256 belongs to one thread.
//
// Ownership: the key context, every pooled context (and OpenSSL's copies of the key inside
// them) belong to the HmacSha256 and are wiped (EVP_MAC_CTX_free) when it is destroyed. The
// caller keeps ownership of the SecretBytes passed to Create.
//
// Failures: INVALID_ARGUMENT for a short key; CRYPTO_LIBRARY_ERROR if OpenSSL fails (memory);
// CIPHERTEXT_CORRUPT when Verify finds a wrong or wrongly sized tag.

#ifndef COFFER_CRYPTO_HMAC_H_
#define COFFER_CRYPTO_HMAC_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/internal/context_pool.h"
#include "crypto/internal/openssl_util.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

inline constexpr size_t kHmacSha256TagSize = 32;
inline constexpr size_t kHmacSha256MinKeySize = 16;

using HmacSha256Tag = std::array<uint8_t, kHmacSha256TagSize>;

// An HMAC computation fed in pieces: Update any number of times, then Finalize once.
class IncrementalHmacSha256 {
 public:
  IncrementalHmacSha256(IncrementalHmacSha256&&) noexcept = default;
  IncrementalHmacSha256& operator=(IncrementalHmacSha256&&) noexcept = default;

  // Appends `data` to the MAC input. FAILED_PRECONDITION after Finalize.
  absl::Status Update(std::string_view data);

  // Returns the tag over everything passed to Update. Callable once; FAILED_PRECONDITION after.
  absl::StatusOr<HmacSha256Tag> Finalize();

 private:
  friend class HmacSha256;
  explicit IncrementalHmacSha256(internal::EvpMacCtxPtr ctx) : ctx_(std::move(ctx)) {}

  internal::EvpMacCtxPtr ctx_;  // null once finalized
};

class HmacSha256 {
 public:
  // Returns an HMAC-SHA256 keyed with `key` (at least kHmacSha256MinKeySize bytes).
  static absl::StatusOr<HmacSha256> Create(const SecretBytes& key);

  HmacSha256(HmacSha256&&) noexcept = default;
  HmacSha256& operator=(HmacSha256&&) noexcept = default;

  // Returns HMAC-SHA256(key, data).
  absl::StatusOr<HmacSha256Tag> Compute(std::string_view data) const;

  // Returns OK when `tag` is the 32-byte HMAC of `data`; CIPHERTEXT_CORRUPT otherwise.
  absl::Status Verify(std::string_view data, std::string_view tag) const;

  // Starts a computation to be fed in pieces.
  absl::StatusOr<IncrementalHmacSha256> StartIncremental() const;

 private:
  using Pool = internal::KeyedContextPool<EVP_MAC_CTX, EVP_MAC_CTX_free>;
  using Lease = internal::PooledContextLease<Pool, EVP_MAC_CTX>;

  explicit HmacSha256(internal::EvpMacCtxPtr keyed)
      : keyed_(std::move(keyed)), pool_(std::make_unique<Pool>()) {}

  absl::StatusOr<internal::EvpMacCtxPtr> DuplicateKeyed() const;
  // A keyed context ready for input: pooled and re-initialised, or a duplicate of keyed_.
  absl::StatusOr<Lease> StartCall() const;

  internal::EvpMacCtxPtr keyed_;  // initialised with the key; only ever duplicated
  // Declared after keyed_, so destroyed first. Behind a pointer: HmacSha256 stays movable.
  std::unique_ptr<Pool> pool_;
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_HMAC_H_
