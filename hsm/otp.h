// RFC 4226 / RFC 6238 arithmetic outside the token: dynamic truncation and the time counter.
//
// The HMAC itself is computed inside the token (TotpTokenStore::TotpHmac); these functions only
// turn its output into digits. Pure functions; thread-safe.

#ifndef COFFER_HSM_OTP_H_
#define COFFER_HSM_OTP_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"

namespace coffer::hsm {

// RFC 4226 §5.3 dynamic truncation of an HMAC-SHA1 value to `digits` (6..9) decimal digits,
// zero-padded. INVALID_ARGUMENT for other digit counts.
absl::StatusOr<std::string> HotpTruncate(const std::array<uint8_t, 20>& hmac, int digits);

// RFC 6238 §4.2: T = floor((unix_seconds - t0) / step). INVALID_ARGUMENT when step is 0 or the
// time precedes t0.
absl::StatusOr<uint64_t> TotpCounter(uint64_t unix_seconds, uint64_t step_seconds = 30,
                                     uint64_t t0 = 0);

}  // namespace coffer::hsm

#endif  // COFFER_HSM_OTP_H_
