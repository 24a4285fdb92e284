// HKDF-SHA256 (RFC 5869) key derivation, through OpenSSL's EVP_KDF.
//
// Security contract: `ikm` is secret key material with enough entropy for the keys derived
// from it; `salt` and `info` are public. Distinct `info` values give independent keys, so every
// caller binds its purpose, format and context into `info` (see docs/formats.md for coffer's
// labels). Outputs are secrets in the secure heap.
//
// Thread-safe: every call builds its own context. The fetched algorithm is shared and
// immutable.
//
// Failures: INVALID_ARGUMENT for an empty ikm/prk, a zero length or a length beyond
// 255 * 32 = 8160 bytes (RFC 5869's limit); SECURE_HEAP_EXHAUSTED when the output cannot be
// allocated; CRYPTO_LIBRARY_ERROR if OpenSSL fails. No partial output is ever returned.

#ifndef COFFER_CRYPTO_HKDF_H_
#define COFFER_CRYPTO_HKDF_H_

#include <cstddef>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

inline constexpr size_t kHkdfSha256PrkSize = 32;
inline constexpr size_t kHkdfSha256MaxOutputSize = 255 * 32;

// Returns `length` bytes of HKDF-Expand(HKDF-Extract(salt, ikm), info). An empty salt means
// RFC 5869's default (32 zero bytes).
absl::StatusOr<SecretBytes> HkdfSha256(const SecretBytes& ikm, std::string_view salt,
                                       std::string_view info, size_t length);

// Returns the 32-byte pseudorandom key HKDF-Extract(salt, ikm).
absl::StatusOr<SecretBytes> HkdfSha256Extract(const SecretBytes& ikm, std::string_view salt);

// Returns `length` bytes of HKDF-Expand(prk, info). `prk` should come from HkdfSha256Extract.
absl::StatusOr<SecretBytes> HkdfSha256Expand(const SecretBytes& prk, std::string_view info,
                                             size_t length);

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_HKDF_H_
