#include "crypto/internal/openssl_util.h"

#include <openssl/err.h>

#include <string>

#include "crypto/base/status.h"

namespace coffer::crypto::internal {

absl::Status OpenSslError(std::string_view operation) {
  unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int): OpenSSL's type
  std::string message = "OpenSSL failed in " + std::string(operation);
  if (code != 0) {
    const char* reason = ERR_reason_error_string(code);
    if (reason != nullptr) message += ": " + std::string(reason);
  }
  ERR_clear_error();
  return MakeError(ErrorCode::kCryptoLibraryError, message);
}

}  // namespace coffer::crypto::internal
