// The operation table: what every coffer.v1 operation is, in one place (design brief, "Access
// policy: one table, default deny").
//
// One row per case of `coffer.v1.Request.op` says which socket(s) serve it, which data-socket
// grant it needs, whether it changes state, what MFA it needs on the admin socket, whether a
// second admin must approve it (and why), how it names its dataset, its audit text, which
// handler runs it and how it is audited. Dispatch (kms/ops/services.cc), authorization
// (kms/ops/authz.cc), MFA and dual control (kms/ops/admin_control.cc) and the admin audit all
// read the row; none keeps its own list of operations. An operation without a row is refused
// before anything else looks at it (NOT_GRANTED, audited), and
// tests/kms/ops/operation_table_test.cc fails when a case of Request.op has no row. docs/api.md's
// operation table is generated from this one (the same test checks it).
//
// Thread safety: the table is immutable static data. Failures: none; Find returns nullptr for an
// operation without a row.

#ifndef COFFER_KMS_OPS_OPERATION_TABLE_H_
#define COFFER_KMS_OPS_OPERATION_TABLE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "coffer/v1/service.pb.h"
#include "kms/audit/audit_event.h"

namespace coffer::daemon {

using Operation = ::coffer::v1::Request::OpCase;

// Grants as bits, so a peer's rights on a dataset are one union over its grants.
enum Right : uint32_t {
  kRightNone = 0,  // not served on the data socket (WRONG_SOCKET there)
  kRightRead = 1u << 0,
  kRightWrite = 1u << 1,
  kRightDelete = 1u << 2,
  kRightMetadata = 1u << 3,  // satisfied by any right on the dataset
  kRightPseudonymize = 1u << 4,
  kRightReidentify = 1u << 5,
};

// The sockets an operation is served on. On the admin socket every operation needs the peer's
// uid among the configured admins.
enum class Sockets : uint8_t {
  kAdmin,         // admin socket only: WRONG_SOCKET on the data socket
  kData,          // content: data socket only (WRONG_SOCKET on the admin socket), with the row's
                  // grant, and never to a uid that is an enrolled admin (NOT_GRANTED)
  kDataAndAdmin,  // no content (metadata, bin restores): data socket with the row's grant, or
                  // admin socket as an admin
};

enum class Effect : uint8_t { kReadOnly, kChangesState };

// What an admin-socket request needs when MFA is on (config admin.mfa_required).
enum class Mfa : uint8_t {
  kNone,       // any configured admin uid, no code: reads nothing a tenant owns
  kSession,    // an enrolled admin with a TOTP code in the request or an open MFA session
  kFreshCode,  // an enrolled admin with a TOTP code in this very request
};

// When a second enrolled admin must approve the request before it runs (with MFA on). The rule
// is what AdminControl checks; DualControlWhy says why, for the docs.
enum class DualControl : uint8_t {
  kNever,
  kAlways,                // every request
  kInviteAfterBootstrap,  // inviting an admin once two are enrolled (a claim never)
  kScheduleDestruction,   // dataset_lifecycle SCHEDULE_DESTRUCTION only
  kDestroyOldWrapping,    // key_rewrap with destroy_old only
  kClearHold,             // hold_set clearing a hold that is set
  kWeakenPolicy,          // policy_set shortening a retention or waiting period, lengthening a
                          // rotation period or raising the usage limit
  kPurge,                 // every purge (one item or a whole bin)
  kFileExport,            // dataset_export without an approval id (filing it)
  kGrantChange,           // every grant_add and grant_remove: a grant gives a uid content, and
                          // removing one can cut a backend off
  kRelaxAuditPolicy,      // audit_policy_set to SERVE_AND_COUNT (tightening needs one admin)
};

// Which part of the services runs an admitted request.
enum class Handler : uint8_t {
  kRecords,       // records (the data domain; audited with purpose RECORDS)
  kAttachments,   // attachments, but for an open upload's frames (purpose ATTACHMENTS)
  kPseudonyms,    // pseudonyms (purpose PSEUDONYM)
  kUploadFrame,   // a frame of the upload open on the connection (chunk, commit, abort)
  kAdmin,         // datasets, keys, lifecycle, policies, jobs, audit, status (the admin domain)
  kAdminControl,  // admins and approvals (kms/ops/admin_control.h)
  kWired,         // wired in by cofferd: backups, events, canaries, export (ServicesDeps)
  kGrants,        // grants at run time (kms/ops/runtime_grants.h)
};

// How an admin-socket request is recorded in the audit log (ADMIN_REQUEST).
enum class AuditMode : uint8_t {
  kEach,    // one entry per request
  kPolled,  // polled by clients (progress, event follow): no entry per request
};

// Where an admitted data-socket request runs (kms/server/server.h, "Threads").
enum class Runs : uint8_t {
  kReactor,  // on the transport's reactor thread that read it, answered there (run to
             // completion): one reply, short and bounded work. At audit window 0 it parks
             // until its access entry is durable, and the reactor moves on. Only while the
             // data DB does not sync each write (durability wal); otherwise on the workers.
  kPool,     // on the worker pool: long or streaming work, admin operations, and whatever
             // writes its audit synchronously (pseudonym_reidentify)
};

using DatasetNameFn = std::string_view (*)(const ::coffer::v1::Request&);

struct OperationRow {
  Operation op;
  kms::audit::AuditText name;  // the Request.op field name; also the audit text
  Sockets sockets;
  uint32_t data_right;  // a Right; kRightNone for admin-socket-only operations
  Effect effect;
  Mfa mfa;
  DualControl dual_control;
  DatasetNameFn dataset;  // the dataset name it carries; nullptr: none
  Handler handler;
  AuditMode audit;
  Runs runs;
};

class OperationTable {
 public:
  // The daemon's table.
  static const OperationTable& Default();

  // A table of `rows` (borrowed; must outlive the table). For tests of default deny.
  explicit OperationTable(absl::Span<const OperationRow> rows);

  // The row of `op`; nullptr when the table has none (the operation is refused). Every request
  // looks its row up several times, so this is an index, not a scan.
  const OperationRow* Find(Operation op) const;
  absl::Span<const OperationRow> rows() const { return rows_; }

 private:
  // Request.op field numbers are below 256 today; a larger one is found by a scan.
  static constexpr size_t kIndexSize = 256;

  absl::Span<const OperationRow> rows_;
  std::array<const OperationRow*, kIndexSize> index_{};  // by op number; the first row wins
};

// What a data operation run by `handler` names as its purpose in its access entry (keyctl audit
// who-read tells records from attachments by it); PURPOSE_UNSPECIFIED for the admin domain.
kms::audit::v1::Purpose AccessPurposeOf(Handler handler);

// Why `rule` needs a second admin ("" for kNever).
std::string_view DualControlWhy(DualControl rule);

// The refusal of an operation without a row: NOT_GRANTED (502), "default deny".
absl::Status NoOperationRow();

// The dataset name `request` carries ("" for operations that name none, or without a row).
std::string_view DatasetNamedBy(const ::coffer::v1::Request& request);

// The audit text of `op` (its row's name; "unknown" without a row).
kms::audit::AuditText OperationName(Operation op);

// The table as the Markdown that docs/api.md carries between its "operation-table" markers.
std::string OperationTableMarkdown(const OperationTable& table);

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_OPERATION_TABLE_H_
