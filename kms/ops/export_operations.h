// ExportService: cofferd's side of `keyctl dataset export` (coffer.v1 dataset_export,
// kms/api/proto/coffer/v1/export.proto): streams an export-v1 archive
// (kms/formats/export_archive.h) of every record and attachment of a DISABLED or
// PENDING_DESTRUCTION dataset to the requesting admin, as DatasetExportResponse frames of at most
// api::kDefaultChunkBytes.
//
// Reading a locked dataset: the data path refuses DISABLED and PENDING_DESTRUCTION datasets
// (KeyManager's PrimaryKey/KeyForVersion). Export reads through its own stores over
// KeyManager::ExportKey, which serves exactly those two states and only for opening (no
// encryption is ever counted against a dataset key), so the data path's lock stays whole.
//
// Dual control (docs/keyctl.md "Export"): AdminControl files a dataset_export without
// approval_id as an approval request. The approver's approval_decide runs it through Serve,
// which then only answers approved_for_redemption — the archive never reaches the approver.
// The requester redeems it with approval_id: AdminRegistry::Redeem checks (single use,
// persisted) that the caller filed it, that it is approved and unexpired; Serve checks that the
// dataset and the recipient key's fingerprint are those filed. In development mode
// (dual_control false) an export without approval_id runs at once.
//
// Audit, synchronously through the key-operation log (fail closed): DATASET_EXPORT_REDEEMED
// (approval id, approver) when redeemed, DATASET_EXPORT REQUESTED before the first read and
// COMPLETED with the result and records + attachments after the last frame.
//
// Memory: one content segment plus one record or one attachment chunk, whatever the dataset's
// size. Thread safety: Serve may run on many sessions at once. Ownership: every pointer in
// ExportServiceOptions is borrowed and must outlive the service.

#ifndef COFFER_KMS_OPS_EXPORT_OPERATIONS_H_
#define COFFER_KMS_OPS_EXPORT_OPERATIONS_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/clock.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/signer.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/storage_bridge.h"
#include "kms/ops/damaged_events.h"
#include "kms/server/connection.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/record_store.h"

namespace coffer::kms::dataset_export {

struct ExportServiceOptions {
  KeyManager* keys = nullptr;
  storage::DataDb* data_db = nullptr;
  audit::CheckpointSigner* signer = nullptr;  // the token's signing key
  audit::AuditLog* audit_log = nullptr;
  admin::AdminRegistry* registry = nullptr;  // approvals to redeem
  bool dual_control = true;                  // mfa.required
  const coffer::Clock* clock = nullptr;      // required
  // Raises EVENT_DAMAGED_ITEM for the damaged items an export leaves out (optional).
  daemon::DamagedItemEvents* damaged_events = nullptr;
};

class ExportService {
 public:
  // INVALID_ARGUMENT naming a missing dependency.
  static absl::StatusOr<std::unique_ptr<ExportService>> Create(ExportServiceOptions options);
  ~ExportService();

  // A daemon::StreamingAdminOperationHandler for dataset_export.
  absl::Status Serve(const coffer::v1::Request& request, const audit::AuditActor& actor,
                     daemon::ResponseSink* sink);

 private:
  class ExportKeys;
  explicit ExportService(ExportServiceOptions options);

  ExportServiceOptions options_;
  std::unique_ptr<KeyManagerPolicySource> policies_;
};

}  // namespace coffer::kms::dataset_export

#endif  // COFFER_KMS_OPS_EXPORT_OPERATIONS_H_
