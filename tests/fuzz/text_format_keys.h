// The fixed pseudonym keys of the text-format fuzz target and its seeds (public test values).

#ifndef COFFER_TESTS_FUZZ_TEXT_FORMAT_KEYS_H_
#define COFFER_TESTS_FUZZ_TEXT_FORMAT_KEYS_H_

#include <cstdint>

namespace coffer::fuzz {

// storage::testing::FakeKeyProvider's seed, and the dataset whose pseudonym keys it derives.
inline constexpr uint64_t kPseudonymKeySeed = 0x636f66666572;
inline constexpr uint64_t kPseudonymDataset = 1;

}  // namespace coffer::fuzz

#endif  // COFFER_TESTS_FUZZ_TEXT_FORMAT_KEYS_H_
