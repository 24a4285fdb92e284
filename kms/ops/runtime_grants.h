// RuntimeGrants: data-socket grants changed at run time (grant_list, grant_add, grant_remove on
// the admin socket; docs/daemon.md, "Grants"; design brief: "changing a grant at run time needs
// two admins").
//
// A stored grant gives `rights` (the configuration's right names) on one dataset or on every
// dataset ("*") to one principal — a uid, a user, a gid or a group, named as in the
// configuration file. It lives in the key DB (KeyManager::AddGrant: an authenticated row, grants
// format 1), so it survives a restart, and the Authorizer checks the configuration's grants plus
// the stored ones (Authorizer::SetStoredGrants), so a change takes effect for the next request
// and a SIGHUP keeps the stored grants. Rules:
//  - A stored grant names its dataset by handle, never by name (the key DB holds no dataset name
//    in the clear): the dataset must exist when the grant is asked for and when it runs
//    (DATASET_NOT_FOUND otherwise), and the grant follows that dataset: destroyed, it gives
//    nothing, and a new dataset that reuses the name gets nothing from it. "*" is every dataset,
//    present and future.
//  - User and group names are resolved whenever the grants are built (start, SIGHUP, every
//    change), like the configuration's; a name that no longer resolves gives nothing and is
//    shown `unresolved` by grant_list. Asking for a grant to an unknown name is refused.
//  - A grant to an enrolled admin's uid, or to a group an enrolled admin belongs to (primary or
//    supplementary), is refused (FAILED_PRECONDITION) when asked (DescribeChange, before the
//    request is filed for approval) and again when the approved change runs (an admin may have
//    enrolled meanwhile). Enrolling an admin whose uid holds a grant is not refused, as for the
//    configuration's grants: the data socket serves no content to an enrolled admin's uid
//    whatever its grants (Services), and grant_list shows such grants `holder_is_admin`.
//  - Adding and removing are under dual control always (DualControl::kGrantChange): the
//    approval summary (DescribeChange) names the principal, the dataset and the rights. A
//    removal names the grant by its id (grant_list); ids are never reused, so an approval
//    cannot remove a grant added after it was filed.
//  - Each change that runs is audited as ADMIN_REQUEST, REQUESTED before it is stored (no entry,
//    no change) and COMPLETED with its result, with the requester as actor, the second admin as
//    approver, the dataset's handle (0 for "*"), the principal's uid or gid in
//    record_count and a fixed text naming the change, the principal's kind, the rights and the
//    scope ("grant_add uid READ,WRITE on the dataset"); never a dataset or user name.
//
// Thread safety: every method may be called from any thread; changes are serialised. Ownership:
// every pointer in RuntimeGrantsDeps is borrowed and must outlive the RuntimeGrants.
// Failures: the key DB's and the audit log's errors as they are; the refusals above.

#ifndef COFFER_KMS_OPS_RUNTIME_GRANTS_H_
#define COFFER_KMS_OPS_RUNTIME_GRANTS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/admin/admin_registry.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/key_manager_types.h"
#include "kms/ops/authz.h"

namespace coffer::daemon {

struct RuntimeGrantsDeps {
  kms::KeyManager* keys = nullptr;
  Authorizer* authorizer = nullptr;
  kms::admin::AdminRegistry* registry = nullptr;  // the enrolled admins
  kms::audit::AuditLog* audit_log = nullptr;
  NameResolver resolver = SystemNameResolver();
  // Whether `uid` belongs to group `gid` (its primary group or a supplementary one). Default:
  // getpwuid_r and getgrouplist.
  std::function<bool(uid_t uid, gid_t gid)> in_group;
};

class RuntimeGrants {
 public:
  // Reads the stored grants and installs them in the authorizer. INVALID_ARGUMENT for a missing
  // dependency.
  static absl::StatusOr<std::unique_ptr<RuntimeGrants>> Create(RuntimeGrantsDeps deps);
  RuntimeGrants(const RuntimeGrants&) = delete;
  RuntimeGrants& operator=(const RuntimeGrants&) = delete;

  // Reads the stored grants again, resolves their names and installs them (SIGHUP).
  absl::Status Refresh();

  // Checks a grant_add or grant_remove as it would run now and says what it does, for the
  // approval summary ("grant add user crm (uid 1001): READ, WRITE on dataset crm"). The refusals
  // of the header comment.
  absl::StatusOr<std::string> DescribeChange(const coffer::v1::Request& request);

  // Runs grant_list, grant_add or grant_remove as `actor`, approved as `approval` says (unset in
  // development mode), filling `response`.
  absl::Status Serve(const coffer::v1::Request& request, const kms::audit::AuditActor& actor,
                     const std::optional<kms::AdminApproval>& approval,
                     coffer::v1::Response* response);

 private:
  explicit RuntimeGrants(RuntimeGrantsDeps deps);

  // A grant_add checked: the row it stores (no id yet) and its description.
  struct CheckedAdd {
    kms::v1::GrantRow row;
    std::string description;
  };
  absl::StatusOr<CheckedAdd> CheckAdd(const coffer::v1::GrantAddRequest& request);
  // FAILED_PRECONDITION when the row's principal is or holds an enrolled admin.
  absl::Status RefuseAdmins(const kms::v1::GrantRow& row);
  // "user crm (uid 1001): READ, WRITE on dataset crm".
  std::string Describe(const kms::v1::GrantRow& row) const;
  coffer::v1::GrantInfo StoredInfo(const kms::v1::GrantRow& row) const;
  absl::Status List(coffer::v1::GrantListResponse* out);
  absl::Status AuditChange(bool add, const kms::v1::GrantRow& row,
                           const kms::audit::AuditActor& actor,
                           const std::optional<kms::AdminApproval>& approval,
                           kms::audit::v1::Stage stage, ErrorCode result);

  RuntimeGrantsDeps deps_;
  std::mutex change_mu_;   // one change (check, store, install) at a time
  std::mutex refresh_mu_;  // one Refresh at a time (taken after change_mu_, never before)
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_RUNTIME_GRANTS_H_
