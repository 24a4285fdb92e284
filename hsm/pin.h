// PinSource: where the token's user PIN comes from — a file or an environment variable, never
// the command line (argv is world-readable through /proc).
//
// ReadPin() returns the PIN in SecretBytes (OpenSSL's secure heap). A PIN file must be a regular
// file that only its owner can read or write (mode 0600 or 0400); a group- or world-accessible
// file is refused with a message naming the file and the chmod that fixes it. One trailing
// newline (LF or CRLF) is stripped. Errors: HSM_PIN_UNAVAILABLE, never containing the PIN.
//
// Thread-safe (const; reads the file or environment on each call).

#ifndef COFFER_HSM_PIN_H_
#define COFFER_HSM_PIN_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::hsm {

class PinSource {
 public:
  // The PIN is the content of the file at `path`.
  static PinSource FromFile(std::string_view path);
  // The PIN is the value of environment variable `name`.
  static PinSource FromEnvironment(std::string_view name);

  PinSource() = default;

  absl::StatusOr<crypto::SecretBytes> ReadPin() const;

  // "file /path" or "environment variable NAME", for messages.
  std::string Describe() const;

 private:
  enum class Kind { kNone, kFile, kEnvironment };
  PinSource(Kind kind, std::string_view where) : kind_(kind), where_(where) {}

  Kind kind_ = Kind::kNone;
  std::string where_;
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_PIN_H_
