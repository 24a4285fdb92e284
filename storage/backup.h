// DataDbBackups: backups of the data DB (and only the data DB) in a directory of its own,
// through RocksDB's BackupEngine (docs/formats.md#data-db-backups).
//
// Create flushes every column family and copies the live SST files (shared between backups by
// checksum-derived names, so a second backup copies only what changed) with a per-file checksum.
// Each backup records its creation time read from the injected Clock and an opaque metadata
// string from the caller (kms/ passes e.g. the audit sequence at backup time); nothing else,
// and nothing in it is plaintext: the files are the data DB's ciphertext files. Orchestrating a
// full backup — data DB first, then the key DB and the audit log — is kms/'s job.
// Verify re-reads every file of a backup and checks its size and checksum. RestoreInto writes a
// backup into a new or empty directory only, never over a live DB. PruneExpired deletes backups
// whose age reached the configured maximum (default 30 days), always keeping the newest, and
// then the files no remaining backup references — that is when purged data leaves backups.
//
// Progress (crypto/base/progress.h): Create, Verify and RestoreInto report one phase, "data", in
// bytes, measured through the backup directory's file system (internal/metered_file_system.h):
// Create, bytes written of an estimate (the DB's live files before the flush; a file an earlier
// backup holds is not copied again, so the report can jump to the total at the end); Verify and
// RestoreInto, bytes read of the backup's size_bytes. At most one report per MiB (BackupEngine
// moves up to 5 MiB at a time); a success ends with done == total.
//
// Thread safety: every method may be called concurrently; they are serialized internally
// (BackupEngine allows one operation at a time). Progress functions are called on the caller's
// thread or on a BackupEngine thread, one call at a time, while the operation holds the lock:
// they must not call back into this object. Ownership: borrows the Clock, which must outlive
// this object; Create borrows the DataDb for its duration. Failures (stable codes):
// BACKUP_NOT_FOUND; BACKUP_CORRUPT (verification failed); RESTORE_TARGET_NOT_EMPTY;
// INVALID_ARGUMENT (backup directory inside the data DB, or metadata too large); IO_ERROR or
// DATA_DB_ERROR with RocksDB's status text.

#ifndef COFFER_STORAGE_BACKUP_H_
#define COFFER_STORAGE_BACKUP_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/base/progress.h"
#include "storage/data_db.h"

namespace rocksdb {
class BackupEngine;
class Env;
}  // namespace rocksdb

namespace coffer::storage {

namespace internal {
class MeteredFileSystem;
}  // namespace internal

inline constexpr std::chrono::seconds kDefaultBackupMaxAge = std::chrono::hours(24 * 30);
inline constexpr size_t kMaxBackupMetadataSize = 64 << 10;

struct DataBackupOptions {
  // PruneExpired deletes backups at least this old (the newest is always kept).
  std::chrono::seconds max_age = kDefaultBackupMaxAge;
  // fsync every copied file and directory (off only in tests that do not simulate power loss).
  bool sync = true;
};

struct DataBackupInfo {
  uint32_t id = 0;
  std::chrono::system_clock::time_point created;  // from the Clock at Create
  uint64_t size_bytes = 0;                        // files this backup references
  std::string metadata;                           // the caller's string, verbatim
};

class DataDbBackups {
 public:
  // Opens (or creates) the backup directory `backup_dir`.
  static absl::StatusOr<std::unique_ptr<DataDbBackups>> Open(const std::string& backup_dir,
                                                             const Clock* clock,
                                                             const DataBackupOptions& options = {});
  DataDbBackups(const DataDbBackups&) = delete;
  DataDbBackups& operator=(const DataDbBackups&) = delete;
  ~DataDbBackups();

  // Flushes `db` and backs it up with `metadata` (at most kMaxBackupMetadataSize bytes).
  absl::StatusOr<DataBackupInfo> Create(DataDb* db, std::string_view metadata,
                                        const ProgressFn& progress = {});
  // Every backup, oldest first.
  absl::StatusOr<std::vector<DataBackupInfo>> List();
  // OK when every file of backup `id` is present with its recorded size and checksum.
  absl::Status Verify(uint32_t id, const ProgressFn& progress = {});
  // Writes backup `id` as a data DB into `target_dir`, which must not exist or be empty.
  absl::Status RestoreInto(uint32_t id, const std::string& target_dir,
                           const ProgressFn& progress = {});
  // Deletes backup `id` and the files no other backup references (BACKUP_NOT_FOUND if absent).
  // For an orchestrator that prunes by its own manifests (kms/keys/full_backup.h).
  absl::Status Delete(uint32_t id);
  // Deletes every backup created at least max_age before Clock::Now(), except the newest.
  // Returns the ids deleted.
  absl::StatusOr<std::vector<uint32_t>> PruneExpired();

 private:
  DataDbBackups(std::string backup_dir, const Clock* clock, const DataBackupOptions& options,
                std::shared_ptr<internal::MeteredFileSystem> backup_fs,
                std::unique_ptr<rocksdb::Env> backup_env,
                std::unique_ptr<rocksdb::BackupEngine> engine);
  absl::StatusOr<std::vector<DataBackupInfo>> ListLocked();  // requires mu_

  std::string backup_dir_;
  const Clock* clock_;
  DataBackupOptions options_;
  std::mutex mu_;
  // The backup directory's file system, metered for progress; the engine uses it through
  // backup_env_ (declared first: destroyed after the engine).
  std::shared_ptr<internal::MeteredFileSystem> backup_fs_;
  std::unique_ptr<rocksdb::Env> backup_env_;
  std::unique_ptr<rocksdb::BackupEngine> engine_;  // guarded by mu_
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_BACKUP_H_
