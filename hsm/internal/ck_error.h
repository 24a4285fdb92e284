// CK_RV → coffer::ErrorCode: every PKCS#11 failure becomes a typed, stable error.
//
// CkError(function, rv, context) builds a Status whose message reads
//   "<function> failed: <CKR_NAME> (<context>) — <what to fix>"
// and whose ErrorCode is chosen by rv (docs/hsm.md lists the mapping). Messages never contain
// PINs or key material; `context` must not either (callers pass dataset handles and versions,
// which are opaque numbers).
//
// Pure functions; thread-safe.

#ifndef COFFER_HSM_INTERNAL_CK_ERROR_H_
#define COFFER_HSM_INTERNAL_CK_ERROR_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "crypto/base/status.h"
#include "hsm/internal/pkcs11.h"

namespace coffer::hsm::internal {

// Returns "CKR_PIN_INCORRECT" etc., or "CKR_0x<hex>" for a value this table does not know.
std::string CkrName(CK_RV rv);

// Returns the ErrorCode that `rv` maps to. CKR_OK maps to kOk.
ErrorCode ErrorCodeForCkr(CK_RV rv);

// True when `rv` means the session or the device is gone and the client should close every
// session, log in again and rebuild its handle map (CKR_DEVICE_*, CKR_SESSION_*, token removed,
// user not logged in, library not initialised).
bool IsConnectionLoss(CK_RV rv);

// True when `rv` says a key or object handle is not (or no longer) in the token.
bool IsHandleInvalid(CK_RV rv);

// Returns the error for a failed PKCS#11 call. `function` is e.g. "C_UnwrapKey"; `context`
// (may be empty) says what coffer was doing.
absl::Status CkError(std::string_view function, CK_RV rv, std::string_view context = {});

// As CkError, with an explicit ErrorCode (for calls whose meaning depends on the caller, e.g. a
// key handle that is invalid because the key was destroyed).
absl::Status CkErrorWithCode(ErrorCode code, std::string_view function, CK_RV rv,
                             std::string_view context, std::string_view remedy);

}  // namespace coffer::hsm::internal

#endif  // COFFER_HSM_INTERNAL_CK_ERROR_H_
