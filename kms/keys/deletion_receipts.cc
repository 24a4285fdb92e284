#include "kms/keys/deletion_receipts.h"

#include "crypto/base/status.h"
#include "storage/dataset_erasure.h"

namespace coffer::kms {
namespace {

absl::Status CompleteOne(KeyManager& keys, storage::DataDb& data, uint64_t handle,
                         const audit::AuditActor& actor) {
  COFFER_ASSIGN_OR_RETURN(v1::DataErasure erasure, keys.Erasure(handle));
  if (erasure.started_audit_sequence() == 0) {
    COFFER_ASSIGN_OR_RETURN(storage::DatasetDataCounts counts,
                            storage::CountDatasetData(data, handle));
    COFFER_ASSIGN_OR_RETURN(erasure, keys.BeginErasure(handle, counts, actor));
  }
  if (erasure.compaction_finished_micros() == 0) {
    COFFER_RETURN_IF_ERROR(storage::EraseDatasetData(data, handle));
    COFFER_RETURN_IF_ERROR(keys.FinishErasure(handle, actor));
  }
  return keys.IssueDeletionReceipt(handle, actor).status();
}

}  // namespace

DestructionCompletion CompleteDestructions(KeyManager& keys, storage::DataDb& data,
                                           const audit::AuditActor& actor) {
  DestructionCompletion report;
  for (uint64_t handle : keys.DestroyedAwaitingReceipt()) {
    absl::Status completed = CompleteOne(keys, data, handle, actor);
    if (completed.ok()) {
      report.receipts_issued.push_back(handle);
    } else {
      report.failures.emplace_back(handle, std::move(completed));
    }
  }
  return report;
}

}  // namespace coffer::kms
