#include "kms/ops/admin_control.h"

#include <pwd.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_format.h"
#include "kms/ops/operation_table.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using OpCase = pb::Request::OpCase;

std::string SystemUserName(uid_t uid) {
  std::vector<char> buffer(16384);
  passwd entry;
  passwd* found = nullptr;
  if (getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) == 0 && found != nullptr) {
    std::string name = found->pw_name;
    bool printable = !name.empty() && name.size() <= audit::kMaxAdminNameSize;
    for (char c : name) printable = printable && c > 0x20 && c < 0x7f;
    if (printable) return name;
  }
  return absl::StrCat("uid-", uid);
}

void FillAdminInfo(const kms::admin::AdminRecord& admin, pb::AdminInfo* out) {
  out->set_uid(admin.uid);
  out->set_name(admin.name);
  out->set_enrolled_micros(admin.enrolled_micros);
  out->set_bootstrap(admin.bootstrap);
  out->set_last_code_micros(admin.last_code_micros);
  out->set_failed_codes(admin.failures);
  out->set_locked_until_micros(admin.locked_until_micros);
}

void FillInvitation(const kms::admin::Invitation& invitation, pb::AdminInvitation* out) {
  out->set_uid(invitation.uid);
  out->set_invited_by(invitation.invited_by);
  out->set_created_micros(invitation.created_micros);
  out->set_expires_micros(invitation.expires_micros);
}

pb::Request Filed(const pb::Request& request) {
  pb::Request filed = request;
  filed.clear_request_id();
  filed.clear_totp_code();
  filed.clear_progress();  // the approver's call answers with the result alone
  return filed;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AdminControl>> AdminControl::Create(AdminControlOptions options) {
  if (options.registry == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "admin control needs the admin registry");
  }
  if (options.audit_log == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "admin control needs the audit log");
  }
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "admin control needs a clock");
  }
  if (!options.user_name) options.user_name = SystemUserName;
  return std::unique_ptr<AdminControl>(new AdminControl(std::move(options)));
}

AdminControl::AdminControl(AdminControlOptions options) : options_(std::move(options)) {}

std::string AdminControl::NameOf(uid_t uid) const { return options_.user_name(uid); }

void AdminControl::Identify(uid_t uid, audit::AuditActor* actor) {
  auto record = options_.registry->FindAdmin(uid);
  if (record.ok() && record->has_value()) {
    actor->admin_id = uint64_t{uid} + 1;
    actor->admin_name = (*record)->name;
  }
}

absl::Status AdminControl::Audit(audit::v1::EventKind kind, const audit::AuditActor& actor,
                                 ErrorCode result, uint32_t count, audit::AuditText detail,
                                 const std::optional<audit::AuditActor>& approver) {
  return AuditAt(kind, actor, result, count, detail, approver).status();
}

absl::StatusOr<uint64_t> AdminControl::AuditAt(audit::v1::EventKind kind,
                                               const audit::AuditActor& actor, ErrorCode result,
                                               uint32_t count, audit::AuditText detail,
                                               const std::optional<audit::AuditActor>& approver) {
  audit::AuditEvent event;
  event.kind = kind;
  event.actor = actor;
  event.approver = approver;
  event.result = result;
  event.record_count = count;
  event.detail = detail;
  return options_.audit_log->Append(event);
}

bool AdminControl::HasSession(uid_t uid, uint64_t connection) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  auto it = sessions_.find(connection);
  if (it == sessions_.end()) return false;
  if (it->second.uid != uid || options_.clock->Now() >= it->second.expires) {
    sessions_.erase(it);
    return false;
  }
  return true;
}

void AdminControl::ConnectionClosed(uint64_t connection) {
  std::lock_guard<std::mutex> lock(sessions_mu_);
  sessions_.erase(connection);
}

absl::Status AdminControl::VerifyCode(const PeerIdentity& peer, uint64_t connection,
                                      const audit::AuditActor& actor, std::string_view code,
                                      uint32_t* retry_after_ms) {
  auto before = options_.registry->FindAdmin(peer.uid);
  if (!before.ok()) return before.status();
  if (!before->has_value()) {
    return MakeError(ErrorCode::kAdminNotEnrolled,
                     "this uid is not an enrolled admin: another admin runs `keyctl admin enroll "
                     "--uid UID`, then this uid runs `keyctl admin enroll`");
  }
  const int64_t now = coffer::ToUnixMicros(options_.clock->Now());
  const bool was_locked = (*before)->locked_until_micros > now;
  auto verified = options_.registry->VerifyCode(peer.uid, code);
  const ErrorCode result = verified.ok() ? ErrorCode::kOk : ErrorCodeOf(verified.status());
  COFFER_RETURN_IF_ERROR(Audit(audit::v1::MFA_VERIFY, actor, result, 0));
  if (verified.ok()) {
    std::lock_guard<std::mutex> lock(sessions_mu_);
    sessions_[connection] = MfaSession{peer.uid, options_.clock->Now() + options_.session};
    return absl::OkStatus();
  }
  if (result == ErrorCode::kMfaLockedOut) {
    if (!was_locked) COFFER_RETURN_IF_ERROR(Audit(audit::v1::MFA_LOCKOUT, actor, result, 0));
    auto after = options_.registry->FindAdmin(peer.uid);
    if (after.ok() && after->has_value() && (*after)->locked_until_micros > now) {
      int64_t millis = ((*after)->locked_until_micros - now + 999) / 1000;
      *retry_after_ms = static_cast<uint32_t>(std::min<int64_t>(millis, UINT32_MAX));
    }
    return MakeError(ErrorCode::kMfaLockedOut,
                     "too many wrong TOTP codes: this admin is locked out; retry after the delay");
  }
  switch (result) {
    case ErrorCode::kMfaCodeInvalid:
      return MakeError(result,
                       "the TOTP code is wrong or not 6 digits; check the authenticator's clock");
    case ErrorCode::kMfaCodeReused:
      return MakeError(result, "that TOTP code was already used; wait for the next code");
    default:
      return verified.status();
  }
}

AdminDecision AdminControl::Admit(const PeerIdentity& peer, uint64_t connection,
                                  const pb::Request& request, const DatasetLookup& lookup) {
  AdminDecision decision;
  decision.actor.uid = peer.uid;
  decision.actor.pid = static_cast<uint32_t>(peer.pid);
  decision.actor.socket = audit::v1::SOCKET_ADMIN;
  Identify(peer.uid, &decision.actor);
  const OpCase op = request.op_case();
  if (!options_.mfa_required) return decision;

  const bool enrolled = decision.actor.admin_id != 0;
  if (!request.totp_code().empty()) {
    decision.status =
        VerifyCode(peer, connection, decision.actor, request.totp_code(), &decision.retry_after_ms);
    if (!decision.status.ok()) return decision;
  }
  const OperationRow* row = OperationTable::Default().Find(op);
  if (row == nullptr) {
    decision.status = NoOperationRow();
    return decision;
  }
  if (row->mfa == Mfa::kNone) return decision;
  if (op == pb::Request::kAdminEnroll &&
      (!request.admin_enroll().has_uid() || request.admin_enroll().uid() == peer.uid)) {
    return decision;  // a claim: Serve checks the bootstrap or the invitation
  }
  if (!enrolled) {
    decision.status = MakeError(ErrorCode::kAdminNotEnrolled,
                                "this operation needs an enrolled admin: another admin runs "
                                "`keyctl admin enroll --uid UID`, then this uid runs `keyctl "
                                "admin enroll`");
    return decision;
  }
  if (row->mfa == Mfa::kFreshCode) {
    if (request.totp_code().empty()) {
      decision.status = MakeError(ErrorCode::kMfaRequired,
                                  "approving or denying needs a fresh TOTP code of your own: pass "
                                  "--totp CODE");
    }
    return decision;
  }
  if (request.totp_code().empty() && !HasSession(peer.uid, connection)) {
    decision.status = MakeError(ErrorCode::kMfaRequired,
                                "this admin operation needs a TOTP code: an accepted code opens "
                                "an MFA session for a few minutes on its own connection only "
                                "(`keyctl shell` and `keyctl --batch FILE` run several commands "
                                "on one)");
    return decision;
  }

  FileIfDualControlled(peer, request, lookup, &decision);
  return decision;
}

void AdminControl::FileIfDualControlled(const PeerIdentity& peer, const pb::Request& request,
                                        const DatasetLookup& lookup, AdminDecision* decision) {
  auto count = options_.registry->AdminCount();
  if (!count.ok()) {
    decision->status = count.status();
    return;
  }
  if (request.op_case() == pb::Request::kAdminRemove && *count <= 2) {
    decision->status = MakeError(ErrorCode::kFailedPrecondition,
                                 "removing an admin would leave fewer than two enrolled admins, "
                                 "and dual control needs two: enrol a replacement first");
    return;
  }
  auto summary = DualControlSummary(request, lookup, *count);
  if (!summary.ok()) {
    decision->status = summary.status();
    return;
  }
  if (!summary->has_value()) return;
  if (*count < 2) {
    decision->status = MakeError(ErrorCode::kApprovalForbidden,
                                 "this operation is under dual control and needs a second enrolled "
                                 "admin: invite one with `keyctl admin enroll --uid UID`");
    return;
  }
  std::string serialized;
  Filed(request).SerializeToString(&serialized);
  auto filed = options_.registry->CreateApproval(
      peer.uid, decision->actor.admin_name, std::move(serialized), std::move(**summary),
      std::string(DatasetNamedBy(request)), options_.approval_ttl);
  if (!filed.ok()) {
    decision->status = filed.status();
    return;
  }
  absl::Status audited = Audit(audit::v1::APPROVAL_REQUESTED, decision->actor, ErrorCode::kOk,
                               static_cast<uint32_t>(filed->id));
  if (!audited.ok()) {
    decision->status = audited;
    return;
  }
  decision->pending = ToProto(*filed);
  decision->status =
      MakeError(ErrorCode::kApprovalPending,
                absl::StrCat("filed as approval request ", filed->id,
                             ": a second enrolled admin approves it with `keyctl request approve ",
                             filed->id, " --totp CODE`"));
}

bool AdminControl::Serves(OpCase operation) {
  const OperationRow* row = OperationTable::Default().Find(operation);
  return row != nullptr && row->handler == Handler::kAdminControl;
}

pb::ApprovalInfo AdminControl::ToProto(const kms::admin::ApprovalRecord& record) const {
  pb::ApprovalInfo info;
  info.set_id(record.id);
  info.set_state(static_cast<pb::ApprovalState>(record.state));
  info.mutable_request()->ParseFromString(record.payload);
  info.set_summary(record.summary);
  info.set_dataset(record.dataset);
  info.set_requester_uid(record.requester_uid);
  info.set_requester_name(record.requester_name);
  info.set_created_micros(record.created_micros);
  info.set_expires_micros(record.expires_micros);
  info.set_approver_uid(record.approver_uid);
  info.set_approver_name(record.approver_name);
  info.set_decided_micros(record.decided_micros);
  if (record.result_code != 0) {
    ErrorCode code = static_cast<ErrorCode>(record.result_code);
    info.mutable_result()->set_code(record.result_code);
    info.mutable_result()->set_code_name(std::string(ErrorCodeName(code)));
    info.mutable_result()->set_message("the approved operation failed");
  }
  return info;
}

audit::AuditActor AdminControl::RequesterActor(const kms::admin::ApprovalRecord& record) const {
  audit::AuditActor actor;
  actor.uid = record.requester_uid;
  actor.admin_id = uint64_t{record.requester_uid} + 1;
  actor.admin_name = record.requester_name;
  actor.socket = audit::v1::SOCKET_ADMIN;
  return actor;
}

absl::Status AdminControl::ExpireDue() {
  COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::ApprovalRecord> expired,
                          options_.registry->ExpireDue());
  for (const auto& record : expired) {
    COFFER_RETURN_IF_ERROR(Audit(audit::v1::APPROVAL_EXPIRED, RequesterActor(record),
                                 ErrorCode::kOk, static_cast<uint32_t>(record.id)));
  }
  return absl::OkStatus();
}

absl::Status AdminControl::ServeEnroll(const PeerIdentity& peer, const audit::AuditActor& actor,
                                       const pb::AdminEnrollRequest& request,
                                       pb::Response* response) {
  COFFER_ASSIGN_OR_RETURN(size_t count, options_.registry->AdminCount());
  if (!request.has_uid() || request.uid() == peer.uid) {
    const bool bootstrap = count == 0;
    auto claimed = options_.registry->Claim(peer.uid, NameOf(peer.uid), bootstrap);
    const ErrorCode result = claimed.ok() ? ErrorCode::kOk : ErrorCodeOf(claimed.status());
    audit::AuditActor claimant = actor;
    if (claimed.ok()) {
      claimant.admin_id = uint64_t{peer.uid} + 1;
      claimant.admin_name = claimed->admin.name;
    }
    COFFER_RETURN_IF_ERROR(Audit(audit::v1::ADMIN_ENROLL, claimant, result, 0,
                                 bootstrap ? audit::AuditText("bootstrap: the first admin")
                                           : audit::AuditText("claimed an invitation")));
    if (!claimed.ok()) {
      if (result == ErrorCode::kAdminNotEnrolled) {
        return MakeError(result,
                         "no invitation for this uid: an enrolled admin runs `keyctl admin enroll "
                         "--uid UID` first");
      }
      if (result == ErrorCode::kAlreadyExists) {
        return MakeError(result, "this uid is already an enrolled admin");
      }
      return claimed.status();
    }
    auto* out = response->mutable_admin_enroll();
    FillAdminInfo(claimed->admin, out->mutable_admin());
    out->set_otpauth_uri(std::move(claimed->otpauth_uri));
    return absl::OkStatus();
  }
  // An invitation (approved, bootstrap, or development mode).
  const uint32_t uid = request.uid();
  absl::Status invited = options_.registry->Invite(uid, peer.uid, options_.invitation_ttl);
  COFFER_RETURN_IF_ERROR(Audit(
      audit::v1::ADMIN_INVITE, actor, invited.ok() ? ErrorCode::kOk : ErrorCodeOf(invited), uid,
      count < 2 ? audit::AuditText("bootstrap: the second admin") : audit::AuditText("")));
  if (!invited.ok()) {
    if (ErrorCodeOf(invited) == ErrorCode::kAlreadyExists) {
      return MakeError(ErrorCode::kAlreadyExists, "that uid is already an enrolled admin");
    }
    return invited;
  }
  COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::Invitation> invitations,
                          options_.registry->ListInvitations());
  for (const auto& invitation : invitations) {
    if (invitation.uid == uid) {
      FillInvitation(invitation, response->mutable_admin_enroll()->mutable_invitation());
    }
  }
  response->mutable_admin_enroll();
  return absl::OkStatus();
}

absl::Status AdminControl::ServeDecide(const PeerIdentity& peer, const audit::AuditActor& actor,
                                       const pb::ApprovalDecideRequest& request,
                                       const Executor& execute, pb::Response* response) {
  COFFER_RETURN_IF_ERROR(ExpireDue());
  auto decided =
      options_.registry->Decide(request.id(), peer.uid, actor.admin_name, request.approve());
  if (!decided.ok()) {
    switch (ErrorCodeOf(decided.status())) {
      case ErrorCode::kApprovalForbidden:
        return MakeError(ErrorCode::kApprovalForbidden,
                         "an admin cannot approve or deny their own request: a second, different "
                         "enrolled admin must");
      case ErrorCode::kApprovalClosed:
        return MakeError(ErrorCode::kApprovalClosed,
                         "that request was already decided or has expired; file it again");
      case ErrorCode::kApprovalNotFound:
        return MakeError(ErrorCode::kApprovalNotFound,
                         "no approval request with that id (keyctl request list)");
      default:
        return decided.status();
    }
  }
  const audit::AuditActor requester = RequesterActor(*decided);
  COFFER_ASSIGN_OR_RETURN(
      const uint64_t decision_sequence,
      AuditAt(request.approve() ? audit::v1::APPROVAL_GRANTED : audit::v1::APPROVAL_DENIED,
              requester, ErrorCode::kOk, static_cast<uint32_t>(decided->id), {}, actor));
  auto* out = response->mutable_approval_decide();
  if (request.approve()) {
    pb::Request filed;
    if (!filed.ParseFromString(decided->payload)) {
      return MakeError(ErrorCode::kKeyDbRowCorrupt, "the approval request does not parse");
    }
    pb::Response result =
        execute(filed, requester, kms::AdminApproval{actor, decided->id, decision_sequence});
    const ErrorCode code =
        result.has_error() ? static_cast<ErrorCode>(result.error().code()) : ErrorCode::kOk;
    COFFER_RETURN_IF_ERROR(options_.registry->RecordResult(decided->id, code));
    *out->mutable_result() = std::move(result);
    auto refreshed = options_.registry->GetApproval(decided->id);
    if (refreshed.ok()) *decided = std::move(*refreshed);
  }
  *out->mutable_request() = ToProto(*decided);
  return absl::OkStatus();
}

absl::Status AdminControl::Serve(const PeerIdentity& peer, const audit::AuditActor& actor,
                                 const pb::Request& request, const Executor& execute,
                                 pb::Response* response) {
  switch (request.op_case()) {
    case pb::Request::kAdminEnroll:
      return ServeEnroll(peer, actor, request.admin_enroll(), response);

    case pb::Request::kAdminList: {
      COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::AdminRecord> admins,
                              options_.registry->ListAdmins());
      COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::Invitation> invitations,
                              options_.registry->ListInvitations());
      auto* out = response->mutable_admin_list();
      for (const auto& admin : admins) FillAdminInfo(admin, out->add_admins());
      for (const auto& invitation : invitations) FillInvitation(invitation, out->add_invitations());
      out->set_session_seconds(static_cast<uint32_t>(options_.session.count()));
      out->set_mfa_required(options_.mfa_required);
      return absl::OkStatus();
    }

    case pb::Request::kAdminRemove: {
      const uint32_t uid = request.admin_remove().uid();
      absl::Status removed = options_.registry->Remove(uid);
      COFFER_RETURN_IF_ERROR(Audit(audit::v1::ADMIN_REMOVE, actor,
                                   removed.ok() ? ErrorCode::kOk : ErrorCodeOf(removed), uid));
      if (!removed.ok()) {
        if (ErrorCodeOf(removed) == ErrorCode::kAdminNotEnrolled) {
          return MakeError(ErrorCode::kAdminNotEnrolled, "that uid is not an enrolled admin");
        }
        return removed;
      }
      {
        std::lock_guard<std::mutex> lock(sessions_mu_);
        std::erase_if(sessions_, [uid](const auto& entry) { return entry.second.uid == uid; });
      }
      response->mutable_admin_remove();
      return absl::OkStatus();
    }

    case pb::Request::kApprovalList: {
      COFFER_RETURN_IF_ERROR(ExpireDue());
      COFFER_ASSIGN_OR_RETURN(
          std::vector<kms::admin::ApprovalRecord> records,
          options_.registry->ListApprovals(request.approval_list().include_closed()));
      auto* out = response->mutable_approval_list();
      for (const auto& record : records) *out->add_requests() = ToProto(record);
      return absl::OkStatus();
    }

    case pb::Request::kApprovalDecide:
      return ServeDecide(peer, actor, request.approval_decide(), execute, response);

    default:
      return MakeError(ErrorCode::kMalformedRequest, "not an admin-control operation");
  }
}

}  // namespace coffer::daemon
