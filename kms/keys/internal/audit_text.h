// Helpers to build the key manager's audit events. Pure; thread-safe.

#ifndef COFFER_KMS_KEYS_INTERNAL_AUDIT_TEXT_H_
#define COFFER_KMS_KEYS_INTERNAL_AUDIT_TEXT_H_

#include <cstdint>

#include "kms/audit/audit_event.h"
#include "kms/keys/key_manager_types.h"

namespace coffer::kms::internal {

inline audit::AuditEvent MakeEvent(audit::v1::EventKind kind, const audit::AuditActor& actor,
                                   uint64_t handle, audit::v1::Purpose purpose, uint32_t version,
                                   audit::v1::Stage stage, audit::AuditText detail = {}) {
  audit::AuditEvent event;
  event.kind = kind;
  event.actor = actor;
  event.dataset_handle = handle;
  event.purpose = purpose;
  event.key_version = version;
  event.stage = stage;
  event.detail = detail;
  return event;
}

// The fixed text naming what a refused request attempted.
inline audit::AuditText RefusedDetail(audit::v1::EventKind attempted) {
  switch (attempted) {
    case audit::v1::DATASET_CREATE:
      return "refused: dataset create";
    case audit::v1::KEY_ROTATE:
      return "refused: key rotate";
    case audit::v1::KEY_RETIRE:
      return "refused: key retire";
    case audit::v1::KEY_REWRAP:
      return "refused: key re-wrap";
    case audit::v1::DATASET_DISABLE:
      return "refused: dataset disable";
    case audit::v1::DATASET_ENABLE:
      return "refused: dataset enable";
    case audit::v1::DESTRUCTION_SCHEDULE:
      return "refused: destruction schedule";
    case audit::v1::DESTRUCTION_CANCEL:
      return "refused: destruction cancel";
    case audit::v1::DATASET_DESTROY:
      return "refused: dataset destroy";
    case audit::v1::HOLD_SET:
      return "refused: hold set";
    case audit::v1::HOLD_CLEAR:
      return "refused: hold clear";
    case audit::v1::POLICY_CHANGE:
      return "refused: policy change";
    default:
      return "refused";
  }
}

inline audit::AuditText RotationDetail(RotationCause cause) {
  switch (cause) {
    case RotationCause::kManual:
      return "manual rotation";
    case RotationCause::kScheduled:
      return "scheduled rotation (period reached)";
    case RotationCause::kUsage:
      return "usage-based rotation";
    case RotationCause::kEmergency:
      return "emergency rotation: old versions compromised";
    case RotationCause::kReindex:
      return "lookup key change for a re-index";
    case RotationCause::kRekey:
      return "pseudonym re-key";
  }
  return "rotation";
}

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_AUDIT_TEXT_H_
