#include "hsm/otp.h"

#include "crypto/base/status.h"

namespace coffer::hsm {

absl::StatusOr<std::string> HotpTruncate(const std::array<uint8_t, 20>& hmac, int digits) {
  if (digits < 6 || digits > 9) {
    return MakeError(ErrorCode::kInvalidArgument, "HOTP codes have 6 to 9 digits");
  }
  const int offset = hmac[19] & 0x0f;
  const uint32_t binary = (static_cast<uint32_t>(hmac[offset] & 0x7f) << 24) |
                          (static_cast<uint32_t>(hmac[offset + 1]) << 16) |
                          (static_cast<uint32_t>(hmac[offset + 2]) << 8) |
                          static_cast<uint32_t>(hmac[offset + 3]);
  uint32_t modulus = 1;
  for (int i = 0; i < digits; ++i) modulus *= 10;
  std::string code = std::to_string(binary % modulus);
  return std::string(static_cast<size_t>(digits) - code.size(), '0') + code;
}

absl::StatusOr<uint64_t> TotpCounter(uint64_t unix_seconds, uint64_t step_seconds, uint64_t t0) {
  if (step_seconds == 0) return MakeError(ErrorCode::kInvalidArgument, "TOTP step must be > 0");
  if (unix_seconds < t0) {
    return MakeError(ErrorCode::kInvalidArgument, "time precedes the TOTP epoch t0");
  }
  return (unix_seconds - t0) / step_seconds;
}

}  // namespace coffer::hsm
