#include "kms/keyctl/files.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::keyctl {

absl::StatusOr<std::string> ReadFileUpTo(const std::string& path, const std::string& what,
                                         size_t limit) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return MakeError(ErrorCode::kNotFound,
                     absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(errno)));
  }
  std::string bytes;
  char buffer[4096];
  absl::Status failed;
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      failed = MakeError(ErrorCode::kIoError, absl::StrCat("cannot read the ", what, " ", path,
                                                           ": ", std::strerror(errno)));
      break;
    }
    if (n == 0) break;
    bytes.append(buffer, static_cast<size_t>(n));
    if (bytes.size() > limit) {
      failed =
          MakeError(ErrorCode::kInvalidArgument,
                    absl::StrCat("the ", what, " ", path, " is larger than ", limit, " bytes"));
      break;
    }
  }
  ::close(fd);
  OPENSSL_cleanse(buffer, sizeof(buffer));
  if (!failed.ok()) {
    OPENSSL_cleanse(bytes.data(), bytes.size());
    return failed;
  }
  return bytes;
}

}  // namespace coffer::keyctl
