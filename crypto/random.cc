#include "crypto/random.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>

#include "crypto/base/status.h"

namespace coffer::crypto {
namespace {

constexpr unsigned int kStrengthBits = 256;
// OpenSSL's DRBGs serve at most 64 KiB per generate call (max_request); stay well below.
constexpr size_t kMaxDraw = 4096;
constexpr size_t kNonceBufferBytes = 4096;
constexpr size_t kMaxNonceRequest = 64;

// Bumped in the child after fork(); a thread's nonce buffer from another generation is stale.
std::atomic<uint64_t> fork_generation{0};

void OnForkChild() { fork_generation.fetch_add(1, std::memory_order_relaxed); }

struct ForkHandlerRegistration {
  ForkHandlerRegistration() { pthread_atfork(nullptr, nullptr, &OnForkChild); }
};

struct NonceBuffer {
  std::array<uint8_t, kNonceBufferBytes> bytes;
  size_t used = kNonceBufferBytes;  // empty
  uint64_t generation = 0;
};

}  // namespace

absl::Status RandomBytes(absl::Span<uint8_t> out) {
  EVP_RAND_CTX* drbg = RAND_get0_private(nullptr);
  if (drbg == nullptr) {
    return MakeError(ErrorCode::kRandomFailure, "OpenSSL's private DRBG is unavailable");
  }
  while (!out.empty()) {
    size_t n = std::min(out.size(), kMaxDraw);
    if (EVP_RAND_generate(drbg, out.data(), n, kStrengthBits, /*prediction_resistance=*/0, nullptr,
                          0) != 1) {
      return MakeError(ErrorCode::kRandomFailure, "OpenSSL's private DRBG failed to generate");
    }
    out.remove_prefix(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<SecretBytes> RandomSecret(size_t size) {
  COFFER_ASSIGN_OR_RETURN(SecretBytes secret, SecretBytes::Allocate(size));
  COFFER_RETURN_IF_ERROR(RandomBytes(secret.mutable_span()));
  return secret;
}

absl::Status RandomNonce(absl::Span<uint8_t> out) {
  static ForkHandlerRegistration registration;
  if (out.size() > kMaxNonceRequest) {
    return MakeError(ErrorCode::kInvalidArgument, "RandomNonce serves at most 64 bytes per call");
  }
  thread_local NonceBuffer buffer;
  uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (buffer.generation != generation) {
    buffer.used = kNonceBufferBytes;
    buffer.generation = generation;
  }
  if (kNonceBufferBytes - buffer.used < out.size()) {
    COFFER_RETURN_IF_ERROR(RandomBytes(absl::MakeSpan(buffer.bytes)));
    buffer.used = 0;
  }
  std::copy_n(buffer.bytes.begin() + buffer.used, out.size(), out.begin());
  // Handed-out bytes are erased so that a later memory read cannot link them to future nonces.
  OPENSSL_cleanse(buffer.bytes.data() + buffer.used, out.size());
  buffer.used += out.size();
  return absl::OkStatus();
}

}  // namespace coffer::crypto
