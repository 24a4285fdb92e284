// Internal to kms/keys: a full backup's files on disk — the MANIFEST (docs/key-manager.md,
// "Full backups": one "name value..." line each, the last the SHA-256 of everything before it),
// reading and writing whole files with fsync, and the directory helpers FullBackups uses.
// Failures: BACKUP_CORRUPT naming the backup and what failed, IO_ERROR naming the path.
// Thread-compatible.

#ifndef COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_
#define COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/progress.h"
#include "crypto/record_aead.h"
#include "hsm/service_keys.h"
#include "kms/audit/audit_format.h"
#include "kms/keys/full_backup.h"
#include "storage/backup.h"

namespace coffer::kms::internal {

// The MANIFEST: one "name value..." line each, the last line the SHA-256 of everything before
// it. Version 2 (written) adds the line "key_db_sealed SALT" (64 hex digits): its key-DB files
// are sealed (below). Version 1 (read, verified and restored as before) has key-DB files in the
// clear.
inline constexpr std::string_view kManifestMagic = "coffer-full-backup v1";
inline constexpr std::string_view kManifestMagicV2 = "coffer-full-backup v2";
inline constexpr size_t kKeyDbSealSaltSize = 32;
inline constexpr char kManifestName[] = "MANIFEST";

struct ManifestFile {
  std::string path;  // relative to the backup's directory: keys/... or audit/...
  uint64_t size = 0;
  std::string sha256;  // hex
};

struct Manifest {
  uint32_t id = 0;
  int64_t created_micros = 0;
  uint64_t audit_sequence = 0;
  audit::LogId log_id{};
  // Version 2: the salt of the key-DB sealing key; absent in a version-1 manifest.
  std::optional<std::array<uint8_t, kKeyDbSealSaltSize>> key_db_seal_salt;
  std::vector<ManifestFile> files;  // a sealed key-DB file's size and SHA-256 are the sealed bytes'
};

// A version-2 backup's key-DB files are sealed, so that the backup alone tells nothing about
// datasets, key versions or policies: each file is one crypto::RecordAead record (AES-256-GCM,
// key version 1) under K = HMAC-SHA256(token HMAC service key, kKeyDbSealDomain ‖ salt), derived
// inside the token (DeriveTokenKey), with associated data kKeyDbSealDomain ‖ backup id (u32 BE) ‖
// the file's name: a file moved to another backup or name does not open. Without the token that
// made the backup (or a copy of it), nothing opens. A sealed file is stored as keys/<name>.sealed
// (it is not a RocksDB file); the name in the associated data, and restored, is <name>.
inline constexpr std::string_view kKeyDbSealDomain{"coffer.backup.keydb.v1\0", 23};
inline constexpr std::string_view kSealedSuffix = ".sealed";
absl::StatusOr<crypto::RecordAead> KeyDbSealer(hsm::RowAuthenticator& token,
                                               const std::array<uint8_t, kKeyDbSealSaltSize>& salt);
std::string KeyDbFileAad(uint32_t id, std::string_view name);
// The name key-DB file `file` has in the key DB: its last path component, without kSealedSuffix
// when `sealed`.
std::string_view KeyDbFileName(const ManifestFile& file, bool sealed);
// The plaintext of key-DB file `file` of backup `id` (its bytes `sealed`); BACKUP_CORRUPT naming
// the file when it does not open (altered, or sealed under another token's key).
absl::StatusOr<std::string> UnsealKeyDbFile(const crypto::RecordAead& sealer, uint32_t id,
                                            const ManifestFile& file, std::string_view sealed);

std::string JoinPath(std::string_view directory, std::string_view name);

absl::Status Corrupt(uint32_t id, std::string_view what);

absl::Status IoError(const std::string& path, std::string_view what);

std::string Sha256Hex(std::string_view data);

absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

// Creates or replaces `path` (mode 0600 when created); never follows a symlink at `path`.
absl::Status WriteWholeFile(const std::string& path, std::string_view data, bool sync);

absl::Status SyncDirectory(const std::string& path);

absl::Status MakeDirectory(const std::string& path);

// Names of the regular files in `directory`, sorted.
absl::StatusOr<std::vector<std::string>> RegularFiles(const std::string& directory);

absl::Status RemoveTree(const std::string& path);

// A directory this process created and holds open (a restore's target): every entry in it is
// made relative to its descriptor with O_EXCL|O_NOFOLLOW — never through a path a symlink could
// redirect — directories mode 0700, files 0600. Move-only; closes its descriptor when destroyed.
//
// CheckCreatable / CreateNew refuse, creating nothing: a path whose last component is empty,
// "." or ".." (INVALID_ARGUMENT); a parent that is missing, not a directory, a symlink, owned by
// another uid than root or this process's, or writable by group or others without the sticky
// bit (INVALID_ARGUMENT: others could swap the new directory for a symlink); a path that exists,
// of any type, an empty directory or a dangling symlink included (RESTORE_TARGET_NOT_EMPTY).
// Other code may then use the path (RocksDB does): only this uid can change what it names.
class OwnedDirectory {
 public:
  static absl::Status CheckCreatable(const std::string& path);
  static absl::StatusOr<OwnedDirectory> CreateNew(const std::string& path);
  OwnedDirectory(OwnedDirectory&& other) noexcept;
  OwnedDirectory& operator=(OwnedDirectory&& other) noexcept;
  OwnedDirectory(const OwnedDirectory&) = delete;
  OwnedDirectory& operator=(const OwnedDirectory&) = delete;
  ~OwnedDirectory();

  const std::string& path() const { return path_; }
  // A new sub-directory `name` (one path component), mode 0700.
  absl::StatusOr<OwnedDirectory> MakeSubdirectory(std::string_view name) const;
  // A new file `name` (one path component) holding `data`, mode 0600.
  absl::Status WriteNewFile(std::string_view name, std::string_view data, bool sync) const;
  absl::Status RemoveFile(std::string_view name) const;
  absl::Status Sync() const;
  // Sets every directory below to 0700 and every regular file to 0600 (files other code created
  // under its own umask); anything else found (a symlink, a socket) is IO_ERROR.
  absl::Status Tighten() const;

 private:
  OwnedDirectory(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_ = -1;
  std::string path_;
};

std::string EncodeManifest(const Manifest& manifest);

absl::StatusOr<Manifest> ParseManifest(uint32_t id, std::string_view text);

// Reads `path` and checks it against `file`: BACKUP_CORRUPT naming the file otherwise.
absl::StatusOr<std::string> ReadChecked(uint32_t id, const std::string& path,
                                        const ManifestFile& file);

// The manifest of the backup in `dir` (BACKUP_NOT_FOUND without one).
absl::StatusOr<Manifest> ReadManifest(uint32_t id, const std::string& dir);

// The file parts of a backup, in manifest order, with their progress phases (bytes; the data
// part is storage::DataDbBackups's own, phase "data").
inline constexpr char kKeysPhase[] = "keys";
inline constexpr char kAuditPhase[] = "audit";
struct FilePart {
  std::string_view dir;
  const char* phase;
};
inline constexpr FilePart kFileParts[] = {{kRestoredKeyDbDir, kKeysPhase},
                                          {kRestoredAuditDir, kAuditPhase}};

// Whether `file` belongs to part `part` (kRestoredKeyDbDir or kRestoredAuditDir).
bool InPart(const ManifestFile& file, std::string_view part);

// The bytes of part `part` in `manifest`.
uint64_t PartBytes(const Manifest& manifest, std::string_view part);

// The sizes of `names` in `directory` now: a progress total (a live file may still grow).
uint64_t CurrentBytes(const std::string& directory, const std::vector<std::string>& names);

// Checks every part of backup `id` (in `dir`) against its manifest: the data backup (phase
// "data"), then the key-DB and audit files (phases "keys" and "audit", bytes); a sealed key-DB
// file must also open under the token's key (`token`).
absl::Status VerifyParts(storage::DataDbBackups* data_backups, uint32_t id, const std::string& dir,
                         const Manifest& manifest, hsm::RowAuthenticator& token,
                         const coffer::ProgressFn& progress);

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_
