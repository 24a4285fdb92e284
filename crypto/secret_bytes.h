// SecretBytes: owned key material in OpenSSL's secure heap.
//
// Contract:
//  - Memory comes from OPENSSL_secure_malloc: a locked mapping, excluded from core dumps
//    where the kernel allows, guarded by inaccessible pages. It is wiped on free.
//  - Move-only. Copying is explicit (Clone) so that a stray copy shows up in review.
//  - Not printable: there is no operator<<, and PrintTo (for GoogleTest) prints only the size.
//  - Comparison is constant time (SecretEquals).
//  - Not thread-safe for concurrent mutation; concurrent reads are fine.
//
// The secure heap is a fixed-size arena set up once per process. The daemon sizes it from its
// key-cache bound with InitializeSecureHeap() before anything else runs; any other program gets
// kDefaultSecureHeapBytes on first use. When the arena is full, allocation fails with
// SECURE_HEAP_EXHAUSTED rather than falling back to ordinary memory.

#ifndef COFFER_CRYPTO_SECRET_BYTES_H_
#define COFFER_CRYPTO_SECRET_BYTES_H_

#include <cstddef>
#include <cstdint>
#include <ostream>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace coffer::crypto {

inline constexpr size_t kDefaultSecureHeapBytes = 1 << 20;  // 1 MiB

// Sets up OpenSSL's secure heap with `bytes` (rounded up to a power of two, at least 16 KiB).
// Call once, early, before any SecretBytes exists. Returns FAILED_PRECONDITION if the heap was
// already set up with a different size. `*locked`, when given, says whether the pages could be
// mlock()ed (RLIMIT_MEMLOCK permitting); unlocked pages are still wiped and kept out of dumps.
absl::Status InitializeSecureHeap(size_t bytes, bool* locked = nullptr);

// Bytes of the secure heap currently allocated (for metrics and tests).
size_t SecureHeapUsedBytes();

class SecretBytes {
 public:
  // An empty secret (size 0).
  SecretBytes() = default;

  // Returns `size` zero bytes in the secure heap.
  static absl::StatusOr<SecretBytes> Allocate(size_t size);

  // Returns a secure copy of `bytes`. The caller remains responsible for wiping its source.
  static absl::StatusOr<SecretBytes> CopyFrom(absl::Span<const uint8_t> bytes);

  SecretBytes(SecretBytes&& other) noexcept;
  SecretBytes& operator=(SecretBytes&& other) noexcept;
  SecretBytes(const SecretBytes&) = delete;
  SecretBytes& operator=(const SecretBytes&) = delete;
  ~SecretBytes();

  // Returns an independent copy, also in the secure heap.
  absl::StatusOr<SecretBytes> Clone() const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  absl::Span<const uint8_t> span() const { return {data_, size_}; }
  absl::Span<uint8_t> mutable_span() { return {data_, size_}; }

 private:
  SecretBytes(uint8_t* data, size_t size) : data_(data), size_(size) {}
  void Reset();

  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

// Wipes kStackWipeBytes of the calling thread's stack below the caller's frame: the dead frames
// of calls that just returned. Code we do not own (the PKCS#11 module: SoftHSM2 and the OpenSSL
// it calls) can leave a key's bytes in its stack temporaries, where they stay until that depth
// of the stack is reused. Call it after such a call returns, from a frame above it; it costs a
// memset of kStackWipeBytes, so keep it off the per-record path. Threads need stacks larger
// than that (every thread cofferd starts has the default 8 MiB).
inline constexpr size_t kStackWipeBytes = size_t{64} << 10;
void WipeStack();

// Constant-time equality of two secrets (length is not secret).
bool SecretEquals(const SecretBytes& a, const SecretBytes& b);

// GoogleTest printer: prints the size only.
void PrintTo(const SecretBytes& secret, std::ostream* os);

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_SECRET_BYTES_H_
