// keyctl's key commands (docs/keyctl.md):
//   keyctl key rotate DATASET [--purpose P]... [--emergency]
//   keyctl key versions DATASET
//   keyctl key retire DATASET --purpose P --below N
//   keyctl key rewrap DATASET [--module NAME] [--destroy-old]      (progress on stderr)
//   keyctl key inventory [--dataset NAME]
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_KEY_COMMANDS_H_
#define COFFER_KMS_KEYCTL_KEY_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// A dataset's key versions as a table (`key versions`, `key rewrap`, `dataset describe`).
void PrintVersions(CommandContext& ctx, const coffer::v1::DatasetInfo& info);

absl::Status KeyRotate(CommandContext& ctx, const std::string& dataset,
                       const std::vector<coffer::v1::Purpose>& purposes, bool emergency);
absl::Status KeyVersions(CommandContext& ctx, const std::string& dataset);
absl::Status KeyRetire(CommandContext& ctx, const std::string& dataset, coffer::v1::Purpose purpose,
                       uint32_t below);
absl::Status KeyRewrap(CommandContext& ctx, const std::string& dataset, const std::string& module,
                       bool destroy_old);
// Every key the daemon holds; `dataset` not empty: only that dataset's.
absl::Status KeyInventory(CommandContext& ctx, const std::string& dataset);

// Adds `key`.
void AddKeyCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_KEY_COMMANDS_H_
