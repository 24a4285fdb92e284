// keyctl's dataset commands (docs/keyctl.md):
//   keyctl dataset create NAME [policy flags, policy_commands.h]
//   keyctl dataset list
//   keyctl dataset describe NAME
//   keyctl dataset disable|enable|destroy|cancel-destroy NAME
//   keyctl dataset approve ID                     (the same as `keyctl request approve ID`)
// `dataset export` is in export_commands.h.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_DATASET_COMMANDS_H_
#define COFFER_KMS_KEYCTL_DATASET_COMMANDS_H_

#include <string>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// A dataset: state, hold, times and counts, then its policy and key versions.
void PrintDataset(CommandContext& ctx, const coffer::v1::DatasetInfo& info);

absl::Status DatasetCreate(CommandContext& ctx, const std::string& name,
                           const coffer::v1::Policy& policy);
absl::Status DatasetList(CommandContext& ctx);
absl::Status DatasetDescribe(CommandContext& ctx, const std::string& name);
absl::Status DatasetLifecycle(CommandContext& ctx, const std::string& name,
                              coffer::v1::DatasetLifecycleRequest::Action action);

// Adds `dataset` (AddExportCommands adds `dataset export` to it).
void AddDatasetCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_DATASET_COMMANDS_H_
