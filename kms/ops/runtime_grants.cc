#include "kms/ops/runtime_grants.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/base/status.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using kms::v1::GrantRow;

// ---- The audit texts: one fixed text per change, principal kind, scope and set of rights. ----
// The audit log takes only compile-time texts (audit::AuditText), so every text a grant change
// can need is made here at compile time: "grant_add uid READ,WRITE on the dataset".

constexpr std::string_view kRightNames[] = {"READ",     "WRITE",        "DELETE",
                                            "METADATA", "PSEUDONYMIZE", "REIDENTIFY"};
constexpr size_t kRightCount = std::size(kRightNames);
constexpr size_t kMaskCount = size_t{1} << kRightCount;
constexpr size_t kAuditTextCount = 2 * 2 * 2 * kMaskCount;  // change, principal kind, scope, rights

constexpr size_t AuditTextIndex(bool remove, bool group, bool every, uint32_t mask) {
  return ((((remove ? 1u : 0u) * 2 + (group ? 1u : 0u)) * 2 + (every ? 1u : 0u)) * kMaskCount) +
         (mask & (kMaskCount - 1));
}

struct AuditTextBuffer {
  std::array<char, 112> chars{};
};

consteval std::array<AuditTextBuffer, kAuditTextCount> MakeAuditTextBuffers() {
  std::array<AuditTextBuffer, kAuditTextCount> buffers{};
  for (int remove = 0; remove < 2; ++remove) {
    for (int group = 0; group < 2; ++group) {
      for (int every = 0; every < 2; ++every) {
        for (uint32_t mask = 0; mask < kMaskCount; ++mask) {
          auto& out = buffers[AuditTextIndex(remove != 0, group != 0, every != 0, mask)].chars;
          size_t at = 0;
          auto append = [&](std::string_view text) {
            for (char c : text) out[at++] = c;
          };
          append(remove != 0 ? audit::kGrantRemoveDetailPrefix : audit::kGrantAddDetailPrefix);
          append(group != 0 ? "gid " : "uid ");
          bool first = true;
          for (size_t r = 0; r < kRightCount; ++r) {
            if ((mask & (1u << r)) == 0) continue;
            if (!first) append(",");
            append(kRightNames[r]);
            first = false;
          }
          append(every != 0 ? " on every dataset" : " on the dataset");
        }
      }
    }
  }
  return buffers;
}

constexpr std::array<AuditTextBuffer, kAuditTextCount> kAuditTextBuffers = MakeAuditTextBuffers();

consteval std::array<audit::AuditText, kAuditTextCount> MakeAuditTexts() {
  std::array<audit::AuditText, kAuditTextCount> texts{};
  for (size_t i = 0; i < kAuditTextCount; ++i) {
    texts[i] = audit::AuditText(kAuditTextBuffers[i].chars.data());
  }
  return texts;
}

constexpr std::array<audit::AuditText, kAuditTextCount> kAuditTexts = MakeAuditTexts();

// ---- Principals and rights ----

bool SystemInGroup(uid_t uid, gid_t gid) {
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || found == nullptr) {
    return false;
  }
  if (found->pw_gid == gid) return true;
  int count = 64;
  std::vector<gid_t> groups(static_cast<size_t>(count));
  if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) {
    groups.resize(static_cast<size_t>(count));
    if (getgrouplist(found->pw_name, found->pw_gid, groups.data(), &count) < 0) return false;
  }
  groups.resize(static_cast<size_t>(count));
  return std::find(groups.begin(), groups.end(), gid) != groups.end();
}

bool IsGroupPrincipal(const GrantRow& row) {
  return row.principal_case() == GrantRow::kGid || row.principal_case() == GrantRow::kGroup;
}

// The Right bits of a row's right numbers, and the audit mask (bit n-1 for right n).
uint32_t RightsMask(const GrantRow& row) {
  uint32_t mask = 0;
  for (uint32_t right : row.rights()) {
    if (right >= 1 && right <= kRightCount) mask |= 1u << (right - 1);
  }
  return mask;
}

std::string RightsText(const GrantRow& row) {
  std::vector<std::string> names;
  const uint32_t mask = RightsMask(row);
  for (size_t r = 0; r < kRightCount; ++r) {
    if ((mask & (1u << r)) != 0) names.emplace_back(kRightNames[r]);
  }
  return absl::StrJoin(names, ", ");
}

void CopyPrincipal(const GrantRow& row, pb::GrantPrincipal* out) {
  switch (row.principal_case()) {
    case GrantRow::kUid:
      out->set_uid(row.uid());
      break;
    case GrantRow::kUser:
      out->set_user(row.user());
      break;
    case GrantRow::kGid:
      out->set_gid(row.gid());
      break;
    case GrantRow::kGroup:
      out->set_group(row.group());
      break;
    case GrantRow::PRINCIPAL_NOT_SET:
      break;
  }
}

void CopyPrincipal(const ::coffer::daemon::v1::Principal& principal, pb::GrantPrincipal* out) {
  using P = ::coffer::daemon::v1::Principal;
  switch (principal.who_case()) {
    case P::kUid:
      out->set_uid(principal.uid());
      break;
    case P::kUser:
      out->set_user(principal.user());
      break;
    case P::kGid:
      out->set_gid(principal.gid());
      break;
    case P::kGroup:
      out->set_group(principal.group());
      break;
    case P::WHO_NOT_SET:
      break;
  }
}

// Same principal, dataset and rights (as sets).
bool SameGrant(const GrantRow& a, const GrantRow& b) {
  return a.principal_case() == b.principal_case() && a.uid() == b.uid() && a.user() == b.user() &&
         a.gid() == b.gid() && a.group() == b.group() && a.every_dataset() == b.every_dataset() &&
         a.dataset_handle() == b.dataset_handle() && RightsMask(a) == RightsMask(b);
}

absl::Status Refused(ErrorCode code, std::string message) {
  return MakeError(code, std::move(message));
}

}  // namespace

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<RuntimeGrants>> RuntimeGrants::Create(RuntimeGrantsDeps deps) {
  if (deps.keys == nullptr || deps.authorizer == nullptr || deps.registry == nullptr ||
      deps.audit_log == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "run-time grants need the key manager, authorizer, admin registry and audit "
                     "log");
  }
  if (!deps.in_group) deps.in_group = SystemInGroup;
  std::unique_ptr<RuntimeGrants> grants(new RuntimeGrants(std::move(deps)));
  COFFER_RETURN_IF_ERROR(grants->Refresh());
  return grants;
}

RuntimeGrants::RuntimeGrants(RuntimeGrantsDeps deps) : deps_(std::move(deps)) {}

absl::Status RuntimeGrants::Refresh() {
  // One read-and-install at a time, so that an older read never replaces a newer one (a change
  // and a SIGHUP at once).
  std::lock_guard<std::mutex> lock(refresh_mu_);
  COFFER_ASSIGN_OR_RETURN(std::vector<GrantRow> rows, deps_.keys->StoredGrants());
  std::vector<StoredGrantEntry> entries;
  for (const GrantRow& row : rows) {
    StoredGrantEntry entry;
    switch (row.principal_case()) {
      case GrantRow::kUid:
        entry.uids.push_back(row.uid());
        break;
      case GrantRow::kUser: {
        std::optional<uid_t> uid = deps_.resolver.user(row.user());
        if (!uid) continue;  // gives nothing until the name resolves again
        entry.uids.push_back(*uid);
        break;
      }
      case GrantRow::kGid:
        entry.gids.push_back(row.gid());
        break;
      case GrantRow::kGroup: {
        std::optional<gid_t> gid = deps_.resolver.group(row.group());
        if (!gid) continue;
        entry.gids.push_back(*gid);
        break;
      }
      case GrantRow::PRINCIPAL_NOT_SET:
        continue;
    }
    if (row.every_dataset()) {
      entry.dataset.assign(1, '*');  // not = "*": GCC 12 at -O3 misreports it under -Wrestrict
    } else {
      absl::StatusOr<kms::DatasetInfo> info = deps_.keys->DescribeDataset(row.dataset_handle());
      if (!info.ok() || info->state == kms::DatasetState::kDestroyed || info->name.empty()) {
        continue;  // its dataset is gone: the grant gives nothing
      }
      entry.dataset = info->name;
      entry.handle = row.dataset_handle();
    }
    for (uint32_t right : row.rights()) entry.rights |= RightBitOf(static_cast<int>(right));
    entries.push_back(std::move(entry));
  }
  kms::KeyManager* keys = deps_.keys;
  deps_.authorizer->SetStoredGrants(std::move(entries),
                                    [keys](std::string_view name, uint64_t handle) {
                                      absl::StatusOr<uint64_t> found = keys->FindDataset(name);
                                      return found.ok() && *found == handle;
                                    });
  return absl::OkStatus();
}

absl::Status RuntimeGrants::RefuseAdmins(const GrantRow& row) {
  switch (row.principal_case()) {
    case GrantRow::kUid:
    case GrantRow::kUser: {
      uid_t uid = row.uid();
      if (row.principal_case() == GrantRow::kUser) {
        std::optional<uid_t> resolved = deps_.resolver.user(row.user());
        if (!resolved) {
          return Refused(ErrorCode::kInvalidArgument, "principal: no such user on this system");
        }
        uid = *resolved;
      }
      if (deps_.registry->IsEnrolled(uid)) {
        return Refused(ErrorCode::kFailedPrecondition,
                       absl::StrCat("uid ", uid,
                                    " is an enrolled admin, and an admin gets no record, "
                                    "attachment or pseudonym content: a grant to it is refused"));
      }
      return absl::OkStatus();
    }
    case GrantRow::kGid:
    case GrantRow::kGroup: {
      gid_t gid = row.gid();
      if (row.principal_case() == GrantRow::kGroup) {
        std::optional<gid_t> resolved = deps_.resolver.group(row.group());
        if (!resolved) {
          return Refused(ErrorCode::kInvalidArgument, "principal: no such group on this system");
        }
        gid = *resolved;
      }
      COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::AdminRecord> admins,
                              deps_.registry->ListAdmins());
      for (const kms::admin::AdminRecord& admin : admins) {
        if (deps_.in_group(admin.uid, gid)) {
          return Refused(ErrorCode::kFailedPrecondition,
                         absl::StrCat("enrolled admin uid ", admin.uid, " belongs to group ", gid,
                                      ", and an admin gets no record, attachment or pseudonym "
                                      "content: a grant to the group is refused"));
        }
      }
      return absl::OkStatus();
    }
    case GrantRow::PRINCIPAL_NOT_SET:
      break;
  }
  return Refused(ErrorCode::kInvalidArgument, "principal: set one of uid, user, gid or group");
}

absl::StatusOr<RuntimeGrants::CheckedAdd> RuntimeGrants::CheckAdd(const pb::GrantAddRequest& r) {
  CheckedAdd checked;
  GrantRow& row = checked.row;
  switch (r.principal().who_case()) {
    case pb::GrantPrincipal::kUid:
      row.set_uid(r.principal().uid());
      break;
    case pb::GrantPrincipal::kUser:
      if (r.principal().user().empty()) {
        return Refused(ErrorCode::kInvalidArgument, "principal: empty user name");
      }
      row.set_user(r.principal().user());
      break;
    case pb::GrantPrincipal::kGid:
      row.set_gid(r.principal().gid());
      break;
    case pb::GrantPrincipal::kGroup:
      if (r.principal().group().empty()) {
        return Refused(ErrorCode::kInvalidArgument, "principal: empty group name");
      }
      row.set_group(r.principal().group());
      break;
    case pb::GrantPrincipal::WHO_NOT_SET:
      return Refused(ErrorCode::kInvalidArgument, "principal: set one of uid, user, gid or group");
  }
  if (r.rights_size() == 0) {
    return Refused(ErrorCode::kInvalidArgument,
                   "rights: name at least one of READ, WRITE, DELETE, METADATA, PSEUDONYMIZE, "
                   "REIDENTIFY");
  }
  for (int right : r.rights()) {
    if (right == pb::GrantInfo::RIGHT_UNSPECIFIED || !pb::GrantInfo::Right_IsValid(right)) {
      return Refused(ErrorCode::kInvalidArgument,
                     "rights: each must be READ, WRITE, DELETE, METADATA, PSEUDONYMIZE or "
                     "REIDENTIFY");
    }
    bool seen = false;
    for (uint32_t have : row.rights()) seen = seen || have == static_cast<uint32_t>(right);
    if (!seen) row.add_rights(static_cast<uint32_t>(right));
  }
  if (r.dataset().empty()) {
    return Refused(ErrorCode::kInvalidArgument, "dataset: name a dataset, or \"*\" for every one");
  }
  if (r.dataset() == "*") {
    row.set_every_dataset(true);
  } else {
    absl::StatusOr<uint64_t> handle = deps_.keys->FindDataset(r.dataset());
    if (!handle.ok()) {
      return Refused(ErrorCode::kDatasetNotFound,
                     "dataset: no dataset with that name; a run-time grant names an existing "
                     "dataset (or \"*\")");
    }
    row.set_dataset_handle(*handle);
  }
  COFFER_RETURN_IF_ERROR(RefuseAdmins(row));
  COFFER_ASSIGN_OR_RETURN(std::vector<GrantRow> stored, deps_.keys->StoredGrants());
  for (const GrantRow& other : stored) {
    if (SameGrant(other, row)) {
      return Refused(ErrorCode::kAlreadyExists,
                     absl::StrCat("stored grant ", other.id(),
                                  " already gives these rights on this dataset to this "
                                  "principal"));
    }
  }
  checked.description = "grant add " + Describe(row);
  return checked;
}

std::string RuntimeGrants::Describe(const GrantRow& row) const {
  std::string who;
  switch (row.principal_case()) {
    case GrantRow::kUid:
      who = absl::StrCat("uid ", row.uid());
      break;
    case GrantRow::kUser: {
      std::optional<uid_t> uid = deps_.resolver.user(row.user());
      who = absl::StrCat("user ", row.user(),
                         uid ? absl::StrCat(" (uid ", *uid, ")") : std::string(" (unresolved)"));
      break;
    }
    case GrantRow::kGid:
      who = absl::StrCat("gid ", row.gid());
      break;
    case GrantRow::kGroup: {
      std::optional<gid_t> gid = deps_.resolver.group(row.group());
      who = absl::StrCat("group ", row.group(),
                         gid ? absl::StrCat(" (gid ", *gid, ")") : std::string(" (unresolved)"));
      break;
    }
    case GrantRow::PRINCIPAL_NOT_SET:
      who = "nobody";
      break;
  }
  std::string where = "every dataset (*)";
  if (!row.every_dataset()) {
    absl::StatusOr<kms::DatasetInfo> info = deps_.keys->DescribeDataset(row.dataset_handle());
    where = info.ok() && !info->name.empty()
                ? absl::StrCat("dataset ", info->name)
                : absl::StrCat("destroyed dataset (handle ", row.dataset_handle(), ")");
  }
  return absl::StrCat(who, ": ", RightsText(row), " on ", where);
}

absl::StatusOr<std::string> RuntimeGrants::DescribeChange(const pb::Request& request) {
  if (request.has_grant_add()) {
    COFFER_ASSIGN_OR_RETURN(CheckedAdd checked, CheckAdd(request.grant_add()));
    return checked.description;
  }
  if (request.has_grant_remove()) {
    COFFER_ASSIGN_OR_RETURN(std::vector<GrantRow> rows, deps_.keys->StoredGrants());
    for (const GrantRow& row : rows) {
      if (row.id() == request.grant_remove().id()) {
        return absl::StrCat("grant remove ", row.id(), ": ", Describe(row));
      }
    }
    return Refused(ErrorCode::kNotFound,
                   "no stored grant with that id (keyctl grant list shows them; grants of the "
                   "configuration file are removed from the file)");
  }
  return MakeError(ErrorCode::kMalformedRequest, "not a grant change");
}

pb::GrantInfo RuntimeGrants::StoredInfo(const GrantRow& row) const {
  pb::GrantInfo info;
  info.set_origin(pb::GrantInfo::STORED);
  info.set_id(row.id());
  CopyPrincipal(row, info.add_principals());
  for (uint32_t right : row.rights()) info.add_rights(static_cast<pb::GrantInfo::Right>(right));
  if (row.every_dataset()) {
    info.add_datasets(std::string(1, '*'));  // see Refresh
  } else {
    info.set_dataset_handle(row.dataset_handle());
    absl::StatusOr<kms::DatasetInfo> dataset = deps_.keys->DescribeDataset(row.dataset_handle());
    if (dataset.ok() && dataset->state != kms::DatasetState::kDestroyed && !dataset->name.empty()) {
      info.add_datasets(dataset->name);
    } else {
      info.set_dataset_destroyed(true);
    }
  }
  std::optional<uid_t> uid;
  switch (row.principal_case()) {
    case GrantRow::kUid:
      uid = row.uid();
      break;
    case GrantRow::kUser:
      uid = deps_.resolver.user(row.user());
      info.set_unresolved(!uid.has_value());
      break;
    case GrantRow::kGroup:
      info.set_unresolved(!deps_.resolver.group(row.group()).has_value());
      break;
    default:
      break;
  }
  info.set_holder_is_admin(uid.has_value() && deps_.registry->IsEnrolled(*uid));
  info.set_created_micros(row.created_micros());
  info.set_requested_by_uid(row.requested_by().uid());
  info.set_requested_by_name(row.requested_by().admin_name());
  if (row.has_approval()) {
    info.set_approved_by_uid(row.approval().approver().uid());
    info.set_approved_by_name(row.approval().approver().admin_name());
    info.set_approval_id(row.approval().request_id());
  }
  return info;
}

absl::Status RuntimeGrants::List(pb::GrantListResponse* out) {
  std::shared_ptr<const GrantTable> table = deps_.authorizer->table();
  int index = 0;
  for (const ::coffer::daemon::v1::Grant& grant : table->config_grants()) {
    pb::GrantInfo* info = out->add_grants();
    info->set_origin(pb::GrantInfo::CONFIG);
    info->set_config_index(static_cast<uint32_t>(index++));
    bool admin = false;
    for (const auto& principal : grant.principals()) {
      CopyPrincipal(principal, info->add_principals());
      std::optional<uid_t> uid;
      if (principal.has_uid()) uid = principal.uid();
      if (principal.has_user()) uid = deps_.resolver.user(principal.user());
      admin = admin || (uid.has_value() && deps_.registry->IsEnrolled(*uid));
    }
    info->set_holder_is_admin(admin);
    for (const std::string& dataset : grant.datasets()) info->add_datasets(dataset);
    for (int right : grant.rights()) info->add_rights(static_cast<pb::GrantInfo::Right>(right));
  }
  COFFER_ASSIGN_OR_RETURN(std::vector<GrantRow> rows, deps_.keys->StoredGrants());
  for (const GrantRow& row : rows) *out->add_grants() = StoredInfo(row);
  return absl::OkStatus();
}

absl::Status RuntimeGrants::AuditChange(bool add, const GrantRow& row,
                                        const audit::AuditActor& actor,
                                        const std::optional<kms::AdminApproval>& approval,
                                        audit::v1::Stage stage, ErrorCode result) {
  audit::AuditEvent event;
  event.kind = audit::v1::ADMIN_REQUEST;
  event.actor = actor;
  if (approval.has_value()) event.approver = approval->approver;
  event.dataset_handle = row.every_dataset() ? 0 : row.dataset_handle();
  event.result = result;
  event.stage = stage;
  const bool group = IsGroupPrincipal(row);
  std::optional<uint32_t> id;
  if (row.principal_case() == GrantRow::kUid) id = row.uid();
  if (row.principal_case() == GrantRow::kGid) id = row.gid();
  if (row.principal_case() == GrantRow::kUser) id = deps_.resolver.user(row.user());
  if (row.principal_case() == GrantRow::kGroup) id = deps_.resolver.group(row.group());
  event.record_count = id.value_or(UINT32_MAX);
  event.detail = kAuditTexts[AuditTextIndex(!add, group, row.every_dataset(), RightsMask(row))];
  return deps_.audit_log->Append(event).status();
}

absl::Status RuntimeGrants::Serve(const pb::Request& request, const audit::AuditActor& actor,
                                  const std::optional<kms::AdminApproval>& approval,
                                  pb::Response* response) {
  switch (request.op_case()) {
    case pb::Request::kGrantList:
      return List(response->mutable_grant_list());

    case pb::Request::kGrantAdd: {
      std::lock_guard<std::mutex> lock(change_mu_);
      // Checked again as it runs: an admin may have enrolled, a dataset gone, since it was filed.
      COFFER_ASSIGN_OR_RETURN(CheckedAdd checked, CheckAdd(request.grant_add()));
      GrantRow& row = checked.row;
      *row.mutable_requested_by() = kms::v1::Actor();
      row.mutable_requested_by()->set_uid(actor.uid);
      row.mutable_requested_by()->set_pid(actor.pid);
      row.mutable_requested_by()->set_admin_id(actor.admin_id);
      row.mutable_requested_by()->set_admin_name(actor.admin_name);
      row.mutable_requested_by()->set_socket(static_cast<int32_t>(actor.socket));
      if (approval.has_value()) {
        auto* stored = row.mutable_approval();
        stored->mutable_approver()->set_uid(approval->approver.uid);
        stored->mutable_approver()->set_pid(approval->approver.pid);
        stored->mutable_approver()->set_admin_id(approval->approver.admin_id);
        stored->mutable_approver()->set_admin_name(approval->approver.admin_name);
        stored->mutable_approver()->set_socket(static_cast<int32_t>(approval->approver.socket));
        stored->set_request_id(approval->request_id);
        stored->set_audit_sequence(approval->audit_sequence);
      }
      // Fail closed: no grant is stored unless its entry is durable first.
      COFFER_RETURN_IF_ERROR(
          AuditChange(true, row, actor, approval, audit::v1::STAGE_REQUESTED, ErrorCode::kOk));
      absl::StatusOr<GrantRow> added = deps_.keys->AddGrant(row);
      COFFER_RETURN_IF_ERROR(
          AuditChange(true, row, actor, approval, audit::v1::STAGE_COMPLETED,
                      added.ok() ? ErrorCode::kOk : ErrorCodeOf(added.status())));
      if (!added.ok()) return added.status();
      COFFER_RETURN_IF_ERROR(Refresh());
      *response->mutable_grant_add()->mutable_grant() = StoredInfo(*added);
      return absl::OkStatus();
    }

    case pb::Request::kGrantRemove: {
      std::lock_guard<std::mutex> lock(change_mu_);
      const uint64_t id = request.grant_remove().id();
      COFFER_ASSIGN_OR_RETURN(std::vector<GrantRow> rows, deps_.keys->StoredGrants());
      auto it = std::find_if(rows.begin(), rows.end(),
                             [id](const GrantRow& row) { return row.id() == id; });
      if (it == rows.end()) {
        return Refused(ErrorCode::kNotFound,
                       "no stored grant with that id (keyctl grant list shows them)");
      }
      COFFER_RETURN_IF_ERROR(
          AuditChange(false, *it, actor, approval, audit::v1::STAGE_REQUESTED, ErrorCode::kOk));
      absl::StatusOr<GrantRow> removed_or = deps_.keys->RemoveGrant(id);
      // Installed before the completion entry: the cut does not wait on the audit log.
      absl::Status refreshed = removed_or.ok() ? Refresh() : absl::OkStatus();
      COFFER_RETURN_IF_ERROR(
          AuditChange(false, *it, actor, approval, audit::v1::STAGE_COMPLETED,
                      removed_or.ok() ? ErrorCode::kOk : ErrorCodeOf(removed_or.status())));
      if (!removed_or.ok()) return removed_or.status();
      COFFER_RETURN_IF_ERROR(refreshed);
      const GrantRow& removed = *removed_or;
      pb::GrantInfo info = StoredInfo(removed);
      *response->mutable_grant_remove()->mutable_grant() = std::move(info);
      return absl::OkStatus();
    }

    default:
      return MakeError(ErrorCode::kMalformedRequest, "not a grant operation");
  }
}

}  // namespace coffer::daemon
