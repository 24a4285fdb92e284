// Reading the small files keyctl is handed (keys, receipts, canary content), bounded.
//
// Thread-safe. Failure: NOT_FOUND when `path` cannot be opened, IO_ERROR when a read fails,
// INVALID_ARGUMENT when it holds more than `limit` bytes; the messages name `what` and `path`.

#ifndef COFFER_KMS_KEYCTL_FILES_H_
#define COFFER_KMS_KEYCTL_FILES_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace coffer::keyctl {

// The whole of `path`, at most `limit` bytes. The read buffer is wiped, and so are the bytes
// read when it fails (keys pass through here); the caller wipes the result if it is secret.
absl::StatusOr<std::string> ReadFileUpTo(const std::string& path, const std::string& what,
                                         size_t limit);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_FILES_H_
