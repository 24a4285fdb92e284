// Helpers shared by the crypto tests: test keys as SecretBytes and byte-view conversions.
// Test keys only; nothing here is for production use.

#ifndef COFFER_TESTS_CRYPTO_TEST_KEYS_H_
#define COFFER_TESTS_CRYPTO_TEST_KEYS_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/types/span.h"
#include "crypto/secret_bytes.h"
#include "gtest/gtest.h"

namespace coffer::testing {

// Copies `bytes` into a secret; fails the current test if the secure heap refuses.
inline crypto::SecretBytes SecretFrom(std::string_view bytes) {
  auto secret =
      crypto::SecretBytes::CopyFrom({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_TRUE(secret.ok()) << secret.status();
  return secret.ok() ? std::move(secret).value() : crypto::SecretBytes();
}

// A 32-byte test key whose bytes all equal `fill`.
inline crypto::SecretBytes TestKey(char fill) { return SecretFrom(std::string(32, fill)); }

inline absl::Span<const uint8_t> SpanOf(std::string_view bytes) {
  return {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()};
}

inline absl::Span<uint8_t> MutableSpanOf(std::string& bytes) {
  return {reinterpret_cast<uint8_t*>(bytes.data()), bytes.size()};
}

}  // namespace coffer::testing

#endif  // COFFER_TESTS_CRYPTO_TEST_KEYS_H_
