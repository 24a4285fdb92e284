// AdminControl::DualControlSummary: what a second admin is shown before approving an operation
// under dual control, per the operation table's dual-control rule (kms/ops/operation_table.h).

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

}  // namespace

absl::StatusOr<std::optional<std::string>> AdminControl::DualControlSummary(
    const pb::Request& request, const DatasetLookup& lookup, size_t enrolled) {
  auto describe = [&](std::string_view name) -> absl::StatusOr<std::optional<kms::DatasetInfo>> {
    auto info = lookup(name);
    if (info.ok()) return std::optional<kms::DatasetInfo>(std::move(*info));
    ErrorCode code = ErrorCodeOf(info.status());
    if (code == ErrorCode::kDatasetNotFound || code == ErrorCode::kDatasetNameInvalid) {
      return std::optional<kms::DatasetInfo>();  // the operation fails on its own
    }
    return info.status();
  };
  const OperationRow* row = OperationTable::Default().Find(request.op_case());
  if (row == nullptr) return NoOperationRow();
  switch (row->dual_control) {
    case DualControl::kNever:
      return std::optional<std::string>();
    case DualControl::kInviteAfterBootstrap: {
      const auto& r = request.admin_enroll();
      if (!r.has_uid()) return std::optional<std::string>();  // a claim
      if (enrolled < 2) return std::optional<std::string>();  // bootstrap: the second admin
      return std::optional<std::string>(
          absl::StrCat("admin enroll: invite uid ", r.uid(), " (", NameOf(r.uid()), ")"));
    }
    case DualControl::kAlways:
      if (request.has_key_retire()) {
        const auto& r = request.key_retire();
        return std::optional<std::string>(absl::StrCat(
            "key retire ", r.dataset(), ": ", pb::Purpose_Name(r.purpose()), " versions below ",
            r.below(), r.translate_done() ? " (translate run confirmed done)" : ""));
      }
      if (request.has_admin_remove()) {
        return std::optional<std::string>(absl::StrCat("admin remove: uid ",
                                                       request.admin_remove().uid(), " (",
                                                       NameOf(request.admin_remove().uid()), ")"));
      }
      return std::optional<std::string>(std::string(OperationName(request.op_case()).view()));
    case DualControl::kScheduleDestruction:
      if (request.dataset_lifecycle().action() !=
          pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION) {
        return std::optional<std::string>();
      }
      return std::optional<std::string>(
          absl::StrCat("dataset destroy ", request.dataset_lifecycle().name(),
                       ": schedule destruction after the waiting period"));
    case DualControl::kDestroyOldWrapping: {
      const auto& r = request.key_rewrap();
      if (!r.destroy_old()) return std::optional<std::string>();
      return std::optional<std::string>(
          absl::StrCat("key rewrap ", r.dataset(), " --destroy-old: old wrapping keys destroyed"));
    }
    case DualControl::kClearHold: {
      const auto& r = request.hold_set();
      if (r.hold()) return std::optional<std::string>();
      COFFER_ASSIGN_OR_RETURN(std::optional<kms::DatasetInfo> info, describe(r.dataset()));
      if (!info.has_value() || !info->policy.legal_hold) return std::optional<std::string>();
      return std::optional<std::string>(absl::StrCat("hold clear ", r.dataset()));
    }
    case DualControl::kPurge: {
      const auto& r = request.purge();
      std::string what;
      switch (r.target_case()) {
        case pb::PurgeRequest::kRecordId:
          what = absl::StrCat("record \"", absl::CHexEscape(r.record_id().substr(0, 64)),
                              r.record_id().size() > 64 ? "...\"" : "\"");
          break;
        case pb::PurgeRequest::kAttachmentName:
          what = absl::StrCat("attachment \"", absl::CHexEscape(r.attachment_name().substr(0, 64)),
                              r.attachment_name().size() > 64 ? "...\"" : "\"");
          break;
        case pb::PurgeRequest::TARGET_NOT_SET:
          what = "every item in the recycle bin";
          break;
      }
      return std::optional<std::string>(
          absl::StrCat("purge ", r.dataset(), ": ", what, " deleted physically, at once"));
    }
    case DualControl::kWeakenPolicy: {
      const auto& r = request.policy_set();
      COFFER_ASSIGN_OR_RETURN(std::optional<kms::DatasetInfo> info, describe(r.dataset()));
      if (!info.has_value()) return std::optional<std::string>();
      const kms::DatasetPolicy& current = info->policy;
      const pb::Policy& next = r.policy();
      std::vector<std::string> changes;
      if (next.has_records_rotation_seconds() &&
          next.records_rotation_seconds() > current.records_rotation.count()) {
        changes.push_back(absl::StrCat("records_rotation ",
                                       Duration(current.records_rotation.count()), " -> ",
                                       Duration(next.records_rotation_seconds())));
      }
      if (next.has_attachments_rotation_seconds() &&
          next.attachments_rotation_seconds() > current.attachments_rotation.count()) {
        changes.push_back(absl::StrCat("attachments_rotation ",
                                       Duration(current.attachments_rotation.count()), " -> ",
                                       Duration(next.attachments_rotation_seconds())));
      }
      if (next.has_usage_limit() && next.usage_limit() > current.usage_limit) {
        changes.push_back(
            absl::StrCat("usage_limit ", current.usage_limit, " -> ", next.usage_limit()));
      }
      if (next.has_bin_days() && next.bin_days() < current.bin_days) {
        changes.push_back(absl::StrCat("bin_days ", current.bin_days, " -> ", next.bin_days()));
      }
      if (next.has_retention_max_age_seconds() &&
          ShortensOptionalLimit(current.retention_max_age.count(),
                                next.retention_max_age_seconds())) {
        changes.push_back(absl::StrCat("retention_max_age ",
                                       Duration(current.retention_max_age.count()), " -> ",
                                       Duration(next.retention_max_age_seconds())));
      }
      if (next.has_minimum_retention_seconds() &&
          next.minimum_retention_seconds() < current.minimum_retention.count()) {
        changes.push_back(absl::StrCat("minimum_retention ",
                                       Duration(current.minimum_retention.count()), " -> ",
                                       Duration(next.minimum_retention_seconds())));
      }
      if (next.has_destruction_wait_seconds() &&
          next.destruction_wait_seconds() < current.destruction_wait.count()) {
        changes.push_back(absl::StrCat("destruction_wait ",
                                       Duration(current.destruction_wait.count(), "0s"), " -> ",
                                       Duration(next.destruction_wait_seconds(), "0s")));
      }
      if (next.has_auto_destroy_after_disabled_seconds() &&
          ShortensOptionalLimit(current.auto_destroy_after_disabled.count(),
                                next.auto_destroy_after_disabled_seconds())) {
        changes.push_back(absl::StrCat(
            "auto_destroy_after_disabled ", Duration(current.auto_destroy_after_disabled.count()),
            " -> ", Duration(next.auto_destroy_after_disabled_seconds())));
      }
      if (changes.empty()) return std::optional<std::string>();
      return std::optional<std::string>(
          absl::StrCat("policy set ", r.dataset(), ": ", absl::StrJoin(changes, ", ")));
    }
    case DualControl::kFileExport: {
      const auto& r = request.dataset_export();
      if (r.approval_id() != 0) return std::optional<std::string>();  // a redemption
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
      return std::optional<std::string>(
          absl::StrCat("dataset export ", r.dataset(), " to ", recipient.description(),
                       " key SHA256:", kms::audit::ToHex(recipient.fingerprint()),
                       "; the requester then redeems it with --approval ID"));
    }
  }
  return MakeError(ErrorCode::kInternal, "unknown dual-control rule");
}

}  // namespace coffer::daemon
