// Services: cofferd's side of the transport seam (kms/server/connection.h). Every coffer.v1
// Request operation is mapped onto the key manager, the data stores, the recycle bin, the job
// registry and the audit log; the transport only moves frames.
//
// Per request, in order: the rate limit (SLOW_DOWN with retry_after_ms), then access control
// (kms/ops/authz.h: NOT_GRANTED, WRONG_SOCKET; content is NOT_GRANTED to a uid that is an
// enrolled admin, whatever its grants), then the operation. Every refusal — these,
// and the transport's own (TransportRefused) — is audited as REQUEST_REFUSED with its stable
// code and the peer's uid, pid and socket — counted off the request path and written in
// coalesced entries (kms/ops/refusal_audit.h: one entry per uid, socket, code and dataset per
// 100 ms, record_count = how many), so a flooding client cannot buy a synced write per refused
// frame. Every data operation that passes access control is audited as ACCESS_READ /
// ACCESS_WRITE / ACCESS_DELETE (uid, pid, socket, dataset handle, result code, item count)
// through the BatchingAuditWriter, whose crash-loss window the configuration sets (0: the
// reply waits for the entry). A read's data
// is sent only after its entry was accepted; when the audit cannot take it, the request fails
// with the audit's code — unless two admins set the access audit's failure policy to
// SERVE_AND_COUNT (KeyManager::access_audit_failure; kms/ops/unaudited_accesses.h), under which a
// request the log cannot audit is served and counted, and the counts are written as entries once
// the log takes entries again. Re-identification, key operations and admin requests fail closed
// whatever the policy. A write, delete or restore that succeeded also names its item: record_ref
// is the item's stored-key MAC and detail the operation (record_put, attachment_put_commit,
// record_delete, ...), which a restore from backup replays (kms/keys/full_backup.h).
// Admin operations run with the admin's identity as the key manager's audit actor.
//
// Sessions: one per connection. An open attachment upload belongs to its session: chunks get
// no response; the first chunk error is remembered and answered at commit (the upload is then
// aborted); any other request while it is open is UNEXPECTED_FRAME, as is a chunk, commit or
// abort without one; Closed() aborts it, so nothing partial becomes visible. Downloads stream
// as AttachmentGetResponse frames of at most api::kDefaultChunkBytes, `info` on the first,
// `last` on the final one.
//
// The admin socket: every request passes AdminControl (MFA sessions, each bound to the one
// connection whose request carried the code — Open numbers the connections, Closed ends the
// session —, single-use TOTP codes, dual-control approval requests answered APPROVAL_PENDING
// with Response.approval), then runs as the actor it returns (the enrolled admin's id and
// name), then is audited as ADMIN_REQUEST with its result — except job_status and events_read,
// which keyctl polls (progress, events; events_read audits each acknowledgement itself,
// kms/ops/event_operations.h).
//
// Errors reach the client as coffer.v1.Error {code, code_name, message}. Messages are fixed
// texts chosen here from the operation and the code — never a component's message — so they
// cannot carry an id, a value, an attachment name or a key. Exceptions: MALFORMED_REQUEST names
// the field at fault; events_read's NOT_GRANTED names the subscriber and its owner's uid.
//
// Backups (backup_create/list/verify/restore/prune) are not served here: the wiring adds them
// through ServicesDeps::extra_admin_ops (access control and refusal audit still apply). An
// admin operation with no handler is answered MALFORMED_REQUEST.
//
// Thread safety: Open and TransportRefused from any thread; each Session is used by one thread
// at a time (session.h). Ownership: every pointer in ServicesDeps is borrowed and must outlive
// the Services and every Session it opened.

#ifndef COFFER_KMS_OPS_SERVICES_H_
#define COFFER_KMS_OPS_SERVICES_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/clock.h"
#include "crypto/base/progress.h"
#include "crypto/base/status.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/batching_writer.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/key_manager.h"
#include "kms/ops/access_anomalies.h"
#include "kms/ops/admin_control.h"
#include "kms/ops/authz.h"
#include "kms/ops/damaged_events.h"
#include "kms/ops/jobs.h"
#include "kms/ops/operation_table.h"
#include "kms/ops/refusal_audit.h"
#include "kms/ops/request_observer.h"
#include "kms/ops/unaudited_accesses.h"
#include "kms/server/connection.h"
#include "kms/server/server.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/pseudonymizer.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"

namespace coffer::daemon {

class CanaryRegistry;
class RuntimeGrants;

// An admin operation served outside Services (backups). Runs after access control; fills
// `response`'s result or returns an error, which Services turns into an Error response.
// `progress` (empty unless the request asked for progress frames) is passed to long operations.
using AdminOperationHandler = std::function<absl::Status(
    const coffer::v1::Request& request, const kms::audit::AuditActor& actor,
    const coffer::ProgressFn& progress, coffer::v1::Response* response)>;

// An admin operation that sends its own frames through `sink` (request id set, progress
// frames when the request asked for them, an error frame on failure). Returns non-OK only when
// the connection must close (the peer is gone), as Session::Handle.
using StreamingAdminOperationHandler = std::function<absl::Status(
    const coffer::v1::Request& request, const kms::audit::AuditActor& actor, ResponseSink* sink)>;

struct ServicesDeps {
  kms::KeyManager* keys = nullptr;
  storage::DataDb* data_db = nullptr;
  storage::RecordStore* records = nullptr;
  storage::AttachmentStore* attachments = nullptr;
  storage::RecycleBin* bin = nullptr;
  // An admin's purge is journaled through it, naming the admin who asked and the one who
  // approved (optional: without it, the bin's own journal names the daemon).
  kms::AuditPurgeJournal* purge_journal = nullptr;
  kms::audit::AuditLog* audit_log = nullptr;                // key operations and refusals
  kms::audit::BatchingAuditWriter* access_audit = nullptr;  // ACCESS_* events
  const coffer::Clock* clock = nullptr;                     // required
  JobRegistry* jobs = nullptr;
  Authorizer* authorizer = nullptr;

  // Defaults for dataset_create (kms/config/config.h DefaultDatasetPolicy).
  kms::DatasetPolicy default_policy;
  // audit_query reads, and audit_verify verifies, the log in this directory.
  std::string audit_directory;
  // The checkpoint public key (PEM) audit_verify checks signatures with.
  std::string audit_public_key_pem;
  // Set: audit_verify also checks every entry's forward-secure MAC (online verification).
  kms::audit::EpochKeyProvider audit_epoch_keys;

  // For status: the transport's counters (kms/server/server.h); unset, status reports none.
  std::function<server::ServerStats()> transport_stats;
  // For status: fills in the HSM token's connection; unset, status reports none.
  std::function<void(::coffer::v1::HsmStatus*)> hsm_status;
  // Whether the disks have room for a request that changes state (an operation whose row says
  // Effect::kChangesState): an error refuses it, audited as a refusal. Unset: always room.
  std::function<absl::Status()> disk_room;
  std::string version;
  std::string durability;  // "wal" or "sync"
  std::string data_socket;
  std::string admin_socket;
  std::string metrics_endpoint;  // status shows it; "" when there is none

  std::map<coffer::v1::Request::OpCase, AdminOperationHandler> extra_admin_ops;
  // Admin operations that answer with several frames (dataset_export), served outside
  // Services like extra_admin_ops.
  std::map<coffer::v1::Request::OpCase, StreamingAdminOperationHandler> streaming_admin_ops;

  // MFA and dual control on the admin socket (kms/ops/admin_control.h). Null: admin-uid
  // requests run with no MFA (tests of this layer only; cofferd always sets it).
  AdminControl* admin_control = nullptr;
  // key_inventory lists the enrolled admins' TOTP secrets from it, and the data socket refuses
  // content to an enrolled admin's uid by it (optional: without it, no uid counts as enrolled;
  // cofferd always sets it).
  kms::admin::AdminRegistry* admin_registry = nullptr;
  // Canary records (kms/ops/canary.h): record_get, attachment_get and attachment_metadata
  // on the data socket report their reads to it (optional).
  CanaryRegistry* canaries = nullptr;
  // record_list raises EVENT_DAMAGED_ITEM through it for the damaged records it skips
  // (optional: without it, they are still reported in the answer).
  DamagedItemEvents* damaged_events = nullptr;
  // What each operation is (kms/ops/operation_table.h). Null: OperationTable::Default(); tests
  // pass a smaller table to show that an operation without a row is refused.
  const OperationTable* operations = nullptr;
  // Told of every request's end and every refusal, for metrics (optional; must outlive the
  // services).
  RequestObserver* request_observer = nullptr;
  // Told of every read on the data socket, for access anomaly events (optional).
  AccessAnomalies* anomalies = nullptr;
  // The transport's frame limit (kms/server/server.h): a record_get_many reply stays within it.
  size_t max_frame_bytes = api::kDefaultMaxFrameBytes;
  // grant_list, grant_add, grant_remove (kms/ops/runtime_grants.h; optional: without it they
  // are answered MALFORMED_REQUEST, not served).
  RuntimeGrants* grants = nullptr;
};

// Counters since start (status; also for the wiring's logs).
struct ServicesMetrics {
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t requests_total = 0;
  uint64_t requests_refused = 0;
  uint64_t requests_slowed = 0;
};

class Services final : public SessionFactory {
 public:
  // INVALID_ARGUMENT naming the first missing dependency.
  static absl::StatusOr<std::unique_ptr<Services>> Create(ServicesDeps deps);
  ~Services() override;

  std::unique_ptr<Session> Open(const PeerIdentity& peer) override;
  void TransportRefused(const PeerIdentity& peer, ErrorCode code) override;

  ServicesMetrics metrics() const;

  // Writes the pending (coalesced) refusal entries now (kms/ops/refusal_audit.h). Audit
  // queries call it first, so a query sees every refusal made before it.
  absl::Status FlushRefusalAudit();
  // Writes the accesses served unaudited (SERVE_AND_COUNT) that are still only counted, as
  // access entries; the audit's error if it still cannot take them (they stay counted). Audit
  // queries call it first, as FlushRefusalAudit; the first access audited after an outage
  // writes them too.
  absl::Status FlushUnaudited();
  // Accesses counted under SERVE_AND_COUNT and not yet written.
  uint64_t unaudited_pending() const { return unaudited_.pending_accesses(); }

 private:
  class ConnectionSession;
  friend class ConnectionSession;

  explicit Services(ServicesDeps deps);
  // Counts a REQUEST_REFUSED for `peer` with `code` (coalesced, written off the request path).
  void AuditRefusal(const PeerIdentity& peer, ErrorCode code, uint64_t dataset_handle);
  // Audits data accesses through the batching writer (one wait). When the log cannot take them
  // and the failure policy is SERVE_AND_COUNT, counts them and returns OK; otherwise the
  // audit's error.
  absl::Status AuditAccesses(absl::Span<const kms::audit::AuditEvent> events);
  // The failure policy for accesses the log refused with `audited`: under SERVE_AND_COUNT, and
  // when the log is unavailable, counts `events` and returns true (serve them); else false.
  bool ServedUnaudited(const absl::Status& audited,
                       absl::Span<const kms::audit::AuditEvent> events);
  // AuditAccesses that never waits (for a request parked on the reactor): `done` gets what it
  // would have returned, on the audit writer's thread once the entries are durable (window 0),
  // or here (kms/audit/batching_writer.h, AppendAllThen). `done` must not block for long.
  void AuditAccessesThen(std::vector<kms::audit::AuditEvent> events,
                         kms::audit::BatchingAuditWriter::Done done);
  // FlushUnaudited for AuditAccessesThen: `done` gets OK once the counted entries are written or
  // (if the log refuses them again) counted again.
  void FlushUnauditedThen(kms::audit::BatchingAuditWriter::Done done);

  ServicesDeps deps_;
  const OperationTable* operations_;
  // Whether the table's Runs::kReactor rows may run on the reactor: the data DB does not sync
  // each write (durability is not `sync`), so no reply of theirs waits on a data fsync there.
  const bool reactor_requests_;
  // Whether an access entry's wait is an fsync (window 0): a request on the reactor then parks
  // until its entry is durable, rather than waiting on the reactor.
  const bool audit_parks_;
  const coffer::Clock* clock_;
  int64_t started_micros_ = 0;
  std::atomic<uint64_t> connections_open_{0};
  std::atomic<uint64_t> connections_total_{0};
  std::atomic<uint64_t> requests_total_{0};
  std::atomic<uint64_t> requests_refused_{0};
  std::atomic<uint64_t> requests_slowed_{0};
  std::unique_ptr<RefusalAudit> refusals_;
  UnauditedAccesses unaudited_;
  // pseudonymize / pseudonym_reidentify / pseudonym_translate, over deps_.keys.
  std::unique_ptr<const storage::Pseudonymizer> pseudonymizer_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_SERVICES_H_
