// The admin-socket operations of notifications and canary records (events.proto), served
// through ServicesDeps::extra_admin_ops: events_read over the EventLog, canary_plant /
// canary_list / canary_remove over the CanaryRegistry. MFA: events_read and canary_list are
// read-only (no TOTP code); canary_plant and canary_remove need an MFA session like every other
// change (admin_control).
//
// Subscribers belong to their owner's uid (kms/events/event_log.h): events_read reads and
// moves only a subscriber of the caller's uid (a new name becomes the caller's); another uid's,
// or one migrated from before owners, is refused NOT_GRANTED with nothing read or moved. So one
// admin cannot acknowledge — and silence — the security team's subscriber. events_read is polled
// (keyctl events --follow), so its reads are not audited one by one, but this handler audits
// synchronously, as ADMIN_REQUEST under the caller's identity:
//  - every acknowledgement (ack_through set) before the cursor moves, detail
//    "events_read: acknowledgement" (an audit failure refuses it: nothing moves);
//  - every refusal of another uid's subscriber, result NOT_GRANTED, detail
//    "events_read: refused: another uid's subscriber".
// The audit entry names who acknowledged and when, not the subscriber or the sequence: the
// audit format's detail is a fixed text and ADMIN_REQUEST carries no count (kms/audit/
// audit_event.h); see docs/events.md.
//
// Bad input: EVENT_SUBSCRIBER_INVALID, EVENT_CURSOR_INVALID, CANARY_EXISTS, CANARY_NOT_FOUND,
// DATASET_NOT_FOUND, or MALFORMED_REQUEST naming the field (max_events above 1000, wait_millis
// above 10000, an empty id).
//
// Thread safety: the handlers may run concurrently. Ownership: `log`, `canaries` and
// `audit_log` are borrowed.

#ifndef COFFER_KMS_OPS_EVENT_OPERATIONS_H_
#define COFFER_KMS_OPS_EVENT_OPERATIONS_H_

#include <map>

#include "coffer/v1/service.pb.h"
#include "kms/audit/audit_log.h"
#include "kms/events/event_log.h"
#include "kms/ops/canary.h"
#include "kms/ops/services.h"

namespace coffer::daemon {

inline constexpr uint32_t kDefaultEventsPerRead = 100;
inline constexpr uint32_t kMaxEventsPerRead = 1000;
inline constexpr uint32_t kMaxEventsWaitMillis = 10000;

// Adds the four handlers to `ops`.
void AddEventOperations(events::EventLog* log, CanaryRegistry* canaries,
                        kms::audit::AuditLog* audit_log,
                        std::map<coffer::v1::Request::OpCase, AdminOperationHandler>& ops);

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_EVENT_OPERATIONS_H_
