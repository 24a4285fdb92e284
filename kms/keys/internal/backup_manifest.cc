#include "kms/keys/internal/backup_manifest.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/hsm_adapters.h"
#include "storage/phase_reporter.h"

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

namespace {

// Writes all of `data` to `fd` and optionally syncs it; closes `fd`. `path` names it in errors.
absl::Status WriteAndClose(int fd, const std::string& path, std::string_view data, bool sync) {
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

}  // namespace

absl::Status WriteWholeFile(const std::string& path, std::string_view data, bool sync) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(path, "cannot create");
  return WriteAndClose(fd, path, data, sync);
}

namespace {

bool OneComponent(std::string_view name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string_view::npos;
}

absl::Status BadTarget(const std::string& message) {
  return MakeError(ErrorCode::kInvalidArgument, message);
}

// The parent directory and last component of a restore target, and the parent opened
// O_PATH|O_NOFOLLOW after the checks in the header (the caller closes `*parent_fd`).
absl::Status OpenTargetParent(const std::string& path, int* parent_fd, std::string* name) {
  std::string trimmed = path;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  const fs::path p(trimmed);
  *name = p.filename().string();
  if (!OneComponent(*name)) {
    return BadTarget("restore target " + path + " must end in a new directory's name");
  }
  std::string parent = p.parent_path().string();
  if (parent.empty()) parent = ".";
  const int fd = ::open(parent.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    const int saved = errno;
    if (saved == ELOOP || saved == ENOTDIR) {
      struct stat st {};
      if (::lstat(parent.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
        return BadTarget("the parent " + parent + " of restore target " + path +
                         " is a symlink; name the target inside a real directory");
      }
      return BadTarget("the parent " + parent + " of restore target " + path +
                       " is not a directory");
    }
    return BadTarget("the parent " + parent + " of restore target " + path + " cannot be opened: " +
                     std::strerror(saved) + " (create it, owned by cofferd's user, mode 0700)");
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    absl::Status error = IoError(parent, "cannot examine");
    ::close(fd);
    return error;
  }
  if (st.st_uid != 0 && st.st_uid != ::geteuid()) {
    ::close(fd);
    return BadTarget("the parent " + parent + " of restore target " + path + " is owned by uid " +
                     std::to_string(st.st_uid) +
                     ", neither root nor cofferd's; name the target inside a directory "
                     "cofferd's user owns");
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    ::close(fd);
    return BadTarget("the parent " + parent + " of restore target " + path +
                     " is writable by group or others (no sticky bit), who could swap the "
                     "target; chmod go-w it or name the target elsewhere");
  }
  *parent_fd = fd;
  return absl::OkStatus();
}

absl::Status TargetExists(const std::string& path) {
  return MakeError(ErrorCode::kRestoreTargetNotEmpty,
                   "restore target " + path +
                       " already exists; a restore creates its target itself (mode 0700): "
                       "name a path that does not exist yet");
}

absl::Status TightenAt(int dir_fd, const std::string& path) {
  const int listing = ::dup(dir_fd);
  if (listing < 0) return IoError(path, "cannot list");
  DIR* dir = ::fdopendir(listing);
  if (dir == nullptr) {
    absl::Status error = IoError(path, "cannot list");
    ::close(listing);
    return error;
  }
  std::vector<std::string> names;
  while (struct dirent* entry = ::readdir(dir)) {
    const std::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  ::closedir(dir);
  for (const std::string& name : names) {
    const std::string child = JoinPath(path, name);
    const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ELOOP) {
        return MakeError(ErrorCode::kIoError, "unexpected symlink in a restore: " + child);
      }
      return IoError(child, "cannot open");
    }
    struct stat st {};
    absl::Status result;
    if (::fstat(fd, &st) != 0) {
      result = IoError(child, "cannot examine");
    } else if (S_ISDIR(st.st_mode)) {
      result = TightenAt(fd, child);
      if (result.ok() && ::fchmod(fd, 0700) != 0) result = IoError(child, "cannot chmod");
    } else if (S_ISREG(st.st_mode)) {
      if (::fchmod(fd, 0600) != 0) result = IoError(child, "cannot chmod");
    } else {
      result = MakeError(ErrorCode::kIoError, "unexpected file type in a restore: " + child);
    }
    ::close(fd);
    COFFER_RETURN_IF_ERROR(result);
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status OwnedDirectory::CheckCreatable(const std::string& path) {
  int parent = -1;
  std::string name;
  COFFER_RETURN_IF_ERROR(OpenTargetParent(path, &parent, &name));
  struct stat st {};
  const int rc = ::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW);
  const int saved = errno;
  ::close(parent);
  if (rc == 0) return TargetExists(path);
  if (saved != ENOENT) {
    errno = saved;
    return IoError(path, "cannot examine");
  }
  return absl::OkStatus();
}

absl::StatusOr<OwnedDirectory> OwnedDirectory::CreateNew(const std::string& path) {
  int parent = -1;
  std::string name;
  COFFER_RETURN_IF_ERROR(OpenTargetParent(path, &parent, &name));
  // mkdir never follows a symlink at the name: an existing one of any kind is EEXIST.
  if (::mkdirat(parent, name.c_str(), 0700) != 0) {
    const int saved = errno;
    ::close(parent);
    if (saved == EEXIST) return TargetExists(path);
    errno = saved;
    return IoError(path, "cannot create directory");
  }
  const int fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  ::close(parent);
  if (fd < 0) return IoError(path, "cannot open the new directory");
  OwnedDirectory dir(fd, path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return IoError(path, "cannot examine");
  if (st.st_uid != ::geteuid()) {
    return MakeError(ErrorCode::kIoError,
                     "restore target " + path + " was replaced while it was created");
  }
  if (::fchmod(fd, 0700) != 0) return IoError(path, "cannot chmod");
  return dir;
}

OwnedDirectory::OwnedDirectory(OwnedDirectory&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), path_(std::move(other.path_)) {}

OwnedDirectory& OwnedDirectory::operator=(OwnedDirectory&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
  }
  return *this;
}

OwnedDirectory::~OwnedDirectory() {
  if (fd_ >= 0) ::close(fd_);
}

absl::StatusOr<OwnedDirectory> OwnedDirectory::MakeSubdirectory(std::string_view name) const {
  const std::string path = JoinPath(path_, name);
  if (!OneComponent(name)) return MakeError(ErrorCode::kInvalidArgument, "bad name " + path);
  const std::string n(name);
  if (::mkdirat(fd_, n.c_str(), 0700) != 0) return IoError(path, "cannot create directory");
  const int fd = ::openat(fd_, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return IoError(path, "cannot open directory");
  OwnedDirectory dir(fd, path);
  if (::fchmod(fd, 0700) != 0) return IoError(path, "cannot chmod");
  return dir;
}

absl::Status OwnedDirectory::WriteNewFile(std::string_view name, std::string_view data,
                                          bool sync) const {
  const std::string path = JoinPath(path_, name);
  if (!OneComponent(name)) return MakeError(ErrorCode::kInvalidArgument, "bad name " + path);
  const std::string n(name);
  const int fd =
      ::openat(fd_, n.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return IoError(path, "cannot create");
  if (::fchmod(fd, 0600) != 0) {
    absl::Status error = IoError(path, "cannot chmod");
    ::close(fd);
    return error;
  }
  return WriteAndClose(fd, path, data, sync);
}

absl::Status OwnedDirectory::RemoveFile(std::string_view name) const {
  const std::string n(name);
  if (::unlinkat(fd_, n.c_str(), 0) != 0) return IoError(JoinPath(path_, name), "cannot remove");
  return absl::OkStatus();
}

absl::Status OwnedDirectory::Sync() const {
  if (::fsync(fd_) != 0) return IoError(path_, "cannot sync directory");
  return absl::OkStatus();
}

absl::Status OwnedDirectory::Tighten() const { return TightenAt(fd_, path_); }

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

absl::StatusOr<crypto::RecordAead> KeyDbSealer(
    hsm::RowAuthenticator& token, const std::array<uint8_t, kKeyDbSealSaltSize>& salt) {
  std::string message(kKeyDbSealDomain);
  message.append(reinterpret_cast<const char*>(salt.data()), salt.size());
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key, DeriveTokenKey(token, message));
  return crypto::RecordAead::Create(key, 1);
}

std::string KeyDbFileAad(uint32_t id, std::string_view name) {
  std::string aad(kKeyDbSealDomain);
  for (int shift = 24; shift >= 0; shift -= 8)
    aad.push_back(static_cast<char>((id >> shift) & 0xff));
  aad.append(name);
  return aad;
}

std::string_view KeyDbFileName(const ManifestFile& file, bool sealed) {
  std::string_view name = std::string_view(file.path).substr(file.path.rfind('/') + 1);
  if (sealed && name.ends_with(kSealedSuffix)) name.remove_suffix(kSealedSuffix.size());
  return name;
}

absl::StatusOr<std::string> UnsealKeyDbFile(const crypto::RecordAead& sealer, uint32_t id,
                                            const ManifestFile& file, std::string_view sealed) {
  if (!std::string_view(file.path).ends_with(kSealedSuffix)) {
    return Corrupt(id, file.path + " is listed in the clear in a sealed backup");
  }
  absl::StatusOr<std::string> plain =
      sealer.Open(sealed, KeyDbFileAad(id, KeyDbFileName(file, true)));
  if (!plain.ok()) {
    return Corrupt(id, file.path +
                           " does not open under this token's backup key (altered, or sealed by "
                           "another token)");
  }
  return plain;
}

std::string EncodeManifest(const Manifest& manifest) {
  std::string text(manifest.key_db_seal_salt.has_value() ? kManifestMagicV2 : kManifestMagic);
  text += "\nid " + std::to_string(manifest.id);
  text += "\ncreated_micros " + std::to_string(manifest.created_micros);
  text += "\naudit_sequence " + std::to_string(manifest.audit_sequence);
  text += "\naudit_log_id " + audit::ToHex(manifest.log_id);
  if (manifest.key_db_seal_salt.has_value()) {
    text += "\nkey_db_sealed " + audit::ToHex(*manifest.key_db_seal_salt);
  }
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
  if (lines.empty() || (lines[0] != kManifestMagic && lines[0] != kManifestMagicV2)) {
    return Corrupt(id, "not a full-backup manifest (or of a version this build does not read)");
  }
  const bool v2 = lines[0] == kManifestMagicV2;
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
    } else if (v2 && f[0] == "key_db_sealed" && f.size() == 2 &&
               !manifest.key_db_seal_salt.has_value()) {
      manifest.key_db_seal_salt = audit::FromHex<kKeyDbSealSaltSize>(f[1]);
      if (!manifest.key_db_seal_salt.has_value()) return Corrupt(id, "bad key-DB seal salt");
    } else if (f[0] == "file" && f.size() == 4 && SafeRelativePath(f[1]) &&
               ParseU64(f[2], &value) && f[3].size() == size_t{2} * SHA256_DIGEST_LENGTH) {
      manifest.files.push_back(ManifestFile{std::string(f[1]), value, std::string(f[3])});
    } else {
      return Corrupt(id, "unknown manifest line " + std::to_string(i + 1));
    }
  }
  if (!have_id || !have_created || !have_sequence || !have_log || manifest.id != id ||
      v2 != manifest.key_db_seal_salt.has_value()) {
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

bool InPart(const ManifestFile& file, std::string_view part) {
  return file.path.size() > part.size() && file.path.starts_with(part) &&
         file.path[part.size()] == '/';
}

uint64_t PartBytes(const Manifest& manifest, std::string_view part) {
  uint64_t total = 0;
  for (const ManifestFile& file : manifest.files) {
    if (InPart(file, part)) total += file.size;
  }
  return total;
}

uint64_t CurrentBytes(const std::string& directory, const std::vector<std::string>& names) {
  uint64_t total = 0;
  for (const std::string& name : names) {
    std::error_code ec;
    const uintmax_t size = fs::file_size(JoinPath(directory, name), ec);
    if (!ec) total += size;
  }
  return total;
}

absl::Status VerifyParts(storage::DataDbBackups* data_backups, uint32_t id, const std::string& dir,
                         const Manifest& manifest, hsm::RowAuthenticator& token,
                         const coffer::ProgressFn& progress) {
  std::optional<crypto::RecordAead> sealer;
  if (manifest.key_db_seal_salt.has_value()) {
    COFFER_ASSIGN_OR_RETURN(sealer, KeyDbSealer(token, *manifest.key_db_seal_salt));
  }
  absl::Status data = data_backups->Verify(id, progress);
  if (ErrorCodeOf(data) == ErrorCode::kBackupNotFound) return Corrupt(id, "data backup missing");
  COFFER_RETURN_IF_ERROR(data);
  bool have_keys = false;
  for (const FilePart& part : kFileParts) {
    storage::PhaseReporter reporter(progress, part.phase, PartBytes(manifest, part.dir),
                                    storage::PhaseReporter::kByteStep);
    for (const ManifestFile& file : manifest.files) {
      if (!InPart(file, part.dir)) continue;
      COFFER_ASSIGN_OR_RETURN(std::string bytes, ReadChecked(id, dir + "/" + file.path, file));
      if (sealer.has_value() && part.dir == kRestoredKeyDbDir) {
        COFFER_RETURN_IF_ERROR(UnsealKeyDbFile(*sealer, id, file, bytes).status());
      }
      reporter.Add(file.size);
      have_keys = have_keys || part.dir == kRestoredKeyDbDir;
    }
    reporter.Finish();
  }
  if (!have_keys) return Corrupt(id, "no key-DB files");
  return absl::OkStatus();
}

}  // namespace coffer::kms::internal
