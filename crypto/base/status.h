// coffer's one error type: absl::Status / absl::StatusOr<T>, carrying a stable ErrorCode.
//
// Every public function in coffer that can fail returns absl::Status or absl::StatusOr<T>.
// The canonical absl code tells a caller the broad class of failure; the ErrorCode payload
// tells exactly what happened and is stable across releases (clients, the socket protocol
// and keyctl's exit codes depend on it). The numbers are documented in docs/errors.md and
// must never be reused or renumbered.
//
// Messages are for people. They name what to fix and never contain key material, PINs,
// plaintext or record ids.
//
// Exceptions: none cross a module boundary. Code that calls a throwing library (CLI11,
// std::filesystem's throwing overloads, protobuf text parsing) catches at the call site and
// converts to a Status. std::bad_alloc is the one exception we let terminate the process.

#ifndef COFFER_CRYPTO_BASE_STATUS_H_
#define COFFER_CRYPTO_BASE_STATUS_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace coffer {

// Stable error codes. Append only; see docs/errors.md for each code's meaning and remedy.
enum class ErrorCode : int {
  kOk = 0,

  // General (1-99).
  kInvalidArgument = 1,
  kOutOfRange = 2,
  kNotFound = 3,
  kAlreadyExists = 4,
  kFailedPrecondition = 5,
  kPermissionDenied = 6,
  kResourceExhausted = 7,
  kUnavailable = 8,
  kInternal = 9,
  kDataLoss = 10,
  kCancelled = 11,
  kDeadlineExceeded = 12,
  kIoError = 13,

  // Crypto (100-199).
  kCiphertextCorrupt = 100,      // authentication failed: tampered, truncated or wrong key/AD
  kUnsupportedFormat = 101,      // unknown format byte or version
  kKeyVersionMismatch = 102,     // ciphertext names another key version than the key given
  kKeyCommitmentMismatch = 103,  // stream header commits to another key or context
  kRandomFailure = 104,          // OpenSSL's DRBG refused to generate
  kSecureHeapExhausted = 105,    // the secure heap has no room for more key material
  kCryptoLibraryError = 106,     // an OpenSSL call failed unexpectedly

  // HSM / PKCS#11 (200-299).
  kHsmModuleNotFound = 200,
  kHsmNotPkcs11Module = 201,
  kHsmTokenNotFound = 202,
  kHsmWrongPin = 203,
  kHsmPinLocked = 204,
  kHsmKeyNotFound = 205,
  kKeyDestroyed = 206,
  kHsmMechanismUnsupported = 207,
  kWrappedKeyCorrupt = 208,
  kHsmDeviceError = 209,
  kHsmPinUnavailable = 210,  // PIN file or variable missing, unreadable or too open
  kHsmSessionError = 211,

  // Key manager (300-399).
  kAuditNotDurable = 300,  // an audit entry could not be made durable; the operation must not run
  kAuditLogClosed = 301,   // the audit log refuses appends: closed, or failed earlier (reopen it)
  kAuditLogCorrupt = 302,  // the audit log cannot be resumed: damage beyond a torn final write
  kAuditTampered = 303,    // audit verification found an edit, gap, reordering or truncation

  // Key manager: key DB, datasets, versions, lifecycle.
  kKeyDbRowCorrupt = 304,      // a key-DB row failed its HSM tag or does not parse
  kDatasetNotFound = 305,      // no dataset with that handle or name
  kDatasetNameInvalid = 306,   // name not 1-128 of [a-z0-9._/-]
  kDatasetExists = 307,        // a dataset with that name exists
  kDatasetStateForbids = 308,  // the dataset's lifecycle state forbids it
  kKeyVersionNotFound = 309,   // no such key version
  kKeyVersionRetired = 310,    // the version is below the minimum decryption version
  kKeyVersionInUse = 311,      // retiring a version that still protects data
  kLegalHoldActive = 312,      // a legal hold blocks destruction or purge
  kDestructionStarted = 313,   // destruction began; it cannot be cancelled
  kClockWentBackwards = 314,   // the clock is behind the persisted high-water mark
  kWrappingKeyMissing = 315,   // a DWK the key DB names is absent from the token
  kUsageLimitReached = 316,    // the primary reached its encryption limit and could not rotate
  kTombstoneInvalid = 317,     // a tombstone's signature or content does not verify
  kRestoreIncomplete = 318,    // a restore into that directory did not finish: never serve it
  kReplaySourceStale = 319,    // the replay log is another log, or ends before the backup
  kReceiptInvalid = 320,       // a deletion receipt's signature or content does not verify
  kKeyDbRolledBack = 321,      // the key DB is older than the audit log says it must be
  kPseudonymTranslateUnconfirmed = 325,  // a pseudonym retire without the translate-run word

  // Storage (400-499).
  kIdTooLong = 400,              // a record id or attachment name exceeds 1 KiB
  kValueTooLarge = 401,          // a record value exceeds the configured limit
  kRecordNotFound = 402,         // no live record with this id
  kAttachmentNotFound = 403,     // no live attachment with this name
  kNotInRecycleBin = 404,        // nothing with this id or name in the dataset's recycle bin
  kComplianceLocked = 405,       // the dataset's minimum retention forbids deleting or purging yet
  kLegalHold = 406,              // a legal hold on the dataset blocks purges
  kUploadClosed = 407,           // a chunk or commit after the upload was committed or aborted
  kRangeBeyondEnd = 408,         // a read range ends beyond the attachment
  kDataDbError = 409,            // RocksDB reported a failure; the message names it
  kBackupNotFound = 410,         // no data-DB backup with this id
  kBackupCorrupt = 411,          // a data-DB backup failed verification (size or checksum)
  kRestoreTargetNotEmpty = 412,  // a restore refuses a target directory that is not empty
  kIdentifierInvalid = 413,      // an identifier to pseudonymize is empty or longer than 1 KiB
  kPseudonymTokenMalformed = 414,  // not a coffer pseudonym token (unknown format)
  kPseudonymTokenMismatch = 415,   // the token does not open under this dataset's pseudonym key
  kQuotaExceeded = 416,            // the write would take the dataset beyond its quota
  kBatchReplyFull = 417,           // a batch's reply holds no more values; ask for the rest again

  // Daemon and protocol (500-599).
  kFrameTooLarge = 500,      // a frame's declared size exceeds the maximum; connection closed
  kMalformedRequest = 501,   // a frame that is not a valid Request, or a request missing a field
  kNotGranted = 502,         // the caller's uid and groups hold no grant for this operation
  kSlowDown = 503,           // the caller's rate limit is exhausted; retry after the given delay
  kWrongSocket = 504,        // an admin operation on the data socket
  kRequestTimeout = 505,     // the request did not complete in time (connection idle or slow)
  kServerBusy = 506,         // every worker and queue slot is taken; retry
  kShuttingDown = 507,       // the daemon is draining for shutdown; retry on the next start
  kUnexpectedFrame = 508,    // a frame out of order, e.g. a chunk with no upload open
  kConfigInvalid = 509,      // the daemon's configuration is unusable; the message says what to fix
  kDaemonUnavailable = 510,  // the client could not reach the daemon (not running, socket mode)

  // Admin MFA and dual control (520-539).
  kMfaRequired = 520,        // the operation needs a TOTP code from an enrolled admin (--totp)
  kMfaCodeInvalid = 521,     // a wrong or malformed TOTP code; counted towards the lock-out
  kMfaCodeReused = 522,      // the code (or a later one) was already used: codes are single-use
  kMfaLockedOut = 523,       // too many wrong codes; retry after the lock-out
  kAdminNotEnrolled = 524,   // the uid has no enrolled TOTP secret (and no invitation)
  kApprovalPending = 525,    // recorded as a request that a second admin must approve
  kApprovalForbidden = 526,  // the approver is the requester or not enrolled, or too few admins
  kApprovalNotFound = 527,   // no approval request with that id
  kApprovalClosed = 528,     // the request was already approved, denied, or has expired

  // 550-569 notifications (event log) and canary records (docs/events.md).
  kEventSubscriberInvalid = 550,  // a subscriber name that is not 1-64 of [a-z0-9._-]
  kEventCursorInvalid = 551,      // ack_through beyond the last event delivered to the subscriber
  kCanaryExists = 560,            // the record or attachment already exists (canary or not)
  kCanaryNotFound = 561,          // no canary with that dataset and id or name
  // Dataset export (540-549; docs/formats.md#export-v1).
  kExportRecipientKeyInvalid = 540,  // recipient key missing, unreadable, not RSA >= 2048 / X25519
  kExportArchiveCorrupt = 541,       // bad format, truncated, or the signature does not verify
  kExportWrongRecipient = 542,       // the private key does not open the wrapped export key

  // 300-399 key manager, 400-499 storage, 500-599 daemon and protocol, 600-699 admin/keyctl:
  // reserved for the layers above, which append their codes here.
};

// Returns the stable upper-case name of `code`, e.g. "CIPHERTEXT_CORRUPT".
std::string_view ErrorCodeName(ErrorCode code);

// Returns the canonical absl code that `code` maps to.
absl::StatusCode CanonicalCode(ErrorCode code);

// Returns a non-OK status with `code` attached. `message` must not contain secrets.
// MakeError(ErrorCode::kOk, ...) is a programming error and yields kInternal.
absl::Status MakeError(ErrorCode code, std::string_view message);

// Returns the ErrorCode carried by `status`: kOk for an OK status; for a status made outside
// coffer (no payload), the general code matching its canonical code.
ErrorCode ErrorCodeOf(const absl::Status& status);

}  // namespace coffer

#define COFFER_STATUS_CONCAT_INNER_(a, b) a##b
#define COFFER_STATUS_CONCAT_(a, b) COFFER_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (an absl::Status) is not OK.
#define COFFER_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status coffer_status_ = (expr);          \
    if (!coffer_status_.ok()) return coffer_status_; \
  } while (0)

// `lhs = value of expr` when `expr` (an absl::StatusOr<T>) holds a value; otherwise returns its
// status from the enclosing function. `lhs` may declare a variable: COFFER_ASSIGN_OR_RETURN(auto x,
// F());
#define COFFER_ASSIGN_OR_RETURN(lhs, expr) \
  COFFER_ASSIGN_OR_RETURN_IMPL_(COFFER_STATUS_CONCAT_(coffer_statusor_, __LINE__), lhs, expr)
#define COFFER_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // COFFER_CRYPTO_BASE_STATUS_H_
