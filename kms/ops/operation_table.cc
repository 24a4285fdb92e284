#include "kms/ops/operation_table.h"

#include <algorithm>
#include <array>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
using R = pb::Request;
using DC = DualControl;
using H = Handler;

constexpr Sockets kData = Sockets::kData;          // content: data socket with a grant only
constexpr Sockets kMeta = Sockets::kDataAndAdmin;  // no content: data socket (grant) or admins
constexpr Sockets kAdmin = Sockets::kAdmin;
constexpr Effect kRO = Effect::kReadOnly;
constexpr Effect kRW = Effect::kChangesState;
constexpr Mfa kNoCode = Mfa::kNone;
constexpr Mfa kCode = Mfa::kSession;
constexpr AuditMode kEach = AuditMode::kEach;
constexpr AuditMode kPolled = AuditMode::kPolled;
constexpr Runs kReactor = Runs::kReactor;
constexpr Runs kPool = Runs::kPool;

// The dataset a request names: request.field().member().
#define COFFER_NAMED_BY(field, member) \
  [](const R& r) -> std::string_view { return r.field().member(); }
constexpr DatasetNameFn kNoDataset = nullptr;

// The access policy of cofferd, one row per Request.op case. Read a row left to right: the
// operation is served on these sockets; on the data socket it needs this grant on the dataset
// it names; it changes state or not; on the admin socket with MFA on it needs this much of a
// code; a second admin approves it under this rule; this handler runs it; it is audited so; it
// runs on the transport's reactor thread or on the worker pool.
// Content (records, attachments, pseudonyms) is served on the data socket only, to grants, and
// never to an enrolled admin's uid (Services checks the registry): an admin role gives no
// content, so its MFA column is empty. What reveals no content is served on both sockets:
// metadata (dataset_list, dataset_describe) and taking an item back out of the recycle bin
// (record_restore, attachment_restore: keyctl bin restore).
// clang-format off
constexpr OperationRow kRows[] = {
  // op                      name                    sockets data right          effect mfa      dual control               dataset                                          handler           audit     runs
  {R::kRecordPut,            "record_put",            kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_put, dataset),            H::kRecords,      kEach,   kReactor},
  {R::kRecordGet,            "record_get",            kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_get, dataset),            H::kRecords,      kEach,   kReactor},
  {R::kRecordExists,         "record_exists",         kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_exists, dataset),         H::kRecords,      kEach,   kReactor},
  {R::kRecordDelete,         "record_delete",         kData,  kRightDelete,       kRW,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_delete, dataset),         H::kRecords,      kEach,   kReactor},
  {R::kRecordRestore,        "record_restore",        kMeta,  kRightDelete,       kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(record_restore, dataset),        H::kRecords,      kEach,   kPool},
  {R::kRecordList,           "record_list",           kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_list, dataset),           H::kRecords,      kEach,   kPool},
  {R::kRecordGetMany,        "record_get_many",       kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_get_many, dataset),       H::kRecords,      kEach,   kReactor},
  {R::kRecordPutMany,        "record_put_many",       kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                COFFER_NAMED_BY(record_put_many, dataset),       H::kRecords,      kEach,   kReactor},
  {R::kAttachmentPutBegin,   "attachment_put_begin",  kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                COFFER_NAMED_BY(attachment_put_begin, dataset),  H::kAttachments,  kEach,   kPool},
  {R::kAttachmentChunk,      "attachment_chunk",      kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                kNoDataset,                                      H::kUploadFrame,  kEach,   kPool},
  {R::kAttachmentPutCommit,  "attachment_put_commit", kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                kNoDataset,                                      H::kUploadFrame,  kEach,   kPool},
  {R::kAttachmentPutAbort,   "attachment_put_abort",  kData,  kRightWrite,        kRW,  kNoCode, DC::kNever,                kNoDataset,                                      H::kUploadFrame,  kEach,   kPool},
  {R::kAttachmentGet,        "attachment_get",        kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(attachment_get, dataset),        H::kAttachments,  kEach,   kPool},
  {R::kAttachmentMetadata,   "attachment_metadata",   kData,  kRightRead,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(attachment_metadata, dataset),   H::kAttachments,  kEach,   kReactor},
  {R::kAttachmentDelete,     "attachment_delete",     kData,  kRightDelete,       kRW,  kNoCode, DC::kNever,                COFFER_NAMED_BY(attachment_delete, dataset),     H::kAttachments,  kEach,   kPool},
  {R::kAttachmentRestore,    "attachment_restore",    kMeta,  kRightDelete,       kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(attachment_restore, dataset),    H::kAttachments,  kEach,   kPool},
  {R::kPseudonymize,         "pseudonymize",          kData,  kRightPseudonymize, kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(pseudonymize, dataset),          H::kPseudonyms,   kEach,   kReactor},
  {R::kPseudonymReidentify,  "pseudonym_reidentify",  kData,  kRightReidentify,   kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(pseudonym_reidentify, dataset),  H::kPseudonyms,   kEach,   kPool},
  {R::kPseudonymTranslate,   "pseudonym_translate",   kData,  kRightPseudonymize, kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(pseudonym_translate, dataset),   H::kPseudonyms,   kEach,   kReactor},
  {R::kDatasetCreate,        "dataset_create",        kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(dataset_create, name),           H::kAdmin,        kEach,   kPool},
  {R::kDatasetList,          "dataset_list",          kMeta,  kRightMetadata,     kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdmin,        kEach,   kPool},
  {R::kDatasetDescribe,      "dataset_describe",      kMeta,  kRightMetadata,     kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(dataset_describe, name),         H::kAdmin,        kEach,   kPool},
  {R::kDatasetLifecycle,     "dataset_lifecycle",     kAdmin, kRightNone,         kRW,  kCode,   DC::kScheduleDestruction,  COFFER_NAMED_BY(dataset_lifecycle, name),        H::kAdmin,        kEach,   kPool},
  {R::kKeyRotate,            "key_rotate",            kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(key_rotate, dataset),            H::kAdmin,        kEach,   kPool},
  {R::kKeyRetire,            "key_retire",            kAdmin, kRightNone,         kRW,  kCode,   DC::kAlways,               COFFER_NAMED_BY(key_retire, dataset),            H::kAdmin,        kEach,   kPool},
  {R::kKeyRewrap,            "key_rewrap",            kAdmin, kRightNone,         kRW,  kCode,   DC::kDestroyOldWrapping,   COFFER_NAMED_BY(key_rewrap, dataset),            H::kAdmin,        kEach,   kPool},
  {R::kPolicySet,            "policy_set",            kAdmin, kRightNone,         kRW,  kCode,   DC::kWeakenPolicy,        COFFER_NAMED_BY(policy_set, dataset),            H::kAdmin,        kEach,   kPool},
  {R::kHoldSet,              "hold_set",              kAdmin, kRightNone,         kRW,  kCode,   DC::kClearHold,            COFFER_NAMED_BY(hold_set, dataset),              H::kAdmin,        kEach,   kPool},
  {R::kPurge,                "purge",                 kAdmin, kRightNone,         kRW,  kCode,   DC::kPurge,                COFFER_NAMED_BY(purge, dataset),                 H::kAdmin,        kEach,   kPool},
  {R::kBinList,              "bin_list",              kAdmin, kRightNone,         kRO,  kCode,   DC::kNever,                COFFER_NAMED_BY(bin_list, dataset),              H::kAdmin,        kEach,   kPool},
  {R::kJobStart,             "job_start",             kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(job_start, dataset),             H::kAdmin,        kEach,   kPool},
  {R::kJobStatus,            "job_status",            kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdmin,        kPolled, kPool},
  {R::kBackupCreate,         "backup_create",         kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kBackupList,           "backup_list",           kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kBackupVerify,         "backup_verify",         kAdmin, kRightNone,         kRO,  kCode,   DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kBackupRestore,        "backup_restore",        kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kBackupPrune,          "backup_prune",          kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kAuditQuery,           "audit_query",           kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(audit_query, dataset),           H::kAdmin,        kEach,   kPool},
  {R::kAuditVerify,          "audit_verify",          kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdmin,        kEach,   kPool},
  {R::kAuditPolicySet,       "audit_policy_set",      kAdmin, kRightNone,         kRW,  kCode,   DC::kRelaxAuditPolicy,     kNoDataset,                                      H::kAdmin,        kEach,   kPool},
  {R::kStatus,               "status",                kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdmin,        kEach,   kPool},
  {R::kMetrics,              "metrics",               kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kWired,        kEach,   kPool},
  {R::kKeyInventory,         "key_inventory",         kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(key_inventory, dataset),         H::kAdmin,        kEach,   kPool},
  {R::kReceiptGet,           "receipt_get",           kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdmin,        kEach,   kPool},
  {R::kDatasetExport,        "dataset_export",        kAdmin, kRightNone,         kRO,  kCode,   DC::kFileExport,           COFFER_NAMED_BY(dataset_export, dataset),        H::kWired,        kEach,   kPool},
  {R::kEventsRead,           "events_read",           kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kWired,        kPolled, kPool},
  {R::kCanaryPlant,          "canary_plant",          kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(canary_plant, dataset),          H::kWired,        kEach,   kPool},
  {R::kCanaryList,           "canary_list",           kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                COFFER_NAMED_BY(canary_list, dataset),           H::kWired,        kEach,   kPool},
  {R::kCanaryRemove,         "canary_remove",         kAdmin, kRightNone,         kRW,  kCode,   DC::kNever,                COFFER_NAMED_BY(canary_remove, dataset),         H::kWired,        kEach,   kPool},
  {R::kAdminEnroll,          "admin_enroll",          kAdmin, kRightNone,         kRW,  kCode,   DC::kInviteAfterBootstrap, kNoDataset,                                      H::kAdminControl, kEach,   kPool},
  {R::kAdminList,            "admin_list",            kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdminControl, kEach,   kPool},
  {R::kAdminRemove,          "admin_remove",          kAdmin, kRightNone,         kRW,  kCode,   DC::kAlways,               kNoDataset,                                      H::kAdminControl, kEach,   kPool},
  {R::kApprovalList,         "approval_list",         kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kAdminControl, kEach,   kPool},
  {R::kApprovalDecide,       "approval_decide",       kAdmin, kRightNone,         kRW,  Mfa::kFreshCode, DC::kNever,        kNoDataset,                                      H::kAdminControl, kEach,   kPool},
  {R::kGrantList,            "grant_list",            kAdmin, kRightNone,         kRO,  kNoCode, DC::kNever,                kNoDataset,                                      H::kGrants,       kEach,   kPool},
  {R::kGrantAdd,             "grant_add",             kAdmin, kRightNone,         kRW,  kCode,   DC::kGrantChange,          COFFER_NAMED_BY(grant_add, dataset),             H::kGrants,       kEach,   kPool},
  {R::kGrantRemove,          "grant_remove",          kAdmin, kRightNone,         kRW,  kCode,   DC::kGrantChange,          kNoDataset,                                      H::kGrants,       kEach,   kPool},
};
// clang-format on
#undef COFFER_NAMED_BY

std::string_view SocketsText(Sockets sockets) {
  switch (sockets) {
    case Sockets::kAdmin:
      return "admin";
    case Sockets::kData:
      return "data (never to an enrolled admin)";
    case Sockets::kDataAndAdmin:
      return "data, admin";
  }
  return "";
}

std::string RightText(uint32_t right) {
  switch (right) {
    case kRightNone:
      return "—";
    case kRightRead:
      return "READ";
    case kRightWrite:
      return "WRITE";
    case kRightDelete:
      return "DELETE";
    case kRightMetadata:
      return "any (METADATA)";
    case kRightPseudonymize:
      return "PSEUDONYMIZE";
    case kRightReidentify:
      return "REIDENTIFY";
    default:
      return "bits " + std::to_string(right);
  }
}

std::string_view MfaText(Mfa mfa) {
  switch (mfa) {
    case Mfa::kNone:
      return "—";
    case Mfa::kSession:
      return "code or session";
    case Mfa::kFreshCode:
      return "fresh code";
  }
  return "";
}

std::string_view HandlerText(Handler handler) {
  switch (handler) {
    case Handler::kRecords:
      return "records";
    case Handler::kAttachments:
      return "attachments";
    case Handler::kPseudonyms:
      return "pseudonyms";
    case Handler::kUploadFrame:
      return "open upload";
    case Handler::kAdmin:
      return "admin";
    case Handler::kAdminControl:
      return "admin control";
    case Handler::kWired:
      return "wired (cofferd)";
    case Handler::kGrants:
      return "grants";
  }
  return "";
}

}  // namespace

kms::audit::v1::Purpose AccessPurposeOf(Handler handler) {
  switch (handler) {
    case Handler::kRecords:
      return kms::audit::v1::PURPOSE_RECORDS;
    case Handler::kAttachments:
    case Handler::kUploadFrame:
      return kms::audit::v1::PURPOSE_ATTACHMENTS;
    case Handler::kPseudonyms:
      return kms::audit::v1::PURPOSE_PSEUDONYM;
    case Handler::kAdmin:
    case Handler::kAdminControl:
    case Handler::kWired:
    case Handler::kGrants:
      break;
  }
  return kms::audit::v1::PURPOSE_UNSPECIFIED;
}

std::string_view DualControlWhy(DualControl rule) {
  switch (rule) {
    case DualControl::kNever:
      return "";
    case DualControl::kAlways:
      return "always: removes an admin or retires key versions (data under them unreadable)";
    case DualControl::kInviteAfterBootstrap:
      return "inviting an admin once two are enrolled: one admin must not add accomplices";
    case DualControl::kScheduleDestruction:
      return "scheduling destruction: crypto-shreds the dataset";
    case DualControl::kDestroyOldWrapping:
      return "with destroy_old: destroys wrapping keys that backups may still need";
    case DualControl::kClearHold:
      return "clearing a legal hold: re-enables purge and destruction";
    case DualControl::kWeakenPolicy:
      return "weakening protection: shortening retention, bin days, waiting period or "
             "auto-destruction, lengthening a rotation period or raising the usage limit";
    case DualControl::kPurge:
      return "always: physically deletes records or attachments (one item or a whole bin)";
    case DualControl::kFileExport:
      return "filing an export: the archive carries every record of the dataset";
    case DualControl::kGrantChange:
      return "always: a grant gives a uid content; removing one can cut a backend off";
    case DualControl::kRelaxAuditPolicy:
      return "setting SERVE_AND_COUNT: data requests are then served while the audit log fails";
  }
  return "";
}

const OperationTable& OperationTable::Default() {
  static const OperationTable table{absl::MakeConstSpan(kRows)};
  return table;
}

OperationTable::OperationTable(absl::Span<const OperationRow> rows) : rows_(rows) {
  for (const OperationRow& row : rows_) {
    const auto number = static_cast<size_t>(row.op);
    if (number < kIndexSize && index_[number] == nullptr) index_[number] = &row;
  }
}

const OperationRow* OperationTable::Find(Operation op) const {
  const auto number = static_cast<size_t>(op);
  if (number < kIndexSize) return index_[number];
  auto it = std::find_if(rows_.begin(), rows_.end(),
                         [op](const OperationRow& row) { return row.op == op; });
  return it == rows_.end() ? nullptr : &*it;
}

absl::Status NoOperationRow() {
  return MakeError(ErrorCode::kNotGranted,
                   "this operation has no row in the daemon's operation table: refused (default "
                   "deny)");
}

std::string_view DatasetNamedBy(const pb::Request& request) {
  const OperationRow* row = OperationTable::Default().Find(request.op_case());
  if (row == nullptr || row->dataset == nullptr) return {};
  return row->dataset(request);
}

kms::audit::AuditText OperationName(Operation op) {
  const OperationRow* row = OperationTable::Default().Find(op);
  return row == nullptr ? kms::audit::AuditText("unknown") : row->name;
}

std::string OperationTableMarkdown(const OperationTable& table) {
  std::string out =
      "| # | operation | sockets | data-socket grant | changes state | MFA (admin socket) | "
      "second admin | handler | runs on |\n"
      "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
  for (const OperationRow& row : table.rows()) {
    const std::string_view second_admin =
        row.dual_control == DualControl::kNever ? "—" : DualControlWhy(row.dual_control);
    out += "| " + std::to_string(static_cast<int>(row.op)) + " | `";
    out += row.name.view();
    out += "` | ";
    out += SocketsText(row.sockets);
    out += " | " + RightText(row.data_right) + " | ";
    out += row.effect == Effect::kChangesState ? "yes" : "no";
    out += " | ";
    out += MfaText(row.mfa);
    out += " | ";
    out += second_admin;
    out += " | ";
    out += HandlerText(row.handler);
    if (row.audit == AuditMode::kPolled) out += " (polled: not audited one by one)";
    out += row.runs == Runs::kReactor ? " | reactor (workers with sync durability)" : " | workers";
    out += " |\n";
  }
  return out;
}

}  // namespace coffer::daemon
