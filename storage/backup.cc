#include "storage/backup.h"

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "crypto/base/status.h"
#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "rocksdb/utilities/backup_engine.h"
#include "storage/internal/layout.h"
#include "storage/internal/metered_file_system.h"
#include "storage/phase_reporter.h"

namespace coffer::storage {

namespace {

// docs/formats.md#data-db-backups: BackupEngine's app metadata =
//   format (u8 = 1) ‖ created (u64, µs since the Unix epoch, from the Clock) ‖ caller metadata.
constexpr uint8_t kBackupMetadataFormat = 1;
constexpr size_t kBackupMetadataHeaderSize = 1 + 8;

// The one progress phase of this file's operations (crypto/base/progress.h).
constexpr char kDataPhase[] = "data";

using internal::MeteredFileSystem;

std::string EncodeMetadata(std::chrono::system_clock::time_point created,
                           std::string_view metadata) {
  std::string encoded;
  encoded.push_back(static_cast<char>(kBackupMetadataFormat));
  internal::AppendU64(&encoded, static_cast<uint64_t>(ToUnixMicros(created)));
  encoded.append(metadata);
  return encoded;
}

absl::StatusOr<DataBackupInfo> ToInfo(const rocksdb::BackupInfo& info) {
  std::string_view encoded = info.app_metadata;
  if (encoded.size() < kBackupMetadataHeaderSize ||
      static_cast<uint8_t>(encoded[0]) != kBackupMetadataFormat) {
    return MakeError(ErrorCode::kBackupCorrupt,
                     "backup " + std::to_string(info.backup_id) + " has no coffer metadata");
  }
  DataBackupInfo out;
  out.id = info.backup_id;
  out.created = FromUnixMicros(static_cast<int64_t>(internal::ReadU64(encoded.substr(1))));
  out.size_bytes = info.size;
  out.metadata = std::string(encoded.substr(kBackupMetadataHeaderSize));
  return out;
}

absl::Status FromBackupStatus(const rocksdb::Status& status, std::string_view what) {
  if (status.ok()) return absl::OkStatus();
  return MakeError(ErrorCode::kIoError, "backup " + std::string(what) + ": " + status.ToString());
}

// Whether `inner` is `outer` or lies under it (both made absolute and normalized).
bool IsInside(const std::string& inner, const std::string& outer) {
  std::error_code ec;
  auto a = std::filesystem::weakly_canonical(inner, ec);
  auto b = std::filesystem::weakly_canonical(outer, ec);
  auto [mismatch, unused] = std::mismatch(b.begin(), b.end(), a.begin(), a.end());
  return mismatch == b.end();
}

// The bytes a backup of `db` copies, estimated before its flush: every live file, WAL included
// (the flush turns the memtables' WAL into SSTs of roughly that size).
uint64_t EstimateBackupBytes(rocksdb::DB* db) {
  rocksdb::LiveFilesStorageInfoOptions options;
  options.wal_size_for_flush = UINT64_MAX;  // an estimate only: never flush here
  std::vector<rocksdb::LiveFileStorageInfo> files;
  if (!db->GetLiveFilesStorageInfo(options, &files).ok()) return 0;  // unknown
  uint64_t total = 0;
  for (const rocksdb::LiveFileStorageInfo& file : files) total += file.size;
  return total;
}

}  // namespace

DataDbBackups::DataDbBackups(std::string backup_dir, const Clock* clock,
                             const DataBackupOptions& options,
                             std::shared_ptr<MeteredFileSystem> backup_fs,
                             std::unique_ptr<rocksdb::Env> backup_env,
                             std::unique_ptr<rocksdb::BackupEngine> engine)
    : backup_dir_(std::move(backup_dir)),
      clock_(clock),
      options_(options),
      backup_fs_(std::move(backup_fs)),
      backup_env_(std::move(backup_env)),
      engine_(std::move(engine)) {}

DataDbBackups::~DataDbBackups() = default;

absl::StatusOr<std::unique_ptr<DataDbBackups>> DataDbBackups::Open(
    const std::string& backup_dir, const Clock* clock, const DataBackupOptions& options) {
  auto backup_fs = std::make_shared<MeteredFileSystem>(rocksdb::FileSystem::Default());
  std::unique_ptr<rocksdb::Env> backup_env = rocksdb::NewCompositeEnv(backup_fs);
  rocksdb::BackupEngineOptions engine_options(backup_dir);
  engine_options.backup_env = backup_env.get();
  engine_options.sync = options.sync;
  engine_options.share_table_files = true;
  engine_options.share_files_with_checksum = true;
  rocksdb::BackupEngine* engine = nullptr;
  COFFER_RETURN_IF_ERROR(FromBackupStatus(
      rocksdb::BackupEngine::Open(engine_options, rocksdb::Env::Default(), &engine), "open"));
  return std::unique_ptr<DataDbBackups>(
      new DataDbBackups(backup_dir, clock, options, std::move(backup_fs), std::move(backup_env),
                        std::unique_ptr<rocksdb::BackupEngine>(engine)));
}

absl::StatusOr<DataBackupInfo> DataDbBackups::Create(DataDb* db, std::string_view metadata,
                                                     const ProgressFn& progress) {
  if (metadata.size() > kMaxBackupMetadataSize) {
    return MakeError(ErrorCode::kInvalidArgument, "backup metadata is limited to 64 KiB");
  }
  if (IsInside(backup_dir_, db->path()) || IsInside(db->path(), backup_dir_)) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the backup directory and the data DB must not contain each other");
  }
  std::lock_guard<std::mutex> lock(mu_);
  rocksdb::CreateBackupOptions create;
  create.flush_before_backup = true;
  rocksdb::BackupID id = 0;
  PhaseReporter reporter(progress, kDataPhase, progress ? EstimateBackupBytes(db->rocks()) : 0,
                         PhaseReporter::kByteStep);
  internal::ScopedMeter meter(backup_fs_.get(), MeteredFileSystem::Direction::kWrites,
                              [&reporter](uint64_t bytes) { reporter.Add(bytes); });
  rocksdb::IOStatus created = engine_->CreateNewBackupWithMetadata(
      create, db->rocks(), EncodeMetadata(clock_->Now(), metadata), &id);
  meter.Detach();  // no report from another thread after this one
  COFFER_RETURN_IF_ERROR(FromBackupStatus(created, "create"));
  rocksdb::BackupInfo info;
  COFFER_RETURN_IF_ERROR(FromBackupStatus(engine_->GetBackupInfo(id, &info), "info"));
  reporter.Finish();
  return ToInfo(info);
}

absl::StatusOr<std::vector<DataBackupInfo>> DataDbBackups::ListLocked() {
  std::vector<rocksdb::BackupInfo> infos;
  engine_->GetBackupInfo(&infos);
  std::vector<DataBackupInfo> out;
  out.reserve(infos.size());
  for (const rocksdb::BackupInfo& info : infos) {
    COFFER_ASSIGN_OR_RETURN(DataBackupInfo converted, ToInfo(info));
    out.push_back(std::move(converted));
  }
  std::sort(out.begin(), out.end(),
            [](const DataBackupInfo& a, const DataBackupInfo& b) { return a.id < b.id; });
  return out;
}

absl::StatusOr<std::vector<DataBackupInfo>> DataDbBackups::List() {
  std::lock_guard<std::mutex> lock(mu_);
  return ListLocked();
}

absl::Status DataDbBackups::Verify(uint32_t id, const ProgressFn& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  rocksdb::BackupInfo info;
  if (!engine_->GetBackupInfo(id, &info).ok()) {
    return MakeError(ErrorCode::kBackupNotFound, "no backup " + std::to_string(id));
  }
  // VerifyBackup reads every file of the backup once: bytes read of its size.
  PhaseReporter reporter(progress, kDataPhase, info.size, PhaseReporter::kByteStep);
  internal::ScopedMeter meter(backup_fs_.get(), MeteredFileSystem::Direction::kReads,
                              [&reporter](uint64_t bytes) { reporter.Add(bytes); });
  rocksdb::IOStatus verified = engine_->VerifyBackup(id, /*verify_with_checksum=*/true);
  meter.Detach();
  if (!verified.ok()) {
    return MakeError(ErrorCode::kBackupCorrupt, "backup " + std::to_string(id) +
                                                    " failed verification: " + verified.ToString());
  }
  reporter.Finish();
  return absl::OkStatus();
}

absl::Status DataDbBackups::RestoreInto(uint32_t id, const std::string& target_dir,
                                        const ProgressFn& progress) {
  std::error_code ec;
  if (std::filesystem::exists(target_dir, ec) && !std::filesystem::is_empty(target_dir, ec)) {
    return MakeError(ErrorCode::kRestoreTargetNotEmpty,
                     "restore target " + target_dir + " is not empty");
  }
  if (ec) return MakeError(ErrorCode::kIoError, "cannot inspect " + target_dir);
  std::lock_guard<std::mutex> lock(mu_);
  rocksdb::BackupInfo info;
  if (!engine_->GetBackupInfo(id, &info).ok()) {
    return MakeError(ErrorCode::kBackupNotFound, "no backup " + std::to_string(id));
  }
  rocksdb::RestoreOptions restore;
  restore.keep_log_files = false;
  // The restore copies every file of the backup, reading each once: bytes read of its size.
  PhaseReporter reporter(progress, kDataPhase, info.size, PhaseReporter::kByteStep);
  internal::ScopedMeter meter(backup_fs_.get(), MeteredFileSystem::Direction::kReads,
                              [&reporter](uint64_t bytes) { reporter.Add(bytes); });
  rocksdb::IOStatus restored = engine_->RestoreDBFromBackup(restore, id, target_dir, target_dir);
  meter.Detach();
  if (restored.IsCorruption()) {
    return MakeError(ErrorCode::kBackupCorrupt,
                     "backup " + std::to_string(id) + " is damaged: " + restored.ToString());
  }
  COFFER_RETURN_IF_ERROR(FromBackupStatus(restored, "restore"));
  reporter.Finish();
  return absl::OkStatus();
}

absl::Status DataDbBackups::Delete(uint32_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  rocksdb::BackupInfo info;
  if (!engine_->GetBackupInfo(id, &info).ok()) {
    return MakeError(ErrorCode::kBackupNotFound, "no backup " + std::to_string(id));
  }
  COFFER_RETURN_IF_ERROR(FromBackupStatus(engine_->DeleteBackup(id), "delete"));
  return FromBackupStatus(engine_->GarbageCollect(), "garbage collection");
}

absl::StatusOr<std::vector<uint32_t>> DataDbBackups::PruneExpired() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(std::vector<DataBackupInfo> backups, ListLocked());
  std::vector<uint32_t> deleted;
  if (backups.empty()) return deleted;
  const auto now = clock_->Now();
  const uint32_t newest = backups.back().id;
  for (const DataBackupInfo& backup : backups) {
    if (backup.id == newest || backup.created + options_.max_age > now) continue;
    COFFER_RETURN_IF_ERROR(FromBackupStatus(engine_->DeleteBackup(backup.id), "delete"));
    deleted.push_back(backup.id);
  }
  // Files only the deleted backups referenced (DeleteBackup removes them already; this also
  // clears leftovers of an interrupted create or delete).
  if (!deleted.empty()) {
    COFFER_RETURN_IF_ERROR(FromBackupStatus(engine_->GarbageCollect(), "garbage collection"));
  }
  return deleted;
}

}  // namespace coffer::storage
