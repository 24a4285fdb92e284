// Test-vector helpers: locate ../shared/vectors, read JSON files, decode hex.
//
// The vectors are read at test time from the shared directory (never pasted into the repo).
// COFFER_VECTORS_DIR in the environment overrides the path fixed at configure time.

#ifndef COFFER_TESTS_TESTING_VECTORS_H_
#define COFFER_TESTS_TESTING_VECTORS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "nlohmann/json.hpp"

namespace coffer::testing {

// Returns the directory holding wycheproof/ and rfc/.
std::string VectorsDir();

// Parses the JSON file at VectorsDir()/relative_path. Fails the current test (ADD_FAILURE) and
// returns null JSON when the file is missing or malformed.
nlohmann::json LoadVectorFile(std::string_view relative_path);

// Decodes lower- or upper-case hex. Aborts the test binary on malformed input (vectors are trusted
// data, so malformed hex is a harness bug).
std::string HexToBytes(std::string_view hex);
std::vector<uint8_t> HexToVector(std::string_view hex);
std::string BytesToHex(std::string_view bytes);

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_VECTORS_H_
