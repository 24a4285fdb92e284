// FillError: how every coffer.v1 error response is made from an absl::Status.
//
// The response carries the stable ErrorCode (crypto/base/status.h, docs/errors.md), its name and
// the status message, and a retry delay when the caller sets one (SLOW_DOWN, SERVER_BUSY). The
// caller chooses the message: a public text or its own, never key material, PINs or plaintext.
// Pure function; thread-compatible.

#ifndef COFFER_KMS_API_ERROR_RESPONSE_H_
#define COFFER_KMS_API_ERROR_RESPONSE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"

namespace coffer::api {

// Makes `response` an error response for `status`: clears any result, then sets its code, code
// name and message and, when non-zero, `retry_after_ms`.
void FillError(coffer::v1::Response* response, const absl::Status& status,
               uint32_t retry_after_ms = 0);
// The same for one Error message (a batch item's result).
void FillError(coffer::v1::Error* error, const absl::Status& status, uint32_t retry_after_ms = 0);

}  // namespace coffer::api

#endif  // COFFER_KMS_API_ERROR_RESPONSE_H_
