#include "tests/testing/vectors.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "gtest/gtest.h"

namespace coffer::testing {

std::string VectorsDir() {
  const char* env = std::getenv("COFFER_VECTORS_DIR");
  if (env != nullptr && *env != '\0') return env;
  return COFFER_VECTORS_DIR;
}

nlohmann::json LoadVectorFile(std::string_view relative_path) {
  std::string path = VectorsDir() + "/" + std::string(relative_path);
  std::ifstream in(path);
  if (!in) {
    ADD_FAILURE() << "cannot open test vectors at " << path
                  << " (set COFFER_VECTORS_DIR or place ../shared beside the repo)";
    return nullptr;
  }
  nlohmann::json parsed = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded()) {
    ADD_FAILURE() << "malformed JSON in " << path;
    return nullptr;
  }
  return parsed;
}

namespace {
int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

std::string HexToBytes(std::string_view hex) {
  if (hex.size() % 2 != 0) {
    (void)std::fputs("odd-length hex string in test data\n", stderr);
    std::abort();
  }
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      (void)std::fputs("invalid hex digit in test data\n", stderr);
      std::abort();
    }
    out[i] = static_cast<char>(hi << 4 | lo);
  }
  return out;
}

std::vector<uint8_t> HexToVector(std::string_view hex) {
  std::string bytes = HexToBytes(hex);
  return {bytes.begin(), bytes.end()};
}

std::string BytesToHex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 0xf]);
  }
  return out;
}

}  // namespace coffer::testing
