#include "kms/ops/event_operations.h"

#include <chrono>
#include <optional>

#include "crypto/base/status.h"

namespace coffer::daemon {

namespace pb = ::coffer::v1;

namespace {

namespace audit = ::coffer::kms::audit;

absl::Status AuditEventsRead(audit::AuditLog* audit_log, const audit::AuditActor& actor,
                             ErrorCode result, audit::AuditText detail) {
  audit::AuditEvent event;
  event.kind = audit::v1::ADMIN_REQUEST;
  event.actor = actor;
  event.result = result;
  event.detail = detail;
  return audit_log->Append(event).status();
}

}  // namespace

void AddEventOperations(events::EventLog* log, CanaryRegistry* canaries, audit::AuditLog* audit_log,
                        std::map<pb::Request::OpCase, AdminOperationHandler>& ops) {
  ops[pb::Request::kEventsRead] =
      [log, audit_log](const pb::Request& request, const audit::AuditActor& actor,
                       const coffer::ProgressFn&, pb::Response* response) -> absl::Status {
    const pb::EventsReadRequest& r = request.events_read();
    if (r.max_events() > kMaxEventsPerRead) {
      return MakeError(ErrorCode::kMalformedRequest, "events_read.max_events must be 0-1000");
    }
    if (r.wait_millis() > kMaxEventsWaitMillis) {
      return MakeError(ErrorCode::kMalformedRequest, "events_read.wait_millis must be 0-10000");
    }
    std::optional<uint64_t> ack;
    if (r.has_ack_through()) ack = r.ack_through();
    // Written before the cursor moves (under the event log's lock): no unaudited acknowledgement.
    events::AckAuditor audit_ack = [audit_log, &actor](uint64_t, uint64_t) {
      return AuditEventsRead(audit_log, actor, ErrorCode::kOk, "events_read: acknowledgement");
    };
    absl::StatusOr<events::ReadResult> read =
        log->Read(r.subscriber(), actor.uid, ack, r.ack_only(),
                  r.max_events() == 0 ? kDefaultEventsPerRead : r.max_events(),
                  std::chrono::milliseconds(r.wait_millis()), audit_ack);
    if (ErrorCodeOf(read.status()) == ErrorCode::kNotGranted) {
      COFFER_RETURN_IF_ERROR(AuditEventsRead(audit_log, actor, ErrorCode::kNotGranted,
                                             "events_read: refused: another uid's subscriber"));
    }
    if (!read.ok()) return read.status();
    auto* out = response->mutable_events_read();
    for (pb::Event& event : read->events) *out->add_events() = std::move(event);
    out->set_acknowledged_through(read->acknowledged_through);
    out->set_newest_sequence(read->newest_sequence);
    out->set_missed(read->missed);
    return absl::OkStatus();
  };
  ops[pb::Request::kCanaryPlant] =
      [canaries](const pb::Request& request, const audit::AuditActor& actor,
                 const coffer::ProgressFn&, pb::Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(pb::CanaryInfo info, canaries->Plant(request.canary_plant(), actor));
    *response->mutable_canary_plant()->mutable_canary() = std::move(info);
    return absl::OkStatus();
  };
  ops[pb::Request::kCanaryList] = [canaries](const pb::Request& request, const audit::AuditActor&,
                                             const coffer::ProgressFn&,
                                             pb::Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(*response->mutable_canary_list(),
                            canaries->List(request.canary_list()));
    return absl::OkStatus();
  };
  ops[pb::Request::kCanaryRemove] =
      [canaries](const pb::Request& request, const audit::AuditActor& actor,
                 const coffer::ProgressFn&, pb::Response* response) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(pb::CanaryInfo info, canaries->Remove(request.canary_remove(), actor));
    *response->mutable_canary_remove()->mutable_canary() = std::move(info);
    return absl::OkStatus();
  };
}

}  // namespace coffer::daemon
