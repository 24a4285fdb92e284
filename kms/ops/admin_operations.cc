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

absl::Status Services::ConnectionSession::HandleAdmin(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  pb::Response response;
  const std::string_view dataset = DatasetNamedBy(request);
  auto find = [&]() -> absl::StatusOr<uint64_t> {
    if (dataset.empty()) {
      return MakeError(ErrorCode::kMalformedRequest, "the request names no dataset");
    }
    return deps_.keys->FindDataset(dataset);
  };
  // Runs `body`; answers its error (public text unless `own`) or `response`.
  auto reply = [&](const absl::Status& result) {
    if (result.ok()) return Send(sink, request, std::move(response));
    ErrorCode code = ErrorCodeOf(result);
    bool own = code == ErrorCode::kMalformedRequest || code == ErrorCode::kAuditTampered;
    return SendError(sink, request, own ? result : Public(result));
  };
  auto describe_into = [&](uint64_t handle, pb::DatasetInfo* out) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(*out, Describe(handle));
    return absl::OkStatus();
  };

  switch (request.op_case()) {
    case pb::Request::kDatasetList:
      return reply(ListDatasets(response.mutable_dataset_list()));

    case pb::Request::kDatasetDescribe: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      return reply(describe_into(*handle, response.mutable_dataset_describe()));
    }

    case pb::Request::kDatasetCreate: {
      const auto& r = request.dataset_create();
      kms::DatasetPolicy policy = deps_.default_policy;
      absl::Status result = ApplyPolicy(r.policy(), &policy);
      if (!result.ok()) return SendError(sink, request, result);
      auto handle = deps_.keys->CreateDataset(r.name(), policy, actor);
      if (!handle.ok()) return reply(handle.status());
      return reply(describe_into(*handle, response.mutable_dataset_create()));
    }

    case pb::Request::kDatasetLifecycle: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result;
      switch (request.dataset_lifecycle().action()) {
        case pb::DatasetLifecycleRequest::DISABLE:
          result = deps_.keys->Disable(*handle, actor);
          break;
        case pb::DatasetLifecycleRequest::ENABLE:
          result = deps_.keys->Enable(*handle, actor);
          break;
        case pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION:
          result = deps_.keys->ScheduleDestruction(*handle, actor, approval);
          break;
        case pb::DatasetLifecycleRequest::CANCEL_DESTRUCTION:
          result = deps_.keys->CancelDestruction(*handle, actor);
          break;
        default:
          return SendError(sink, request,
                           MakeError(ErrorCode::kMalformedRequest,
                                     "dataset_lifecycle.action is missing or unknown"));
      }
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_dataset_lifecycle()));
    }

    case pb::Request::kKeyRotate: {
      const auto& r = request.key_rotate();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      std::vector<KeyPurpose> purposes;
      if (r.emergency()) {
        absl::Status result = deps_.keys->EmergencyRotate(*handle, actor);
        if (!result.ok()) return reply(result);
        purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments};
      } else {
        for (int p : r.purposes()) {
          std::optional<KeyPurpose> purpose = FromProto(static_cast<pb::Purpose>(p));
          if (!purpose) {
            return SendError(sink, request,
                             MakeError(ErrorCode::kMalformedRequest,
                                       "key_rotate.purposes holds an unknown purpose"));
          }
          purposes.push_back(*purpose);
        }
        if (purposes.empty()) purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments};
        for (KeyPurpose purpose : purposes) {
          kms::RotationCause cause = purpose == KeyPurpose::kLookup ? kms::RotationCause::kReindex
                                     : purpose == KeyPurpose::kPseudonym
                                         ? kms::RotationCause::kRekey
                                         : kms::RotationCause::kManual;
          auto rotated = deps_.keys->Rotate(*handle, purpose, cause, actor);
          if (!rotated.ok()) return reply(rotated.status());
        }
      }
      auto info = deps_.keys->DescribeDataset(*handle);
      if (!info.ok()) return reply(info.status());
      auto* out = response.mutable_key_rotate();
      for (const kms::PurposeInfo& purpose : info->purposes) {
        if (std::find(purposes.begin(), purposes.end(), purpose.purpose) == purposes.end())
          continue;
        for (const kms::KeyVersionInfo& version : purpose.versions) {
          if (version.version == purpose.primary_version) {
            *out->add_new_primaries() = ToProto(purpose.purpose, version);
          }
        }
      }
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyRetire: {
      const auto& r = request.key_retire();
      std::optional<KeyPurpose> purpose = FromProto(r.purpose());
      if (!purpose) {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest, "key_retire.purpose is missing"));
      }
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
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
      if (!before.ok()) return reply(before.status());
      absl::Status result = deps_.keys->RetireBelow(*handle, *purpose, r.below(), actor);
      if (!result.ok()) return reply(result);
      auto after = retired_versions();
      if (!after.ok()) return reply(after.status());
      auto* out = response.mutable_key_retire();
      for (uint32_t version : *after) {
        if (before->count(version) == 0) out->add_retired(version);
      }
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyRewrap: {
      const auto& r = request.key_rewrap();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      ProgressStream progress(request, sink);
      absl::Status result =
          deps_.keys->Rewrap(*handle, r.module(), r.destroy_old(), actor, progress.Function());
      COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_key_rewrap()->mutable_dataset()));
    }

    case pb::Request::kPolicySet: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      auto info = deps_.keys->DescribeDataset(*handle);
      if (!info.ok()) return reply(info.status());
      kms::DatasetPolicy policy = info->policy;
      absl::Status result = ApplyPolicy(request.policy_set().policy(), &policy);
      if (!result.ok()) return SendError(sink, request, result);
      result = deps_.keys->SetPolicy(*handle, policy, actor);
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_policy_set()));
    }

    case pb::Request::kHoldSet: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result = deps_.keys->SetLegalHold(*handle, request.hold_set().hold(), actor);
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_hold_set()));
    }

    case pb::Request::kPurge: {
      const auto& r = request.purge();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      auto* out = response.mutable_purge();
      switch (r.target_case()) {
        case pb::PurgeRequest::kRecordId: {
          absl::Status result = deps_.bin->PurgeRecord(*handle, r.record_id());
          if (result.ok()) out->set_records(1);
          return reply(result);
        }
        case pb::PurgeRequest::kAttachmentName: {
          absl::Status result = deps_.bin->PurgeAttachment(*handle, r.attachment_name());
          if (result.ok()) out->set_attachments(1);
          return reply(result);
        }
        case pb::PurgeRequest::TARGET_NOT_SET: {
          auto report = deps_.bin->EmptyBin(*handle);
          if (report.ok()) {
            out->set_records(report->records);
            out->set_attachments(report->attachments);
          }
          return reply(report.status());
        }
      }
      return reply(MakeError(ErrorCode::kMalformedRequest, "purge target unknown"));
    }

    case pb::Request::kJobStart: {
      const auto& r = request.job_start();
      absl::StatusOr<pb::JobStatus> started;
      if (r.kind() == pb::JOB_REENCRYPT) {
        auto handle = find();
        if (!handle.ok()) return reply(handle.status());
        started =
            deps_.jobs->StartReencryption(*handle, std::string(dataset), r.max_items_per_second());
      } else if (r.kind() == pb::JOB_SCRUB) {
        std::optional<uint64_t> handle;
        if (!dataset.empty()) {
          auto found = find();
          if (!found.ok()) return reply(found.status());
          handle = *found;
        }
        started = deps_.jobs->StartScrub(handle, std::string(dataset));
      } else {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "job_start.kind must be JOB_REENCRYPT or JOB_SCRUB"));
      }
      if (!started.ok()) {
        // ALREADY_EXISTS here means a busy dataset: say so.
        if (ErrorCodeOf(started.status()) == ErrorCode::kAlreadyExists) {
          return SendError(sink, request,
                           MakeError(ErrorCode::kAlreadyExists,
                                     "a job is already running on this dataset; see job_status"));
        }
        return reply(started.status());
      }
      *response.mutable_job_start() = *std::move(started);
      return reply(absl::OkStatus());
    }

    case pb::Request::kJobStatus: {
      auto* out = response.mutable_job_status();
      if (request.job_status().id() == 0) {
        for (pb::JobStatus& status : deps_.jobs->AllStatus()) *out->add_jobs() = std::move(status);
        return reply(absl::OkStatus());
      }
      auto status = deps_.jobs->Status(request.job_status().id());
      if (!status.ok()) {
        return SendError(sink, request, MakeError(ErrorCode::kNotFound, "no job with this id"));
      }
      *out->add_jobs() = *std::move(status);
      return reply(absl::OkStatus());
    }

    case pb::Request::kAuditQuery:
      return reply(AuditQuery(request.audit_query(), response.mutable_audit_query()));

    case pb::Request::kAuditVerify: {
      audit::VerifyOptions options;
      options.public_key_pem = deps_.audit_public_key_pem;
      options.epoch_keys = deps_.audit_epoch_keys;
      auto report = audit::VerifyAuditLog(deps_.audit_directory, options);
      if (!report.ok()) return reply(report.status());
      if (!report->ok()) return reply(report->ToStatus());
      auto* out = response.mutable_audit_verify();
      out->set_entries(report->entries);
      out->set_checkpoints(report->checkpoints_verified);
      out->set_last_sequence(report->last_sequence.value_or(0));
      return reply(absl::OkStatus());
    }

    case pb::Request::kStatus: {
      auto* out = response.mutable_status();
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
      out->set_audit_public_key_pem(deps_.audit_public_key_pem);
      out->set_mfa_required(deps_.admin_control != nullptr && deps_.admin_control->mfa_required());
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyInventory:
      return reply(KeyInventory(request.key_inventory(), response.mutable_key_inventory()));

    case pb::Request::kReceiptGet: {
      // The daemon's own messages: they name states and handles, never data.
      const pb::ReceiptGetRequest& query = request.receipt_get();
      uint64_t handle = 0;
      if (query.dataset_case() == pb::ReceiptGetRequest::kHandle) {
        handle = query.handle();
      } else if (query.dataset_case() == pb::ReceiptGetRequest::kName && !query.name().empty()) {
        std::vector<uint64_t> destroyed = deps_.keys->FindDestroyed(query.name());
        if (destroyed.empty()) {
          return SendError(sink, request,
                           MakeError(ErrorCode::kDatasetNotFound,
                                     "no destroyed dataset had that name (a receipt exists only "
                                     "once a dataset is destroyed)"));
        }
        handle = destroyed.front();
      } else {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "receipt_get names no dataset (a name or a handle)"));
      }
      absl::StatusOr<std::string> receipt = deps_.keys->GetDeletionReceipt(handle);
      if (!receipt.ok()) return SendError(sink, request, receipt.status());
      response.mutable_receipt_get()->set_dataset_handle(handle);
      response.mutable_receipt_get()->set_receipt(*std::move(receipt));
      return reply(absl::OkStatus());
    }

    case pb::Request::kBinList: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result = BinList(request.bin_list(), *handle, response.mutable_bin_list());
      if (ErrorCodeOf(result) == ErrorCode::kInvalidArgument) {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "bin_list.page_token or bin_list.max_items is invalid"));
      }
      return reply(result);
    }

    default: {
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
      ProgressStream progress(request, sink);
      absl::Status result = extra->second(request, actor, progress.Function(), &response);
      COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
      return reply(result);
    }
  }
}

}  // namespace coffer::daemon
