// Big-endian (network order) encoding of the fixed-width integers in coffer's ciphertext
// headers (docs/formats.md). Internal to crypto/. Pure functions; thread-safe.

#ifndef COFFER_CRYPTO_INTERNAL_BIG_ENDIAN_H_
#define COFFER_CRYPTO_INTERNAL_BIG_ENDIAN_H_

#include <cstdint>

namespace coffer::crypto::internal {

inline void StoreBigEndian32(uint32_t value, uint8_t* out) {
  out[0] = static_cast<uint8_t>(value >> 24);
  out[1] = static_cast<uint8_t>(value >> 16);
  out[2] = static_cast<uint8_t>(value >> 8);
  out[3] = static_cast<uint8_t>(value);
}

inline uint32_t LoadBigEndian32(const uint8_t* in) {
  return static_cast<uint32_t>(in[0]) << 24 | static_cast<uint32_t>(in[1]) << 16 |
         static_cast<uint32_t>(in[2]) << 8 | static_cast<uint32_t>(in[3]);
}

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_BIG_ENDIAN_H_
