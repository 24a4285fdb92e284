// RFC 4648 base32 and the otpauth:// key URI that authenticator apps import (Google
// Authenticator "Key Uri Format"), for admin TOTP enrolment (kms/admin).
//
// The URI is the only place an admin's TOTP secret ever appears outside the token: callers hand
// it to the enrolling admin once and must never log it. Pure functions; thread-safe.
// Failures: Base32Decode returns INVALID_ARGUMENT for characters outside the alphabet or a
// length that no byte string encodes to.

#ifndef COFFER_KMS_ADMIN_OTPAUTH_H_
#define COFFER_KMS_ADMIN_OTPAUTH_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace coffer::kms::admin {

// RFC 4648 §6 base32 (alphabet A-Z2-7), without '=' padding.
std::string Base32Encode(std::string_view bytes);

// Inverse of Base32Encode. Accepts upper or lower case and optional trailing '=' padding.
absl::StatusOr<std::string> Base32Decode(std::string_view text);

// Percent-encodes everything except RFC 3986 unreserved characters (A-Z a-z 0-9 - . _ ~).
std::string PercentEncode(std::string_view text);

// otpauth://totp/<issuer>:<name>?secret=<base32>&issuer=<issuer>&algorithm=SHA1&digits=6
// &period=<step_seconds>, with issuer and name percent-encoded.
std::string OtpauthUri(std::string_view issuer, std::string_view name, std::string_view secret,
                       uint32_t step_seconds);

}  // namespace coffer::kms::admin

#endif  // COFFER_KMS_ADMIN_OTPAUTH_H_
