#include "crypto/base/status.h"

#include <charconv>
#include <string>

#include "absl/strings/cord.h"
#include "absl/types/optional.h"

namespace coffer {
namespace {

// The payload key under which the numeric ErrorCode travels inside an absl::Status.
// Debian builds abseil with its own absl::string_view, distinct from std::string_view.
constexpr absl::string_view kErrorCodePayload = "type.coffer.dev/coffer.ErrorCode";

struct CodeInfo {
  ErrorCode code;
  std::string_view name;
  absl::StatusCode canonical;
};

constexpr CodeInfo kCodes[] = {
    {ErrorCode::kOk, "OK", absl::StatusCode::kOk},
    {ErrorCode::kInvalidArgument, "INVALID_ARGUMENT", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kOutOfRange, "OUT_OF_RANGE", absl::StatusCode::kOutOfRange},
    {ErrorCode::kNotFound, "NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kAlreadyExists, "ALREADY_EXISTS", absl::StatusCode::kAlreadyExists},
    {ErrorCode::kFailedPrecondition, "FAILED_PRECONDITION", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kPermissionDenied, "PERMISSION_DENIED", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kResourceExhausted, "RESOURCE_EXHAUSTED", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kUnavailable, "UNAVAILABLE", absl::StatusCode::kUnavailable},
    {ErrorCode::kInternal, "INTERNAL", absl::StatusCode::kInternal},
    {ErrorCode::kDataLoss, "DATA_LOSS", absl::StatusCode::kDataLoss},
    {ErrorCode::kCancelled, "CANCELLED", absl::StatusCode::kCancelled},
    {ErrorCode::kDeadlineExceeded, "DEADLINE_EXCEEDED", absl::StatusCode::kDeadlineExceeded},
    {ErrorCode::kIoError, "IO_ERROR", absl::StatusCode::kUnavailable},
    {ErrorCode::kCiphertextCorrupt, "CIPHERTEXT_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kUnsupportedFormat, "UNSUPPORTED_FORMAT", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kKeyVersionMismatch, "KEY_VERSION_MISMATCH", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kKeyCommitmentMismatch, "KEY_COMMITMENT_MISMATCH", absl::StatusCode::kDataLoss},
    {ErrorCode::kRandomFailure, "RANDOM_FAILURE", absl::StatusCode::kInternal},
    {ErrorCode::kSecureHeapExhausted, "SECURE_HEAP_EXHAUSTED",
     absl::StatusCode::kResourceExhausted},
    {ErrorCode::kCryptoLibraryError, "CRYPTO_LIBRARY_ERROR", absl::StatusCode::kInternal},
    {ErrorCode::kHsmModuleNotFound, "HSM_MODULE_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kHsmNotPkcs11Module, "HSM_NOT_PKCS11_MODULE", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kHsmTokenNotFound, "HSM_TOKEN_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kHsmWrongPin, "HSM_WRONG_PIN", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kHsmPinLocked, "HSM_PIN_LOCKED", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kHsmKeyNotFound, "HSM_KEY_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kKeyDestroyed, "KEY_DESTROYED", absl::StatusCode::kNotFound},
    {ErrorCode::kHsmMechanismUnsupported, "HSM_MECHANISM_UNSUPPORTED",
     absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kWrappedKeyCorrupt, "WRAPPED_KEY_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kHsmDeviceError, "HSM_DEVICE_ERROR", absl::StatusCode::kUnavailable},
    {ErrorCode::kHsmPinUnavailable, "HSM_PIN_UNAVAILABLE", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kHsmSessionError, "HSM_SESSION_ERROR", absl::StatusCode::kUnavailable},
    {ErrorCode::kAuditNotDurable, "AUDIT_NOT_DURABLE", absl::StatusCode::kUnavailable},
    {ErrorCode::kAuditLogClosed, "AUDIT_LOG_CLOSED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kAuditLogCorrupt, "AUDIT_LOG_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kAuditTampered, "AUDIT_TAMPERED", absl::StatusCode::kDataLoss},
    {ErrorCode::kKeyDbRowCorrupt, "KEY_DB_ROW_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kDatasetNotFound, "DATASET_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kDatasetNameInvalid, "DATASET_NAME_INVALID", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kDatasetExists, "DATASET_EXISTS", absl::StatusCode::kAlreadyExists},
    {ErrorCode::kDatasetStateForbids, "DATASET_STATE_FORBIDS",
     absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kKeyVersionNotFound, "KEY_VERSION_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kKeyVersionRetired, "KEY_VERSION_RETIRED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kKeyVersionInUse, "KEY_VERSION_IN_USE", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kLegalHoldActive, "LEGAL_HOLD_ACTIVE", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kDestructionStarted, "DESTRUCTION_STARTED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kClockWentBackwards, "CLOCK_WENT_BACKWARDS", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kWrappingKeyMissing, "WRAPPING_KEY_MISSING", absl::StatusCode::kDataLoss},
    {ErrorCode::kUsageLimitReached, "USAGE_LIMIT_REACHED", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kTombstoneInvalid, "TOMBSTONE_INVALID", absl::StatusCode::kDataLoss},
    {ErrorCode::kRestoreIncomplete, "RESTORE_INCOMPLETE", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kReplaySourceStale, "REPLAY_SOURCE_STALE", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kReceiptInvalid, "RECEIPT_INVALID", absl::StatusCode::kDataLoss},
    {ErrorCode::kKeyDbRolledBack, "KEY_DB_ROLLED_BACK", absl::StatusCode::kDataLoss},
    {ErrorCode::kPseudonymTranslateUnconfirmed, "PSEUDONYM_TRANSLATE_UNCONFIRMED",
     absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kIdTooLong, "ID_TOO_LONG", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kValueTooLarge, "VALUE_TOO_LARGE", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kRecordNotFound, "RECORD_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kAttachmentNotFound, "ATTACHMENT_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kNotInRecycleBin, "NOT_IN_RECYCLE_BIN", absl::StatusCode::kNotFound},
    {ErrorCode::kComplianceLocked, "COMPLIANCE_LOCKED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kLegalHold, "LEGAL_HOLD", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kUploadClosed, "UPLOAD_CLOSED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kRangeBeyondEnd, "RANGE_BEYOND_END", absl::StatusCode::kOutOfRange},
    {ErrorCode::kDataDbError, "DATA_DB_ERROR", absl::StatusCode::kUnavailable},
    {ErrorCode::kBackupNotFound, "BACKUP_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kBackupCorrupt, "BACKUP_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kRestoreTargetNotEmpty, "RESTORE_TARGET_NOT_EMPTY",
     absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kIdentifierInvalid, "IDENTIFIER_INVALID", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kPseudonymTokenMalformed, "PSEUDONYM_TOKEN_MALFORMED",
     absl::StatusCode::kInvalidArgument},
    {ErrorCode::kPseudonymTokenMismatch, "PSEUDONYM_TOKEN_MISMATCH",
     absl::StatusCode::kInvalidArgument},
    {ErrorCode::kQuotaExceeded, "QUOTA_EXCEEDED", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kBatchReplyFull, "BATCH_REPLY_FULL", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kFrameTooLarge, "FRAME_TOO_LARGE", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kMalformedRequest, "MALFORMED_REQUEST", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kNotGranted, "NOT_GRANTED", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kSlowDown, "SLOW_DOWN", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kWrongSocket, "WRONG_SOCKET", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kRequestTimeout, "REQUEST_TIMEOUT", absl::StatusCode::kDeadlineExceeded},
    {ErrorCode::kServerBusy, "SERVER_BUSY", absl::StatusCode::kUnavailable},
    {ErrorCode::kShuttingDown, "SHUTTING_DOWN", absl::StatusCode::kUnavailable},
    {ErrorCode::kUnexpectedFrame, "UNEXPECTED_FRAME", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kConfigInvalid, "CONFIG_INVALID", absl::StatusCode::kInvalidArgument},
    {ErrorCode::kDaemonUnavailable, "DAEMON_UNAVAILABLE", absl::StatusCode::kUnavailable},
    {ErrorCode::kMfaRequired, "MFA_REQUIRED", absl::StatusCode::kUnauthenticated},
    {ErrorCode::kMfaCodeInvalid, "MFA_CODE_INVALID", absl::StatusCode::kUnauthenticated},
    {ErrorCode::kMfaCodeReused, "MFA_CODE_REUSED", absl::StatusCode::kUnauthenticated},
    {ErrorCode::kMfaLockedOut, "MFA_LOCKED_OUT", absl::StatusCode::kResourceExhausted},
    {ErrorCode::kAdminNotEnrolled, "ADMIN_NOT_ENROLLED", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kApprovalPending, "APPROVAL_PENDING", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kApprovalForbidden, "APPROVAL_FORBIDDEN", absl::StatusCode::kPermissionDenied},
    {ErrorCode::kApprovalNotFound, "APPROVAL_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kApprovalClosed, "APPROVAL_CLOSED", absl::StatusCode::kFailedPrecondition},
    {ErrorCode::kEventSubscriberInvalid, "EVENT_SUBSCRIBER_INVALID",
     absl::StatusCode::kInvalidArgument},
    {ErrorCode::kEventCursorInvalid, "EVENT_CURSOR_INVALID", absl::StatusCode::kOutOfRange},
    {ErrorCode::kCanaryExists, "CANARY_EXISTS", absl::StatusCode::kAlreadyExists},
    {ErrorCode::kCanaryNotFound, "CANARY_NOT_FOUND", absl::StatusCode::kNotFound},
    {ErrorCode::kExportRecipientKeyInvalid, "EXPORT_RECIPIENT_KEY_INVALID",
     absl::StatusCode::kInvalidArgument},
    {ErrorCode::kExportArchiveCorrupt, "EXPORT_ARCHIVE_CORRUPT", absl::StatusCode::kDataLoss},
    {ErrorCode::kExportWrongRecipient, "EXPORT_WRONG_RECIPIENT",
     absl::StatusCode::kPermissionDenied},
};

const CodeInfo* Find(ErrorCode code) {
  for (const CodeInfo& info : kCodes) {
    if (info.code == code) return &info;
  }
  return nullptr;
}

ErrorCode GeneralCodeFor(absl::StatusCode canonical) {
  for (const CodeInfo& info : kCodes) {
    if (info.canonical == canonical && static_cast<int>(info.code) < 100) return info.code;
  }
  return ErrorCode::kInternal;
}

}  // namespace

std::string_view ErrorCodeName(ErrorCode code) {
  const CodeInfo* info = Find(code);
  return info == nullptr ? "UNKNOWN" : info->name;
}

absl::StatusCode CanonicalCode(ErrorCode code) {
  const CodeInfo* info = Find(code);
  return info == nullptr ? absl::StatusCode::kInternal : info->canonical;
}

absl::Status MakeError(ErrorCode code, std::string_view message) {
  if (code == ErrorCode::kOk || Find(code) == nullptr) {
    code = ErrorCode::kInternal;
  }
  absl::Status status(CanonicalCode(code), absl::string_view(message.data(), message.size()));
  status.SetPayload(kErrorCodePayload, absl::Cord(std::to_string(static_cast<int>(code))));
  return status;
}

ErrorCode ErrorCodeOf(const absl::Status& status) {
  if (status.ok()) return ErrorCode::kOk;
  absl::optional<absl::Cord> payload = status.GetPayload(kErrorCodePayload);
  if (payload.has_value()) {
    std::string text(*payload);
    int value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size() &&
        Find(static_cast<ErrorCode>(value)) != nullptr) {
      return static_cast<ErrorCode>(value);
    }
  }
  return GeneralCodeFor(status.code());
}

}  // namespace coffer
