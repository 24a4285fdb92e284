// keyctl's admin, MFA and dual-control commands (docs/keyctl.md; control.proto):
//   keyctl admin enroll [--uid UID]    (no uid: claim your own enrolment, its otpauth:// URI
//                                       printed once; a uid: invite it)
//   keyctl admin list
//   keyctl admin remove --uid UID
//   keyctl request list [--all]
//   keyctl request approve|deny ID     (approve runs the operation and prints its result)
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_ADMIN_COMMANDS_H_
#define COFFER_KMS_KEYCTL_ADMIN_COMMANDS_H_

#include <cstdint>
#include <optional>

#include "absl/status/status.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// uid unset: claim the caller's own enrolment (prints the otpauth:// URI once); set: invite it.
absl::Status AdminEnroll(CommandContext& ctx, std::optional<uint32_t> uid);
absl::Status AdminList(CommandContext& ctx);
absl::Status AdminRemove(CommandContext& ctx, uint32_t uid);
absl::Status RequestList(CommandContext& ctx, bool include_closed);
absl::Status RequestDecide(CommandContext& ctx, uint64_t id, bool approve);

// Adds `admin` and `request`.
void AddAdminCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_ADMIN_COMMANDS_H_
