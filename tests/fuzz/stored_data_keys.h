// The fixed key and context of the stored-data fuzz target and its seeds (public test values).

#ifndef COFFER_TESTS_FUZZ_STORED_DATA_KEYS_H_
#define COFFER_TESTS_FUZZ_STORED_DATA_KEYS_H_

#include <array>
#include <cstdint>
#include <string_view>

#include "crypto/secret_bytes.h"
#include "tests/fuzz/fuzz_support.h"

namespace coffer::fuzz {

inline constexpr std::string_view kStoredDataContext = "coffer fuzz stored data";

// 32 bytes 0x40..0x5f.
inline const crypto::SecretBytes& StoredDataKey() {
  static const crypto::SecretBytes* key = [] {
    std::array<uint8_t, 32> bytes{};
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(0x40 + i);
    return new crypto::SecretBytes(Must(crypto::SecretBytes::CopyFrom(bytes)));
  }();
  return *key;
}

}  // namespace coffer::fuzz

#endif  // COFFER_TESTS_FUZZ_STORED_DATA_KEYS_H_
