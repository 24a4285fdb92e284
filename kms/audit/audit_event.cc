#include "kms/audit/audit_event.h"

#include <algorithm>

namespace coffer::kms::audit {
namespace {

absl::Status Invalid(std::string_view message) {
  return MakeError(ErrorCode::kInvalidArgument,
                   std::string("audit event: ") + std::string(message));
}

absl::Status ValidateActor(const AuditActor& actor, std::string_view role) {
  if (!v1::SocketKind_IsValid(actor.socket)) {
    return Invalid(std::string(role) + " socket kind out of range");
  }
  if (actor.admin_name.size() > kMaxAdminNameSize ||
      !std::all_of(actor.admin_name.begin(), actor.admin_name.end(),
                   [](char c) { return c >= 0x21 && c <= 0x7e; })) {
    return Invalid(std::string(role) +
                   " admin name must be at most 64 printable ASCII characters without spaces");
  }
  return absl::OkStatus();
}

}  // namespace

bool IsKeyOperationKind(v1::EventKind kind) {
  return (kind >= v1::DATASET_CREATE && kind <= v1::REQUEST_REFUSED) ||
         (kind >= v1::CLOCK_WENT_BACKWARDS && kind <= v1::DELETION_RECEIPT) ||
         kind == v1::DATASET_EXPORT || kind == v1::DATASET_EXPORT_REDEEMED ||
         kind == v1::CANARY_PLANT || kind == v1::CANARY_REMOVE;
}

bool IsAccessKind(v1::EventKind kind) {
  return kind == v1::ACCESS_READ || kind == v1::ACCESS_WRITE || kind == v1::ACCESS_DELETE ||
         kind == v1::ACCESS_PSEUDONYMIZE || kind == v1::ACCESS_REIDENTIFY ||
         kind == v1::CANARY_READ;
}

AuditText ItemMoveDetail(ItemMove move) {
  switch (move) {
    case ItemMove::kRecordWrite:
      return "record_put";
    case ItemMove::kRecordDelete:
      return "record_delete";
    case ItemMove::kRecordRestore:
      return "record_restore";
    case ItemMove::kAttachmentWrite:
      return "attachment_put_commit";
    case ItemMove::kAttachmentDelete:
      return "attachment_delete";
    case ItemMove::kAttachmentRestore:
      return "attachment_restore";
  }
  return "";
}

std::optional<ItemMove> ItemMoveOf(std::string_view detail) {
  for (ItemMove move :
       {ItemMove::kRecordWrite, ItemMove::kRecordDelete, ItemMove::kRecordRestore,
        ItemMove::kAttachmentWrite, ItemMove::kAttachmentDelete, ItemMove::kAttachmentRestore}) {
    if (ItemMoveDetail(move).view() == detail) return move;
  }
  return std::nullopt;
}

absl::Status ValidateAuditEvent(const AuditEvent& event) {
  if (!v1::EventKind_IsValid(event.kind) ||
      (!IsKeyOperationKind(event.kind) && !IsAccessKind(event.kind))) {
    return Invalid("the kind must be a key operation or an access (LOG_* kinds are the log's)");
  }
  if (!v1::Purpose_IsValid(event.purpose) || !v1::Stage_IsValid(event.stage)) {
    return Invalid("purpose or stage out of range");
  }
  COFFER_RETURN_IF_ERROR(ValidateActor(event.actor, "actor"));
  if (event.approver.has_value())
    COFFER_RETURN_IF_ERROR(ValidateActor(*event.approver, "approver"));
  const bool purge = event.kind == v1::RECORD_PURGE || event.kind == v1::ATTACHMENT_PURGE;
  const bool backup = event.kind == v1::FULL_BACKUP || event.kind == v1::FULL_RESTORE ||
                      event.kind == v1::DATASET_EXPORT ||
                      event.kind == v1::DATASET_EXPORT_REDEEMED;  // items; the approval id
  if (!IsAccessKind(event.kind) && !purge && event.record_ref.has_value()) {
    return Invalid("a record ref belongs to access and purge events only");
  }
  if (purge && !event.record_ref.has_value()) return Invalid("a purge names its record ref");
  const bool refusal = event.kind == v1::REQUEST_REFUSED;  // coalesced: how many
  // Admin and approval events carry a uid or an approval request id there.
  const bool admin = event.kind >= v1::ADMIN_INVITE && event.kind <= v1::APPROVAL_EXPIRED &&
                     event.kind != v1::MFA_VERIFY && event.kind != v1::MFA_LOCKOUT;
  const bool erase = event.kind == v1::DATASET_ERASE;  // the items erased
  // Canary events carry the canary's number there (docs/events.md).
  const bool canary = event.kind == v1::CANARY_PLANT || event.kind == v1::CANARY_REMOVE;
  // An admin request that changes a grant carries the principal's uid or gid there
  // (kms/ops/runtime_grants.h).
  const bool admin_request = event.kind == v1::ADMIN_REQUEST;
  if (!IsAccessKind(event.kind) && !backup && !refusal && !admin && !erase && !canary &&
      !admin_request && event.record_count != 0) {
    return Invalid(
        "a record count belongs to access, refusal, backup, erase, canary, approval and admin "
        "request events only");
  }
  if (event.policy_change.has_value() != (event.kind == v1::POLICY_CHANGE)) {
    return Invalid("a policy change goes with POLICY_CHANGE, and only there");
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit
