// keyctl's deletion-receipt commands (docs/keyctl.md, "Deletion receipts"):
//   keyctl receipt get (NAME | --handle H) [-o FILE]
//   keyctl receipt verify FILE --public-key PEM [--name NAME]      (offline, no daemon)
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_RECEIPT_COMMANDS_H_
#define COFFER_KMS_KEYCTL_RECEIPT_COMMANDS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// Fetches a destroyed dataset's receipt by the name it had (or `handle` when set) and writes it
// to `out_file` (atomically, mode 0644) or prints it.
absl::Status ReceiptGet(CommandContext& ctx, const std::string& name,
                        std::optional<uint64_t> handle, const std::string& out_file);
// Checks a receipt file offline with the token's public key (PEM) and, when `name` is not
// empty, that the receipt is for that name (a v2 receipt under the name salt `salt_hex`, a v1
// receipt by the name's SHA-256); RECEIPT_INVALID otherwise, INVALID_ARGUMENT for a missing,
// superfluous or malformed salt.
absl::Status ReceiptVerify(CommandContext& ctx, const std::string& receipt_file,
                           const std::string& public_key_file, const std::string& name,
                           const std::string& salt_hex);

// Adds `receipt`.
void AddReceiptCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_RECEIPT_COMMANDS_H_
