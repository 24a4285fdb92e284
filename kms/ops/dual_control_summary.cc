// AdminControl::DualControlSummary: what a second admin is shown before approving an operation
// under dual control, per the operation table's dual-control rule (kms/ops/operation_table.h).

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "crypto/base/status.h"
#include "crypto/recipient_wrap.h"
#include "kms/audit/audit_format.h"
#include "kms/ops/admin_control.h"
#include "kms/ops/operation_table.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;

// "none" for 0, else the largest whole unit.
std::string Duration(int64_t seconds, std::string_view zero = "none") {
  if (seconds == 0) return std::string(zero);
  if (seconds % 86400 == 0) return absl::StrCat(seconds / 86400, "d");
  if (seconds % 3600 == 0) return absl::StrCat(seconds / 3600, "h");
  if (seconds % 60 == 0) return absl::StrCat(seconds / 60, "m");
  return absl::StrCat(seconds, "s");
}

// A limit where 0 means "none" (no maximum age, no automation) shortens when it goes from none
// to some value, or down.
bool ShortensOptionalLimit(int64_t current, int64_t next) {
  return next != 0 && (current == 0 || next < current);
}

using Summary = absl::StatusOr<std::optional<std::string>>;

// Nothing to show: the request does not need a second admin.
Summary NoSummary() { return std::optional<std::string>(); }

Summary Show(std::string text) { return std::optional<std::string>(std::move(text)); }

// The dataset's description, or nothing when the name does not resolve (the operation then fails on
// its own, with its own error, when it runs).
absl::StatusOr<std::optional<kms::DatasetInfo>> DescribeIfExists(
    const AdminControl::DatasetLookup& lookup, std::string_view name) {
  auto info = lookup(name);
  if (info.ok()) return std::optional<kms::DatasetInfo>(std::move(*info));
  ErrorCode code = ErrorCodeOf(info.status());
  if (code == ErrorCode::kDatasetNotFound || code == ErrorCode::kDatasetNameInvalid) {
    return std::optional<kms::DatasetInfo>();
  }
  return info.status();
}

// A caller-chosen name shown quoted, escaped and cut at 64 bytes.
std::string Quoted(const std::string& name) {
  return absl::StrCat("\"", absl::CHexEscape(name.substr(0, 64)),
                      name.size() > 64 ? "...\"" : "\"");
}

Summary PurgeSummary(const pb::PurgeRequest& r) {
  std::string what;
  switch (r.target_case()) {
    case pb::PurgeRequest::kRecordId:
      what = absl::StrCat("record ", Quoted(r.record_id()));
      break;
    case pb::PurgeRequest::kAttachmentName:
      what = absl::StrCat("attachment ", Quoted(r.attachment_name()));
      break;
    case pb::PurgeRequest::kDamagedRef:
      what = absl::StrCat("damaged item ", Quoted(r.damaged_ref()));
      break;
    case pb::PurgeRequest::TARGET_NOT_SET:
      what = "every item in the recycle bin";
      break;
  }
  return Show(absl::StrCat("purge ", r.dataset(), ": ", what, " deleted physically, at once"));
}

// Each change of `next` that weakens `current`, as "field old -> new".
std::vector<std::string> Weakenings(const kms::DatasetPolicy& current, const pb::Policy& next) {
  std::vector<std::string> changes;
  auto change = [&](const char* field, const std::string& from, const std::string& to) {
    changes.push_back(absl::StrCat(field, " ", from, " -> ", to));
  };
  if (next.has_records_rotation_seconds() &&
      next.records_rotation_seconds() > current.records_rotation.count()) {
    change("records_rotation", Duration(current.records_rotation.count()),
           Duration(next.records_rotation_seconds()));
  }
  if (next.has_attachments_rotation_seconds() &&
      next.attachments_rotation_seconds() > current.attachments_rotation.count()) {
    change("attachments_rotation", Duration(current.attachments_rotation.count()),
           Duration(next.attachments_rotation_seconds()));
  }
  if (next.has_usage_limit() && next.usage_limit() > current.usage_limit) {
    change("usage_limit", absl::StrCat(current.usage_limit), absl::StrCat(next.usage_limit()));
  }
  if (next.has_bin_days() && next.bin_days() < current.bin_days) {
    change("bin_days", absl::StrCat(current.bin_days), absl::StrCat(next.bin_days()));
  }
  if (next.has_retention_max_age_seconds() &&
      ShortensOptionalLimit(current.retention_max_age.count(), next.retention_max_age_seconds())) {
    change("retention_max_age", Duration(current.retention_max_age.count()),
           Duration(next.retention_max_age_seconds()));
  }
  if (next.has_minimum_retention_seconds() &&
      next.minimum_retention_seconds() < current.minimum_retention.count()) {
    change("minimum_retention", Duration(current.minimum_retention.count()),
           Duration(next.minimum_retention_seconds()));
  }
  if (next.has_destruction_wait_seconds() &&
      next.destruction_wait_seconds() < current.destruction_wait.count()) {
    change("destruction_wait", Duration(current.destruction_wait.count(), "0s"),
           Duration(next.destruction_wait_seconds(), "0s"));
  }
  if (next.has_auto_destroy_after_disabled_seconds() &&
      ShortensOptionalLimit(current.auto_destroy_after_disabled.count(),
                            next.auto_destroy_after_disabled_seconds())) {
    change("auto_destroy_after_disabled", Duration(current.auto_destroy_after_disabled.count()),
           Duration(next.auto_destroy_after_disabled_seconds()));
  }
  // Re-encryption: only a change known to tighten is one admin's, from the dataset's own N (or 0,
  // off) to a smaller N ≥ 1. From no value of its own the daemon's setting applies, which this
  // summary does not know, so any value set then, a clear, 0 or a larger N needs a second admin.
  if (next.has_reencrypt_versions_back()) {
    const std::optional<uint32_t>& was = current.reencrypt_versions_back;
    const int32_t to = next.reencrypt_versions_back();
    const bool tightens =
        to >= 1 && was.has_value() && (*was == 0 || static_cast<uint32_t>(to) < *was);
    const bool same = was.has_value() ? to == static_cast<int32_t>(*was) : to == -1;
    auto text = [](std::optional<int64_t> n) {
      if (!n.has_value() || *n < 0) return std::string("daemon");
      return *n == 0 ? std::string("off") : absl::StrCat(*n);
    };
    if (!tightens && !same) {
      change("reencrypt_versions_back",
             text(was.has_value() ? std::optional<int64_t>(*was) : std::nullopt), text(to));
    }
  }
  return changes;
}

Summary WeakenPolicySummary(const pb::PolicySetRequest& r,
                            const AdminControl::DatasetLookup& lookup) {
  COFFER_ASSIGN_OR_RETURN(std::optional<kms::DatasetInfo> info,
                          DescribeIfExists(lookup, r.dataset()));
  if (!info.has_value()) return NoSummary();
  std::vector<std::string> changes = Weakenings(info->policy, r.policy());
  if (changes.empty()) return NoSummary();
  return Show(absl::StrCat("policy set ", r.dataset(), ": ", absl::StrJoin(changes, ", ")));
}

Summary ClearHoldSummary(const pb::HoldSetRequest& r, const AdminControl::DatasetLookup& lookup) {
  if (r.hold()) return NoSummary();
  COFFER_ASSIGN_OR_RETURN(std::optional<kms::DatasetInfo> info,
                          DescribeIfExists(lookup, r.dataset()));
  if (!info.has_value() || !info->policy.legal_hold) return NoSummary();
  return Show(absl::StrCat("hold clear ", r.dataset()));
}

Summary FileExportSummary(const pb::DatasetExportRequest& r,
                          const AdminControl::DatasetLookup& lookup) {
  if (r.approval_id() != 0) return NoSummary();  // a redemption
  // Refused before filing: a recipient key or a state that could never export.
  COFFER_ASSIGN_OR_RETURN(crypto::RecipientPublicKey recipient,
                          crypto::RecipientPublicKey::FromPem(r.recipient_public_key_pem()));
  COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, lookup(r.dataset()));  // must exist
  if (info.state != kms::DatasetState::kDisabled &&
      info.state != kms::DatasetState::kPendingDestruction) {
    return MakeError(ErrorCode::kDatasetStateForbids,
                     absl::StrCat("dataset ", r.dataset(), " is ",
                                  std::string(kms::DatasetStateName(info.state)),
                                  ": only a DISABLED or PENDING_DESTRUCTION dataset can be "
                                  "exported"));
  }
  return Show(absl::StrCat("dataset export ", r.dataset(), " to ", recipient.description(),
                           " key SHA256:", kms::audit::ToHex(recipient.fingerprint()),
                           "; the requester then redeems it with --approval ID"));
}

}  // namespace

absl::StatusOr<std::optional<std::string>> AdminControl::DualControlSummary(
    const pb::Request& request, const DatasetLookup& lookup, size_t enrolled) {
  const OperationRow* row = OperationTable::Default().Find(request.op_case());
  if (row == nullptr) return NoOperationRow();
  switch (row->dual_control) {
    case DualControl::kNever:
      return NoSummary();
    case DualControl::kInviteAfterBootstrap: {
      const auto& r = request.admin_enroll();
      if (!r.has_uid()) return NoSummary();  // a claim
      if (enrolled < 2) return NoSummary();  // bootstrap: the second admin
      return Show(absl::StrCat("admin enroll: invite uid ", r.uid(), " (", NameOf(r.uid()), ")"));
    }
    case DualControl::kAlways:
      if (request.has_key_retire()) {
        const auto& r = request.key_retire();
        return Show(absl::StrCat("key retire ", r.dataset(), ": ", pb::Purpose_Name(r.purpose()),
                                 " versions below ", r.below(),
                                 r.translate_done() ? " (translate run confirmed done)" : ""));
      }
      if (request.has_admin_remove()) {
        uid_t uid = request.admin_remove().uid();
        return Show(absl::StrCat("admin remove: uid ", uid, " (", NameOf(uid), ")"));
      }
      return Show(std::string(OperationName(request.op_case()).view()));
    case DualControl::kScheduleDestruction:
      if (request.dataset_lifecycle().action() !=
          pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION) {
        return NoSummary();
      }
      return Show(absl::StrCat("dataset destroy ", request.dataset_lifecycle().name(),
                               ": schedule destruction after the waiting period"));
    case DualControl::kDestroyOldWrapping:
      if (!request.key_rewrap().destroy_old()) return NoSummary();
      return Show(absl::StrCat("key rewrap ", request.key_rewrap().dataset(),
                               " --destroy-old: old wrapping keys destroyed"));
    case DualControl::kClearHold:
      return ClearHoldSummary(request.hold_set(), lookup);
    case DualControl::kPurge:
      return PurgeSummary(request.purge());
    case DualControl::kWeakenPolicy:
      return WeakenPolicySummary(request.policy_set(), lookup);
    case DualControl::kFileExport:
      return FileExportSummary(request.dataset_export(), lookup);
    case DualControl::kGrantChange: {
      // Checked and described by the grants (kms/ops/runtime_grants.h): a refused change is
      // never filed.
      if (!options_.grant_change) return Show(std::string(OperationName(request.op_case()).view()));
      COFFER_ASSIGN_OR_RETURN(std::string summary, options_.grant_change(request));
      return Show(std::move(summary));
    }
    case DualControl::kRelaxAuditPolicy:
      if (request.audit_policy_set().access_failure() != pb::SERVE_AND_COUNT) return NoSummary();
      return Show(
          "audit policy --access-failure serve-and-count: data requests are served (and only "
          "counted) while the audit log cannot take their entries");
  }
  return MakeError(ErrorCode::kInternal, "unknown dual-control rule");
}

}  // namespace coffer::daemon
