#include "kms/ops/backup_operations.h"

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "kms/audit/anchor_check.h"

namespace coffer::cofferd {
namespace {

using coffer::v1::Request;
using coffer::v1::Response;

void ToProto(const kms::FullBackupInfo& info, coffer::v1::BackupInfo* out) {
  out->set_id(info.id);
  out->set_created_micros(coffer::ToUnixMicros(info.created));
  out->set_size_bytes(info.size_bytes);
  out->set_audit_sequence(info.audit_sequence);
}

}  // namespace

void RestoreReportToWire(const kms::RestoreReport& report, coffer::v1::BackupRestoreResponse* out) {
  out->set_audit_sequence(report.audit_sequence);
  out->set_purges_replayed(report.purges_replayed);
  out->set_items_purged(report.items_purged);
  out->set_binned_again(report.binned_again);
  out->set_restored_from_bin(report.restored_from_bin);
  out->set_moves_not_found(report.moves_not_found);
  out->set_moves_without_ref(report.moves_without_ref);
  out->set_records_overwritten(report.records_overwritten);
  out->set_records_written_new(report.records_written_new);
  out->set_attachments_overwritten(report.attachments_overwritten);
  out->set_attachments_written_new(report.attachments_written_new);
  out->set_writes_without_ref(report.writes_without_ref);
  out->set_grants_added_since(report.grants_added_since);
  out->set_grants_removed_since(report.grants_removed_since);
  out->set_datasets_destroyed(static_cast<uint32_t>(report.datasets_destroyed.size()));
  out->set_destructions_deferred(static_cast<uint32_t>(report.destructions_deferred.size()));
}

std::map<Request::OpCase, daemon::AdminOperationHandler> BackupOperations(
    BackupOperationDeps deps) {
  auto shared = std::make_shared<const BackupOperationDeps>(std::move(deps));
  std::map<Request::OpCase, daemon::AdminOperationHandler> ops;

  ops[Request::kBackupCreate] = [shared](const Request&, const kms::audit::AuditActor& actor,
                                         const coffer::ProgressFn& progress,
                                         Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(kms::FullBackupInfo info,
                            shared->backups->Create(shared->sources, actor, progress));
    ToProto(info, response->mutable_backup_create());
    return absl::OkStatus();
  };
  ops[Request::kBackupList] = [shared](const Request&, const kms::audit::AuditActor&,
                                       const coffer::ProgressFn&,
                                       Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(std::vector<kms::FullBackupInfo> list, shared->backups->List());
    auto* out = response->mutable_backup_list();
    for (const kms::FullBackupInfo& info : list) ToProto(info, out->add_backups());
    return absl::OkStatus();
  };
  ops[Request::kBackupVerify] = [shared](const Request& request, const kms::audit::AuditActor&,
                                         const coffer::ProgressFn& progress,
                                         Response* response) -> absl::Status {
    COFFER_RETURN_IF_ERROR(shared->backups->Verify(request.backup_verify().id(), progress));
    response->mutable_backup_verify();
    return absl::OkStatus();
  };
  ops[Request::kBackupRestore] =
      [shared](const Request& request, const kms::audit::AuditActor& actor,
               const coffer::ProgressFn& progress, Response* response) -> absl::Status {
    const std::string& target = request.backup_restore().target_directory();
    if (target.empty() || target[0] != '/') {
      return MakeError(ErrorCode::kMalformedRequest,
                       "backup_restore needs target_directory: an absolute path that does not "
                       "exist yet (the restore creates it, mode 0700)");
    }
    // The target's own problems (a symlinked parent, one others may write) are the admin's
    // input, so their message (it names only that path) reaches the admin as MALFORMED_REQUEST;
    // an existing target stays RESTORE_TARGET_NOT_EMPTY.
    if (absl::Status usable = kms::FullBackups::CheckRestoreTarget(target); !usable.ok()) {
      if (ErrorCodeOf(usable) != ErrorCode::kInvalidArgument) return usable;
      return MakeError(ErrorCode::kMalformedRequest,
                       "backup_restore target_directory: " + std::string(usable.message()));
    }
    kms::RestoreRequest restore;
    restore.target_directory = target;
    restore.live_audit_directory = shared->live_audit_directory;
    restore.audit_public_key_pem = shared->audit_public_key_pem;
    COFFER_ASSIGN_OR_RETURN(restore.minimum_anchor,
                            kms::audit::ReadNewestAnchor(shared->audit_anchor_file));
    restore.key_manager = shared->restore_key_manager;
    restore.actor = actor;
    absl::StatusOr<kms::RestoreReport> report =
        shared->backups->RestoreInto(request.backup_restore().id(), std::move(restore), progress);
    if (!report.ok()) return report.status();
    RestoreReportToWire(*report, response->mutable_backup_restore());
    return absl::OkStatus();
  };
  ops[Request::kBackupPrune] = [shared](const Request&, const kms::audit::AuditActor&,
                                        const coffer::ProgressFn&,
                                        Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(std::vector<uint32_t> deleted, shared->backups->PruneExpired());
    auto* out = response->mutable_backup_prune();
    for (uint32_t id : deleted) out->add_deleted(id);
    return absl::OkStatus();
  };
  return ops;
}

}  // namespace coffer::cofferd
