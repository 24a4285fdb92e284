#include "kms/audit/file_system.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "crypto/base/status.h"

namespace coffer::kms::audit {
namespace {

absl::Status OsError(std::string_view what, const std::string& path, int error) {
  return MakeError(error == ENOENT ? ErrorCode::kNotFound : ErrorCode::kIoError,
                   std::string(what) + " " + path + ": " + std::strerror(error));
}

class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor() {
    if (fd_ >= 0) close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

class PosixAuditFile final : public AuditFile {
 public:
  PosixAuditFile(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}

  absl::Status Append(std::string_view data) override {
    while (!data.empty()) {
      const ssize_t written = write(fd_.get(), data.data(), data.size());
      if (written < 0) {
        if (errno == EINTR) continue;
        return OsError("write", path_, errno);
      }
      data.remove_prefix(static_cast<size_t>(written));
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (fdatasync(fd_.get()) != 0) return OsError("fdatasync", path_, errno);
    return absl::OkStatus();
  }

 private:
  FileDescriptor fd_;
  std::string path_;
};

class PosixFileSystem final : public AuditFileSystem {
 public:
  absl::StatusOr<std::unique_ptr<AuditFile>> CreateFile(const std::string& path) override {
    return Open(path, O_WRONLY | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC);
  }

  absl::StatusOr<std::unique_ptr<AuditFile>> OpenForAppend(const std::string& path) override {
    return Open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
  }

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    FileDescriptor fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (fd.get() < 0) return OsError("open", path, errno);
    std::string content;
    char buffer[64 * 1024];
    while (true) {
      const ssize_t got = read(fd.get(), buffer, sizeof(buffer));
      if (got < 0) {
        if (errno == EINTR) continue;
        return OsError("read", path, errno);
      }
      if (got == 0) break;
      content.append(buffer, static_cast<size_t>(got));
    }
    return content;
  }

  absl::Status Truncate(const std::string& path, uint64_t size) override {
    FileDescriptor fd(open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (fd.get() < 0) return OsError("open", path, errno);
    if (ftruncate(fd.get(), static_cast<off_t>(size)) != 0) return OsError("truncate", path, errno);
    if (fsync(fd.get()) != 0) return OsError("fsync", path, errno);
    return absl::OkStatus();
  }

  absl::Status RemoveFile(const std::string& path) override {
    if (unlink(path.c_str()) != 0) return OsError("unlink", path, errno);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& directory) override {
    DIR* dir = opendir(directory.c_str());
    if (dir == nullptr) return OsError("opendir", directory, errno);
    std::vector<std::string> names;
    errno = 0;
    while (const dirent* entry = readdir(dir)) {  // NOLINT(concurrency-mt-unsafe): own DIR*
      std::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    const int error = errno;
    closedir(dir);
    if (error != 0) return OsError("readdir", directory, error);
    return names;
  }

  absl::Status CreateDirectory(const std::string& directory) override {
    if (mkdir(directory.c_str(), 0700) != 0 && errno != EEXIST) {
      return OsError("mkdir", directory, errno);
    }
    return absl::OkStatus();
  }

  absl::Status SyncDirectory(const std::string& directory) override {
    FileDescriptor fd(open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (fd.get() < 0) return OsError("open", directory, errno);
    if (fsync(fd.get()) != 0) return OsError("fsync", directory, errno);
    return absl::OkStatus();
  }

 private:
  static absl::StatusOr<std::unique_ptr<AuditFile>> Open(const std::string& path, int flags) {
    const int fd = open(path.c_str(), flags, 0600);
    if (fd < 0) return OsError("open", path, errno);
    return std::unique_ptr<AuditFile>(new PosixAuditFile(fd, path));
  }
};

}  // namespace

AuditFileSystem& PosixAuditFileSystem() {
  static auto* const file_system = new PosixFileSystem();
  return *file_system;
}

}  // namespace coffer::kms::audit
