#include "tests/fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/base/status.h"

namespace coffer::fuzz {

void Fail(std::string_view what) {
  std::fprintf(stderr, "fuzz target set-up or invariant failed: %.*s\n",
               static_cast<int>(what.size()), what.data());
  std::abort();
}

void Report(std::string_view what, const absl::Status& status) {
  static const bool enabled = std::getenv("COFFER_FUZZ_DEBUG") != nullptr;
  if (!enabled) return;
  const std::string code(ErrorCodeName(ErrorCodeOf(status)));
  std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(what.size()), what.data(),
               status.ok() ? "OK" : code.c_str());
}

namespace {

std::mutex directories_mu;
std::vector<std::string>* directories = nullptr;  // never destroyed: read by the exit handler

void RemoveDirectories() {
  std::lock_guard<std::mutex> lock(directories_mu);
  for (const std::string& directory : *directories) {
    std::error_code ignored;
    std::filesystem::remove_all(directory, ignored);
  }
}

}  // namespace

std::string MakeTemporaryDirectory(std::string_view purpose) {
  const char* tmp = std::getenv("TMPDIR");
  std::string pattern = std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/coffer-" +
                        std::string(purpose) + "-XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (mkdtemp(buffer.data()) == nullptr) Fail("mkdtemp");
  std::lock_guard<std::mutex> lock(directories_mu);
  if (directories == nullptr) {
    directories = new std::vector<std::string>();
    std::atexit(RemoveDirectories);
  }
  directories->emplace_back(buffer.data());
  return std::string(buffer.data());
}

void WriteFileOrDie(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) Fail("write " + path);
}

}  // namespace coffer::fuzz
