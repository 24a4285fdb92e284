// FullBackups' restore (docs/key-manager.md#full-backups): backup `id` verified against its
// manifest and the live log, copied into a new directory tree, then brought up to the live log:
// the purges and destructions made after the backup replayed into its data and key DB, a new
// primary for every active dataset's data purposes, and a key-DB generation above the live one.

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <vector>

#include "crypto/base/status.h"
#include "hsm/key_wrapper.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/verifier.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/internal/backup_manifest.h"
#include "storage/phase_reporter.h"
#include "storage/recycle_bin.h"

namespace coffer::kms {

namespace fs = std::filesystem;

using internal::CurrentBytes;
using internal::FilePart;
using internal::InPart;
using internal::kFileParts;
using internal::Manifest;
using internal::ManifestFile;
using internal::OwnedDirectory;
using internal::PartBytes;
using internal::ReadChecked;
using internal::ReadManifest;
using internal::RegularFiles;
using internal::VerifyParts;

namespace {

// Progress phases (crypto/base/progress.h), in the order the header lists them.
constexpr char kVerifyPhase[] = "verify";  // bytes
constexpr char kReplayPhase[] = "replay";  // journal entries
constexpr char kRotatePhase[] = "rotate";  // datasets
constexpr uint64_t kByteStep = storage::PhaseReporter::kByteStep;
constexpr uint64_t kItemStep = storage::PhaseReporter::kItemStep;

// The modules a restore's key manager gets: wrap, unwrap and list pass through; creating or
// destroying a DWK is refused (FAILED_PRECONDITION), so no path of the restored key manager can
// change the live token even if its restored-copy rules missed one.
class NoTokenChanges final : public hsm::KeyWrapper {
 public:
  explicit NoTokenChanges(hsm::KeyWrapper* inner) : inner_(inner) {}
  absl::Status CreateWrappingKey(hsm::WrappingKeyId id) override { return Refused("create", id); }
  absl::StatusOr<hsm::WrappedKey> Wrap(hsm::WrappingKeyId id,
                                       const crypto::SecretBytes& dek) override {
    return inner_->Wrap(id, dek);
  }
  absl::StatusOr<crypto::SecretBytes> Unwrap(const hsm::WrappedKey& blob) override {
    return inner_->Unwrap(blob);
  }
  absl::Status DestroyWrappingKey(hsm::WrappingKeyId id) override { return Refused("destroy", id); }
  absl::StatusOr<std::vector<hsm::WrappingKeyId>> ListWrappingKeys() override {
    return inner_->ListWrappingKeys();
  }

 private:
  static absl::Status Refused(std::string_view what, hsm::WrappingKeyId id) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     "a restore never changes the token: refused to " + std::string(what) +
                         " wrapping key " + id.ToString());
  }
  hsm::KeyWrapper* inner_;
};

// The total of RestoreInto's "verify" phase: backup `id`'s parts and the live log. Best effort
// (what cannot be read counts 0): the verification itself reports what is wrong.
uint64_t RestoreVerifyBytes(storage::DataDbBackups* data_backups, uint32_t id,
                            const Manifest& manifest, const std::string& live_audit_directory) {
  uint64_t total = PartBytes(manifest, kRestoredKeyDbDir) + PartBytes(manifest, kRestoredAuditDir);
  absl::StatusOr<std::vector<storage::DataBackupInfo>> data = data_backups->List();
  if (data.ok()) {
    for (const storage::DataBackupInfo& backup : *data) {
      if (backup.id == id) total += backup.size_bytes;
    }
  }
  absl::StatusOr<std::vector<std::string>> live = RegularFiles(live_audit_directory);
  if (live.ok()) total += CurrentBytes(live_audit_directory, *live);
  return total;
}

// A ProgressFn that folds the consecutive phases of an inner operation into `outer`'s one
// phase: an inner phase's done counts on top of the totals of the inner phases before it.
coffer::ProgressFn FoldInto(storage::PhaseReporter* outer) {
  struct Inner {
    std::string phase;
    uint64_t base = 0;  // outer done when this inner phase began
    uint64_t size = 0;  // this inner phase's total (or its done, if larger)
  };
  auto inner = std::make_shared<Inner>();
  inner->base = outer->done();
  return [outer, inner](const coffer::Progress& progress) {
    if (progress.phase != inner->phase) {
      inner->base += inner->size;
      inner->phase = progress.phase;
      inner->size = 0;
    }
    inner->size = std::max({inner->size, progress.total, progress.done});
    outer->Raise(inner->base + progress.done);
  };
}

// The live log a restore of backup `id` replays from: it verifies, it is the log the backup was
// made from, and it reaches the backup's boundary.
absl::StatusOr<audit::VerifyReport> VerifyReplaySource(const RestoreRequest& request,
                                                       const Manifest& manifest, uint32_t id) {
  audit::VerifyOptions verify;
  verify.public_key_pem = request.audit_public_key_pem;
  if (request.minimum_anchor.has_value()) verify.anchors.push_back(*request.minimum_anchor);
  COFFER_ASSIGN_OR_RETURN(audit::VerifyReport verified,
                          audit::VerifyAuditLog(request.live_audit_directory, verify));
  if (verified.ok() && verified.log_id != manifest.log_id) {
    return MakeError(ErrorCode::kReplaySourceStale,
                     "the replay log is not the log of full backup " + std::to_string(id));
  }
  COFFER_RETURN_IF_ERROR(verified.ToStatus());
  if (!verified.last_sequence.has_value() ||
      *verified.last_sequence + 1 < manifest.audit_sequence) {
    return MakeError(ErrorCode::kReplaySourceStale,
                     "the replay log ends before full backup " + std::to_string(id));
  }
  return verified;
}

// What a restore replays from the live log: the purges newer than the backup, and every
// destruction (a destruction older than the backup is already in it; replaying it is a no-op).
struct ReplayPlan {
  using Items = std::tuple<uint64_t, storage::PurgedItemKind>;  // dataset handle, kind
  std::map<Items, std::vector<crypto::HmacSha256Tag>> purges;
  size_t purge_count = 0;
  std::vector<uint64_t> destroyed;
  // Client deletes and restores newer than the backup, in log order; the items written since.
  std::map<Items, std::vector<storage::BinMove>> moves;
  size_t move_count = 0;
  std::map<Items, std::vector<crypto::HmacSha256Tag>> writes;
  size_t moves_without_ref = 0;
  size_t writes_without_ref = 0;
  size_t grants_added = 0;
  size_t grants_removed = 0;
};

// Grant changes at run time are audited as ADMIN_REQUEST entries whose fixed detail begins with
// the operation (audit::kGrantAddDetailPrefix, kGrantRemoveDetailPrefix); the completed ones with
// result OK are the changes made.
void PlanGrantChange(const audit::v1::AuditEntry& entry, ReplayPlan* plan) {
  if (entry.kind() != audit::v1::ADMIN_REQUEST || entry.stage() != audit::v1::STAGE_COMPLETED ||
      entry.result_code() != 0) {
    return;
  }
  const std::string_view detail = entry.detail();
  if (detail.starts_with(audit::kGrantAddDetailPrefix)) ++plan->grants_added;
  if (detail.starts_with(audit::kGrantRemoveDetailPrefix)) ++plan->grants_removed;
}

// Adds an access entry newer than the backup that moved an item (audit::ItemMove) to `plan`.
void PlanItemMove(const audit::v1::AuditEntry& entry, ReplayPlan* plan) {
  const bool write = entry.kind() == audit::v1::ACCESS_WRITE;
  if ((!write && entry.kind() != audit::v1::ACCESS_DELETE) || entry.result_code() != 0) return;
  const std::optional<audit::ItemMove> move = audit::ItemMoveOf(entry.detail());
  if (!move.has_value() || entry.record_ref().size() != crypto::kHmacSha256TagSize) {
    ++(write ? plan->writes_without_ref : plan->moves_without_ref);
    return;
  }
  crypto::HmacSha256Tag ref{};
  std::copy(entry.record_ref().begin(), entry.record_ref().end(), ref.begin());
  const bool record = *move == audit::ItemMove::kRecordWrite ||
                      *move == audit::ItemMove::kRecordDelete ||
                      *move == audit::ItemMove::kRecordRestore;
  const ReplayPlan::Items items{entry.dataset_handle(), record
                                                            ? storage::PurgedItemKind::kRecord
                                                            : storage::PurgedItemKind::kAttachment};
  if (*move == audit::ItemMove::kRecordWrite || *move == audit::ItemMove::kAttachmentWrite) {
    plan->writes[items].push_back(ref);
    return;
  }
  const bool to_bin =
      *move == audit::ItemMove::kRecordDelete || *move == audit::ItemMove::kAttachmentDelete;
  plan->moves[items].push_back(storage::BinMove{ref, to_bin, entry.time_micros()});
  ++plan->move_count;
}

absl::StatusOr<ReplayPlan> PlanReplay(const std::vector<audit::v1::AuditEntry>& entries,
                                      uint64_t backup_sequence) {
  ReplayPlan plan;
  for (const audit::v1::AuditEntry& entry : entries) {
    if (entry.kind() == audit::v1::DATASET_DESTROY && entry.result_code() == 0 &&
        std::find(plan.destroyed.begin(), plan.destroyed.end(), entry.dataset_handle()) ==
            plan.destroyed.end()) {
      plan.destroyed.push_back(entry.dataset_handle());
    }
    if (entry.sequence() < backup_sequence) continue;
    PlanItemMove(entry, &plan);
    PlanGrantChange(entry, &plan);
    const bool record = entry.kind() == audit::v1::RECORD_PURGE;
    if (!record && entry.kind() != audit::v1::ATTACHMENT_PURGE) continue;
    if (entry.record_ref().size() != crypto::kHmacSha256TagSize) {
      return MakeError(ErrorCode::kAuditLogCorrupt,
                       "purge entry " + std::to_string(entry.sequence()) + " has no record ref");
    }
    crypto::HmacSha256Tag ref{};
    std::copy(entry.record_ref().begin(), entry.record_ref().end(), ref.begin());
    plan.purges[{entry.dataset_handle(),
                 record ? storage::PurgedItemKind::kRecord : storage::PurgedItemKind::kAttachment}]
        .push_back(ref);
    ++plan.purge_count;
  }
  return plan;
}

// Writes the files of `part` of backup `id` (in `backup_dir`), checked against the manifest,
// into `into`, each synced when `sync`; the key DB's files of a version-2 backup are opened
// with `token`'s key first (internal::KeyDbSealer), and their names lose the sealed suffix.
// Restore and ExtractKeyDb both read a backup's key DB through it.
absl::Status CopyFilePart(uint32_t id, const std::string& backup_dir, const Manifest& manifest,
                          hsm::RowAuthenticator& token, std::string_view part,
                          const OwnedDirectory& into, bool sync,
                          storage::PhaseReporter* part_progress) {
  std::optional<crypto::RecordAead> sealer;
  if (manifest.key_db_seal_salt.has_value() && part == kRestoredKeyDbDir) {
    COFFER_ASSIGN_OR_RETURN(sealer, internal::KeyDbSealer(token, *manifest.key_db_seal_salt));
  }
  for (const ManifestFile& file : manifest.files) {
    if (!InPart(file, part)) continue;
    COFFER_ASSIGN_OR_RETURN(std::string bytes, ReadChecked(id, backup_dir + "/" + file.path, file));
    std::string_view name = std::string_view(file.path).substr(part.size() + 1);
    if (sealer.has_value()) {
      COFFER_ASSIGN_OR_RETURN(bytes, internal::UnsealKeyDbFile(*sealer, id, file, bytes));
      name = internal::KeyDbFileName(file, true);
    }
    COFFER_RETURN_IF_ERROR(into.WriteNewFile(name, bytes, sync));
    if (part_progress != nullptr) part_progress->Add(file.size);
  }
  return absl::OkStatus();
}

// The key DB and audit files of backup `id` (in `backup_dir`), checked against the manifest,
// into their restored directories; sealed key-DB files are opened with `token`'s key.
absl::Status RestoreFileParts(uint32_t id, const std::string& backup_dir, const Manifest& manifest,
                              hsm::RowAuthenticator& token, const OwnedDirectory& keys_root,
                              const OwnedDirectory& audit_root,
                              const coffer::ProgressFn& progress) {
  for (const FilePart& part : kFileParts) {
    const OwnedDirectory& into = part.dir == kRestoredKeyDbDir ? keys_root : audit_root;
    storage::PhaseReporter part_progress(progress, part.phase, PartBytes(manifest, part.dir),
                                         kByteStep);
    COFFER_RETURN_IF_ERROR(CopyFilePart(id, backup_dir, manifest, token, part.dir, into,
                                        /*sync=*/true, &part_progress));
    part_progress.Finish();
  }
  return absl::OkStatus();
}

// Replays the plan's purges, then its client deletes and restores, into the restored data DB in
// `data_dir`, and counts what was written since the backup (into `report`).
absl::Status ReplayIntoDataDb(const std::string& data_dir, const ReplayPlan& plan,
                              storage::PhaseReporter& replay_progress, RestoreReport* report) {
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<storage::DataDb> db,
                          storage::DataDb::Open(data_dir, storage::DataDbOptions{}));
  for (const auto& [key, refs] : plan.purges) {
    COFFER_ASSIGN_OR_RETURN(size_t purged, storage::RecycleBin::ReplayPurges(
                                               db.get(), std::get<0>(key), std::get<1>(key), refs));
    report->items_purged += purged;
    replay_progress.Add(refs.size());
  }
  // Counted before the moves (which never change whether an item is held) and after the
  // purges (a purged item's newer value is as lost as a new item's).
  for (const auto& [key, refs] : plan.writes) {
    COFFER_ASSIGN_OR_RETURN(
        storage::RecycleBin::StoredCount count,
        storage::RecycleBin::CountStored(db.get(), std::get<0>(key), std::get<1>(key), refs));
    const bool record = std::get<1>(key) == storage::PurgedItemKind::kRecord;
    (record ? report->records_overwritten : report->attachments_overwritten) += count.held;
    (record ? report->records_written_new : report->attachments_written_new) +=
        count.distinct - count.held;
  }
  for (const auto& [key, moves] : plan.moves) {
    COFFER_ASSIGN_OR_RETURN(
        storage::BinMoveReport moved,
        storage::RecycleBin::ReplayBinMoves(db.get(), std::get<0>(key), std::get<1>(key), moves));
    report->binned_again += moved.to_bin;
    report->restored_from_bin += moved.from_bin;
    report->moves_not_found += moved.not_found;
    replay_progress.Add(moves.size());
  }
  report->moves_without_ref = plan.moves_without_ref;
  report->writes_without_ref = plan.writes_without_ref;
  return absl::OkStatus();
}

// The restored key DB (in `key_db_directory`), opened as a restored copy on modules that refuse
// to create or destroy a token object (the live daemon owns the token: kms/keys/recovery.cc):
// the plan's destructions, then a new primary for every active dataset's data purposes, then a
// key-DB generation far above `live` (the newest the log or the live key DB reached).
absl::Status RestoreKeyDb(KeyManagerOptions options, const std::string& key_db_directory,
                          const ReplayPlan& plan, const audit::AuditActor& actor, uint64_t live,
                          storage::PhaseReporter& replay_progress,
                          const coffer::ProgressFn& progress, RestoreReport* report) {
  options.key_db_directory = key_db_directory;
  options.crash_point = nullptr;
  options.restored_copy = true;
  std::vector<std::unique_ptr<NoTokenChanges>> read_only;
  for (auto& [name, wrapper] : options.modules) {
    if (wrapper == nullptr) continue;
    read_only.push_back(std::make_unique<NoTokenChanges>(wrapper));
    wrapper = read_only.back().get();
  }
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<KeyManager> manager,
                          KeyManager::Open(std::move(options)));
  for (uint64_t handle : plan.destroyed) {
    auto before = manager->DescribeDataset(handle);
    COFFER_RETURN_IF_ERROR(manager->ReplayDestruction(handle, actor));
    auto after = manager->DescribeDataset(handle);
    if (before.ok() && before->state != DatasetState::kDestroyed && after.ok()) {
      if (after->state == DatasetState::kDestroyed) report->datasets_destroyed.push_back(handle);
      if (after->state == DatasetState::kDestroying) {
        report->destructions_deferred.push_back(handle);
      }
    }
    replay_progress.Add(1);
  }
  replay_progress.Finish();
  const std::vector<DatasetSummary> datasets = manager->ListDatasets();
  const auto active = static_cast<uint64_t>(std::count_if(
      datasets.begin(), datasets.end(),
      [](const DatasetSummary& dataset) { return dataset.state == DatasetState::kActive; }));
  storage::PhaseReporter rotate_progress(progress, kRotatePhase, active, kItemStep);
  for (const DatasetSummary& dataset : datasets) {
    if (dataset.state != DatasetState::kActive) continue;
    for (storage::KeyPurpose purpose :
         {storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments}) {
      COFFER_RETURN_IF_ERROR(
          manager->Rotate(dataset.handle, purpose, RotationCause::kManual, actor).status());
      report->rotated.emplace_back(dataset.handle, purpose);
    }
    rotate_progress.Add(1);
  }
  rotate_progress.Finish();
  // A fresh baseline: the restored key DB is older than the log says (it is a backup), so it
  // starts far above every generation the log recorded or the live key DB has reached. The
  // live daemon may keep running (and writing its key DB) until the operator switches to
  // this directory: it would need kRestoredKeyDbGenerationStep more writes to catch up
  // (docs/key-manager.md, "Key DB generation"), and were it to, the switch would be refused,
  // never silently accepted. In turn the old live key DB is older than this one.
  const uint64_t baseline = live > UINT64_MAX - 1 - kRestoredKeyDbGenerationStep
                                ? UINT64_MAX - 1
                                : live + kRestoredKeyDbGenerationStep;
  COFFER_ASSIGN_OR_RETURN(report->key_db_generation, manager->AdvanceKeyDbGeneration(baseline));
  const RecoveryReport& recovery = manager->recovery_report();
  report->intents_resolved = recovery.creates_rolled_back.size() +
                             recovery.destroys_completed.size() +
                             recovery.rewraps_completed.size() + recovery.rewraps_dropped.size();
  for (uint64_t handle : recovery.destroys_deferred) {
    if (std::find(report->destructions_deferred.begin(), report->destructions_deferred.end(),
                  handle) == report->destructions_deferred.end()) {
      report->destructions_deferred.push_back(handle);
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status FullBackups::CheckRestoreTarget(const std::string& target_directory) {
  return OwnedDirectory::CheckCreatable(target_directory);
}

absl::Status FullBackups::ExtractKeyDb(const std::string& backup_root, uint32_t id,
                                       hsm::RowAuthenticator& token, const std::string& target) {
  const std::string dir = backup_root + "/full/" + std::to_string(id);
  COFFER_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(id, dir));
  COFFER_ASSIGN_OR_RETURN(OwnedDirectory into, OwnedDirectory::CreateNew(target));
  COFFER_RETURN_IF_ERROR(CopyFilePart(id, dir, manifest, token, kRestoredKeyDbDir, into,
                                      /*sync=*/false, /*part_progress=*/nullptr));
  return into.Sync();
}

absl::Status FullBackups::CheckNotASealedCopy(const std::string& key_db_directory) {
  std::error_code ec;
  for (fs::directory_iterator it(key_db_directory, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->path().filename().string().ends_with(internal::kSealedSuffix)) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       key_db_directory +
                           " holds a full backup's sealed key-DB files (*.sealed), not a key DB: "
                           "bring a backup back with cofferd --restore-backup ID or keyctl backup "
                           "restore (docs/key-manager.md, \"Full backups\")");
    }
  }
  return absl::OkStatus();
}

absl::Status FullBackups::CheckRestoreComplete(const std::string& directory) {
  std::error_code ec;
  if (fs::exists(directory + "/" + kRestoreMarker, ec)) {
    return MakeError(ErrorCode::kRestoreIncomplete,
                     "the restore into " + directory + " did not finish; restore again");
  }
  if (ec) return MakeError(ErrorCode::kIoError, "cannot inspect " + directory);
  return absl::OkStatus();
}

absl::StatusOr<RestoreReport> FullBackups::RestoreInto(uint32_t id, RestoreRequest request,
                                                       const coffer::ProgressFn& progress) {
  const std::string& target = request.target_directory;
  // Refused before anything is read or written; CreateNew checks again when it creates it.
  COFFER_RETURN_IF_ERROR(OwnedDirectory::CheckCreatable(target));
  audit::AuditLog* log = request.key_manager.audit_log;
  if (log == nullptr || request.live_audit_directory.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a restore needs the live audit log and the key manager's audit log");
  }
  std::lock_guard<std::mutex> lock(mu_);

  // 1. Every part of the backup, then the live log it replays from: one phase "verify", in
  // bytes of both (the live log counts when it has been read).
  COFFER_ASSIGN_OR_RETURN(Manifest manifest, ReadManifest(id, BackupPath(id)));
  storage::PhaseReporter verify_progress(
      progress, kVerifyPhase,
      progress ? RestoreVerifyBytes(data_.get(), id, manifest, request.live_audit_directory) : 0,
      kByteStep);
  COFFER_RETURN_IF_ERROR(VerifyParts(data_.get(), id, BackupPath(id), manifest, *options_.token,
                                     progress ? FoldInto(&verify_progress) : nullptr));
  COFFER_ASSIGN_OR_RETURN(const audit::VerifyReport verified,
                          VerifyReplaySource(request, manifest, id));
  COFFER_ASSIGN_OR_RETURN(std::vector<audit::v1::AuditEntry> entries,
                          audit::ReadAuditEntries(request.live_audit_directory));

  COFFER_ASSIGN_OR_RETURN(const ReplayPlan plan, PlanReplay(entries, manifest.audit_sequence));
  RestoreReport report;
  report.audit_sequence = manifest.audit_sequence;
  report.purges_replayed = plan.purge_count;
  report.grants_added_since = plan.grants_added;
  report.grants_removed_since = plan.grants_removed;
  verify_progress.Finish();

  audit::AuditEvent event;
  event.kind = audit::v1::FULL_RESTORE;
  event.actor = request.actor;
  event.stage = audit::v1::STAGE_REQUESTED;
  event.record_count = id;
  COFFER_RETURN_IF_ERROR(log->Append(event).status());

  auto restore = [&]() -> absl::Status {
    // 2. The three parts, under a marker that says "not servable yet". The target and every
    // file and directory in it are created here, O_EXCL|O_NOFOLLOW, 0700/0600.
    COFFER_ASSIGN_OR_RETURN(OwnedDirectory root, OwnedDirectory::CreateNew(target));
    COFFER_RETURN_IF_ERROR(root.WriteNewFile(kRestoreMarker, "", /*sync=*/true));
    COFFER_RETURN_IF_ERROR(root.Sync());
    COFFER_ASSIGN_OR_RETURN(OwnedDirectory data_root, root.MakeSubdirectory(kRestoredDataDir));
    const std::string& data_dir = data_root.path();
    COFFER_RETURN_IF_ERROR(data_->RestoreInto(id, data_dir, progress));
    COFFER_ASSIGN_OR_RETURN(OwnedDirectory keys_root, root.MakeSubdirectory(kRestoredKeyDbDir));
    COFFER_ASSIGN_OR_RETURN(OwnedDirectory audit_root, root.MakeSubdirectory(kRestoredAuditDir));
    COFFER_RETURN_IF_ERROR(RestoreFileParts(id, BackupPath(id), manifest, *options_.token,
                                            keys_root, audit_root, progress));
    COFFER_RETURN_IF_ERROR(keys_root.Sync());
    COFFER_RETURN_IF_ERROR(audit_root.Sync());

    // 3. Purges, deletes and restores newer than the backup, then (4) destructions: one phase
    // "replay".
    storage::PhaseReporter replay_progress(
        progress, kReplayPhase, report.purges_replayed + plan.move_count + plan.destroyed.size(),
        kItemStep);
    COFFER_RETURN_IF_ERROR(ReplayIntoDataDb(data_dir, plan, replay_progress, &report));

    // 4. Destructions, then a new primary for every active dataset's data purposes.
    const uint64_t live = std::max(log->newest_key_db_generation(), verified.key_db_generation);
    COFFER_RETURN_IF_ERROR(RestoreKeyDb(request.key_manager, keys_root.path(), plan, request.actor,
                                        live, replay_progress, progress, &report));

    // 5. Servable: files RocksDB made under its own umask are tightened, then the marker goes.
    COFFER_RETURN_IF_ERROR(root.Tighten());
    COFFER_RETURN_IF_ERROR(root.RemoveFile(kRestoreMarker));
    return root.Sync();
  };
  absl::Status result = restore();
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = log->Append(event).status();
  if (!result.ok()) return result;
  if (!audited.ok()) return audited;
  return report;
}

}  // namespace coffer::kms
