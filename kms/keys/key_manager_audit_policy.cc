// KeyManager's access audit failure policy (key_manager.h; docs/audit.md, "Failure policy"): one
// authenticated row of the meta family, v1::AccessAuditPolicyRow under "access_audit_policy".
// What the policy does is kms/ops's business (kms/ops/unaudited_accesses.h); here it is only a
// stored, audited setting.

#include <cstdint>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {
namespace {

constexpr uint32_t kAccessAuditPolicyFormat = 1;
constexpr std::string_view kAccessAuditPolicyKey = "access_audit_policy";

bool Known(uint32_t value) {
  return value == static_cast<uint32_t>(AccessAuditFailure::kFailClosed) ||
         value == static_cast<uint32_t>(AccessAuditFailure::kServeAndCount);
}

}  // namespace

absl::Status KeyManager::OpenAccessAuditPolicy() {
  v1::AccessAuditPolicyRow row;
  COFFER_ASSIGN_OR_RETURN(bool found, db_->Get(KeyDbTable::kMeta, kAccessAuditPolicyKey, row));
  if (!found) return absl::OkStatus();  // fail closed, as before the row existed
  if (row.format() != kAccessAuditPolicyFormat) {
    return MakeError(ErrorCode::kUnsupportedFormat, "key DB access audit policy format " +
                                                        std::to_string(row.format()) +
                                                        " is not one this build reads (1)");
  }
  if (!Known(row.access_failure())) {
    return MakeError(ErrorCode::kKeyDbRowCorrupt,
                     "key DB inconsistent: the access audit policy row names no known policy");
  }
  access_audit_failure_.store(static_cast<AccessAuditFailure>(row.access_failure()));
  return absl::OkStatus();
}

absl::StatusOr<AccessAuditFailure> KeyManager::SetAccessAuditFailure(
    AccessAuditFailure policy, const audit::AuditActor& actor) {
  if (!Known(static_cast<uint32_t>(policy))) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the access audit failure policy is FAIL_CLOSED or SERVE_AND_COUNT");
  }
  std::lock_guard<std::mutex> lock(admin_mu_);
  const AccessAuditFailure previous = access_audit_failure_.load();
  if (previous == policy) return previous;
  audit::AuditEvent event =
      internal::MakeEvent(audit::v1::POLICY_CHANGE, actor, 0, audit::v1::PURPOSE_UNSPECIFIED, 0,
                          audit::v1::STAGE_REQUESTED);
  event.policy_change = audit::AuditPolicyChange{
      "access_audit_failure", static_cast<int64_t>(previous), static_cast<int64_t>(policy)};
  COFFER_RETURN_IF_ERROR(options_.audit_log->Append(event).status());
  v1::AccessAuditPolicyRow row;
  row.set_format(kAccessAuditPolicyFormat);
  row.set_access_failure(static_cast<uint32_t>(policy));
  row.set_changed_micros(NowMicros());
  KeyDb::Batch batch(*db_);
  absl::Status result = batch.Put(KeyDbTable::kMeta, kAccessAuditPolicyKey, row);
  if (result.ok()) result = db_->Write(batch);
  if (result.ok()) access_audit_failure_.store(policy);
  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  absl::Status audited = options_.audit_log->Append(event).status();
  COFFER_RETURN_IF_ERROR(result);
  COFFER_RETURN_IF_ERROR(audited);
  return previous;
}

}  // namespace coffer::kms
