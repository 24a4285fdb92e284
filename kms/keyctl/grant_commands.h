// keyctl's grant commands: data-socket grants at run time (docs/keyctl.md, "Grants"; control.proto
// GrantAddRequest, kms/ops/runtime_grants.h for the rules):
//   keyctl grant list [--json]                     (the configuration's and the stored grants)
//   keyctl grant add PRINCIPAL DATASET RIGHT...    (dual control: prints the approval id)
//   keyctl grant remove ID                         (dual control: prints the approval id)
// PRINCIPAL is uid:N, user:NAME, gid:N or group:NAME; DATASET a dataset's name or '*'; RIGHT one
// of read, write, delete, metadata, pseudonymize, reidentify (any case; commas also separate).
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_GRANT_COMMANDS_H_
#define COFFER_KMS_KEYCTL_GRANT_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// "uid:1001", "user:crm", "gid:100", "group:crm"; INVALID_ARGUMENT naming the accepted forms.
absl::StatusOr<coffer::v1::GrantPrincipal> ParseGrantPrincipal(const std::string& text);
// Right names (any case), each word possibly a comma-separated list; INVALID_ARGUMENT naming the
// first unknown one.
absl::StatusOr<std::vector<coffer::v1::GrantInfo::Right>> ParseGrantRights(
    const std::vector<std::string>& words);

absl::Status GrantList(CommandContext& ctx);
absl::Status GrantAdd(CommandContext& ctx, const coffer::v1::GrantPrincipal& principal,
                      const std::string& dataset,
                      const std::vector<coffer::v1::GrantInfo::Right>& rights);
absl::Status GrantRemove(CommandContext& ctx, uint64_t id);

// Adds `grant`.
void AddGrantCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_GRANT_COMMANDS_H_
