#include "kms/ops/services.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kms/api/error_response.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/verifier.h"
#include "kms/ops/canary.h"
#include "kms/ops/internal/connection_session.h"
#include "kms/ops/progress_stream.h"
#include "kms/ops/runtime_grants.h"
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/dataset_erasure.h"

namespace coffer::daemon {

absl::Status Services::ConnectionSession::Handle(const pb::Request& request, ResponseSink* sink) {
  services_->requests_total_.fetch_add(1);
  RequestObserver* observer = deps_.request_observer;
  if (observer == nullptr) return HandleRequest(request, sink);
  ObservingSink observing(sink, observer, request.op_case(), peer_.socket);
  return HandleRequest(request, &observing);
}

absl::Status Services::ConnectionSession::HandleRequest(const pb::Request& request,
                                                        ResponseSink* sink) {
  const auto op = request.op_case();
  if (op == pb::Request::OP_NOT_SET) {
    return Refuse(sink, request,
                  MakeError(ErrorCode::kMalformedRequest, "the request names no operation"));
  }
  const OperationRow* row = services_->operations_->Find(op);
  if (row == nullptr) return Refuse(sink, request, NoOperationRow());  // default deny
  const bool upload_frame = row->handler == Handler::kUploadFrame;
  if (upload_) {
    if (upload_frame) return HandleUpload(request, sink);
    return Refuse(sink, request,
                  MakeError(ErrorCode::kUnexpectedFrame,
                            "an upload is open on this connection: only chunks, commit or abort"));
  }
  if (upload_frame) {
    return Refuse(sink, request,
                  MakeError(ErrorCode::kUnexpectedFrame,
                            "a chunk, commit or abort with no upload open on this connection"));
  }

  Admission admission = deps_.authorizer->Admit(peer_.uid, RateCost(request));
  if (!admission.admitted) {
    services_->requests_slowed_.fetch_add(1);
    return Refuse(sink, request,
                  MakeError(ErrorCode::kSlowDown, "rate limit exceeded; retry after the delay"),
                  admission.retry_after_ms);
  }
  absl::Status allowed = deps_.authorizer->Check(peer_, *row, DatasetNamedBy(request));
  if (!allowed.ok()) return Refuse(sink, request, allowed);
  // An admin role gives no content, and a grant cannot give it back: content is never served
  // to a uid that is an enrolled admin (design brief, "Trust boundary"), whatever its grants.
  if (row->sockets == Sockets::kData && deps_.admin_registry != nullptr &&
      deps_.admin_registry->IsEnrolled(peer_.uid)) {
    return Refuse(sink, request,
                  MakeError(ErrorCode::kNotGranted,
                            "this uid is an enrolled admin, and an admin gets no record, "
                            "attachment or pseudonym content: run the application as a user "
                            "that is not an admin"));
  }

  // Out of disk space, what would write is refused before it starts, cleanly, and reads go on.
  if (row->effect == Effect::kChangesState && deps_.disk_room) {
    absl::Status room = deps_.disk_room();
    if (!room.ok()) return Refuse(sink, request, room);
  }

  if (peer_.socket == SocketKind::kAdmin) return HandleAdminSocket(request, *row, sink);
  return Run(request, *row, sink, actor_);
}

absl::Status Services::ConnectionSession::Run(const pb::Request& request, const OperationRow& row,
                                              ResponseSink* sink, const audit::AuditActor& actor,
                                              const std::optional<kms::AdminApproval>& approval) {
  switch (row.handler) {
    case Handler::kRecords:
    case Handler::kAttachments:
    case Handler::kPseudonyms:
      return HandleData(request, row.handler, sink);
    case Handler::kUploadFrame:
      return HandleUpload(request, sink);
    case Handler::kAdmin:
      return HandleAdmin(request, sink, actor, approval);
    case Handler::kWired:
      return RunWired(request, sink, actor);
    case Handler::kAdminControl:
      if (deps_.admin_control == nullptr) break;
      return RunAdminControl(request, sink, actor);
    case Handler::kGrants:
      if (deps_.grants == nullptr) break;
      return RunGrants(request, sink, actor, approval);
  }
  return SendError(
      sink, request,
      MakeError(ErrorCode::kMalformedRequest, "this operation is not served by this daemon"));
}

absl::Status Services::ConnectionSession::RunAdminControl(const pb::Request& request,
                                                          ResponseSink* sink,
                                                          const audit::AuditActor& actor) {
  pb::Response response;
  AdminControl::Executor execute = [this](const pb::Request& filed, const audit::AuditActor& as,
                                          const kms::AdminApproval& approved) {
    CollectingSink collect;
    absl::Status sent = Dispatch(filed, &collect, as, approved);
    if (!sent.ok() || collect.responses.empty()) {
      pb::Response failed;
      FillError(&failed, sent.ok() ? MakeError(ErrorCode::kInternal, "no response") : sent);
      return failed;
    }
    return std::move(collect.responses.back());  // the final response follows any progress
  };
  absl::Status result = deps_.admin_control->Serve(peer_, actor, request, execute, &response);
  if (!result.ok()) return SendError(sink, request, result);
  return Send(sink, request, std::move(response));
}

absl::Status Services::ConnectionSession::RunGrants(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  pb::Response response;
  absl::Status result = deps_.grants->Serve(request, actor, approval, &response);
  if (!result.ok()) return SendError(sink, request, result);
  return Send(sink, request, std::move(response));
}

absl::Status Services::ConnectionSession::Dispatch(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  const OperationRow* row = services_->operations_->Find(request.op_case());
  if (row == nullptr) return SendError(sink, request, NoOperationRow());
  return Run(request, *row, sink, actor, approval);
}

absl::Status Services::ConnectionSession::HandleAdminSocket(const pb::Request& request,
                                                            const OperationRow& row,
                                                            ResponseSink* sink) {
  audit::AuditActor actor = actor_;
  if (deps_.admin_control != nullptr) {
    AdminControl::DatasetLookup lookup =
        [this](std::string_view name) -> absl::StatusOr<kms::DatasetInfo> {
      COFFER_ASSIGN_OR_RETURN(uint64_t handle, deps_.keys->FindDataset(name));
      return deps_.keys->DescribeDataset(handle);
    };
    AdminDecision decision = deps_.admin_control->Admit(peer_, connection_, request, lookup);
    if (decision.pending.has_value()) {
      pb::Response response;
      FillError(&response, decision.status);
      *response.mutable_approval() = std::move(*decision.pending);
      absl::Status audited = AuditAdminRequest(request, decision.actor, decision.status);
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      return Send(sink, request, std::move(response));
    }
    if (!decision.status.ok())
      return Refuse(sink, request, decision.status, decision.retry_after_ms);
    actor = decision.actor;
  }
  RecordingSink recording(sink);
  absl::Status sent = Run(request, row, &recording, actor);
  // Polled operations (job_status for keyctl's progress, events_read for keyctl events
  // --follow) are not audited one by one; they read no data.
  if (row.audit == AuditMode::kEach) {
    absl::Status audited = AuditAdminRequest(request, actor, recording.first_error);
    if (!audited.ok()) return audited;  // fail closed: the connection is closed
  }
  return sent;
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Services>> Services::Create(ServicesDeps deps) {
  const std::pair<const void*, const char*> required[] = {{deps.keys, "keys"},
                                                          {deps.data_db, "data_db"},
                                                          {deps.records, "records"},
                                                          {deps.attachments, "attachments"},
                                                          {deps.bin, "bin"},
                                                          {deps.audit_log, "audit_log"},
                                                          {deps.access_audit, "access_audit"},
                                                          {deps.jobs, "jobs"},
                                                          {deps.authorizer, "authorizer"},
                                                          {deps.clock, "clock"}};
  for (const auto& [pointer, name] : required) {
    if (pointer == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument,
                       absl::StrCat("ServicesDeps.", name, " is null"));
    }
  }
  return std::unique_ptr<Services>(new Services(std::move(deps)));
}

Services::Services(ServicesDeps deps)
    : deps_(std::move(deps)),
      operations_(deps_.operations != nullptr ? deps_.operations : &OperationTable::Default()),
      reactor_requests_(deps_.access_audit != nullptr && deps_.durability != "sync"),
      audit_parks_(deps_.access_audit != nullptr &&
                   deps_.access_audit->crash_loss_window().count() == 0),
      clock_(deps_.clock),
      started_micros_(coffer::ToUnixMicros(clock_->Now())),
      refusals_(std::make_unique<RefusalAudit>(deps_.audit_log)),
      pseudonymizer_(std::make_unique<const storage::Pseudonymizer>(deps_.keys)) {}

Services::~Services() { refusals_->Stop(); }

std::unique_ptr<Session> Services::Open(const PeerIdentity& peer) {
  connections_open_.fetch_add(1);
  const uint64_t connection = connections_total_.fetch_add(1) + 1;
  return std::make_unique<ConnectionSession>(this, peer, connection);
}

void Services::AuditRefusal(const PeerIdentity& peer, ErrorCode code, uint64_t dataset_handle) {
  if (deps_.request_observer != nullptr) deps_.request_observer->Refused(peer.socket, code);
  refusals_->Record(ActorOf(peer), code, dataset_handle, RefusalDetail(code));
}

absl::Status Services::FlushRefusalAudit() { return refusals_->Flush(); }

absl::Status Services::FlushUnaudited() {
  if (!unaudited_.pending()) return absl::OkStatus();
  std::vector<audit::AuditEvent> entries = unaudited_.Take();
  if (entries.empty()) return absl::OkStatus();
  // As durable as any access entry: window 0 waits for them, a window W writes them within W.
  // (Not Flush: it also reports the events lost in the outage, which these entries stand for.)
  absl::Status written = deps_.access_audit->AppendAll(entries);
  if (!written.ok()) unaudited_.Restore(entries);  // counted again, written later
  return written;
}

absl::Status Services::AuditAccesses(absl::Span<const audit::AuditEvent> events) {
  absl::Status audited = deps_.access_audit->AppendAll(events);
  if (audited.ok()) {
    // The log takes entries again: what was served meanwhile is written now, before this
    // request is answered (one more wait, once per outage).
    if (unaudited_.pending()) FlushUnaudited().IgnoreError();
    return audited;
  }
  return ServedUnaudited(audited, events) ? absl::OkStatus() : audited;
}

bool Services::ServedUnaudited(const absl::Status& audited,
                               absl::Span<const audit::AuditEvent> events) {
  if (!UnauditedAccesses::IsLogUnavailable(audited) ||
      deps_.keys->access_audit_failure() != kms::AccessAuditFailure::kServeAndCount) {
    return false;
  }
  unaudited_.Count(events);
  return true;
}

void Services::AuditAccessesThen(std::vector<audit::AuditEvent> events,
                                 audit::BatchingAuditWriter::Done done) {
  // Kept for the tally, should the log refuse them under SERVE_AND_COUNT.
  auto kept = std::make_shared<const std::vector<audit::AuditEvent>>(std::move(events));
  deps_.access_audit->AppendAllThen(
      *kept, [this, kept, done = std::move(done)](absl::Status audited) mutable {
        if (audited.ok()) {
          // As AuditAccesses: what was served during an outage is written before this answer.
          if (unaudited_.pending()) return FlushUnauditedThen(std::move(done));
          return std::move(done)(std::move(audited));
        }
        std::move(done)(ServedUnaudited(audited, *kept) ? absl::OkStatus() : std::move(audited));
      });
}

void Services::FlushUnauditedThen(audit::BatchingAuditWriter::Done done) {
  auto entries = std::make_shared<const std::vector<audit::AuditEvent>>(unaudited_.Take());
  if (entries->empty()) return std::move(done)(absl::OkStatus());
  deps_.access_audit->AppendAllThen(
      *entries, [this, entries, done = std::move(done)](const absl::Status& written) mutable {
        if (!written.ok()) unaudited_.Restore(*entries);  // counted again, written later
        std::move(done)(absl::OkStatus());
      });
}

void Services::TransportRefused(const PeerIdentity& peer, ErrorCode code) {
  requests_refused_.fetch_add(1);
  AuditRefusal(peer, code, 0);
}

ServicesMetrics Services::metrics() const {
  return ServicesMetrics{connections_open_.load(), connections_total_.load(),
                         requests_total_.load(), requests_refused_.load(), requests_slowed_.load()};
}

}  // namespace coffer::daemon
