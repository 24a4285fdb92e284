"""Typed errors of the coffer client: one exception class per stable coffer error code.

Every code of crypto/base/status.h (ErrorCode; docs/errors.md gives each one's meaning and
remedy) has a class here, named after its code name: RECORD_NOT_FOUND (402) is
RecordNotFoundError, NOT_GRANTED (502) NotGrantedError, DAEMON_UNAVAILABLE (510)
DaemonUnavailableError. All derive from CofferError, which carries

    code            the stable number (branch on this, or on the class; never on the message)
    code_name       its name, e.g. "RECORD_NOT_FOUND"
    message         a human message; never a key, PIN, record id, value or attachment name
    retry_after_ms  for SLOW_DOWN (503) and SERVER_BUSY (506): how long the daemon asked the
                    caller to wait, in milliseconds; None when it said nothing

An error answered by the daemon keeps the daemon's code. The client raises some codes itself,
as the C++ client library does: DAEMON_UNAVAILABLE when the socket cannot be reached or the
connection breaks, REQUEST_TIMEOUT when a request's deadline passes, UNEXPECTED_FRAME when a
response breaks the protocol, FRAME_TOO_LARGE for a request or response above max_frame_bytes,
UPLOAD_CLOSED for use of a finished upload. A code this package does not know (a newer daemon)
raises CofferError itself with that code and name.

tests/kms/client/python_client_test.py checks that this table has every code of status.h under
the name status.cc gives it.
"""


class CofferError(Exception):
    """A failed coffer request: the stable code, its name and a message free of secrets."""

    code = 0
    code_name = "UNKNOWN"

    def __init__(self, message, code=None, code_name=None, retry_after_ms=None):
        super().__init__(message)
        if code is not None:
            self.code = code
        if code_name is not None:
            self.code_name = code_name
        self.message = message
        self.retry_after_ms = retry_after_ms

    def __str__(self):
        return f"{self.code_name} ({self.code}): {self.message}"

# General (1-99).
class InvalidArgumentError(CofferError):
    code, code_name = 1, "INVALID_ARGUMENT"
class OutOfRangeError(CofferError):
    code, code_name = 2, "OUT_OF_RANGE"
class NotFoundError(CofferError):
    code, code_name = 3, "NOT_FOUND"
class AlreadyExistsError(CofferError):
    code, code_name = 4, "ALREADY_EXISTS"
class FailedPreconditionError(CofferError):
    code, code_name = 5, "FAILED_PRECONDITION"
class PermissionDeniedError(CofferError):
    code, code_name = 6, "PERMISSION_DENIED"
class ResourceExhaustedError(CofferError):
    code, code_name = 7, "RESOURCE_EXHAUSTED"
class UnavailableError(CofferError):
    code, code_name = 8, "UNAVAILABLE"
class InternalError(CofferError):
    code, code_name = 9, "INTERNAL"
class DataLossError(CofferError):
    code, code_name = 10, "DATA_LOSS"
class CancelledError(CofferError):
    code, code_name = 11, "CANCELLED"
class DeadlineExceededError(CofferError):
    code, code_name = 12, "DEADLINE_EXCEEDED"
class IoError(CofferError):
    code, code_name = 13, "IO_ERROR"

# Crypto (100-199).
class CiphertextCorruptError(CofferError):
    code, code_name = 100, "CIPHERTEXT_CORRUPT"
class UnsupportedFormatError(CofferError):
    code, code_name = 101, "UNSUPPORTED_FORMAT"
class KeyVersionMismatchError(CofferError):
    code, code_name = 102, "KEY_VERSION_MISMATCH"
class KeyCommitmentMismatchError(CofferError):
    code, code_name = 103, "KEY_COMMITMENT_MISMATCH"
class RandomFailureError(CofferError):
    code, code_name = 104, "RANDOM_FAILURE"
class SecureHeapExhaustedError(CofferError):
    code, code_name = 105, "SECURE_HEAP_EXHAUSTED"
class CryptoLibraryError(CofferError):
    code, code_name = 106, "CRYPTO_LIBRARY_ERROR"

# HSM / PKCS#11 (200-299).
class HsmModuleNotFoundError(CofferError):
    code, code_name = 200, "HSM_MODULE_NOT_FOUND"
class HsmNotPkcs11ModuleError(CofferError):
    code, code_name = 201, "HSM_NOT_PKCS11_MODULE"
class HsmTokenNotFoundError(CofferError):
    code, code_name = 202, "HSM_TOKEN_NOT_FOUND"
class HsmWrongPinError(CofferError):
    code, code_name = 203, "HSM_WRONG_PIN"
class HsmPinLockedError(CofferError):
    code, code_name = 204, "HSM_PIN_LOCKED"
class HsmKeyNotFoundError(CofferError):
    code, code_name = 205, "HSM_KEY_NOT_FOUND"
class KeyDestroyedError(CofferError):
    code, code_name = 206, "KEY_DESTROYED"
class HsmMechanismUnsupportedError(CofferError):
    code, code_name = 207, "HSM_MECHANISM_UNSUPPORTED"
class WrappedKeyCorruptError(CofferError):
    code, code_name = 208, "WRAPPED_KEY_CORRUPT"
class HsmDeviceError(CofferError):
    code, code_name = 209, "HSM_DEVICE_ERROR"
class HsmPinUnavailableError(CofferError):
    code, code_name = 210, "HSM_PIN_UNAVAILABLE"
class HsmSessionError(CofferError):
    code, code_name = 211, "HSM_SESSION_ERROR"

# Key manager (300-399).
class AuditNotDurableError(CofferError):
    code, code_name = 300, "AUDIT_NOT_DURABLE"
class AuditLogClosedError(CofferError):
    code, code_name = 301, "AUDIT_LOG_CLOSED"
class AuditLogCorruptError(CofferError):
    code, code_name = 302, "AUDIT_LOG_CORRUPT"
class AuditTamperedError(CofferError):
    code, code_name = 303, "AUDIT_TAMPERED"
class KeyDbRowCorruptError(CofferError):
    code, code_name = 304, "KEY_DB_ROW_CORRUPT"
class DatasetNotFoundError(CofferError):
    code, code_name = 305, "DATASET_NOT_FOUND"
class DatasetNameInvalidError(CofferError):
    code, code_name = 306, "DATASET_NAME_INVALID"
class DatasetExistsError(CofferError):
    code, code_name = 307, "DATASET_EXISTS"
class DatasetStateForbidsError(CofferError):
    code, code_name = 308, "DATASET_STATE_FORBIDS"
class KeyVersionNotFoundError(CofferError):
    code, code_name = 309, "KEY_VERSION_NOT_FOUND"
class KeyVersionRetiredError(CofferError):
    code, code_name = 310, "KEY_VERSION_RETIRED"
class KeyVersionInUseError(CofferError):
    code, code_name = 311, "KEY_VERSION_IN_USE"
class LegalHoldActiveError(CofferError):
    code, code_name = 312, "LEGAL_HOLD_ACTIVE"
class DestructionStartedError(CofferError):
    code, code_name = 313, "DESTRUCTION_STARTED"
class ClockWentBackwardsError(CofferError):
    code, code_name = 314, "CLOCK_WENT_BACKWARDS"
class WrappingKeyMissingError(CofferError):
    code, code_name = 315, "WRAPPING_KEY_MISSING"
class UsageLimitReachedError(CofferError):
    code, code_name = 316, "USAGE_LIMIT_REACHED"
class TombstoneInvalidError(CofferError):
    code, code_name = 317, "TOMBSTONE_INVALID"
class RestoreIncompleteError(CofferError):
    code, code_name = 318, "RESTORE_INCOMPLETE"
class ReplaySourceStaleError(CofferError):
    code, code_name = 319, "REPLAY_SOURCE_STALE"
class ReceiptInvalidError(CofferError):
    code, code_name = 320, "RECEIPT_INVALID"
class KeyDbRolledBackError(CofferError):
    code, code_name = 321, "KEY_DB_ROLLED_BACK"
class PseudonymTranslateUnconfirmedError(CofferError):
    code, code_name = 325, "PSEUDONYM_TRANSLATE_UNCONFIRMED"

# Storage (400-499).
class IdTooLongError(CofferError):
    code, code_name = 400, "ID_TOO_LONG"
class ValueTooLargeError(CofferError):
    code, code_name = 401, "VALUE_TOO_LARGE"
class RecordNotFoundError(CofferError):
    code, code_name = 402, "RECORD_NOT_FOUND"
class AttachmentNotFoundError(CofferError):
    code, code_name = 403, "ATTACHMENT_NOT_FOUND"
class NotInRecycleBinError(CofferError):
    code, code_name = 404, "NOT_IN_RECYCLE_BIN"
class ComplianceLockedError(CofferError):
    code, code_name = 405, "COMPLIANCE_LOCKED"
class LegalHoldError(CofferError):
    code, code_name = 406, "LEGAL_HOLD"
class UploadClosedError(CofferError):
    code, code_name = 407, "UPLOAD_CLOSED"
class RangeBeyondEndError(CofferError):
    code, code_name = 408, "RANGE_BEYOND_END"
class DataDbError(CofferError):
    code, code_name = 409, "DATA_DB_ERROR"
class BackupNotFoundError(CofferError):
    code, code_name = 410, "BACKUP_NOT_FOUND"
class BackupCorruptError(CofferError):
    code, code_name = 411, "BACKUP_CORRUPT"
class RestoreTargetNotEmptyError(CofferError):
    code, code_name = 412, "RESTORE_TARGET_NOT_EMPTY"
class IdentifierInvalidError(CofferError):
    code, code_name = 413, "IDENTIFIER_INVALID"
class PseudonymTokenMalformedError(CofferError):
    code, code_name = 414, "PSEUDONYM_TOKEN_MALFORMED"
class PseudonymTokenMismatchError(CofferError):
    code, code_name = 415, "PSEUDONYM_TOKEN_MISMATCH"
class QuotaExceededError(CofferError):
    code, code_name = 416, "QUOTA_EXCEEDED"
class BatchReplyFullError(CofferError):
    code, code_name = 417, "BATCH_REPLY_FULL"

# Daemon and protocol (500-519).
class FrameTooLargeError(CofferError):
    code, code_name = 500, "FRAME_TOO_LARGE"
class MalformedRequestError(CofferError):
    code, code_name = 501, "MALFORMED_REQUEST"
class NotGrantedError(CofferError):
    code, code_name = 502, "NOT_GRANTED"
class SlowDownError(CofferError):
    code, code_name = 503, "SLOW_DOWN"
class WrongSocketError(CofferError):
    code, code_name = 504, "WRONG_SOCKET"
class RequestTimeoutError(CofferError):
    code, code_name = 505, "REQUEST_TIMEOUT"
class ServerBusyError(CofferError):
    code, code_name = 506, "SERVER_BUSY"
class ShuttingDownError(CofferError):
    code, code_name = 507, "SHUTTING_DOWN"
class UnexpectedFrameError(CofferError):
    code, code_name = 508, "UNEXPECTED_FRAME"
class ConfigInvalidError(CofferError):
    code, code_name = 509, "CONFIG_INVALID"
class DaemonUnavailableError(CofferError):
    code, code_name = 510, "DAEMON_UNAVAILABLE"

# Admin MFA and dual control (520-539).
class MfaRequiredError(CofferError):
    code, code_name = 520, "MFA_REQUIRED"
class MfaCodeInvalidError(CofferError):
    code, code_name = 521, "MFA_CODE_INVALID"
class MfaCodeReusedError(CofferError):
    code, code_name = 522, "MFA_CODE_REUSED"
class MfaLockedOutError(CofferError):
    code, code_name = 523, "MFA_LOCKED_OUT"
class AdminNotEnrolledError(CofferError):
    code, code_name = 524, "ADMIN_NOT_ENROLLED"
class ApprovalPendingError(CofferError):
    code, code_name = 525, "APPROVAL_PENDING"
class ApprovalForbiddenError(CofferError):
    code, code_name = 526, "APPROVAL_FORBIDDEN"
class ApprovalNotFoundError(CofferError):
    code, code_name = 527, "APPROVAL_NOT_FOUND"
class ApprovalClosedError(CofferError):
    code, code_name = 528, "APPROVAL_CLOSED"

# Dataset export (540-549).
class ExportRecipientKeyInvalidError(CofferError):
    code, code_name = 540, "EXPORT_RECIPIENT_KEY_INVALID"
class ExportArchiveCorruptError(CofferError):
    code, code_name = 541, "EXPORT_ARCHIVE_CORRUPT"
class ExportWrongRecipientError(CofferError):
    code, code_name = 542, "EXPORT_WRONG_RECIPIENT"

# Notifications and canary records (550-569).
class EventSubscriberInvalidError(CofferError):
    code, code_name = 550, "EVENT_SUBSCRIBER_INVALID"
class EventCursorInvalidError(CofferError):
    code, code_name = 551, "EVENT_CURSOR_INVALID"
class CanaryExistsError(CofferError):
    code, code_name = 560, "CANARY_EXISTS"
class CanaryNotFoundError(CofferError):
    code, code_name = 561, "CANARY_NOT_FOUND"


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# code -> class, for every code above.
ERROR_CLASSES = {cls.code: cls for cls in _subclasses(CofferError)}


def error_for(code, code_name, message, retry_after_ms=None):
    """The exception for an error the daemon answered: the class of `code`, or CofferError
    carrying the daemon's code and name when this package does not know the code."""
    cls = ERROR_CLASSES.get(code)
    if cls is None:
        return CofferError(message, code=code, code_name=code_name or "UNKNOWN",
                           retry_after_ms=retry_after_ms)
    return cls(message, retry_after_ms=retry_after_ms)
