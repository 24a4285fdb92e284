// The admin registry's row converters (kms/admin/admin_registry.proto): records to rows and back,
// and an approval request's content sealed in its row (approval format 2). Pure functions;
// admin_registry.cc only.

#ifndef COFFER_KMS_ADMIN_INTERNAL_ADMIN_ROWS_H_
#define COFFER_KMS_ADMIN_INTERNAL_ADMIN_ROWS_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/record_aead.h"
#include "kms/admin/admin_registry.h"
#include "kms/admin/admin_registry.pb.h"

namespace coffer::kms::admin::internal {

// KEY_DB_ROW_CORRUPT naming the registry row at `key`.
absl::Status Corrupt(const std::string& key, std::string_view why);

AdminRecord FromRow(const ::coffer::admin::v1::AdminRow& row);
::coffer::admin::v1::AdminRow ToRow(const AdminRecord& r);

// Without the content (payload, summary, dataset): OpenApprovalRow adds it.
ApprovalRecord FromRow(const ::coffer::admin::v1::ApprovalRow& row);
// Without the content: SealApprovalRow adds it sealed.
::coffer::admin::v1::ApprovalRow ToRow(const ApprovalRecord& r);

// `approval`'s row with its content sealed under `sealer`.
absl::StatusOr<::coffer::admin::v1::ApprovalRow> SealApprovalRow(const crypto::RecordAead& sealer,
                                                                 const ApprovalRecord& approval);
// The record in row `key`, its content opened (or read in the clear from an approval format 1
// row); KEY_DB_ROW_CORRUPT when it does not open or is both sealed and in the clear.
absl::StatusOr<ApprovalRecord> OpenApprovalRow(const crypto::RecordAead& sealer,
                                               const std::string& key,
                                               const ::coffer::admin::v1::ApprovalRow& row);

}  // namespace coffer::kms::admin::internal

#endif  // COFFER_KMS_ADMIN_INTERNAL_ADMIN_ROWS_H_
