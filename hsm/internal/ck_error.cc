#include "hsm/internal/ck_error.h"

namespace coffer::hsm::internal {
namespace {

struct CkrInfo {
  CK_RV rv;
  const char* name;
};

#define COFFER_CKR(x) \
  { x, #x }
constexpr CkrInfo kCkrNames[] = {
    COFFER_CKR(CKR_OK),
    COFFER_CKR(CKR_CANCEL),
    COFFER_CKR(CKR_HOST_MEMORY),
    COFFER_CKR(CKR_SLOT_ID_INVALID),
    COFFER_CKR(CKR_GENERAL_ERROR),
    COFFER_CKR(CKR_FUNCTION_FAILED),
    COFFER_CKR(CKR_ARGUMENTS_BAD),
    COFFER_CKR(CKR_NO_EVENT),
    COFFER_CKR(CKR_NEED_TO_CREATE_THREADS),
    COFFER_CKR(CKR_CANT_LOCK),
    COFFER_CKR(CKR_ATTRIBUTE_READ_ONLY),
    COFFER_CKR(CKR_ATTRIBUTE_SENSITIVE),
    COFFER_CKR(CKR_ATTRIBUTE_TYPE_INVALID),
    COFFER_CKR(CKR_ATTRIBUTE_VALUE_INVALID),
    COFFER_CKR(CKR_ACTION_PROHIBITED),
    COFFER_CKR(CKR_DATA_INVALID),
    COFFER_CKR(CKR_DATA_LEN_RANGE),
    COFFER_CKR(CKR_DEVICE_ERROR),
    COFFER_CKR(CKR_DEVICE_MEMORY),
    COFFER_CKR(CKR_DEVICE_REMOVED),
    COFFER_CKR(CKR_ENCRYPTED_DATA_INVALID),
    COFFER_CKR(CKR_ENCRYPTED_DATA_LEN_RANGE),
    COFFER_CKR(CKR_FUNCTION_CANCELED),
    COFFER_CKR(CKR_FUNCTION_NOT_PARALLEL),
    COFFER_CKR(CKR_FUNCTION_NOT_SUPPORTED),
    COFFER_CKR(CKR_KEY_HANDLE_INVALID),
    COFFER_CKR(CKR_KEY_SIZE_RANGE),
    COFFER_CKR(CKR_KEY_TYPE_INCONSISTENT),
    COFFER_CKR(CKR_KEY_NOT_NEEDED),
    COFFER_CKR(CKR_KEY_CHANGED),
    COFFER_CKR(CKR_KEY_NEEDED),
    COFFER_CKR(CKR_KEY_INDIGESTIBLE),
    COFFER_CKR(CKR_KEY_FUNCTION_NOT_PERMITTED),
    COFFER_CKR(CKR_KEY_NOT_WRAPPABLE),
    COFFER_CKR(CKR_KEY_UNEXTRACTABLE),
    COFFER_CKR(CKR_MECHANISM_INVALID),
    COFFER_CKR(CKR_MECHANISM_PARAM_INVALID),
    COFFER_CKR(CKR_OBJECT_HANDLE_INVALID),
    COFFER_CKR(CKR_OPERATION_ACTIVE),
    COFFER_CKR(CKR_OPERATION_NOT_INITIALIZED),
    COFFER_CKR(CKR_PIN_INCORRECT),
    COFFER_CKR(CKR_PIN_INVALID),
    COFFER_CKR(CKR_PIN_LEN_RANGE),
    COFFER_CKR(CKR_PIN_EXPIRED),
    COFFER_CKR(CKR_PIN_LOCKED),
    COFFER_CKR(CKR_SESSION_CLOSED),
    COFFER_CKR(CKR_SESSION_COUNT),
    COFFER_CKR(CKR_SESSION_HANDLE_INVALID),
    COFFER_CKR(CKR_SESSION_PARALLEL_NOT_SUPPORTED),
    COFFER_CKR(CKR_SESSION_READ_ONLY),
    COFFER_CKR(CKR_SESSION_EXISTS),
    COFFER_CKR(CKR_SESSION_READ_ONLY_EXISTS),
    COFFER_CKR(CKR_SESSION_READ_WRITE_SO_EXISTS),
    COFFER_CKR(CKR_SIGNATURE_INVALID),
    COFFER_CKR(CKR_SIGNATURE_LEN_RANGE),
    COFFER_CKR(CKR_TEMPLATE_INCOMPLETE),
    COFFER_CKR(CKR_TEMPLATE_INCONSISTENT),
    COFFER_CKR(CKR_TOKEN_NOT_PRESENT),
    COFFER_CKR(CKR_TOKEN_NOT_RECOGNIZED),
    COFFER_CKR(CKR_TOKEN_WRITE_PROTECTED),
    COFFER_CKR(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
    COFFER_CKR(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    COFFER_CKR(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT),
    COFFER_CKR(CKR_USER_ALREADY_LOGGED_IN),
    COFFER_CKR(CKR_USER_NOT_LOGGED_IN),
    COFFER_CKR(CKR_USER_PIN_NOT_INITIALIZED),
    COFFER_CKR(CKR_USER_TYPE_INVALID),
    COFFER_CKR(CKR_USER_ANOTHER_ALREADY_LOGGED_IN),
    COFFER_CKR(CKR_USER_TOO_MANY_TYPES),
    COFFER_CKR(CKR_WRAPPED_KEY_INVALID),
    COFFER_CKR(CKR_WRAPPED_KEY_LEN_RANGE),
    COFFER_CKR(CKR_WRAPPING_KEY_HANDLE_INVALID),
    COFFER_CKR(CKR_WRAPPING_KEY_SIZE_RANGE),
    COFFER_CKR(CKR_WRAPPING_KEY_TYPE_INCONSISTENT),
    COFFER_CKR(CKR_RANDOM_SEED_NOT_SUPPORTED),
    COFFER_CKR(CKR_RANDOM_NO_RNG),
    COFFER_CKR(CKR_DOMAIN_PARAMS_INVALID),
    COFFER_CKR(CKR_CURVE_NOT_SUPPORTED),
    COFFER_CKR(CKR_BUFFER_TOO_SMALL),
    COFFER_CKR(CKR_SAVED_STATE_INVALID),
    COFFER_CKR(CKR_INFORMATION_SENSITIVE),
    COFFER_CKR(CKR_STATE_UNSAVEABLE),
    COFFER_CKR(CKR_CRYPTOKI_NOT_INITIALIZED),
    COFFER_CKR(CKR_CRYPTOKI_ALREADY_INITIALIZED),
    COFFER_CKR(CKR_MUTEX_BAD),
    COFFER_CKR(CKR_MUTEX_NOT_LOCKED),
    COFFER_CKR(CKR_FUNCTION_REJECTED),
};
#undef COFFER_CKR

// What the operator should do about each class of failure.
std::string_view RemedyFor(ErrorCode code) {
  switch (code) {
    case ErrorCode::kHsmWrongPin:
      return "the user PIN is wrong; check the PIN file or environment variable coffer was given";
    case ErrorCode::kHsmPinLocked:
      return "the token's user PIN is locked after too many wrong attempts; the token's security "
             "officer must unlock or reset it";
    case ErrorCode::kHsmMechanismUnsupported:
      return "this token does not support the mechanism coffer needs; use a token that does or "
             "configure another PKCS#11 module";
    case ErrorCode::kWrappedKeyCorrupt:
      return "the wrapped key blob is damaged or belongs to another wrapping key; restore the "
             "key DB row from a backup";
    case ErrorCode::kKeyDestroyed:
      return "the key is no longer in the token (destroyed); data under it cannot be recovered";
    case ErrorCode::kHsmKeyNotFound:
      return "the key is not in the token; check that the right token is configured";
    case ErrorCode::kHsmSessionError:
      return "the PKCS#11 session was lost; coffer reopens sessions and logs in again";
    case ErrorCode::kHsmTokenNotFound:
      return "the token is not present; check the module path, SOFTHSM2_CONF and the token label";
    case ErrorCode::kPermissionDenied:
      return "the token refuses to reveal this attribute (sensitive or non-extractable key)";
    case ErrorCode::kFailedPrecondition:
      return "the token rejected the key template or the key's permitted use";
    case ErrorCode::kResourceExhausted:
      return "the token or host is out of memory or sessions";
    default:
      return "the HSM reported a device error; check the device, its logs and its configuration";
  }
}

}  // namespace

std::string CkrName(CK_RV rv) {
  for (const CkrInfo& info : kCkrNames) {
    if (info.rv == rv) return info.name;
  }
  std::string hex = "CKR_0x";
  for (int shift = 28; shift >= 0; shift -= 4) hex += "0123456789ABCDEF"[(rv >> shift) & 0xf];
  return hex;
}

ErrorCode ErrorCodeForCkr(CK_RV rv) {
  switch (rv) {
    case CKR_OK:
      return ErrorCode::kOk;
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_USER_PIN_NOT_INITIALIZED:
      return ErrorCode::kHsmWrongPin;
    case CKR_PIN_LOCKED:
      return ErrorCode::kHsmPinLocked;
    case CKR_MECHANISM_INVALID:
    case CKR_MECHANISM_PARAM_INVALID:
    case CKR_CURVE_NOT_SUPPORTED:
    case CKR_FUNCTION_NOT_SUPPORTED:
      return ErrorCode::kHsmMechanismUnsupported;
    case CKR_WRAPPED_KEY_INVALID:
    case CKR_WRAPPED_KEY_LEN_RANGE:
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
      return ErrorCode::kWrappedKeyCorrupt;
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_WRAPPING_KEY_HANDLE_INVALID:
    case CKR_UNWRAPPING_KEY_HANDLE_INVALID:
      return ErrorCode::kHsmKeyNotFound;
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_COUNT:
    case CKR_SESSION_READ_ONLY:
    case CKR_USER_NOT_LOGGED_IN:
      return ErrorCode::kHsmSessionError;
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
      return ErrorCode::kHsmTokenNotFound;
    case CKR_ATTRIBUTE_SENSITIVE:
    case CKR_KEY_UNEXTRACTABLE:
      return ErrorCode::kPermissionDenied;
    case CKR_ATTRIBUTE_TYPE_INVALID:
    case CKR_ATTRIBUTE_VALUE_INVALID:
    case CKR_ATTRIBUTE_READ_ONLY:
    case CKR_TEMPLATE_INCOMPLETE:
    case CKR_TEMPLATE_INCONSISTENT:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_SIZE_RANGE:
    case CKR_ACTION_PROHIBITED:
      return ErrorCode::kFailedPrecondition;
    case CKR_HOST_MEMORY:
      return ErrorCode::kResourceExhausted;
    default:
      return ErrorCode::kHsmDeviceError;
  }
}

bool IsConnectionLoss(CK_RV rv) {
  switch (rv) {
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_SESSION_CLOSED:
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
      return true;
    default:
      return false;
  }
}

bool IsHandleInvalid(CK_RV rv) {
  return rv == CKR_OBJECT_HANDLE_INVALID || rv == CKR_KEY_HANDLE_INVALID ||
         rv == CKR_WRAPPING_KEY_HANDLE_INVALID || rv == CKR_UNWRAPPING_KEY_HANDLE_INVALID;
}

absl::Status CkErrorWithCode(ErrorCode code, std::string_view function, CK_RV rv,
                             std::string_view context, std::string_view remedy) {
  std::string message(function);
  message += " failed: ";
  message += CkrName(rv);
  if (!context.empty()) {
    message += " (";
    message += context;
    message += ")";
  }
  message += " — ";
  message += remedy;
  return MakeError(code, message);
}

absl::Status CkError(std::string_view function, CK_RV rv, std::string_view context) {
  ErrorCode code = ErrorCodeForCkr(rv);
  if (code == ErrorCode::kOk) code = ErrorCode::kInternal;
  // Connection loss surfaces as a session/device error whatever the table says.
  if (IsConnectionLoss(rv) && code != ErrorCode::kHsmSessionError &&
      code != ErrorCode::kHsmTokenNotFound) {
    code = ErrorCode::kHsmDeviceError;
  }
  return CkErrorWithCode(code, function, rv, context, RemedyFor(code));
}

}  // namespace coffer::hsm::internal
