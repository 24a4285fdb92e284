// The admin domain of Services::ConnectionSession: datasets, keys, lifecycle, policies, holds,
// purges, jobs, receipts, and the operations cofferd wires in (ServicesDeps).

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
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/dataset_erasure.h"

namespace coffer::daemon {
namespace {

// The kinds cofferd registers as periodic jobs (kms/cofferd/scheduled_jobs.cc): job_start runs them
// now.
bool IsPeriodicKind(pb::JobKind kind) {
  return kind == pb::JOB_ROTATION || kind == pb::JOB_BIN_RETENTION || kind == pb::JOB_BACKUP ||
         kind == pb::JOB_UPLOAD_CLEANUP || kind == pb::JOB_SCHEDULED_SCRUB ||
         kind == pb::JOB_SCHEDULED_REENCRYPT;
}

void SetTransportStatus(const server::ServerStats& stats, pb::TransportStatus* out) {
  out->set_buffered_input_bytes(stats.buffered_input_bytes);
  out->set_buffered_output_bytes(stats.buffered_output_bytes);
  out->set_sends_waiting(stats.sends_waiting);
  out->set_bytes_received(stats.bytes_received);
  out->set_busy_connection_limit(stats.busy_connection_limit);
  out->set_busy_uid_connections(stats.busy_uid_connections);
  out->set_busy_buffered_bytes(stats.busy_buffered_bytes);
  out->set_requests_held(stats.requests_held);
  out->set_output_timeouts(stats.output_timeouts);
  out->set_closed_after_refusals(stats.closed_after_refusals);
  out->set_requests(stats.requests);
  out->set_requests_inline(stats.requests_inline);
  out->set_requests_parked(stats.requests_parked);
}

}  // namespace

absl::Status Services::ConnectionSession::HandleAdmin(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  AdminCall call{request, sink, actor, approval, DatasetNamedBy(request), pb::Response()};
  switch (request.op_case()) {
    case pb::Request::kDatasetList:
    case pb::Request::kDatasetDescribe:
    case pb::Request::kDatasetCreate:
    case pb::Request::kDatasetLifecycle:
      return HandleDatasets(call);
    case pb::Request::kKeyRotate:
    case pb::Request::kKeyRetire:
    case pb::Request::kKeyRewrap:
      return HandleKeys(call);
    case pb::Request::kPolicySet:
    case pb::Request::kHoldSet:
    case pb::Request::kPurge:
    case pb::Request::kBinList:
      return HandleProtection(call);
    case pb::Request::kJobStart:
    case pb::Request::kJobStatus:
      return HandleJobs(call);
    case pb::Request::kAuditQuery:
    case pb::Request::kAuditVerify:
    case pb::Request::kStatus:
    case pb::Request::kKeyInventory:
    case pb::Request::kReceiptGet:
    case pb::Request::kAuditPolicySet:
      return HandleAuditAndStatus(call);
    default:
      return SendError(
          sink, request,
          MakeError(ErrorCode::kMalformedRequest, "this operation is not served by this daemon"));
  }
}

absl::StatusOr<uint64_t> Services::ConnectionSession::FindNamed(const AdminCall& call) {
  if (call.dataset.empty()) {
    return MakeError(ErrorCode::kMalformedRequest, "the request names no dataset");
  }
  return deps_.keys->FindDataset(call.dataset);
}

absl::Status Services::ConnectionSession::Reply(AdminCall& call, const absl::Status& result) {
  if (result.ok()) return Send(call.sink, call.request, std::move(call.response));
  ErrorCode code = ErrorCodeOf(result);
  // events_read's NOT_GRANTED names the subscriber (checked [a-z0-9._-]) and its owner's uid:
  // the admin must learn that the name is another uid's (kms/ops/event_operations.h).
  const bool subscriber_refused =
      code == ErrorCode::kNotGranted && call.request.op_case() == pb::Request::kEventsRead;
  // A destruction held by the compliance lock names the date the lock ends (and nothing else):
  // the admin must learn when to ask again.
  const bool destruction_locked = code == ErrorCode::kComplianceLocked &&
                                  call.request.op_case() == pb::Request::kDatasetLifecycle;
  bool own = code == ErrorCode::kMalformedRequest || code == ErrorCode::kAuditTampered ||
             subscriber_refused || destruction_locked;
  return SendError(call.sink, call.request, own ? result : Public(result));
}

absl::Status Services::ConnectionSession::DescribeInto(uint64_t handle,
                                                       pb::DatasetInfo* out) const {
  COFFER_ASSIGN_OR_RETURN(*out, Describe(handle));
  return absl::OkStatus();
}

// dataset_list, dataset_describe, dataset_create, dataset_lifecycle.
absl::Status Services::ConnectionSession::HandleDatasets(AdminCall& call) {
  switch (call.request.op_case()) {
    case pb::Request::kDatasetList:
      return Reply(call, ListDatasets(call.response.mutable_dataset_list()));
    case pb::Request::kDatasetDescribe: {
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      return Reply(call, DescribeInto(*handle, call.response.mutable_dataset_describe()));
    }
    case pb::Request::kDatasetCreate: {
      const auto& r = call.request.dataset_create();
      kms::DatasetPolicy policy = deps_.default_policy;
      absl::Status result = ApplyPolicy(r.policy(), &policy);
      if (!result.ok()) return SendError(call.sink, call.request, result);
      auto handle = deps_.keys->CreateDataset(r.name(), policy, call.actor);
      if (!handle.ok()) return Reply(call, handle.status());
      return Reply(call, DescribeInto(*handle, call.response.mutable_dataset_create()));
    }
    case pb::Request::kDatasetLifecycle: {
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      absl::Status result;
      switch (call.request.dataset_lifecycle().action()) {
        case pb::DatasetLifecycleRequest::DISABLE:
          result = deps_.keys->Disable(*handle, call.actor);
          break;
        case pb::DatasetLifecycleRequest::ENABLE:
          result = deps_.keys->Enable(*handle, call.actor);
          break;
        case pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION:
          result = deps_.keys->ScheduleDestruction(*handle, call.actor, call.approval);
          break;
        case pb::DatasetLifecycleRequest::CANCEL_DESTRUCTION:
          result = deps_.keys->CancelDestruction(*handle, call.actor);
          break;
        default:
          return SendError(call.sink, call.request,
                           MakeError(ErrorCode::kMalformedRequest,
                                     "dataset_lifecycle.action is missing or unknown"));
      }
      if (!result.ok()) return Reply(call, result);
      return Reply(call, DescribeInto(*handle, call.response.mutable_dataset_lifecycle()));
    }
    default:
      return Reply(call,
                   MakeError(ErrorCode::kMalformedRequest, "this operation is not served here"));
  }
}

// key_rotate: an emergency rotation (records and attachments), or the purposes named (records
// and attachments when none), each rotated with the cause its purpose implies; answers the new
// primaries.
absl::Status Services::ConnectionSession::RotateKeys(AdminCall& call) {
  const auto& r = call.request.key_rotate();
  auto handle = FindNamed(call);
  if (!handle.ok()) return Reply(call, handle.status());
  std::vector<KeyPurpose> purposes;
  if (r.emergency()) {
    absl::Status result = deps_.keys->EmergencyRotate(*handle, call.actor);
    if (!result.ok()) return Reply(call, result);
    purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup,
                KeyPurpose::kPseudonym};
    // The keys are rotated whatever follows; a follow-up that cannot start now (another job
    // on the dataset) is the admin's to start: the reply says why, and the periodic rotation
    // job retires the compromised versions once nothing uses them.
    auto* rotated = call.response.mutable_key_rotate();
    absl::StatusOr<pb::JobStatus> follow_up =
        deps_.jobs != nullptr
            ? deps_.jobs->StartEmergencyFollowUp(*handle, std::string(call.dataset), call.actor)
            : MakeError(ErrorCode::kFailedPrecondition, "this daemon runs no jobs");
    if (follow_up.ok()) {
      *rotated->mutable_follow_up() = *std::move(follow_up);
    } else {
      rotated->set_follow_up_error(std::string(ErrorCodeName(ErrorCodeOf(follow_up.status()))) +
                                   ": " + std::string(follow_up.status().message()));
    }
  } else {
    for (int p : r.purposes()) {
      std::optional<KeyPurpose> purpose = FromProto(static_cast<pb::Purpose>(p));
      if (!purpose) {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "key_rotate.purposes holds an unknown purpose"));
      }
      purposes.push_back(*purpose);
    }
    if (purposes.empty()) purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments};
    for (KeyPurpose purpose : purposes) {
      kms::RotationCause cause = purpose == KeyPurpose::kLookup      ? kms::RotationCause::kReindex
                                 : purpose == KeyPurpose::kPseudonym ? kms::RotationCause::kRekey
                                                                     : kms::RotationCause::kManual;
      auto rotated = deps_.keys->Rotate(*handle, purpose, cause, call.actor);
      if (!rotated.ok()) return Reply(call, rotated.status());
    }
  }
  auto info = deps_.keys->DescribeDataset(*handle);
  if (!info.ok()) return Reply(call, info.status());
  auto* out = call.response.mutable_key_rotate();
  for (const kms::PurposeInfo& purpose : info->purposes) {
    if (std::find(purposes.begin(), purposes.end(), purpose.purpose) == purposes.end()) continue;
    for (const kms::KeyVersionInfo& version : purpose.versions) {
      if (version.version == purpose.primary_version) {
        *out->add_new_primaries() = ToProto(purpose.purpose, version);
      }
    }
  }
  return Reply(call, absl::OkStatus());
}

// key_rotate, key_retire, key_rewrap.
absl::Status Services::ConnectionSession::HandleKeys(AdminCall& call) {
  switch (call.request.op_case()) {
    case pb::Request::kKeyRotate:
      return RotateKeys(call);
    case pb::Request::kKeyRetire: {
      const auto& r = call.request.key_retire();
      std::optional<KeyPurpose> purpose = FromProto(r.purpose());
      if (!purpose) {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest, "key_retire.purpose is missing"));
      }
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      auto retired_versions = [&]() -> absl::StatusOr<std::set<uint32_t>> {
        COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, deps_.keys->DescribeDataset(*handle));
        std::set<uint32_t> retired;
        for (const kms::PurposeInfo& p : info.purposes) {
          if (p.purpose != *purpose) continue;
          for (const kms::KeyVersionInfo& v : p.versions) {
            if (v.state == kms::KeyVersionState::kRetired) retired.insert(v.version);
          }
        }
        return retired;
      };
      auto before = retired_versions();
      if (!before.ok()) return Reply(call, before.status());
      absl::Status result =
          r.translate_done()
              ? (*purpose == KeyPurpose::kPseudonym
                     ? deps_.keys->RetirePseudonymAfterTranslate(*handle, r.below(), call.actor)
                     : MakeError(ErrorCode::kInvalidArgument,
                                 "key_retire.translate_done applies to pseudonym keys only"))
              : deps_.keys->RetireBelow(*handle, *purpose, r.below(), call.actor);
      if (!result.ok()) return Reply(call, result);
      auto after = retired_versions();
      if (!after.ok()) return Reply(call, after.status());
      auto* out = call.response.mutable_key_retire();
      for (uint32_t version : *after) {
        if (before->count(version) == 0) out->add_retired(version);
      }
      return Reply(call, absl::OkStatus());
    }
    case pb::Request::kKeyRewrap: {
      const auto& r = call.request.key_rewrap();
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      ProgressStream progress(call.request, call.sink);
      absl::Status result =
          deps_.keys->Rewrap(*handle, r.module(), r.destroy_old(), call.actor, progress.Function());
      COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
      if (!result.ok()) return Reply(call, result);
      return Reply(call,
                   DescribeInto(*handle, call.response.mutable_key_rewrap()->mutable_dataset()));
    }
    default:
      return Reply(call,
                   MakeError(ErrorCode::kMalformedRequest, "this operation is not served here"));
  }
}

// policy_set, hold_set, purge, bin_list.
// purge: one record, one attachment, one damaged item (by its reference) or a whole bin.
absl::Status Services::ConnectionSession::Purge(AdminCall& call) {
  const auto& r = call.request.purge();
  auto handle = FindNamed(call);
  if (!handle.ok()) return Reply(call, handle.status());
  auto* out = call.response.mutable_purge();
  // The purge's own audit entries name the admin who asked and the one who approved.
  std::unique_ptr<storage::PurgeJournal> journal;
  if (deps_.purge_journal != nullptr) {
    std::optional<audit::AuditActor> approver;
    if (call.approval.has_value()) approver = call.approval->approver;
    journal = deps_.purge_journal->ForRequest(call.actor, std::move(approver));
  }
  switch (r.target_case()) {
    case pb::PurgeRequest::kRecordId: {
      absl::Status result = deps_.bin->PurgeRecord(*handle, r.record_id(), journal.get());
      if (result.ok()) out->set_records(1);
      return Reply(call, result);
    }
    case pb::PurgeRequest::kAttachmentName: {
      absl::Status result = deps_.bin->PurgeAttachment(*handle, r.attachment_name(), journal.get());
      if (result.ok()) out->set_attachments(1);
      return Reply(call, result);
    }
    case pb::PurgeRequest::kDamagedRef: {
      absl::StatusOr<storage::PurgedItemKind> kind =
          deps_.bin->PurgeDamaged(*handle, r.damaged_ref(), journal.get());
      if (kind.ok() && *kind == storage::PurgedItemKind::kRecord) out->set_records(1);
      if (kind.ok() && *kind == storage::PurgedItemKind::kAttachment) out->set_attachments(1);
      return Reply(call, kind.status());
    }
    case pb::PurgeRequest::TARGET_NOT_SET: {
      auto report = deps_.bin->EmptyBin(*handle, journal.get());
      if (report.ok()) {
        out->set_records(report->records);
        out->set_attachments(report->attachments);
      }
      return Reply(call, report.status());
    }
  }
  return Reply(call, MakeError(ErrorCode::kMalformedRequest, "purge target unknown"));
}

absl::Status Services::ConnectionSession::HandleProtection(AdminCall& call) {
  switch (call.request.op_case()) {
    case pb::Request::kPolicySet: {
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      auto info = deps_.keys->DescribeDataset(*handle);
      if (!info.ok()) return Reply(call, info.status());
      kms::DatasetPolicy policy = info->policy;
      absl::Status result = ApplyPolicy(call.request.policy_set().policy(), &policy);
      if (!result.ok()) return SendError(call.sink, call.request, result);
      result = deps_.keys->SetPolicy(*handle, policy, call.actor);
      if (!result.ok()) return Reply(call, result);
      return Reply(call, DescribeInto(*handle, call.response.mutable_policy_set()));
    }
    case pb::Request::kHoldSet: {
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      absl::Status result =
          deps_.keys->SetLegalHold(*handle, call.request.hold_set().hold(), call.actor);
      if (!result.ok()) return Reply(call, result);
      return Reply(call, DescribeInto(*handle, call.response.mutable_hold_set()));
    }
    case pb::Request::kPurge:
      return Purge(call);
    case pb::Request::kBinList: {
      auto handle = FindNamed(call);
      if (!handle.ok()) return Reply(call, handle.status());
      absl::Status result =
          BinList(call.request.bin_list(), *handle, call.response.mutable_bin_list());
      if (ErrorCodeOf(result) == ErrorCode::kInvalidArgument) {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "bin_list.page_token or bin_list.max_items is invalid"));
      }
      return Reply(call, result);
    }
    default:
      return Reply(call,
                   MakeError(ErrorCode::kMalformedRequest, "this operation is not served here"));
  }
}

// job_start, job_status.
absl::Status Services::ConnectionSession::HandleJobs(AdminCall& call) {
  switch (call.request.op_case()) {
    case pb::Request::kJobStart: {
      const auto& r = call.request.job_start();
      absl::StatusOr<pb::JobStatus> started;
      if (r.kind() == pb::JOB_REENCRYPT) {
        auto handle = FindNamed(call);
        if (!handle.ok()) return Reply(call, handle.status());
        started = deps_.jobs->StartReencryption(*handle, std::string(call.dataset),
                                                r.max_items_per_second());
      } else if (r.kind() == pb::JOB_REINDEX) {
        auto handle = FindNamed(call);
        if (!handle.ok()) return Reply(call, handle.status());
        started =
            deps_.jobs->StartReindex(*handle, std::string(call.dataset), r.max_items_per_second());
      } else if (r.kind() == pb::JOB_SCRUB) {
        std::optional<uint64_t> handle;
        if (!call.dataset.empty()) {
          auto found = FindNamed(call);
          if (!found.ok()) return Reply(call, found.status());
          handle = *found;
        }
        started = deps_.jobs->StartScrub(handle, std::string(call.dataset));
      } else if (IsPeriodicKind(r.kind())) {
        if (!call.dataset.empty()) {
          return SendError(call.sink, call.request,
                           MakeError(ErrorCode::kMalformedRequest,
                                     "a periodic job runs for every dataset: name none"));
        }
        // Runs now, on this worker, what the job's next scheduled run would do; the reply is
        // its status after the run (JOB_FAILED with the error when the run failed).
        started = deps_.jobs->RunNow(r.kind());
      } else {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "job_start.kind must be JOB_REENCRYPT, JOB_REINDEX, JOB_SCRUB "
                                   "or a periodic job's kind"));
      }
      if (!started.ok()) {
        // ALREADY_EXISTS here means a busy call.dataset: say so.
        if (ErrorCodeOf(started.status()) == ErrorCode::kAlreadyExists) {
          return SendError(
              call.sink, call.request,
              MakeError(ErrorCode::kAlreadyExists,
                        r.dataset().empty() && IsPeriodicKind(r.kind())
                            ? "this periodic job is running now; see job_status"
                            : "a job is already running on this dataset; see job_status"));
        }
        return Reply(call, started.status());
      }
      *call.response.mutable_job_start() = *std::move(started);
      return Reply(call, absl::OkStatus());
    }
    case pb::Request::kJobStatus: {
      auto* out = call.response.mutable_job_status();
      if (call.request.job_status().id() == 0) {
        for (pb::JobStatus& status : deps_.jobs->AllStatus()) *out->add_jobs() = std::move(status);
        return Reply(call, absl::OkStatus());
      }
      auto status = deps_.jobs->Status(call.request.job_status().id());
      if (!status.ok()) {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kNotFound, "no job with this id"));
      }
      *out->add_jobs() = *std::move(status);
      return Reply(call, absl::OkStatus());
    }
    default:
      return Reply(call,
                   MakeError(ErrorCode::kMalformedRequest, "this operation is not served here"));
  }
}

// The status operation's answer: version, counters, transport, HSM and audit health.
void Services::ConnectionSession::FillStatus(pb::StatusResponse* out) {
  ServicesMetrics metrics = services_->metrics();
  out->set_version(deps_.version);
  out->set_started_micros(services_->started_micros_);
  out->set_datasets(deps_.keys->ListDatasets().size());
  for (pb::JobStatus& status : deps_.jobs->AllStatus()) *out->add_jobs() = std::move(status);
  out->set_connections_open(metrics.connections_open);
  out->set_connections_total(metrics.connections_total);
  out->set_requests_total(metrics.requests_total);
  out->set_requests_refused(metrics.requests_refused);
  out->set_requests_slowed(metrics.requests_slowed);
  out->set_audit_entries(deps_.audit_log->stats().next_sequence);
  out->set_durability(deps_.durability);
  out->set_data_socket(deps_.data_socket);
  out->set_admin_socket(deps_.admin_socket);
  out->set_metrics_endpoint(deps_.metrics_endpoint);
  out->set_audit_public_key_pem(deps_.audit_public_key_pem);
  out->set_mfa_required(deps_.admin_control != nullptr && deps_.admin_control->mfa_required());
  if (deps_.transport_stats) SetTransportStatus(deps_.transport_stats(), out->mutable_transport());
  if (deps_.hsm_status) deps_.hsm_status(out->mutable_hsm());
  const audit::AuditLogStats audit = deps_.audit_log->stats();
  pb::AuditStatus* audit_out = out->mutable_audit();
  audit_out->set_writable(!audit.failed && !audit.closed);
  audit_out->set_epoch(audit.epoch);
  audit_out->set_entries_since_checkpoint(audit.entries_since_checkpoint);
  audit_out->set_last_checkpoint_micros(audit.last_checkpoint_micros);
  audit_out->set_checkpoints_written(audit.checkpoints_written);
  audit_out->set_checkpoint_failures(audit.checkpoint_failures);
  audit_out->set_anchor_failures(audit.anchor_failures);
  audit_out->set_reopens(audit.reopens);
  audit_out->set_reopen_failures(audit.reopen_failures);
  audit_out->set_access_failure(
      static_cast<pb::AccessAuditFailure>(deps_.keys->access_audit_failure()));
  audit_out->set_served_unaudited(services_->unaudited_.served());
  audit_out->set_unaudited_pending(services_->unaudited_.pending_accesses());
}

// audit_query, audit_verify, status, key_inventory, receipt_get, audit_policy_set.
absl::Status Services::ConnectionSession::HandleAuditAndStatus(AdminCall& call) {
  switch (call.request.op_case()) {
    case pb::Request::kAuditQuery:
      return Reply(call,
                   AuditQuery(call.request.audit_query(), call.response.mutable_audit_query()));
    case pb::Request::kAuditVerify: {
      audit::VerifyOptions options;
      options.public_key_pem = deps_.audit_public_key_pem;
      options.epoch_keys = deps_.audit_epoch_keys;
      auto report = audit::VerifyAuditLog(deps_.audit_directory, options);
      if (!report.ok()) return Reply(call, report.status());
      if (!report->ok()) return Reply(call, report->ToStatus());
      auto* out = call.response.mutable_audit_verify();
      out->set_entries(report->entries);
      out->set_checkpoints(report->checkpoints_verified);
      out->set_last_sequence(report->last_sequence.value_or(0));
      return Reply(call, absl::OkStatus());
    }
    case pb::Request::kStatus:
      FillStatus(call.response.mutable_status());
      return Reply(call, absl::OkStatus());
    case pb::Request::kAuditPolicySet: {
      const pb::AccessAuditFailure wanted = call.request.audit_policy_set().access_failure();
      if (wanted != pb::FAIL_CLOSED && wanted != pb::SERVE_AND_COUNT) {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "audit_policy_set.access_failure must be FAIL_CLOSED or "
                                   "SERVE_AND_COUNT"));
      }
      auto previous = deps_.keys->SetAccessAuditFailure(
          static_cast<kms::AccessAuditFailure>(wanted), call.actor);
      if (!previous.ok()) return Reply(call, previous.status());
      auto* out = call.response.mutable_audit_policy_set();
      out->set_previous(static_cast<pb::AccessAuditFailure>(*previous));
      out->set_access_failure(wanted);
      return Reply(call, absl::OkStatus());
    }
    case pb::Request::kKeyInventory:
      return Reply(
          call, KeyInventory(call.request.key_inventory(), call.response.mutable_key_inventory()));
    case pb::Request::kReceiptGet: {
      // The daemon's own messages: they name states and handles, never data.
      const pb::ReceiptGetRequest& query = call.request.receipt_get();
      uint64_t handle = 0;
      if (query.dataset_case() == pb::ReceiptGetRequest::kHandle) {
        handle = query.handle();
      } else if (query.dataset_case() == pb::ReceiptGetRequest::kName && !query.name().empty()) {
        std::vector<uint64_t> destroyed = deps_.keys->FindDestroyed(query.name());
        if (destroyed.empty()) {
          return SendError(
              call.sink, call.request,
              MakeError(ErrorCode::kDatasetNotFound,
                        "no destroyed call.dataset had that name (a receipt exists only "
                        "once a call.dataset is destroyed)"));
        }
        handle = destroyed.front();
      } else {
        return SendError(call.sink, call.request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "receipt_get names no call.dataset (a name or a handle)"));
      }
      absl::StatusOr<std::string> receipt = deps_.keys->GetDeletionReceipt(handle);
      if (!receipt.ok()) return SendError(call.sink, call.request, receipt.status());
      call.response.mutable_receipt_get()->set_dataset_handle(handle);
      call.response.mutable_receipt_get()->set_receipt(*std::move(receipt));
      return Reply(call, absl::OkStatus());
    }
    default:
      return Reply(call,
                   MakeError(ErrorCode::kMalformedRequest, "this operation is not served here"));
  }
}

// The operations cofferd wires in (ServicesDeps::streaming_admin_ops, extra_admin_ops): backups,
// events, canaries, export.
absl::Status Services::ConnectionSession::RunWired(const pb::Request& request, ResponseSink* sink,
                                                   const audit::AuditActor& actor) {
  auto streaming = deps_.streaming_admin_ops.find(request.op_case());
  if (streaming != deps_.streaming_admin_ops.end()) {
    return streaming->second(request, actor, sink);
  }
  auto extra = deps_.extra_admin_ops.find(request.op_case());
  if (extra == deps_.extra_admin_ops.end()) {
    return SendError(
        sink, request,
        MakeError(ErrorCode::kMalformedRequest, "this operation is not served by this daemon"));
  }
  const std::optional<kms::AdminApproval> no_approval;
  AdminCall call{request, sink, actor, no_approval, DatasetNamedBy(request), pb::Response()};
  ProgressStream progress(request, sink);
  absl::Status result = extra->second(request, actor, progress.Function(), &call.response);
  COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
  return Reply(call, result);
}

}  // namespace coffer::daemon
