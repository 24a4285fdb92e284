#include "tests/testing/mapped_clock.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace coffer::testing {
namespace {

int64_t* Map(int fd, bool writable) {
  void* page = mmap(nullptr, sizeof(int64_t), writable ? PROT_READ | PROT_WRITE : PROT_READ,
                    MAP_SHARED, fd, 0);
  return page == MAP_FAILED ? nullptr : static_cast<int64_t*>(page);
}

}  // namespace

std::unique_ptr<MappedClock> MappedClock::Create(const std::string& path,
                                                 std::chrono::system_clock::time_point start) {
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return nullptr;
  const int64_t micros = ToUnixMicros(start);
  const bool written =
      fchmod(fd, 0644) == 0 && pwrite(fd, &micros, sizeof(micros), 0) == sizeof(micros);
  int64_t* page = written ? Map(fd, /*writable=*/true) : nullptr;
  close(fd);  // the mapping stays valid
  if (page == nullptr) return nullptr;
  return std::unique_ptr<MappedClock>(new MappedClock(page, /*writable=*/true));
}

std::unique_ptr<MappedClock> MappedClock::OpenReadOnly(const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return nullptr;
  struct stat st {};
  int64_t* page = fstat(fd, &st) == 0 && st.st_size >= static_cast<off_t>(sizeof(int64_t))
                      ? Map(fd, /*writable=*/false)
                      : nullptr;
  close(fd);
  if (page == nullptr) return nullptr;
  return std::unique_ptr<MappedClock>(new MappedClock(page, /*writable=*/false));
}

MappedClock::~MappedClock() { munmap(micros_, sizeof(int64_t)); }

std::chrono::system_clock::time_point MappedClock::Now() const {
  return FromUnixMicros(__atomic_load_n(micros_, __ATOMIC_ACQUIRE));
}

void MappedClock::Advance(std::chrono::microseconds by) {
  if (!writable_ || by.count() <= 0) return;
  __atomic_fetch_add(micros_, by.count(), __ATOMIC_ACQ_REL);
}

}  // namespace coffer::testing
