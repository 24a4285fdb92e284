// Conversions between the key manager's API types, the key-DB protobuf rows and the audit
// event fields. Pure functions; thread-safe.

#ifndef COFFER_KMS_KEYS_INTERNAL_CONVERT_H_
#define COFFER_KMS_KEYS_INTERNAL_CONVERT_H_

#include <cstdint>

#include "kms/audit/audit_event.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/key_manager_types.h"

namespace coffer::kms::internal {

inline constexpr storage::KeyPurpose kAllPurposes[] = {
    storage::KeyPurpose::kRecords, storage::KeyPurpose::kAttachments, storage::KeyPurpose::kLookup,
    storage::KeyPurpose::kPseudonym};

v1::Policy ToRow(const DatasetPolicy& policy);
DatasetPolicy FromRow(const v1::Policy& policy);
DatasetState FromRow(v1::DatasetState state);
KeyVersionState FromRow(v1::KeyVersionState state);
WrappingKeyRef FromRow(const v1::WrappingKeyRef& ref);
v1::Actor ToRow(const audit::AuditActor& actor);
audit::AuditActor FromRow(const v1::Actor& actor);
inline audit::v1::Purpose AuditPurpose(storage::KeyPurpose purpose) {
  return static_cast<audit::v1::Purpose>(purpose);
}
inline v1::Purpose RowPurpose(storage::KeyPurpose purpose) {
  return static_cast<v1::Purpose>(purpose);
}
// Microseconds since the epoch <-> TimePoint.
TimePoint FromMicros(int64_t micros);

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_CONVERT_H_
