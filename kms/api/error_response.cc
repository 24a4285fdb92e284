#include "kms/api/error_response.h"

#include <string>

#include "crypto/base/status.h"

namespace coffer::api {

void FillError(coffer::v1::Response* response, const absl::Status& status,
               uint32_t retry_after_ms) {
  response->clear_result();
  FillError(response->mutable_error(), status, retry_after_ms);
}

void FillError(coffer::v1::Error* error, const absl::Status& status, uint32_t retry_after_ms) {
  ErrorCode code = ErrorCodeOf(status);
  error->set_code(static_cast<int32_t>(code));
  error->set_code_name(std::string(ErrorCodeName(code)));
  error->set_message(std::string(status.message()));
  if (retry_after_ms != 0) error->set_retry_after_ms(retry_after_ms);
}

}  // namespace coffer::api
