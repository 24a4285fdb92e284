// The admin-socket operations of notifications and canary records (events.proto), served
// through ServicesDeps::extra_admin_ops: events_read over the EventLog, canary_plant /
// canary_list / canary_remove over the CanaryRegistry. MFA: events_read and canary_list are
// read-only (no TOTP code; events_read moves only the caller's own subscriber cursor);
// canary_plant and canary_remove need an MFA session like every other change (admin_control).
//
// Bad input: EVENT_SUBSCRIBER_INVALID, EVENT_CURSOR_INVALID, CANARY_EXISTS, CANARY_NOT_FOUND,
// DATASET_NOT_FOUND, or MALFORMED_REQUEST naming the field (max_events above 1000, wait_millis
// above 10000, an empty id).
//
// Thread safety: the handlers may run concurrently. Ownership: `log` and `canaries` are borrowed.

#ifndef COFFER_KMS_OPS_EVENT_OPERATIONS_H_
#define COFFER_KMS_OPS_EVENT_OPERATIONS_H_

#include <map>

#include "coffer/v1/service.pb.h"
#include "kms/events/event_log.h"
#include "kms/ops/canary.h"
#include "kms/ops/services.h"

namespace coffer::daemon {

inline constexpr uint32_t kDefaultEventsPerRead = 100;
inline constexpr uint32_t kMaxEventsPerRead = 1000;
inline constexpr uint32_t kMaxEventsWaitMillis = 10000;

// Adds the four handlers to `ops`.
void AddEventOperations(events::EventLog* log, CanaryRegistry* canaries,
                        std::map<coffer::v1::Request::OpCase, AdminOperationHandler>& ops);

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_EVENT_OPERATIONS_H_
