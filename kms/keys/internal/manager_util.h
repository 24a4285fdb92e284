// Small helpers shared by the key manager's .cc files. Thread-safe (pure or read-only).

#ifndef COFFER_KMS_KEYS_INTERNAL_MANAGER_UTIL_H_
#define COFFER_KMS_KEYS_INTERNAL_MANAGER_UTIL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/audit/audit_event.h"
#include "kms/keys/internal/dataset_state.h"

namespace coffer::kms::internal {

// OK when data may use the dataset's keys (ACTIVE, no missing wrapping key); otherwise
// DATASET_STATE_FORBIDS, KEY_DESTROYED or WRAPPING_KEY_MISSING.
absl::Status CheckDataAccess(const DatasetSnapshot& snap);

// The daemon's own identity for scheduler, recovery and cache-miss entries.
audit::AuditActor InternalActor();

// A dataset's name-commitment salt: random, from the private DRBG (not a key: its customer is
// given it).
absl::StatusOr<std::string> NewNameSalt();

// A copy of `version`'s row with the current reservation, ready to be written.
v1::KeyVersionRow RowForWrite(const VersionSnapshot& version);

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_MANAGER_UTIL_H_
