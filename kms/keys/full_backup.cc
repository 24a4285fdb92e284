#include "kms/keys/full_backup.h"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string_view>
#include <system_error>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/verifier.h"
#include "kms/keys/internal/backup_manifest.h"
#include "storage/phase_reporter.h"

namespace coffer::kms {

using internal::CurrentBytes;
using internal::EncodeManifest;
using internal::IoError;
using internal::JoinPath;
using internal::kAuditPhase;
using internal::kKeysPhase;
using internal::kManifestName;
using internal::MakeDirectory;
using internal::Manifest;
using internal::ManifestFile;
using internal::ParseManifest;
using internal::ReadManifest;
using internal::ReadWholeFile;
using internal::RegularFiles;
using internal::RemoveTree;
using internal::Sha256Hex;
using internal::SyncDirectory;
using internal::VerifyParts;
using internal::WriteWholeFile;

namespace {

// A backup's directory layout (docs/key-manager.md#full-backups).
constexpr char kFullDir[] = "full";
constexpr char kDataDir[] = "data";

// Progress (crypto/base/progress.h): the file parts' phases are in internal/backup_manifest.h.
constexpr uint64_t kByteStep = storage::PhaseReporter::kByteStep;

absl::StatusOr<std::vector<FullBackupInfo>> NoBackups() { return std::vector<FullBackupInfo>{}; }

}  // namespace

FullBackups::FullBackups(FullBackupOptions options, const Clock* clock,
                         std::unique_ptr<storage::DataDbBackups> data)
    : options_(std::move(options)), clock_(clock), data_(std::move(data)) {}

FullBackups::~FullBackups() = default;

absl::StatusOr<std::unique_ptr<FullBackups>> FullBackups::Open(const FullBackupOptions& options) {
  if (options.directory.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "full backups need a directory");
  }
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "full backups need a clock");
  }
  if (options.token == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "full backups need the token (their key-DB copies are sealed under it)");
  }
  const Clock* clock = options.clock;
  COFFER_RETURN_IF_ERROR(MakeDirectory(options.directory));
  COFFER_RETURN_IF_ERROR(MakeDirectory(options.directory + "/" + kFullDir));
  storage::DataBackupOptions data_options;
  data_options.max_age = options.max_age;
  data_options.sync = options.sync;
  COFFER_ASSIGN_OR_RETURN(
      std::unique_ptr<storage::DataDbBackups> data,
      storage::DataDbBackups::Open(options.directory + "/" + kDataDir, clock, data_options));
  return std::unique_ptr<FullBackups>(new FullBackups(options, clock, std::move(data)));
}

std::string FullBackups::BackupPath(uint32_t id) const {
  return options_.directory + "/" + kFullDir + "/" + std::to_string(id);
}

absl::StatusOr<FullBackupInfo> FullBackups::Create(const FullBackupSources& sources,
                                                   const audit::AuditActor& actor,
                                                   const coffer::ProgressFn& progress) {
  if (sources.data_db == nullptr || sources.key_manager == nullptr ||
      sources.audit_log == nullptr || sources.audit_directory.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a full backup needs the data DB, key manager and audit log");
  }
  audit::AuditEvent event;
  event.kind = audit::v1::FULL_BACKUP;
  event.actor = actor;
  event.stage = audit::v1::STAGE_REQUESTED;
  COFFER_RETURN_IF_ERROR(sources.audit_log->Append(event).status());

  std::lock_guard<std::mutex> lock(mu_);
  uint32_t data_id = 0;
  absl::StatusOr<FullBackupInfo> info = CreateLocked(sources, &data_id, progress);
  if (!info.ok() && data_id != 0) {
    // No manifest: not a backup. Remove what was copied.
    RemoveTree(BackupPath(data_id)).IgnoreError();
    data_->Delete(data_id).IgnoreError();
  }
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(info.status());
  event.record_count = info.ok() ? info->id : 0;
  absl::Status audited = sources.audit_log->Append(event).status();
  if (!info.ok()) return info.status();
  if (!audited.ok()) return audited;
  return info;
}

absl::StatusOr<FullBackupInfo> FullBackups::CreateLocked(const FullBackupSources& sources,
                                                         uint32_t* data_id,
                                                         const coffer::ProgressFn& progress) {
  // B first: every purge journaled below it has its deletes in the data DB
  // (kms/keys/audited_purge_journal.h).
  const uint64_t boundary = sources.purge_journal != nullptr
                                ? sources.purge_journal->QuiescentSequence()
                                : sources.audit_log->stats().next_sequence;
  const auto created = clock_->Now();
  // 1. The data DB.
  COFFER_ASSIGN_OR_RETURN(
      storage::DataBackupInfo data,
      data_->Create(sources.data_db, "audit_sequence=" + std::to_string(boundary), progress));
  *data_id = data.id;
  const std::string dir = BackupPath(data.id);
  COFFER_RETURN_IF_ERROR(RemoveTree(dir));  // leftovers of an interrupted backup with this id
  COFFER_RETURN_IF_ERROR(MakeDirectory(dir));
  Manifest manifest;
  manifest.id = data.id;
  manifest.created_micros = ToUnixMicros(created);
  manifest.audit_sequence = boundary;
  manifest.log_id = sources.audit_log->log_id();
  uint64_t size = data.size_bytes;

  // 2. The key DB, sealed (internal/backup_manifest.h): a checkpoint into a staging directory
  // (RocksDB may hard-link the live DB's files there, so they are never written in place), each
  // file sealed into keys/, then the staging directory removed.
  const std::string staging = dir + "/keys.checkpoint";
  const std::string keys = dir + "/" + kRestoredKeyDbDir;
  COFFER_RETURN_IF_ERROR(sources.key_manager->CheckpointKeyDb(staging));
  COFFER_RETURN_IF_ERROR(MakeDirectory(keys));
  std::array<uint8_t, internal::kKeyDbSealSaltSize> salt{};
  COFFER_RETURN_IF_ERROR(crypto::RandomBytes(absl::MakeSpan(salt)));
  manifest.key_db_seal_salt = salt;
  COFFER_ASSIGN_OR_RETURN(crypto::RecordAead sealer, internal::KeyDbSealer(*options_.token, salt));
  COFFER_ASSIGN_OR_RETURN(std::vector<std::string> key_files, RegularFiles(staging));
  storage::PhaseReporter key_progress(progress, kKeysPhase, CurrentBytes(staging, key_files),
                                      kByteStep);
  for (const std::string& name : key_files) {
    COFFER_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(JoinPath(staging, name)));
    COFFER_ASSIGN_OR_RETURN(std::string sealed,
                            sealer.Seal(bytes, internal::KeyDbFileAad(manifest.id, name)));
    const std::string stored = name + std::string(internal::kSealedSuffix);
    COFFER_RETURN_IF_ERROR(WriteWholeFile(JoinPath(keys, stored), sealed, options_.sync));
    manifest.files.push_back(ManifestFile{std::string(kRestoredKeyDbDir) + "/" + stored,
                                          sealed.size(), Sha256Hex(sealed)});
    size += sealed.size();
    key_progress.Add(bytes.size());
  }
  key_progress.Finish();
  COFFER_RETURN_IF_ERROR(RemoveTree(staging));

  // 3. The audit log (a torn last frame, if an append is under way, is what a reopen drops).
  const std::string audit_copy = dir + "/" + kRestoredAuditDir;
  COFFER_RETURN_IF_ERROR(MakeDirectory(audit_copy));
  COFFER_ASSIGN_OR_RETURN(std::vector<std::string> audit_files,
                          RegularFiles(sources.audit_directory));
  storage::PhaseReporter audit_progress(
      progress, kAuditPhase, CurrentBytes(sources.audit_directory, audit_files), kByteStep);
  for (const std::string& name : audit_files) {
    COFFER_ASSIGN_OR_RETURN(std::string bytes,
                            ReadWholeFile(JoinPath(sources.audit_directory, name)));
    COFFER_RETURN_IF_ERROR(WriteWholeFile(JoinPath(audit_copy, name), bytes, options_.sync));
    manifest.files.push_back(
        ManifestFile{std::string(kRestoredAuditDir) + "/" + name, bytes.size(), Sha256Hex(bytes)});
    size += bytes.size();
    audit_progress.Add(bytes.size());
  }
  audit_progress.Finish();
  if (options_.sync) {
    COFFER_RETURN_IF_ERROR(SyncDirectory(keys));
    COFFER_RETURN_IF_ERROR(SyncDirectory(audit_copy));
  }

  // 4. The manifest, last: its presence makes the backup.
  const std::string temp = dir + "/" + kManifestName + ".tmp";
  COFFER_RETURN_IF_ERROR(WriteWholeFile(temp, EncodeManifest(manifest), options_.sync));
  if (::rename(temp.c_str(), (dir + "/" + kManifestName).c_str()) != 0) {
    return IoError(temp, "cannot rename");
  }
  if (options_.sync) COFFER_RETURN_IF_ERROR(SyncDirectory(dir));

  FullBackupInfo info;
  info.id = data.id;
  info.created = created;
  info.audit_sequence = boundary;
  info.audit_log_id = manifest.log_id;
  info.size_bytes = size;
  return info;
}

absl::StatusOr<std::vector<FullBackupInfo>> FullBackups::List() {
  std::lock_guard<std::mutex> lock(mu_);
  return ListLocked();
}

absl::StatusOr<std::vector<FullBackupInfo>> FullBackups::ListLocked() {
  COFFER_ASSIGN_OR_RETURN(std::vector<storage::DataBackupInfo> data, data_->List());
  if (data.empty()) return NoBackups();
  std::vector<FullBackupInfo> out;
  for (const storage::DataBackupInfo& d : data) {
    absl::StatusOr<std::string> text =
        ReadWholeFile(BackupPath(d.id) + "/" + std::string(kManifestName));
    if (!text.ok() && ErrorCodeOf(text.status()) == ErrorCode::kNotFound) continue;  // incomplete
    if (!text.ok()) return text.status();
    COFFER_ASSIGN_OR_RETURN(Manifest manifest, ParseManifest(d.id, *text));
    FullBackupInfo info;
    info.id = d.id;
    info.created = FromUnixMicros(manifest.created_micros);
    info.audit_sequence = manifest.audit_sequence;
    info.audit_log_id = manifest.log_id;
    info.size_bytes = d.size_bytes;
    for (const ManifestFile& file : manifest.files) info.size_bytes += file.size;
    out.push_back(info);
  }
  return out;
}

absl::Status FullBackups::Verify(uint32_t id, const coffer::ProgressFn& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  return VerifyLocked(id, progress);
}

absl::Status FullBackups::VerifyLocked(uint32_t id, const coffer::ProgressFn& progress) {
  const std::string dir = BackupPath(id);
  COFFER_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(id, dir));
  return VerifyParts(data_.get(), id, dir, manifest, *options_.token, progress);
}

absl::StatusOr<std::vector<uint32_t>> FullBackups::PruneExpired() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(std::vector<FullBackupInfo> backups, ListLocked());
  std::vector<uint32_t> deleted;
  if (backups.empty()) return deleted;
  const auto now = clock_->Now();
  const uint32_t newest = backups.back().id;
  for (const FullBackupInfo& backup : backups) {
    if (backup.id == newest || backup.created + options_.max_age > now) continue;
    // The manifest goes first: a half-deleted backup is an incomplete one, never a wrong one.
    const std::string dir = BackupPath(backup.id);
    if (::unlink((dir + "/" + kManifestName).c_str()) != 0) {
      return IoError(dir, "cannot remove the manifest of");
    }
    COFFER_RETURN_IF_ERROR(RemoveTree(dir));
    absl::Status data = data_->Delete(backup.id);
    if (!data.ok() && ErrorCodeOf(data) != ErrorCode::kBackupNotFound) return data;
    deleted.push_back(backup.id);
  }
  return deleted;
}

}  // namespace coffer::kms
