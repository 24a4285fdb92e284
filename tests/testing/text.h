// Test data helpers shared by suites in different folders: deterministic byte patterns (large
// values that compress badly, reproducible from a seed) and splitting output into lines.
//
// Thread safety: each call is independent.

#ifndef COFFER_TESTS_TESTING_TEXT_H_
#define COFFER_TESTS_TESTING_TEXT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace coffer::testing {

// `size` pseudo-random bytes from a linear congruential generator seeded with `seed`.
std::string Pattern(size_t size, uint32_t seed);

// The lines of `text` without their newlines, empty lines left out.
std::vector<std::string> NonEmptyLines(const std::string& text);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_TEXT_H_
