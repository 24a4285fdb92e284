// Internal to kms/ops: one connection's session (Services::ConnectionSession). Its methods live
// by domain: services.cc (admission, the row's handler, the admin socket), data_operations.cc
// (records, attachments, pseudonyms), admin_operations.cc (datasets, keys, lifecycle, policies,
// purges, jobs, receipts) and admin_queries.cc (describe, lists, audit query, key inventory).
// Thread safety: one request at a time per connection (kms/server/connection.h).

#ifndef COFFER_KMS_OPS_INTERNAL_CONNECTION_SESSION_H_
#define COFFER_KMS_OPS_INTERNAL_CONNECTION_SESSION_H_

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/hmac.h"
#include "kms/api/error_response.h"
#include "kms/ops/internal/wire.h"
#include "kms/ops/services.h"

namespace coffer::daemon {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using api::FillError;
using storage::KeyPurpose;

class Services::ConnectionSession final : public Session {
 public:
  // `connection`: this connection's number, unique in the process (its MFA session's key).
  ConnectionSession(Services* services, PeerIdentity peer, uint64_t connection)
      : services_(services),
        deps_(services->deps_),
        peer_(std::move(peer)),
        connection_(connection),
        actor_(ActorOf(peer_)) {}
  ~ConnectionSession() override {
    Closed();
    services_->connections_open_.fetch_sub(1);
  }

  absl::Status Handle(const pb::Request& request, ResponseSink* sink) override;
  // The operation table's Runs column, while no reply waits for a disk sync.
  bool Inline(const pb::Request& request) const override {
    if (!services_->reactor_requests_ || peer_.socket != SocketKind::kData || upload_) return false;
    const OperationRow* row = services_->operations_->Find(request.op_case());
    return row != nullptr && row->runs == Runs::kReactor;
  }
  void Closed() override {
    // The connection's MFA session ends with it (another connection of the uid never had it).
    if (deps_.admin_control != nullptr) deps_.admin_control->ConnectionClosed(connection_);
    if (upload_) {
      upload_->upload->Abort().IgnoreError();  // nothing of it becomes visible
      upload_.reset();
    }
  }

 private:
  // A write, delete or restore's item, for its audit entry (AuditAccess).
  struct MovedItem {
    audit::ItemMove move;
    crypto::HmacSha256Tag ref{};
  };

  struct OpenUpload {
    std::unique_ptr<storage::AttachmentUpload> upload;
    uint64_t handle = 0;
    std::string name;
    absl::Status first_error;
  };

  // Sends `response` (request id set here).
  absl::Status Send(ResponseSink* sink, const pb::Request& request, pb::Response response) {
    response.set_request_id(request.request_id());
    return sink->Send(response);
  }
  absl::Status SendError(ResponseSink* sink, const pb::Request& request, const absl::Status& status,
                         uint32_t retry_after_ms = 0) {
    return Send(sink, request, ErrorReply(status, retry_after_ms));
  }
  static pb::Response ErrorReply(const absl::Status& status, uint32_t retry_after_ms = 0) {
    pb::Response response;
    FillError(&response, status, retry_after_ms);
    return response;
  }
  // Audits a refusal (REQUEST_REFUSED, synchronously) and answers it.
  absl::Status Refuse(ResponseSink* sink, const pb::Request& request, const absl::Status& why,
                      uint32_t retry_after_ms = 0) {
    services_->requests_refused_.fetch_add(1);
    uint64_t handle = 0;
    std::string_view dataset = DatasetNamedBy(request);
    if (!dataset.empty()) handle = deps_.keys->FindDataset(dataset).value_or(0);
    services_->AuditRefusal(peer_, ErrorCodeOf(why), handle);
    return SendError(sink, request, why, retry_after_ms);
  }
  // Audits a data access through the batching writer; its error when the audit refused it
  // (unless the failure policy serves it: Services::AuditAccesses).
  // `moved`, for a write, delete or restore that succeeded: the item's stored-key ref and the
  // operation's name go into the entry (record_ref, detail), so a restore from backup can replay
  // the moves made after it (kms/keys/full_backup.h; docs/audit.md, "Access entries").
  absl::Status AuditAccess(audit::v1::EventKind kind, audit::v1::Purpose purpose, uint64_t handle,
                           const absl::Status& result, uint32_t count,
                           const MovedItem* moved = nullptr) {
    const audit::AuditEvent event = AccessEvent(kind, purpose, handle, result, count, moved);
    return services_->AuditAccesses({&event, 1});
  }
  audit::AuditEvent AccessEvent(audit::v1::EventKind kind, audit::v1::Purpose purpose,
                                uint64_t handle, const absl::Status& result, uint32_t count,
                                const MovedItem* moved) const {
    audit::AuditEvent event;
    event.kind = kind;
    event.purpose = purpose;
    event.actor = actor_;
    event.dataset_handle = handle;
    event.result = ErrorCodeOf(result);
    event.record_count = count;
    if (moved != nullptr && result.ok()) {
      event.record_ref.emplace();
      std::copy(moved->ref.begin(), moved->ref.end(), event.record_ref->begin());
      event.detail = audit::ItemMoveDetail(moved->move);
    }
    return event;
  }
  // The text Finish answers a failed operation with.
  enum class ErrorText {
    kPublic,             // its code's fixed text (Public)
    kPublicOrMalformed,  // the same, but MALFORMED_REQUEST keeps its message (PublicOrMalformed)
  };
  // Finishes a data operation: audits it, then answers its error (in `error_text`) or `response`.
  absl::Status Finish(ResponseSink* sink, const pb::Request& request, audit::v1::EventKind kind,
                      uint64_t handle, const absl::Status& result, uint32_t count,
                      pb::Response response, const MovedItem* moved = nullptr,
                      ErrorText error_text = ErrorText::kPublic) {
    // The purpose follows the handler the operation's row names (records, attachments,
    // pseudonyms); Finish only runs for admitted requests, which have a row.
    const OperationRow* row = services_->operations_->Find(request.op_case());
    const audit::v1::Purpose purpose =
        row != nullptr ? AccessPurposeOf(row->handler) : audit::v1::PURPOSE_UNSPECIFIED;
    std::vector<audit::AuditEvent> events;
    events.push_back(AccessEvent(kind, purpose, handle, result, count, moved));
    return AuditThenAnswer(
        sink, request, std::move(events),
        [this, kind, handle, count, result, error_text, response = std::move(response),
         dataset = std::string(DatasetNamedBy(request))](const absl::Status& audited) mutable {
          if (!audited.ok()) return ErrorReply(Public(audited));
          if (kind == audit::v1::ACCESS_READ && deps_.anomalies != nullptr) {
            deps_.anomalies->Observe(peer_.uid, peer_.pid, handle, dataset, count,
                                     ErrorCodeOf(result));
          }
          if (!result.ok()) {
            return ErrorReply(error_text == ErrorText::kPublicOrMalformed
                                  ? PublicOrMalformed(result)
                                  : Public(result));
          }
          return std::move(response);
        });
  }
  // What a data operation answers once its access entries are audited, given the audit's
  // result (no value may leave when it failed); request id unset.
  using Answer = absl::AnyInvocable<pb::Response(const absl::Status& audited) &&>;
  // Audits `events` (Services::AuditAccesses), then sends what `answer` makes of the result.
  // Where the entries' wait would be an fsync (window 0) and the sink can park (a request on
  // the reactor: kms/server/connection.h, ResponseSink::Park), the request parks instead of
  // waiting: `answer` runs on the audit writer's thread once the entries are durable, and the
  // transport sends the reply. It must then touch only what stays put while the request is
  // parked: this session's constant members and the services.
  absl::Status AuditThenAnswer(ResponseSink* sink, const pb::Request& request,
                               std::vector<audit::AuditEvent> events, Answer answer) {
    if (services_->audit_parks_) {
      std::unique_ptr<ParkedReply> parked = sink->Park();
      if (parked != nullptr) {
        services_->AuditAccessesThen(std::move(events),
                                     [parked = std::move(parked), answer = std::move(answer),
                                      id = request.request_id()](absl::Status audited) mutable {
                                       pb::Response response = std::move(answer)(audited);
                                       response.set_request_id(id);
                                       parked->Finish(std::move(response));
                                     });
        return absl::OkStatus();
      }
    }
    absl::Status audited = services_->AuditAccesses(events);
    return Send(sink, request, std::move(answer)(audited));
  }

  // Runs a record, attachment or pseudonym operation (`handler`: its row's).
  // Handle without the observer's timing.
  absl::Status HandleRequest(const pb::Request& request, ResponseSink* sink);
  absl::Status HandleData(const pb::Request& request, Handler handler, ResponseSink* sink);
  absl::Status HandleRecord(const pb::Request& request, ResponseSink* sink,
                            const absl::StatusOr<uint64_t>& handle);
  absl::Status HandleRecordList(const pb::Request& request, ResponseSink* sink,
                                const absl::StatusOr<uint64_t>& handle);
  absl::Status HandleRecordBatch(const pb::Request& request, ResponseSink* sink,
                                 const absl::StatusOr<uint64_t>& handle);
  void ServeGetMany(uint64_t handle, const pb::RecordGetManyRequest& request,
                    pb::RecordGetManyResponse* out, std::vector<absl::Status>* results);
  absl::Status HandleAttachment(const pb::Request& request, ResponseSink* sink,
                                const absl::StatusOr<uint64_t>& handle);
  absl::Status HandlePseudonym(const pb::Request& request, ResponseSink* sink,
                               const absl::StatusOr<uint64_t>& handle);
  absl::Status HandleUpload(const pb::Request& request, ResponseSink* sink);
  absl::Status HandleDownload(const pb::Request& request, uint64_t handle, ResponseSink* sink);
  // `approval`: the second admin's, when a dual-controlled operation runs on approval.
  absl::Status HandleAdmin(const pb::Request& request, ResponseSink* sink,
                           const audit::AuditActor& actor,
                           const std::optional<kms::AdminApproval>& approval = std::nullopt);
  // One admin request being answered: what the admin handlers share.
  struct AdminCall {
    const pb::Request& request;
    ResponseSink* sink;
    const audit::AuditActor& actor;
    const std::optional<kms::AdminApproval>& approval;
    std::string_view dataset;  // the name the request carries (its row says which field)
    pb::Response response;
  };
  // The handle of the dataset the request names; MALFORMED_REQUEST when it names none.
  absl::StatusOr<uint64_t> FindNamed(const AdminCall& call);
  // Answers `result`'s error (public text unless it is the daemon's own) or call.response.
  absl::Status Reply(AdminCall& call, const absl::Status& result);
  absl::Status DescribeInto(uint64_t handle, pb::DatasetInfo* out) const;
  absl::Status HandleDatasets(AdminCall& call);
  absl::Status HandleKeys(AdminCall& call);
  absl::Status RotateKeys(AdminCall& call);
  absl::Status HandleProtection(AdminCall& call);
  absl::Status Purge(AdminCall& call);
  absl::Status HandleJobs(AdminCall& call);
  absl::Status HandleAuditAndStatus(AdminCall& call);
  void FillStatus(pb::StatusResponse* out);
  absl::Status RunWired(const pb::Request& request, ResponseSink* sink,
                        const audit::AuditActor& actor);
  // The admin socket: MFA and dual control (AdminControl), then the operation, then its
  // ADMIN_REQUEST audit entry (unless the row says it is polled).
  absl::Status HandleAdminSocket(const pb::Request& request, const OperationRow& row,
                                 ResponseSink* sink);
  // Runs an admitted request as `actor` with the handler its row names.
  absl::Status Run(const pb::Request& request, const OperationRow& row, ResponseSink* sink,
                   const audit::AuditActor& actor,
                   const std::optional<kms::AdminApproval>& approval = std::nullopt);
  // grant_list, grant_add, grant_remove (kms/ops/runtime_grants.h).
  absl::Status RunGrants(const pb::Request& request, ResponseSink* sink,
                         const audit::AuditActor& actor,
                         const std::optional<kms::AdminApproval>& approval);
  // Admins and approvals (kms/ops/admin_control.h); an approved request runs through Dispatch.
  absl::Status RunAdminControl(const pb::Request& request, ResponseSink* sink,
                               const audit::AuditActor& actor);
  // Runs a request filed for approval, once approved, as `actor` (its row looked up again).
  absl::Status Dispatch(const pb::Request& request, ResponseSink* sink,
                        const audit::AuditActor& actor,
                        const std::optional<kms::AdminApproval>& approval = std::nullopt);
  absl::Status KeyInventory(const pb::KeyInventoryRequest& query,
                            pb::KeyInventoryResponse* out) const;
  absl::Status BinList(const pb::BinListRequest& query, uint64_t handle,
                       pb::BinListResponse* out) const;
  absl::Status ListDatasets(pb::DatasetListResponse* out) const;
  absl::StatusOr<pb::DatasetInfo> Describe(uint64_t handle) const;
  absl::Status AuditQuery(const pb::AuditQueryRequest& query, pb::AuditQueryResponse* out) const;

  // Reports each request to the RequestObserver (metrics): when Handle returns, or, for a
  // request that parked, when its reply is finished.
  class ObservingSink final : public ResponseSink {
   public:
    ObservingSink(ResponseSink* inner, RequestObserver* observer, pb::Request::OpCase op,
                  SocketKind socket)
        : inner_(inner), observer_(observer), op_(op), socket_(socket) {}
    ~ObservingSink() override {
      if (!parked_) observer_->Handled(op_, socket_, first_error_, Clock::now() - began_);
    }
    absl::Status Send(const pb::Response& response) override {
      if (response.has_error() && first_error_ == ErrorCode::kOk) {
        first_error_ = static_cast<ErrorCode>(response.error().code());
      }
      return inner_->Send(response);
    }
    std::unique_ptr<ParkedReply> Park() override {
      std::unique_ptr<ParkedReply> inner = inner_->Park();
      if (inner == nullptr) return nullptr;
      parked_ = true;
      return std::make_unique<ObservedReply>(std::move(inner), observer_, op_, socket_, began_);
    }

   private:
    using Clock = std::chrono::steady_clock;
    class ObservedReply final : public ParkedReply {
     public:
      ObservedReply(std::unique_ptr<ParkedReply> inner, RequestObserver* observer,
                    pb::Request::OpCase op, SocketKind socket, Clock::time_point began)
          : inner_(std::move(inner)),
            observer_(observer),
            op_(op),
            socket_(socket),
            began_(began) {}
      void Finish(pb::Response response) override {
        const ErrorCode code =
            response.has_error() ? static_cast<ErrorCode>(response.error().code()) : ErrorCode::kOk;
        observer_->Handled(op_, socket_, code, Clock::now() - began_);
        inner_->Finish(std::move(response));
      }

     private:
      std::unique_ptr<ParkedReply> inner_;
      RequestObserver* observer_;
      pb::Request::OpCase op_;
      SocketKind socket_;
      Clock::time_point began_;
    };

    ResponseSink* inner_;
    RequestObserver* observer_;
    pb::Request::OpCase op_;
    SocketKind socket_;
    Clock::time_point began_ = Clock::now();
    ErrorCode first_error_ = ErrorCode::kOk;
    bool parked_ = false;
  };
  // Forwards frames and remembers the first error answered (for ADMIN_REQUEST).
  class RecordingSink final : public ResponseSink {
   public:
    explicit RecordingSink(ResponseSink* inner) : inner_(inner) {}
    absl::Status Send(const pb::Response& response) override {
      if (response.has_error() && first_error.ok()) {
        first_error = MakeError(static_cast<ErrorCode>(response.error().code()), "answered");
      }
      return inner_->Send(response);
    }
    absl::Status first_error;

   private:
    ResponseSink* inner_;
  };
  // Keeps the frames (an approved operation run on behalf of its requester).
  class CollectingSink final : public ResponseSink {
   public:
    absl::Status Send(const pb::Response& response) override {
      responses.push_back(response);
      return absl::OkStatus();
    }
    std::vector<pb::Response> responses;
  };
  // ADMIN_REQUEST for an admin-socket request, synchronously.
  absl::Status AuditAdminRequest(const pb::Request& request, const audit::AuditActor& actor,
                                 const absl::Status& result) {
    audit::AuditEvent event;
    event.kind = audit::v1::ADMIN_REQUEST;
    event.actor = actor;
    std::string_view dataset = DatasetNamedBy(request);
    if (!dataset.empty()) event.dataset_handle = deps_.keys->FindDataset(dataset).value_or(0);
    event.result = ErrorCodeOf(result);
    event.detail = OperationName(request.op_case());
    return deps_.audit_log->Append(event).status();
  }

  Services* services_;
  const ServicesDeps& deps_;
  const PeerIdentity peer_;
  const uint64_t connection_;
  const audit::AuditActor actor_;
  std::optional<OpenUpload> upload_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_INTERNAL_CONNECTION_SESSION_H_
