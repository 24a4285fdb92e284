#include "kms/admin/internal/admin_rows.h"

#include <utility>

#include "crypto/base/status.h"

namespace coffer::kms::admin::internal {
namespace {

namespace v1 = ::coffer::admin::v1;

// Part of the stored format (approval format 2): never change for an existing registry.
constexpr std::string_view kApprovalContext = "coffer-admin-approval-v2";

std::string ApprovalAssociated(uint64_t id) {
  std::string out(kApprovalContext);
  out.push_back('\0');
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(id >> shift));
  return out;
}

}  // namespace

absl::Status Corrupt(const std::string& key, std::string_view why) {
  return MakeError(ErrorCode::kKeyDbRowCorrupt,
                   "admin registry row " + key + " " + std::string(why));
}

AdminRecord FromRow(const v1::AdminRow& row) {
  AdminRecord r;
  r.uid = row.uid();
  r.name = row.name();
  r.enrolled_micros = row.enrolled_micros();
  r.bootstrap = row.bootstrap();
  r.last_step = row.last_step();
  r.last_code_micros = row.last_code_micros();
  r.failures = row.failures();
  r.locked_until_micros = row.locked_until_micros();
  return r;
}

v1::AdminRow ToRow(const AdminRecord& r) {
  v1::AdminRow row;
  row.set_uid(r.uid);
  row.set_name(r.name);
  row.set_enrolled_micros(r.enrolled_micros);
  row.set_bootstrap(r.bootstrap);
  row.set_last_step(r.last_step);
  row.set_last_code_micros(r.last_code_micros);
  row.set_failures(r.failures);
  row.set_locked_until_micros(r.locked_until_micros);
  return row;
}

ApprovalRecord FromRow(const v1::ApprovalRow& row) {
  ApprovalRecord r;
  r.id = row.id();
  r.state = static_cast<ApprovalState>(row.state());
  r.requester_uid = row.requester_uid();
  r.requester_name = row.requester_name();
  r.created_micros = row.created_micros();
  r.expires_micros = row.expires_micros();
  r.decided_micros = row.decided_micros();
  r.approver_uid = row.approver_uid();
  r.approver_name = row.approver_name();
  r.result_code = row.result_code();
  r.redeemed_micros = row.redeemed_micros();
  return r;
}

v1::ApprovalRow ToRow(const ApprovalRecord& r) {
  v1::ApprovalRow row;
  row.set_id(r.id);
  row.set_state(static_cast<int32_t>(r.state));
  row.set_requester_uid(r.requester_uid);
  row.set_requester_name(r.requester_name);
  row.set_created_micros(r.created_micros);
  row.set_expires_micros(r.expires_micros);
  row.set_decided_micros(r.decided_micros);
  row.set_approver_uid(r.approver_uid);
  row.set_approver_name(r.approver_name);
  row.set_result_code(r.result_code);
  row.set_redeemed_micros(r.redeemed_micros);
  return row;
}

absl::StatusOr<v1::ApprovalRow> SealApprovalRow(const crypto::RecordAead& sealer,
                                                const ApprovalRecord& approval) {
  v1::ApprovalRow row = ToRow(approval);
  v1::ApprovalContent content;
  content.set_payload(approval.payload);
  content.set_summary(approval.summary);
  content.set_dataset(approval.dataset);
  COFFER_ASSIGN_OR_RETURN(std::string sealed, sealer.Seal(content.SerializeAsString(),
                                                          ApprovalAssociated(approval.id)));
  row.set_sealed_content(std::move(sealed));
  return row;
}

absl::StatusOr<ApprovalRecord> OpenApprovalRow(const crypto::RecordAead& sealer,
                                               const std::string& key, const v1::ApprovalRow& row) {
  ApprovalRecord approval = FromRow(row);
  if (row.sealed_content().empty()) {  // approval format 1
    approval.payload = row.payload();
    approval.summary = row.summary();
    approval.dataset = row.dataset();
    return approval;
  }
  if (!row.payload().empty() || !row.summary().empty() || !row.dataset().empty()) {
    return Corrupt(key, "holds its content both sealed and in the clear");
  }
  absl::StatusOr<std::string> opened =
      sealer.Open(row.sealed_content(), ApprovalAssociated(row.id()));
  v1::ApprovalContent content;
  if (!opened.ok() || !content.ParseFromString(*opened)) {
    return Corrupt(key, "has sealed content that does not open");
  }
  approval.payload = content.payload();
  approval.summary = content.summary();
  approval.dataset = content.dataset();
  return approval;
}

}  // namespace coffer::kms::admin::internal
