#include "hsm/pin.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "crypto/base/status.h"

namespace coffer::hsm {
namespace {

constexpr size_t kMaxPinBytes = 256;

absl::Status PinError(const std::string& message) {
  return MakeError(ErrorCode::kHsmPinUnavailable, message);
}

// Strips one trailing "\n" or "\r\n" by shrinking `*size`.
void StripNewline(const uint8_t* data, size_t* size) {
  if (*size > 0 && data[*size - 1] == '\n') --*size;
  if (*size > 0 && data[*size - 1] == '\r') --*size;
}

absl::StatusOr<crypto::SecretBytes> ReadPinFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    return PinError("cannot open the PIN file " + path + ": " + std::strerror(errno) +
                    "; create it (scripts/softhsm-token does) or fix the path");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return PinError("the PIN file " + path + " is not a regular file");
  }
  if ((st.st_mode & 077) != 0) {
    ::close(fd);
    std::string mode = "0";
    for (int shift = 9; shift >= 0; shift -= 3)
      mode += static_cast<char>('0' + ((st.st_mode >> shift) & 7));
    return PinError("the PIN file " + path + " is accessible to group or others (mode " + mode +
                    "); run: chmod 600 " + path);
  }
  if (st.st_size <= 0 || static_cast<size_t>(st.st_size) > kMaxPinBytes) {
    ::close(fd);
    return PinError("the PIN file " + path + " is empty or longer than 256 bytes");
  }
  absl::StatusOr<crypto::SecretBytes> buffer =
      crypto::SecretBytes::Allocate(static_cast<size_t>(st.st_size));
  if (!buffer.ok()) {
    ::close(fd);
    return buffer.status();
  }
  size_t got = 0;
  while (got < buffer->size()) {
    ssize_t n = ::read(fd, buffer->data() + got, buffer->size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  StripNewline(buffer->data(), &got);
  if (got == 0) return PinError("the PIN file " + path + " holds no PIN");
  if (got == buffer->size()) return buffer;
  return crypto::SecretBytes::CopyFrom(absl::MakeConstSpan(buffer->data(), got));
}

}  // namespace

PinSource PinSource::FromFile(std::string_view path) { return {Kind::kFile, path}; }

PinSource PinSource::FromEnvironment(std::string_view name) { return {Kind::kEnvironment, name}; }

std::string PinSource::Describe() const {
  switch (kind_) {
    case Kind::kFile:
      return "file " + where_;
    case Kind::kEnvironment:
      return "environment variable " + where_;
    case Kind::kNone:
      break;
  }
  return "no PIN source";
}

absl::StatusOr<crypto::SecretBytes> PinSource::ReadPin() const {
  switch (kind_) {
    case Kind::kFile:
      return ReadPinFile(where_);
    case Kind::kEnvironment: {
      const char* value = std::getenv(where_.c_str());
      if (value == nullptr || *value == '\0') {
        return PinError("environment variable " + where_ + " holding the HSM PIN is not set");
      }
      size_t size = std::strlen(value);
      if (size > kMaxPinBytes) {
        return PinError("environment variable " + where_ + " is longer than 256 bytes");
      }
      const auto* bytes = reinterpret_cast<const uint8_t*>(value);
      StripNewline(bytes, &size);
      return crypto::SecretBytes::CopyFrom(absl::MakeConstSpan(bytes, size));
    }
    case Kind::kNone:
      break;
  }
  return PinError("no HSM PIN source configured; give a PIN file or an environment variable");
}

}  // namespace coffer::hsm
