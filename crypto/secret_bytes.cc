#include "crypto/secret_bytes.h"

#include <openssl/crypto.h>

#include <bit>
#include <cstring>
#include <mutex>
#include <string>

#include "crypto/base/status.h"

namespace coffer::crypto {
namespace {

constexpr size_t kMinimumHeapBytes = size_t{16} * 1024;
constexpr size_t kMinimumBlock = 16;  // OpenSSL's smallest secure-heap allocation

std::mutex heap_mutex;
size_t heap_bytes = 0;  // guarded by heap_mutex; 0 until set up
bool heap_locked = false;

absl::Status InitializeLocked(size_t bytes) {
  bytes = std::bit_ceil(std::max(bytes, kMinimumHeapBytes));
  if (heap_bytes != 0) {
    if (heap_bytes == bytes) return absl::OkStatus();
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the secure heap is already set up with another size; call "
                     "InitializeSecureHeap once, before any key is created");
  }
  int rc = CRYPTO_secure_malloc_init(bytes, kMinimumBlock);
  if (rc == 0) {
    return MakeError(ErrorCode::kSecureHeapExhausted,
                     "cannot set up OpenSSL's secure heap (mmap failed)");
  }
  heap_bytes = bytes;
  heap_locked = (rc == 1);  // 2 means set up, but mlock() failed (RLIMIT_MEMLOCK)
  return absl::OkStatus();
}

absl::Status EnsureSecureHeap() {
  std::lock_guard<std::mutex> lock(heap_mutex);
  if (heap_bytes != 0) return absl::OkStatus();
  return InitializeLocked(kDefaultSecureHeapBytes);
}

}  // namespace

absl::Status InitializeSecureHeap(size_t bytes, bool* locked) {
  std::lock_guard<std::mutex> lock(heap_mutex);
  absl::Status status = InitializeLocked(bytes);
  if (locked != nullptr) *locked = heap_locked;
  return status;
}

size_t SecureHeapUsedBytes() { return CRYPTO_secure_used(); }

absl::StatusOr<SecretBytes> SecretBytes::Allocate(size_t size) {
  if (size == 0) return SecretBytes();
  COFFER_RETURN_IF_ERROR(EnsureSecureHeap());
  void* memory = OPENSSL_secure_zalloc(size);
  if (memory == nullptr) {
    return MakeError(ErrorCode::kSecureHeapExhausted,
                     "the secure heap is full (" + std::to_string(size) +
                         " bytes requested); raise its size or lower the key-cache bound");
  }
  return SecretBytes(static_cast<uint8_t*>(memory), size);
}

absl::StatusOr<SecretBytes> SecretBytes::CopyFrom(absl::Span<const uint8_t> bytes) {
  COFFER_ASSIGN_OR_RETURN(SecretBytes secret, Allocate(bytes.size()));
  if (!bytes.empty()) std::memcpy(secret.data_, bytes.data(), bytes.size());
  return secret;
}

SecretBytes::SecretBytes(SecretBytes&& other) noexcept : data_(other.data_), size_(other.size_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

SecretBytes& SecretBytes::operator=(SecretBytes&& other) noexcept {
  if (this != &other) {
    Reset();
    data_ = other.data_;
    size_ = other.size_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

SecretBytes::~SecretBytes() { Reset(); }

void SecretBytes::Reset() {
  if (data_ != nullptr) OPENSSL_secure_clear_free(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

absl::StatusOr<SecretBytes> SecretBytes::Clone() const { return CopyFrom(span()); }

// noinline: the buffer must be a frame of its own, below the caller's. OPENSSL_cleanse is an
// opaque call, so the compiler cannot drop the writes to a buffer nobody reads.
[[gnu::noinline]] void WipeStack() {
  unsigned char below[kStackWipeBytes];
  OPENSSL_cleanse(below, sizeof(below));
}

bool SecretEquals(const SecretBytes& a, const SecretBytes& b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

void PrintTo(const SecretBytes& secret, std::ostream* os) {
  *os << "SecretBytes(" << secret.size() << " bytes, redacted)";
}

}  // namespace coffer::crypto
