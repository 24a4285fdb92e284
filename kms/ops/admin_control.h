// AdminControl: MFA and dual control on cofferd's admin socket (kms/api/proto/coffer/v1/
// control.proto states the rules; docs/keyctl.md explains them to admins).
//
// Services asks Admit about every admin-socket request after the authorizer accepted the uid,
// and runs the operation only when Admit says so, as the actor Admit returns (the admin's uid
// and pid, and the enrolled admin's id and name):
//  - read-only operations (listing, describing, job status, audit queries, status, inventories)
//    run for any configured admin uid;
//  - every other operation needs an enrolled admin with an MFA session: a request carrying a
//    valid, unused TOTP code opens one (kms/admin/admin_registry.h checks the code inside the
//    token, single-use across restarts, lock-out after repeated wrong codes). A session belongs
//    to the one admin-socket connection the code came on (Services numbers its connections),
//    never to the uid: another process of the same uid, on its own connection, has none. It
//    ends `session` seconds after the code (on the injected clock), when the connection closes
//    (ConnectionClosed), when the admin is removed, or when the daemon stops (memory only);
//  - an approval decision needs a fresh code in the request itself;
//  - dual-controlled operations (control.proto) become approval requests: Admit answers with
//    `pending` and nothing runs until a second, different enrolled admin approves.
// Every code check is audited (MFA_VERIFY, MFA_LOCKOUT), as are enrolments, invitations,
// removals and approval requests and decisions, synchronously through the key-operation log.
//
// Serve runs the operations AdminControl itself owns (admin_enroll, admin_list, admin_remove,
// approval_list, approval_decide); approval_decide runs the approved operation through the
// caller's Executor as the requester, after auditing APPROVAL_GRANTED (requester as actor,
// approver as approver).
//
// With mfa_required false (development mode) Admit lets every admin-uid request through with
// no code and no second admin; enrolment still works.
//
// Thread safety: every method may be called from any thread. Ownership: the registry, audit log
// and clock are borrowed and must outlive the AdminControl.

#ifndef COFFER_KMS_OPS_ADMIN_CONTROL_H_
#define COFFER_KMS_OPS_ADMIN_CONTROL_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/clock.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/key_manager_types.h"
#include "kms/ops/authz.h"
#include "kms/server/connection.h"

namespace coffer::daemon {

struct AdminControlOptions {
  kms::admin::AdminRegistry* registry = nullptr;
  kms::audit::AuditLog* audit_log = nullptr;
  const coffer::Clock* clock = nullptr;  // required
  bool mfa_required = true;
  std::chrono::seconds session{300};
  std::chrono::seconds approval_ttl{86400};
  std::chrono::seconds invitation_ttl{86400};
  // A uid's login name for admin rows and audit entries; default getpwuid_r, else "uid-N".
  std::function<std::string(uid_t)> user_name;
  // What a grant change (grant_add, grant_remove: DualControl::kGrantChange) does, for its
  // approval summary, after checking it (an error refuses the request before it is filed):
  // RuntimeGrants::DescribeChange (kms/ops/runtime_grants.h). Unset: the operation's name.
  std::function<absl::StatusOr<std::string>(const coffer::v1::Request&)> grant_change;
};

// What Admit decided: refuse (status not OK, pending unset), file an approval request (status
// APPROVAL_PENDING, pending set), or run as `actor` (status OK).
struct AdminDecision {
  absl::Status status;
  uint32_t retry_after_ms = 0;  // MFA_LOCKED_OUT: until the lock-out ends
  kms::audit::AuditActor actor;
  std::optional<coffer::v1::ApprovalInfo> pending;
};

class AdminControl {
 public:
  // The current description of a dataset by name (for the dual-control rules); NOT_FOUND-like
  // errors let the operation run (it then fails on its own).
  using DatasetLookup =
      std::function<absl::StatusOr<kms::DatasetInfo>(std::string_view dataset_name)>;
  // Runs an approved operation as `actor` (the requester), approved as `approval` says, and
  // returns its response (error included).
  using Executor = std::function<coffer::v1::Response(const coffer::v1::Request& request,
                                                      const kms::audit::AuditActor& actor,
                                                      const kms::AdminApproval& approval)>;

  // INVALID_ARGUMENT when the registry or audit log is missing.
  static absl::StatusOr<std::unique_ptr<AdminControl>> Create(AdminControlOptions options);

  // `connection`: the admin-socket connection the request came on (its MFA session's key).
  AdminDecision Admit(const PeerIdentity& peer, uint64_t connection,
                      const coffer::v1::Request& request, const DatasetLookup& lookup);
  // The connection ended: its MFA session (if any) ends with it.
  void ConnectionClosed(uint64_t connection);
  // Whether `connection` of `uid` has an unexpired MFA session (for tests and status).
  bool HasSession(uid_t uid, uint64_t connection);

  // Whether Serve runs `operation` (admin_enroll, admin_list, admin_remove, approval_*).
  static bool Serves(coffer::v1::Request::OpCase operation);
  // Runs one of those for `peer` as `actor` (from Admit); fills `response`'s result or returns
  // the error to answer.
  absl::Status Serve(const PeerIdentity& peer, const kms::audit::AuditActor& actor,
                     const coffer::v1::Request& request, const Executor& execute,
                     coffer::v1::Response* response);

  bool mfa_required() const { return options_.mfa_required; }
  // The enrolled-admin identity of `uid` for an actor: admin_id = uid + 1 (0 means "not an
  // enrolled admin" in the audit format), admin_name = the enrolled name.
  void Identify(uid_t uid, kms::audit::AuditActor* actor);

 private:
  explicit AdminControl(AdminControlOptions options);

  // Checks `code` for `peer` (auditing it); on success opens an MFA session on `connection`.
  absl::Status VerifyCode(const PeerIdentity& peer, uint64_t connection,
                          const kms::audit::AuditActor& actor, std::string_view code,
                          uint32_t* retry_after_ms);
  // Admit's last step, for a request whose MFA checks passed: refuses removing an admin when
  // that would leave fewer than two, and files a dual-controlled request as an approval request
  // (APPROVAL_PENDING); `decision` is left as it is when the request may run.
  void FileIfDualControlled(const PeerIdentity& peer, const coffer::v1::Request& request,
                            const DatasetLookup& lookup, AdminDecision* decision);
  // The approval summary when `request` is dual-controlled, nullopt when it is not.
  absl::StatusOr<std::optional<std::string>> DualControlSummary(const coffer::v1::Request& request,
                                                                const DatasetLookup& lookup,
                                                                size_t enrolled);
  absl::Status Audit(coffer::kms::audit::v1::EventKind kind, const kms::audit::AuditActor& actor,
                     ErrorCode result, uint32_t count, kms::audit::AuditText detail = {},
                     const std::optional<kms::audit::AuditActor>& approver = std::nullopt);
  // Audit, returning the entry's sequence.
  absl::StatusOr<uint64_t> AuditAt(coffer::kms::audit::v1::EventKind kind,
                                   const kms::audit::AuditActor& actor, ErrorCode result,
                                   uint32_t count, kms::audit::AuditText detail = {},
                                   const std::optional<kms::audit::AuditActor>& approver = {});
  // Audits APPROVAL_EXPIRED for every request past its expiry.
  absl::Status ExpireDue();
  coffer::v1::ApprovalInfo ToProto(const kms::admin::ApprovalRecord& record) const;
  kms::audit::AuditActor RequesterActor(const kms::admin::ApprovalRecord& record) const;
  std::string NameOf(uid_t uid) const;

  absl::Status ServeEnroll(const PeerIdentity& peer, const kms::audit::AuditActor& actor,
                           const coffer::v1::AdminEnrollRequest& request,
                           coffer::v1::Response* response);
  absl::Status ServeDecide(const PeerIdentity& peer, const kms::audit::AuditActor& actor,
                           const coffer::v1::ApprovalDecideRequest& request,
                           const Executor& execute, coffer::v1::Response* response);

  AdminControlOptions options_;
  // MFA sessions by connection: whose, and until when (options_.clock's time).
  struct MfaSession {
    uid_t uid = 0;
    std::chrono::system_clock::time_point expires;
  };
  std::mutex sessions_mu_;
  std::unordered_map<uint64_t, MfaSession> sessions_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_ADMIN_CONTROL_H_
