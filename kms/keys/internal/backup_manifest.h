// Internal to kms/keys: a full backup's files on disk — the MANIFEST (docs/key-manager.md,
// "Full backups": one "name value..." line each, the last the SHA-256 of everything before it),
// reading and writing whole files with fsync, and the directory helpers FullBackups uses.
// Failures: BACKUP_CORRUPT naming the backup and what failed, IO_ERROR naming the path.
// Thread-compatible.

#ifndef COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_
#define COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/audit/audit_format.h"

namespace coffer::kms::internal {

// The MANIFEST: one "name value..." line each, the last line the SHA-256 of everything before
// it.
inline constexpr std::string_view kManifestMagic = "coffer-full-backup v1";
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
  std::vector<ManifestFile> files;
};

std::string JoinPath(std::string_view directory, std::string_view name);

absl::Status Corrupt(uint32_t id, std::string_view what);

absl::Status IoError(const std::string& path, std::string_view what);

std::string Sha256Hex(std::string_view data);

absl::StatusOr<std::string> ReadWholeFile(const std::string& path);

absl::Status WriteWholeFile(const std::string& path, std::string_view data, bool sync);

absl::Status SyncDirectory(const std::string& path);

absl::Status MakeDirectory(const std::string& path);

// Names of the regular files in `directory`, sorted.
absl::StatusOr<std::vector<std::string>> RegularFiles(const std::string& directory);

absl::Status RemoveTree(const std::string& path);

bool NonEmpty(const std::string& path, std::error_code& ec);

std::string EncodeManifest(const Manifest& manifest);

absl::StatusOr<Manifest> ParseManifest(uint32_t id, std::string_view text);

// Reads `path` and checks it against `file`: BACKUP_CORRUPT naming the file otherwise.
absl::StatusOr<std::string> ReadChecked(uint32_t id, const std::string& path,
                                        const ManifestFile& file);

// The manifest of the backup in `dir` (BACKUP_NOT_FOUND without one).
absl::StatusOr<Manifest> ReadManifest(uint32_t id, const std::string& dir);

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_BACKUP_MANIFEST_H_
