#include "tests/testing/process_memory.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "crypto/base/status.h"

// The shadow layout below is x86-64's; elsewhere nothing is skipped (the scan is only slower).
#if defined(__x86_64__) && defined(__SANITIZE_ADDRESS__)
#define COFFER_SCAN_SKIPS_ASAN_SHADOW 1
#elif defined(__x86_64__) && defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COFFER_SCAN_SKIPS_ASAN_SHADOW 1
#endif
#endif
#ifdef COFFER_SCAN_SKIPS_ASAN_SHADOW
#include <sanitizer/asan_interface.h>
#endif

namespace coffer::testing {
namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr size_t kPageBytes = 4096;

// Whether `mapping` is AddressSanitizer's shadow memory, which this scan does not read.
//
// In a build with AddressSanitizer every binary is instrumented, the scanned daemon as well as
// this test. At start-up each process reserves, at fixed addresses, the shadow of the whole user
// address space: one byte per 2^scale bytes of memory, at (address >> scale) + offset (scale 3,
// offset 0x7fff8000 on x86-64; the runtime reserves one page more below the offset). A shadow
// byte says which bytes of the memory it stands for may be accessed (0, 1-7, or a poison code):
// never application data. Nothing else can be mapped into the reserved range. Reading it is what
// made the scan hopeless: about 14 TiB of rw-p anonymous memory, nearly all of it never touched,
// which kept kms_daemon_secrets_in_memory_test past its timeout. The heap AddressSanitizer hands
// out (its allocator's regions, with the quarantine of freed blocks) lies outside the range and
// is read as in any build. Only an anonymous mapping wholly inside the range is skipped.
bool IsSanitizerShadow(const MemoryMapping& mapping) {
#ifdef COFFER_SCAN_SKIPS_ASAN_SHADOW
  size_t scale = 0;
  size_t offset = 0;
  __asan_get_shadow_mapping(&scale, &offset);
  constexpr uint64_t kUserAddressSpace = uint64_t{1} << 47;  // x86-64 with 4-level page tables
  const uint64_t begin = offset - kPageBytes;
  const uint64_t end = offset + (kUserAddressSpace >> scale);
  return mapping.anonymous() && mapping.start >= begin && mapping.end <= end;
#else
  (void)mapping;
  return false;
#endif
}

absl::StatusOr<std::vector<MemoryMapping>> ReadMappings(pid_t pid) {
  const std::string path = "/proc/" + std::to_string(pid) + "/maps";
  std::ifstream in(path);
  if (!in) return MakeError(ErrorCode::kIoError, "cannot read " + path);
  std::vector<MemoryMapping> mappings;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string range, offset, device, inode;
    MemoryMapping m;
    fields >> range >> m.permissions >> offset >> device >> inode;
    std::getline(fields >> std::ws, m.path);
    const size_t dash = range.find('-');
    if (dash == std::string::npos) continue;
    m.start = std::stoull(range.substr(0, dash), nullptr, 16);
    m.end = std::stoull(range.substr(dash + 1), nullptr, 16);
    mappings.push_back(std::move(m));
  }
  return mappings;
}

// Names the mappings that hold a thread's stack pointer: /proc/PID/task/TID/syscall ends with the
// stack and instruction pointers ("running" while the thread runs: then it stays unnamed).
void NameThreadStacks(pid_t pid, std::vector<MemoryMapping>& mappings) {
  const std::string tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code error;
  for (const auto& task : std::filesystem::directory_iterator(tasks, error)) {
    std::ifstream syscall(task.path() / "syscall");
    std::vector<std::string> fields;
    for (std::string field; syscall >> field;) fields.push_back(field);
    if (fields.size() < 3) continue;
    uint64_t sp = 0;
    try {
      sp = std::stoull(fields[fields.size() - 2], nullptr, 16);
    } catch (const std::exception&) {
      continue;
    }
    std::ifstream comm(task.path() / "comm");
    std::string name;
    std::getline(comm, name);
    for (MemoryMapping& m : mappings) {
      if (sp >= m.start && sp < m.end && m.path.empty()) m.thread = name;
    }
  }
}

// Searches one mapping. `window` holds the last bytes of the previous read (fewer than the
// longest needle) followed by the new bytes, so a needle split across two reads is found once.
class MappingSearch {
 public:
  MappingSearch(const std::vector<std::string>& needles, const MemoryMapping& mapping,
                MemoryScan& scan)
      : needles_(needles), mapping_(mapping), scan_(scan) {
    for (const std::string& n : needles) longest_ = std::max(longest_, n.size());
  }

  // Feeds `bytes` read at `address` (contiguous with the previous feed unless Break() came).
  void Feed(uint64_t address, const char* bytes, size_t size) {
    if (window_.empty()) window_start_ = address;
    const size_t carried = window_.size();
    window_.append(bytes, size);
    for (size_t i = 0; i < needles_.size(); ++i) {
      const std::string& needle = needles_[i];
      if (needle.empty()) continue;
      const char* begin = window_.data();
      const char* end = begin + window_.size();
      for (const char* at = begin; at < end;) {
        const void* found = memmem(at, static_cast<size_t>(end - at), needle.data(), needle.size());
        if (found == nullptr) break;
        const auto offset = static_cast<size_t>(static_cast<const char*>(found) - begin);
        // A match wholly inside the carried bytes was reported by the previous feed.
        if (offset + needle.size() > carried) {
          scan_.hits.push_back(MemoryHit{i, window_start_ + offset, mapping_});
        }
        at = static_cast<const char*>(found) + 1;
      }
    }
    const size_t keep = std::min(window_.size(), longest_ > 0 ? longest_ - 1 : 0);
    window_start_ += window_.size() - keep;
    window_.erase(0, window_.size() - keep);
  }

  // The next bytes are not contiguous with the previous ones (an unreadable page between).
  void Break() { window_.clear(); }

 private:
  const std::vector<std::string>& needles_;
  const MemoryMapping& mapping_;
  MemoryScan& scan_;
  size_t longest_ = 0;
  std::string window_;
  uint64_t window_start_ = 0;
};

}  // namespace

std::string MemoryMapping::Describe() const {
  if (!thread.empty()) return "stack of thread " + thread;
  if (!path.empty() && path.front() == '[') return path;
  if (path.empty()) return "anonymous " + permissions + " " + std::to_string(size() >> 10) + " KiB";
  return path + " " + permissions;
}

std::vector<MemoryHit> MemoryScan::HitsOf(size_t needle) const {
  std::vector<MemoryHit> of;
  for (const MemoryHit& hit : hits) {
    if (hit.needle == needle) of.push_back(hit);
  }
  return of;
}

std::string MemoryScan::DescribeHitsOf(size_t needle) const {
  std::map<std::string, size_t> per_mapping;
  for (const MemoryHit& hit : hits) {
    if (hit.needle == needle) ++per_mapping[hit.mapping.Describe()];
  }
  if (per_mapping.empty()) return "none";
  std::string text;
  for (const auto& [mapping, count] : per_mapping) {
    if (!text.empty()) text += ", ";
    text += std::to_string(count) + " in " + mapping;
  }
  return text;
}

absl::StatusOr<MemoryScan> ScanProcessMemory(pid_t pid, const std::vector<std::string>& needles) {
  MemoryScan scan;
  COFFER_ASSIGN_OR_RETURN(scan.mappings, ReadMappings(pid));
  NameThreadStacks(pid, scan.mappings);
  const std::string path = "/proc/" + std::to_string(pid) + "/mem";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return MakeError(ErrorCode::kIoError, "cannot open " + path + ": " + std::strerror(errno));
  }
  std::string buffer(kChunkBytes, '\0');
  for (const MemoryMapping& mapping : scan.mappings) {
    if (mapping.permissions.empty() || mapping.permissions[0] != 'r') continue;
    if (IsSanitizerShadow(mapping)) {
      scan.bytes_skipped += mapping.size();
      continue;
    }
    MappingSearch search(needles, mapping, scan);
    for (uint64_t at = mapping.start; at < mapping.end;) {
      const size_t want = static_cast<size_t>(std::min<uint64_t>(kChunkBytes, mapping.end - at));
      ssize_t got = pread(fd, buffer.data(), want, static_cast<off_t>(at));
      if (got > 0) {
        search.Feed(at, buffer.data(), static_cast<size_t>(got));
        scan.bytes_read += static_cast<uint64_t>(got);
        at += static_cast<uint64_t>(got);
        continue;
      }
      // Something in this chunk cannot be read: go page by page, skipping what fails.
      const size_t page = static_cast<size_t>(std::min<uint64_t>(kPageBytes, mapping.end - at));
      got = pread(fd, buffer.data(), page, static_cast<off_t>(at));
      if (got > 0) {
        search.Feed(at, buffer.data(), static_cast<size_t>(got));
        scan.bytes_read += static_cast<uint64_t>(got);
        at += static_cast<uint64_t>(got);
      } else {
        search.Break();
        scan.bytes_unreadable += page;
        at += page;
      }
    }
  }
  close(fd);
  return scan;
}

}  // namespace coffer::testing
