// AdminRegistry: the persistent registry of enrolled admins (TOTP MFA), their invitations, and
// dual-control approval requests (docs/daemon.md, admin MFA).
//
// State lives in a SignedRowStore (kms/keys/signed_row_store.h) in Options::directory (created
// 0700 if absent), all rows in RocksDB's default column family; every write is synced. Each row
// is a coffer.admin.v1 protobuf message followed by a 32-byte tag,
// HMAC-SHA256("coffer-admin-row-v1" 0x00 || key length (4 bytes BE) || key || message), computed
// in the HSM (RowAuthenticator), so an edited, moved or damaged row is detected: it yields
// KEY_DB_ROW_CORRUPT and is never silently skipped.
//
// TOTP secrets are drawn here, imported into the token (TotpTokenStore) and then wiped; the
// otpauth URI that Claim() returns is the only place a secret ever appears. Verification runs
// HMAC-SHA1 in the token, RFC 4226 truncation outside (hsm/otp.h). Codes are single-use and
// monotonic: a code is accepted only for a step later than the last accepted one, and that step
// is persisted before VerifyCode returns OK. Messages never contain secrets or codes.
//
// Thread safety: all methods may be called concurrently; one mutex serialises every read-modify-
// write, so two concurrent uses of one code or two Decide calls on one id cannot both succeed.
// Ownership: the token store, row authenticator and clock passed in Options must outlive the
// registry. Failures: the ErrorCodes named per method, KEY_DB_ROW_CORRUPT, IO_ERROR for RocksDB,
// and HSM errors from the token.
//
// At rest (approval format 2): an approval request's content — the serialized request, its
// summary and its dataset's name (often a customer's name) — is sealed (AES-256-GCM, bound to
// the request id) under a key derived in the token from its row key; the states, times and
// admin uids and names stay readable. Open rewrites format-1 rows (content in the clear) sealed
// in one synced batch and compacts the store.

#ifndef COFFER_KMS_ADMIN_ADMIN_REGISTRY_H_
#define COFFER_KMS_ADMIN_ADMIN_REGISTRY_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "crypto/record_aead.h"
#include "google/protobuf/message_lite.h"
#include "hsm/service_keys.h"
#include "kms/keys/signed_row_store.h"

namespace coffer::kms::admin {

struct TotpSettings {
  uint32_t step_seconds = 30;
  uint32_t skew_steps = 1;
  uint32_t max_failures = 5;
  std::chrono::seconds lockout{300};
};

struct AdminRecord {
  uint32_t uid = 0;
  std::string name;
  int64_t enrolled_micros = 0;
  bool bootstrap = false;
  uint64_t last_step = 0;  // 0 = no code used yet
  int64_t last_code_micros = 0;
  uint32_t failures = 0;
  int64_t locked_until_micros = 0;
};

struct Invitation {
  uint32_t uid = 0;
  uint32_t invited_by = 0;
  int64_t created_micros = 0;
  int64_t expires_micros = 0;
};

// Same numbers as coffer.v1.ApprovalState.
enum class ApprovalState { kPending = 1, kApproved = 2, kDenied = 3, kExpired = 4, kFailed = 5 };

struct ApprovalRecord {
  uint64_t id = 0;
  ApprovalState state = ApprovalState::kPending;
  std::string payload;  // opaque bytes: a serialized request
  std::string summary;
  std::string dataset;
  uint32_t requester_uid = 0;
  std::string requester_name;
  int64_t created_micros = 0;
  int64_t expires_micros = 0;
  int64_t decided_micros = 0;
  uint32_t approver_uid = 0;
  std::string approver_name;
  int32_t result_code = 0;      // ErrorCode number, 0 = OK
  int64_t redeemed_micros = 0;  // Redeem: when the requester used it (0: not yet)
};

struct Enrollment {
  AdminRecord admin;
  std::string otpauth_uri;  // holds the secret: show once, never log
};

class AdminRegistry {
 public:
  struct Options {
    std::string directory;
    hsm::TotpTokenStore* totp = nullptr;
    hsm::RowAuthenticator* rows = nullptr;
    const coffer::Clock* clock = nullptr;  // required: TOTP steps, lockouts, row times
    TotpSettings totp_settings;
    std::string issuer = "coffer";
  };

  // Opens (creating if absent) the registry in options.directory.
  static absl::StatusOr<std::unique_ptr<AdminRegistry>> Open(Options options);
  ~AdminRegistry();
  AdminRegistry(const AdminRegistry&) = delete;
  AdminRegistry& operator=(const AdminRegistry&) = delete;

  absl::StatusOr<std::vector<AdminRecord>> ListAdmins();
  absl::StatusOr<std::optional<AdminRecord>> FindAdmin(uint32_t uid);
  absl::StatusOr<size_t> AdminCount();
  // Whether `uid` is an enrolled admin, from memory (the data socket asks on every content
  // request: an enrolled admin's uid gets no content). Kept with every enrolment and removal;
  // a removal counts only once its row is deleted. When the admin rows could not be read at open,
  // every uid counts as enrolled (fail closed).
  bool IsEnrolled(uint32_t uid) const;

  // Allows `uid` to claim an enrolment until now+ttl, replacing an older invitation.
  // ALREADY_EXISTS if uid is enrolled.
  absl::Status Invite(uint32_t uid, uint32_t invited_by, std::chrono::seconds ttl);
  absl::StatusOr<std::vector<Invitation>> ListInvitations();  // unexpired only
  absl::StatusOr<bool> HasInvitation(uint32_t uid);           // unexpired

  // Enrols uid: needs `bootstrap` (the caller decided it is allowed) or an unexpired invitation
  // (consumed), else ADMIN_NOT_ENROLLED; ALREADY_EXISTS if enrolled. A stale token secret for
  // uid is destroyed and replaced. Returns the otpauth URI, the only place the secret appears.
  absl::StatusOr<Enrollment> Claim(uint32_t uid, std::string name, bool bootstrap);

  // Destroys uid's token secret and deletes its row. ADMIN_NOT_ENROLLED if none.
  absl::Status Remove(uint32_t uid);

  // RFC 6238 check of a 6-digit code at clock time over steps T-skew..T+skew. ADMIN_NOT_ENROLLED;
  // MFA_LOCKED_OUT while locked; MFA_CODE_INVALID (counted; the max_failures-th failure locks
  // the admin out and returns MFA_LOCKED_OUT); MFA_CODE_REUSED for a step <= the last accepted
  // one (not counted). On success the step is persisted before returning the updated record.
  absl::StatusOr<AdminRecord> VerifyCode(uint32_t uid, std::string_view code);

  // Approvals. Ids come from a persisted counter starting at 1, never reused.
  absl::StatusOr<ApprovalRecord> CreateApproval(uint32_t requester_uid, std::string requester_name,
                                                std::string payload, std::string summary,
                                                std::string dataset, std::chrono::seconds ttl);
  // APPROVAL_NOT_FOUND; a pending request past expiry is persisted and reported as kExpired.
  absl::StatusOr<ApprovalRecord> GetApproval(uint64_t id);
  absl::StatusOr<std::vector<ApprovalRecord>> ListApprovals(bool include_closed);  // id order
  // Pending and unexpired → kApproved / kDenied (persisted before returning). APPROVAL_NOT_FOUND;
  // APPROVAL_CLOSED if not pending or expired (then kExpired is persisted); APPROVAL_FORBIDDEN if
  // approver_uid == requester_uid.
  absl::StatusOr<ApprovalRecord> Decide(uint64_t id, uint32_t approver_uid,
                                        std::string approver_name, bool approve);
  // After an approved request ran: OK keeps kApproved, anything else makes it kFailed; stores
  // the code. APPROVAL_NOT_FOUND; APPROVAL_CLOSED unless the request is kApproved.
  absl::Status RecordResult(uint64_t id, ErrorCode result);
  // Marks every pending request past expiry kExpired and returns those.
  absl::StatusOr<std::vector<ApprovalRecord>> ExpireDue();
  // For an approved operation whose result only its requester may receive (dataset export):
  // marks request `id` redeemed by `uid` (persisted before returning) and returns it. Single
  // use. APPROVAL_NOT_FOUND; APPROVAL_FORBIDDEN if `uid` is not the requester; APPROVAL_CLOSED
  // unless it is kApproved, unexpired and not yet redeemed.
  absl::StatusOr<ApprovalRecord> Redeem(uint64_t id, uint32_t uid);

 private:
  AdminRegistry(Options options, std::unique_ptr<SignedRowStore> rows);

  int64_t NowMicros() const;
  // Verified (key, message bytes) of every row whose key starts with `prefix`, in key order.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ScanRows(
      std::string_view prefix);

  absl::StatusOr<std::optional<AdminRecord>> LoadAdmin(uint32_t uid);
  absl::Status StoreAdmin(const AdminRecord& admin);
  absl::StatusOr<std::optional<Invitation>> LoadInvitation(uint32_t uid);
  absl::StatusOr<std::optional<ApprovalRecord>> LoadApproval(uint64_t id);
  absl::Status StoreApproval(const ApprovalRecord& approval);
  // Rewrites approval rows of format 1 (content in the clear) sealed (format 2; see "At rest").
  absl::Status SealClearApprovals();
  // Loads `id`, persisting kExpired if it is pending and past expiry.
  absl::StatusOr<ApprovalRecord> LoadApprovalRefreshed(uint64_t id);

  Options options_;
  std::mutex mu_;
  std::unique_ptr<SignedRowStore> rows_;
  mutable std::mutex enrolled_mu_;  // taken after mu_ (or alone), never before it
  std::set<uint32_t> enrolled_;     // guarded by enrolled_mu_
  bool enrolled_unknown_ = false;   // the rows could not be read at open: every uid counts
  std::optional<crypto::RecordAead> approval_sealer_;  // set by Open, then immutable
};

}  // namespace coffer::kms::admin

#endif  // COFFER_KMS_ADMIN_ADMIN_REGISTRY_H_
