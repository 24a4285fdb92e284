#include "kms/keys/internal/convert.h"

#include <chrono>

namespace coffer::kms::internal {

v1::Policy ToRow(const DatasetPolicy& policy) {
  v1::Policy row;
  row.set_records_rotation_seconds(policy.records_rotation.count());
  row.set_attachments_rotation_seconds(policy.attachments_rotation.count());
  row.set_usage_limit(policy.usage_limit);
  row.set_bin_days(policy.bin_days);
  row.set_retention_max_age_seconds(policy.retention_max_age.count());
  row.set_minimum_retention_seconds(policy.minimum_retention.count());
  row.set_destruction_wait_seconds(policy.destruction_wait.count());
  row.set_legal_hold(policy.legal_hold);
  row.set_auto_destroy_after_disabled_seconds(policy.auto_destroy_after_disabled.count());
  if (policy.reencrypt_versions_back.has_value()) {
    row.set_reencrypt_versions_back(*policy.reencrypt_versions_back);
  }
  row.set_max_records(policy.max_records);
  row.set_max_stored_bytes(policy.max_stored_bytes);
  return row;
}

DatasetPolicy FromRow(const v1::Policy& row) {
  DatasetPolicy policy;
  policy.records_rotation = Seconds(row.records_rotation_seconds());
  policy.attachments_rotation = Seconds(row.attachments_rotation_seconds());
  policy.usage_limit = row.usage_limit();
  policy.bin_days = row.bin_days();
  policy.retention_max_age = Seconds(row.retention_max_age_seconds());
  policy.minimum_retention = Seconds(row.minimum_retention_seconds());
  policy.destruction_wait = Seconds(row.destruction_wait_seconds());
  policy.legal_hold = row.legal_hold();
  policy.auto_destroy_after_disabled = Seconds(row.auto_destroy_after_disabled_seconds());
  if (row.has_reencrypt_versions_back()) {
    policy.reencrypt_versions_back = row.reencrypt_versions_back();
  }
  policy.max_records = row.max_records();
  policy.max_stored_bytes = row.max_stored_bytes();
  return policy;
}

DatasetState FromRow(v1::DatasetState state) {
  switch (state) {
    case v1::DISABLED:
      return DatasetState::kDisabled;
    case v1::PENDING_DESTRUCTION:
      return DatasetState::kPendingDestruction;
    case v1::DESTROYING:
      return DatasetState::kDestroying;
    case v1::DESTROYED:
      return DatasetState::kDestroyed;
    default:
      return DatasetState::kActive;
  }
}

KeyVersionState FromRow(v1::KeyVersionState state) {
  switch (state) {
    case v1::PRIMARY:
      return KeyVersionState::kPrimary;
    case v1::COMPROMISED:
      return KeyVersionState::kCompromised;
    case v1::RETIRED:
      return KeyVersionState::kRetired;
    default:
      return KeyVersionState::kDecryptOnly;
  }
}

WrappingKeyRef FromRow(const v1::WrappingKeyRef& ref) { return {ref.module(), ref.version()}; }

v1::Actor ToRow(const audit::AuditActor& actor) {
  v1::Actor row;
  row.set_uid(actor.uid);
  row.set_pid(actor.pid);
  row.set_admin_id(actor.admin_id);
  row.set_admin_name(actor.admin_name);
  row.set_socket(static_cast<int32_t>(actor.socket));
  return row;
}

audit::AuditActor FromRow(const v1::Actor& row) {
  audit::AuditActor actor;
  actor.uid = row.uid();
  actor.pid = row.pid();
  actor.admin_id = row.admin_id();
  actor.admin_name = row.admin_name();
  actor.socket = audit::v1::SocketKind_IsValid(row.socket())
                     ? static_cast<audit::v1::SocketKind>(row.socket())
                     : audit::v1::SOCKET_KIND_UNSPECIFIED;
  return actor;
}

TimePoint FromMicros(int64_t micros) { return TimePoint(std::chrono::microseconds(micros)); }

}  // namespace coffer::kms::internal
