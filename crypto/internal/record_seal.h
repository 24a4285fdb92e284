// Seals a record-v1 ciphertext (docs/formats.md#record-v1) under a caller-chosen nonce.
//
// INTERNAL: RecordAead calls it with a fresh random nonce; golden-vector tests call it with the
// nonce they recorded, to prove that the format has not drifted. Anything else would risk nonce
// reuse. Thread-safe (const AesGcm256).

#ifndef COFFER_CRYPTO_INTERNAL_RECORD_SEAL_H_
#define COFFER_CRYPTO_INTERNAL_RECORD_SEAL_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "crypto/internal/aes_gcm.h"

namespace coffer::crypto::internal {

// Appends format ‖ key version ‖ nonce ‖ ciphertext ‖ tag to *out. On failure *out is unchanged.
// INVALID_ARGUMENT when `plaintext` or `associated_data` point into *out.
absl::Status SealRecordWithNonce(const AesGcm256& gcm, uint32_t key_version,
                                 absl::Span<const uint8_t> nonce, std::string_view plaintext,
                                 std::string_view associated_data, std::string* out);

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_RECORD_SEAL_H_
