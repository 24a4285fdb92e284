#include "kms/keys/internal/backup_manifest.h"

#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "crypto/base/status.h"
#include "kms/keys/full_backup.h"

namespace coffer::kms::internal {

namespace fs = std::filesystem;

namespace {

std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(separator, start);
    if (end == std::string_view::npos) end = text.size();
    parts.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return parts;
}

bool ParseU64(std::string_view text, uint64_t* out) {
  if (text.empty() || text.size() > 20) return false;
  uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    uint64_t next = value * 10 + static_cast<uint64_t>(c - '0');
    if (next / 10 != value) return false;
    value = next;
  }
  *out = value;
  return true;
}

// A relative path of the form keys/NAME or audit/NAME, NAME without '/' or "..".
bool SafeRelativePath(std::string_view path) {
  size_t slash = path.find('/');
  if (slash == std::string_view::npos) return false;
  std::string_view dir = path.substr(0, slash);
  std::string_view name = path.substr(slash + 1);
  return (dir == kRestoredKeyDbDir || dir == kRestoredAuditDir) && !name.empty() &&
         name.find('/') == std::string_view::npos && name != "." && name != "..";
}

}  // namespace

std::string JoinPath(std::string_view directory, std::string_view name) {
  std::string path(directory);
  path += '/';
  path += name;
  return path;
}

absl::Status Corrupt(uint32_t id, std::string_view what) {
  return MakeError(ErrorCode::kBackupCorrupt,
                   "full backup " + std::to_string(id) + ": " + std::string(what));
}

absl::Status IoError(const std::string& path, std::string_view what) {
  return MakeError(ErrorCode::kIoError,
                   std::string(what) + " " + path + ": " + std::strerror(errno));
}

std::string Sha256Hex(std::string_view data) {
  std::array<uint8_t, SHA256_DIGEST_LENGTH> digest{};
  SHA256(reinterpret_cast<const uint8_t*>(data.data()), data.size(), digest.data());
  return audit::ToHex(digest);
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return MakeError(ErrorCode::kNotFound, "missing file " + path);
    return IoError(path, "cannot open");
  }
  std::string out;
  char buffer[1 << 16];
  while (true) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status error = IoError(path, "cannot read");
      ::close(fd);
      return error;
    }
    if (n == 0) break;
    out.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

absl::Status WriteWholeFile(const std::string& path, std::string_view data, bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(path, "cannot create");
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      absl::Status error = IoError(path, "cannot write");
      ::close(fd);
      return error;
    }
    done += static_cast<size_t>(n);
  }
  if (sync && ::fsync(fd) != 0) {
    absl::Status error = IoError(path, "cannot sync");
    ::close(fd);
    return error;
  }
  if (::close(fd) != 0) return IoError(path, "cannot close");
  return absl::OkStatus();
}

absl::Status SyncDirectory(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(path, "cannot open directory");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0) return IoError(path, "cannot sync directory");
  return absl::OkStatus();
}

absl::Status MakeDirectory(const std::string& path) {
  if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
    return IoError(path, "cannot create directory");
  }
  return absl::OkStatus();
}

// Names of the regular files in `directory`, sorted.
absl::StatusOr<std::vector<std::string>> RegularFiles(const std::string& directory) {
  std::error_code ec;
  std::vector<std::string> names;
  fs::directory_iterator it(directory, ec);
  if (ec) return MakeError(ErrorCode::kIoError, "cannot list " + directory + ": " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file(ec)) names.push_back(it->path().filename().string());
  }
  if (ec) return MakeError(ErrorCode::kIoError, "cannot list " + directory + ": " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status RemoveTree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) return MakeError(ErrorCode::kIoError, "cannot remove " + path + ": " + ec.message());
  return absl::OkStatus();
}

bool NonEmpty(const std::string& path, std::error_code& ec) {
  return fs::exists(path, ec) && !fs::is_empty(path, ec);
}

std::string EncodeManifest(const Manifest& manifest) {
  std::string text(kManifestMagic);
  text += "\nid " + std::to_string(manifest.id);
  text += "\ncreated_micros " + std::to_string(manifest.created_micros);
  text += "\naudit_sequence " + std::to_string(manifest.audit_sequence);
  text += "\naudit_log_id " + audit::ToHex(manifest.log_id);
  for (const ManifestFile& file : manifest.files) {
    text += "\nfile " + file.path + " " + std::to_string(file.size) + " " + file.sha256;
  }
  text += "\n";
  text += "sha256 " + Sha256Hex(text) + "\n";
  return text;
}

absl::StatusOr<Manifest> ParseManifest(uint32_t id, std::string_view text) {
  size_t last = text.rfind("sha256 ");
  if (last == std::string_view::npos || (last > 0 && text[last - 1] != '\n')) {
    return Corrupt(id, "manifest has no checksum line");
  }
  std::string_view body = text.substr(0, last);
  std::string_view sum = text.substr(last + 7);
  if (!sum.empty() && sum.back() == '\n') sum.remove_suffix(1);
  if (sum != Sha256Hex(body)) return Corrupt(id, "manifest checksum mismatch");
  std::vector<std::string_view> lines = Split(body, '\n');
  if (lines.empty() || lines[0] != kManifestMagic) return Corrupt(id, "not a full-backup manifest");
  Manifest manifest;
  bool have_id = false, have_created = false, have_sequence = false, have_log = false;
  for (size_t i = 1; i < lines.size(); ++i) {
    if (lines[i].empty()) continue;
    std::vector<std::string_view> f = Split(lines[i], ' ');
    uint64_t value = 0;
    if (f[0] == "id" && f.size() == 2 && ParseU64(f[1], &value) && value <= UINT32_MAX) {
      manifest.id = static_cast<uint32_t>(value);
      have_id = true;
    } else if (f[0] == "created_micros" && f.size() == 2 && ParseU64(f[1], &value)) {
      manifest.created_micros = static_cast<int64_t>(value);
      have_created = true;
    } else if (f[0] == "audit_sequence" && f.size() == 2 && ParseU64(f[1], &value)) {
      manifest.audit_sequence = value;
      have_sequence = true;
    } else if (f[0] == "audit_log_id" && f.size() == 2) {
      auto log_id = audit::FromHex<audit::kLogIdSize>(f[1]);
      if (!log_id.has_value()) return Corrupt(id, "bad audit log id");
      manifest.log_id = *log_id;
      have_log = true;
    } else if (f[0] == "file" && f.size() == 4 && SafeRelativePath(f[1]) &&
               ParseU64(f[2], &value) && f[3].size() == size_t{2} * SHA256_DIGEST_LENGTH) {
      manifest.files.push_back(ManifestFile{std::string(f[1]), value, std::string(f[3])});
    } else {
      return Corrupt(id, "unknown manifest line " + std::to_string(i + 1));
    }
  }
  if (!have_id || !have_created || !have_sequence || !have_log || manifest.id != id) {
    return Corrupt(id, "manifest incomplete");
  }
  return manifest;
}

// Reads `path` and checks it against `file`: BACKUP_CORRUPT naming the file otherwise.
absl::StatusOr<std::string> ReadChecked(uint32_t id, const std::string& path,
                                        const ManifestFile& file) {
  absl::StatusOr<std::string> data = ReadWholeFile(path);
  if (!data.ok()) {
    if (ErrorCodeOf(data.status()) == ErrorCode::kNotFound) {
      return Corrupt(id, "missing " + file.path);
    }
    return data.status();
  }
  if (data->size() != file.size) return Corrupt(id, "wrong size of " + file.path);
  if (Sha256Hex(*data) != file.sha256) return Corrupt(id, "checksum mismatch in " + file.path);
  return data;
}

// The manifest of the backup in `dir` (BACKUP_NOT_FOUND without one).
absl::StatusOr<Manifest> ReadManifest(uint32_t id, const std::string& dir) {
  absl::StatusOr<std::string> text = ReadWholeFile(dir + "/" + std::string(kManifestName));
  if (!text.ok() && ErrorCodeOf(text.status()) == ErrorCode::kNotFound) {
    return MakeError(ErrorCode::kBackupNotFound, "no full backup " + std::to_string(id));
  }
  if (!text.ok()) return text.status();
  return ParseManifest(id, *text);
}

}  // namespace coffer::kms::internal
