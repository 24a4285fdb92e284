// Randomness for keys, salts and nonces, drawn from OpenSSL's private DRBG.
//
// Every random byte coffer uses comes from here. We call EVP_RAND_generate on the DRBG that
// RAND_get0_private() returns, never RAND_bytes(): RAND_bytes goes through the process-wide
// default RAND method, which a loaded PKCS#11 module may replace (SoftHSM2's source installs an
// RDRAND ENGINE as the default). The private DRBG is per thread, seeded from the OS, reseeded
// after fork(), and unaffected by such replacement. tests/crypto/random_test.cc proves it.
//
// Thread-safe. Failures are reported, never papered over with weaker randomness.

#ifndef COFFER_CRYPTO_RANDOM_H_
#define COFFER_CRYPTO_RANDOM_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "crypto/secret_bytes.h"

namespace coffer::crypto {

// Fills `out` from the private DRBG at 256-bit strength.
absl::Status RandomBytes(absl::Span<uint8_t> out);

// Returns `size` fresh random bytes as a secret (keys).
absl::StatusOr<SecretBytes> RandomSecret(size_t size);

// Fills `out` (at most 64 bytes) with public random bytes such as nonces and salts, from a
// per-thread buffer refilled from the private DRBG in 4 KiB draws: one DRBG call serves
// hundreds of records on the hot path. The buffer is discarded in a child after fork(), so a
// parent and child never hand out the same bytes. Never use it for keys.
absl::Status RandomNonce(absl::Span<uint8_t> out);

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_RANDOM_H_
