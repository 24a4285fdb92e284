// Constant-time comparison of public-length byte strings (MAC tags, key commitments).
//
// ConstantTimeEquals takes time that depends on the lengths of its inputs but not on their
// contents, so comparing a received tag against the expected one leaks no prefix information.
// Lengths are treated as public. Thread-safe; never fails.

#ifndef COFFER_CRYPTO_CONSTANT_TIME_H_
#define COFFER_CRYPTO_CONSTANT_TIME_H_

#include <string_view>

namespace coffer::crypto {

// Returns true when `a` and `b` hold the same bytes. Returns false at once (without reading the
// contents) when the lengths differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b);

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_CONSTANT_TIME_H_
