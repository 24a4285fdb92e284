// The admin socket's backup operations (backup_create, backup_list, backup_verify,
// backup_restore, backup_prune), which daemon::Services leaves to the wiring
// (ServicesDeps::extra_admin_ops): each maps one coffer.v1 request onto kms::FullBackups.
// Services has already checked that the caller is an admin on the admin socket and audits
// refusals; FullBackups audits backups and restores in the audit log (FULL_BACKUP,
// FULL_RESTORE) under the calling admin.
//
// backup_restore creates the absolute directory the admin names and restores into it
// (kms/keys/full_backup.h): an existing path — an empty directory or a symlink included — is
// RESTORE_TARGET_NOT_EMPTY; a parent that is a symlink, or that others may write, is
// MALFORMED_REQUEST with a message naming the problem. The restore never changes the token
// (intents in the restored key DB are resolved in its rows; the live daemon keeps its DWKs).
// The running daemon keeps serving its own state — switching over is a restart on the restored
// directory; a restore drill is the same request into a scratch directory.
//
// Thread safety: the handlers may run on any worker thread at once (FullBackups serialises).
// Ownership: everything in BackupOperationDeps is borrowed and must outlive the handlers.

#ifndef COFFER_KMS_OPS_BACKUP_OPERATIONS_H_
#define COFFER_KMS_OPS_BACKUP_OPERATIONS_H_

#include <map>
#include <string>

#include "coffer/v1/service.pb.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/key_manager.h"
#include "kms/ops/services.h"

namespace coffer::cofferd {

struct BackupOperationDeps {
  kms::FullBackups* backups = nullptr;
  kms::FullBackupSources sources;
  // For restores: the live log's directory and the checkpoint public key that verifies it,
  // and how to open the restored key DB (modules, row authenticator, signer, the live audit
  // log, clock; key_db_directory is set by the restore).
  std::string live_audit_directory;
  std::string audit_public_key_pem;
  // The config's audit_anchor_file, read at each restore ("" = none).
  std::string audit_anchor_file;
  kms::KeyManagerOptions restore_key_manager;
};

std::map<coffer::v1::Request::OpCase, daemon::AdminOperationHandler> BackupOperations(
    BackupOperationDeps deps);

// A restore's report as backup_restore answers it (and cofferd --restore-backup logs it).
void RestoreReportToWire(const kms::RestoreReport& report, coffer::v1::BackupRestoreResponse* out);

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_OPS_BACKUP_OPERATIONS_H_
