// AuditEvent: what a caller may say about one key operation or data access.
//
// The type is the log's privacy contract. It has no field that can hold a key, a PIN, a TOTP
// code, plaintext, a record id or a dataset name: datasets are numeric handles, records a 32-byte
// reference (the HMAC of the id that the data DB already uses as its key), and the two texts
// (`detail`, a policy's name) are AuditText, which only a string literal can construct — a
// runtime string cannot reach them, so no request data can leak into the log through them. The
// log adds the sequence number and the time.
//
// Which entries must be durable before the operation is acknowledged: every key-operation kind
// (DATASET_CREATE .. REQUEST_REFUSED, CLOCK_WENT_BACKWARDS .. DELETION_RECEIPT) goes through
// AuditLog::Append,
// synchronously. Access kinds (ACCESS_*) go through the BatchingAuditWriter. LOG_* kinds are
// written by the log only.
//
// Plain data; thread-compatible. ValidateAuditEvent never throws and returns INVALID_ARGUMENT
// naming the first problem.

#ifndef COFFER_KMS_AUDIT_AUDIT_EVENT_H_
#define COFFER_KMS_AUDIT_AUDIT_EVENT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "kms/audit/audit.pb.h"

namespace coffer::kms::audit {

namespace v1 = ::coffer::audit::v1;  // the generated protobuf types (package coffer.audit.v1)

inline constexpr size_t kMaxAuditTextSize = 128;
inline constexpr size_t kMaxAdminNameSize = 64;
inline constexpr size_t kRecordRefSize = 32;

namespace internal {
// Deliberately not constexpr: reaching it while constructing an AuditText is a compile error.
void AuditTextMustBePrintableAsciiOfAtMost128Bytes();
}  // namespace internal

// A fixed text from the program (a string literal): printable ASCII, at most 128 bytes.
class AuditText {
 public:
  constexpr AuditText() = default;
  // Implicit on purpose, so that `event.detail = "second approval";` reads naturally; consteval,
  // so that only a compile-time constant compiles.
  consteval AuditText(const char* text)  // NOLINT(google-explicit-constructor)
      : text_(text) {
    size_t size = 0;
    for (; text[size] != '\0'; ++size) {
      if (text[size] < 0x20 || text[size] > 0x7e || size >= kMaxAuditTextSize) {
        internal::AuditTextMustBePrintableAsciiOfAtMost128Bytes();
      }
    }
    size_ = size;
  }

  std::string_view view() const { return {text_, size_}; }
  bool empty() const { return size_ == 0; }

 private:
  const char* text_ = "";
  size_t size_ = 0;
};

struct AuditActor {
  uint32_t uid = 0;
  uint32_t pid = 0;
  uint64_t admin_id = 0;   // 0 = not an enrolled admin
  std::string admin_name;  // an enrolled admin's login name: printable ASCII, at most 64 bytes
  v1::SocketKind socket = v1::SOCKET_KIND_UNSPECIFIED;
};

struct AuditPolicyChange {
  AuditText policy;  // e.g. "retention_days"
  int64_t old_value = 0;
  int64_t new_value = 0;
};

struct AuditEvent {
  v1::EventKind kind = v1::EVENT_KIND_UNSPECIFIED;
  AuditActor actor;
  std::optional<AuditActor> approver;  // the second admin under dual control
  uint64_t dataset_handle = 0;
  v1::Purpose purpose = v1::PURPOSE_UNSPECIFIED;
  uint32_t key_version = 0;
  ErrorCode result = ErrorCode::kOk;
  v1::Stage stage = v1::STAGE_COMPLETED;
  AuditText detail;
  // ACCESS_* (an item moved: ItemMove below), RECORD_PURGE and ATTACHMENT_PURGE (required
  // there).
  std::optional<std::array<uint8_t, kRecordRefSize>> record_ref;
  // ACCESS_*; FULL_BACKUP / FULL_RESTORE: the backup id; ADMIN_INVITE / ADMIN_REMOVE: the uid;
  // APPROVAL_*: the approval request id.
  uint32_t record_count = 0;
  std::optional<AuditPolicyChange> policy_change;  // POLICY_CHANGE only
};

// True for DATASET_CREATE .. REQUEST_REFUSED, CLOCK_WENT_BACKWARDS .. DELETION_RECEIPT,
// DATASET_EXPORT, DATASET_EXPORT_REDEEMED, CANARY_PLANT and CANARY_REMOVE.
bool IsKeyOperationKind(v1::EventKind kind);

// True for ACCESS_READ, ACCESS_WRITE, ACCESS_DELETE, ACCESS_PSEUDONYMIZE, ACCESS_REIDENTIFY,
// CANARY_READ.
bool IsAccessKind(v1::EventKind kind);

// A write, delete or restore of one item that succeeded. Its ACCESS_WRITE / ACCESS_DELETE entry
// names the item (record_ref: its stored-key MAC) and the move (detail: ItemMoveDetail, the
// operation's name), so that a restore from backup can put items deleted after the backup back
// in the bin and count those written after it (kms/keys/full_backup.h). Entries written before
// this (no ref) stay valid; a restore counts them as moves it cannot replay.
enum class ItemMove : uint8_t {
  kRecordWrite,        // "record_put"
  kRecordDelete,       // "record_delete"
  kRecordRestore,      // "record_restore"
  kAttachmentWrite,    // "attachment_put_commit"
  kAttachmentDelete,   // "attachment_delete"
  kAttachmentRestore,  // "attachment_restore"
};
AuditText ItemMoveDetail(ItemMove move);
// The move an entry's detail names; nullopt for any other detail.
std::optional<ItemMove> ItemMoveOf(std::string_view detail);

// A grant change at run time is an ADMIN_REQUEST whose fixed detail begins with one of these
// (kms/ops/runtime_grants.cc writes "grant_add uid READ,WRITE on the dataset"), so that a restore
// from backup can count the changes made after the backup (kms/keys/full_backup.h).
inline constexpr std::string_view kGrantAddDetailPrefix = "grant_add ";
inline constexpr std::string_view kGrantRemoveDetailPrefix = "grant_remove ";

// OK when a caller may append `event`: a key-operation or access kind, enums in range, an admin
// name of printable ASCII, a record ref only on access and purge events (required on purges),
// a record count only on access and backup events, a policy change exactly on POLICY_CHANGE.
absl::Status ValidateAuditEvent(const AuditEvent& event);

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_AUDIT_EVENT_H_
