// PKCS#11 calls the roles share: the template of a token secret key, key generation that copes
// with tokens lacking CKA_ALLOWED_MECHANISMS, and a one-shot C_SignInit + C_Sign.
//
// Each runs inside a Token::Run operation, on the session it is given; none retries or
// reconnects (Token::Run does). Errors are CkError's (hsm/internal/ck_error.h). Thread-safe as
// far as the session is used by one thread at a time.

#ifndef COFFER_HSM_INTERNAL_KEY_OPERATIONS_H_
#define COFFER_HSM_INTERNAL_KEY_OPERATIONS_H_

#include <cstddef>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/labels.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/token.h"

namespace coffer::hsm::internal {

// Common attributes of a secret key that lives in the token and never leaves it: token,
// private, sensitive, non-extractable, no encrypt/decrypt/derive, with `id`'s label and CKA_ID.
AttributeList TokenSecretKey(const ObjectId& id, CK_KEY_TYPE key_type);

// C_GenerateKey with `attributes`. If the token rejects CKA_ALLOWED_MECHANISMS it notes that on
// `token` and generates again without it (as every later key will be).
absl::StatusOr<CK_OBJECT_HANDLE> GenerateSecretKey(Token& token, CK_SESSION_HANDLE session,
                                                   CK_MECHANISM_TYPE mechanism,
                                                   AttributeList& attributes);

// C_SignInit(`mechanism`, `key`) then C_Sign over `data`; returns at most `max_out` bytes.
absl::StatusOr<std::string> SignWithKey(CK_FUNCTION_LIST* functions, CK_SESSION_HANDLE session,
                                        CK_MECHANISM_TYPE mechanism, CK_OBJECT_HANDLE key,
                                        std::string_view data, size_t max_out);

}  // namespace coffer::hsm::internal

#endif  // COFFER_HSM_INTERNAL_KEY_OPERATIONS_H_
