// keyctl's full-backup commands (docs/keyctl.md):
//   keyctl backup create | list | prune
//   keyctl backup verify ID
//   keyctl backup restore ID DIR                  (DIR must not exist; the daemon creates it)
// create, verify and restore show the daemon's progress on stderr.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_BACKUP_COMMANDS_H_
#define COFFER_KMS_KEYCTL_BACKUP_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

absl::Status BackupCreate(CommandContext& ctx);
absl::Status BackupList(CommandContext& ctx);
absl::Status BackupVerify(CommandContext& ctx, uint32_t id);
absl::Status BackupRestore(CommandContext& ctx, uint32_t id, const std::string& target_directory);
absl::Status BackupPrune(CommandContext& ctx);

// Adds `backup`.
void AddBackupCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_BACKUP_COMMANDS_H_
