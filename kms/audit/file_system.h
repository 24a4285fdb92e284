// AuditFileSystem: every file operation the audit log and its verifier perform.
//
// The log reaches the disk only through this interface (LevelDB's Env pattern), so tests can
// inject a write or sync failure and check that the log fails closed. PosixAuditFileSystem()
// is the real one: files 0600, directories 0700, fdatasync for appends, fsync of the directory
// after a file is created, renamed or removed.
//
// Thread safety: the POSIX implementation is safe from any thread; an AuditFile is used by one
// thread at a time (the log serialises). Ownership: PosixAuditFileSystem() lives for the whole
// process; an AuditFile closes its descriptor when destroyed.
// Failures: IO_ERROR naming the path and the OS reason; NOT_FOUND for a missing file or
// directory.

#ifndef COFFER_KMS_AUDIT_FILE_SYSTEM_H_
#define COFFER_KMS_AUDIT_FILE_SYSTEM_H_

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace coffer::kms::audit {

// A file open for appending.
class AuditFile {
 public:
  AuditFile(const AuditFile&) = delete;
  AuditFile& operator=(const AuditFile&) = delete;
  virtual ~AuditFile() = default;

  // Appends all of `data` (retrying short writes); IO_ERROR if any of it could not be written.
  virtual absl::Status Append(std::string_view data) = 0;

  // Makes everything appended so far durable (fdatasync).
  virtual absl::Status Sync() = 0;

 protected:
  AuditFile() = default;
};

class AuditFileSystem {
 public:
  AuditFileSystem(const AuditFileSystem&) = delete;
  AuditFileSystem& operator=(const AuditFileSystem&) = delete;
  virtual ~AuditFileSystem() = default;

  // Creates `path`, which must not exist, and opens it for appending.
  virtual absl::StatusOr<std::unique_ptr<AuditFile>> CreateFile(const std::string& path) = 0;

  // Opens the existing `path` for appending at its end.
  virtual absl::StatusOr<std::unique_ptr<AuditFile>> OpenForAppend(const std::string& path) = 0;

  // Returns the whole content of `path`.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;

  // Cuts `path` to `size` bytes and makes that durable.
  virtual absl::Status Truncate(const std::string& path, uint64_t size) = 0;

  virtual absl::Status RemoveFile(const std::string& path) = 0;

  // Names (not paths) of the entries in `directory`, in no particular order.
  virtual absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& directory) = 0;

  // Creates `directory` (one level) if it does not exist.
  virtual absl::Status CreateDirectory(const std::string& directory) = 0;

  // Makes the directory's entries (created or removed files) durable.
  virtual absl::Status SyncDirectory(const std::string& directory) = 0;

 protected:
  AuditFileSystem() = default;
};

AuditFileSystem& PosixAuditFileSystem();

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_FILE_SYSTEM_H_
