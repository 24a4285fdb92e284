// Builds a StreamSegmentEncrypter from caller-chosen salt, nonce prefix and first index.
//
// INTERNAL: StreamSegmentEncrypter::Create calls it with fresh randomness and index 0. Golden
// tests replay a recorded salt and prefix to detect format drift, and index tests start near
// 2^32 to prove the range check without encrypting four billion segments. Reusing a (salt,
// prefix) pair under one DEK and context would reuse nonces: nothing else may call it.

#ifndef COFFER_CRYPTO_INTERNAL_STREAM_ENCRYPTER_FACTORY_H_
#define COFFER_CRYPTO_INTERNAL_STREAM_ENCRYPTER_FACTORY_H_

#include <cstdint>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/secret_bytes.h"
#include "crypto/streaming_aead.h"

namespace coffer::crypto::internal {

class StreamEncrypterFactory {
 public:
  static absl::StatusOr<StreamSegmentEncrypter> Create(const SecretBytes& key, uint32_t key_version,
                                                       std::string_view context,
                                                       uint32_t segment_size,
                                                       absl::Span<const uint8_t> salt,
                                                       absl::Span<const uint8_t> nonce_prefix,
                                                       uint64_t first_segment_index = 0);
};

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_STREAM_ENCRYPTER_FACTORY_H_
