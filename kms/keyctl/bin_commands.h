// keyctl's recycle-bin commands (docs/keyctl.md):
//   keyctl bin purge DATASET [--record ID | --attachment NAME]    (neither: empty the bin)
//   keyctl bin list DATASET [--limit N]
//   keyctl bin restore DATASET (--record ID | --attachment NAME) [--hex]
// Ids that are not printable UTF-8 print as "hex:..." and are given back with --hex.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_BIN_COMMANDS_H_
#define COFFER_KMS_KEYCTL_BIN_COMMANDS_H_

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

// Neither given: empties the dataset's recycle bin.
absl::Status BinPurge(CommandContext& ctx, const std::string& dataset,
                      const std::optional<std::string>& record_id,
                      const std::optional<std::string>& attachment_name);
// Pages through the recycle bin up to `limit` items.
absl::Status BinList(CommandContext& ctx, const std::string& dataset, uint32_t limit);
// Restores one record or attachment from the bin; `hex`: the id is given in hex.
absl::Status BinRestore(CommandContext& ctx, const std::string& dataset,
                        const std::optional<std::string>& record_id,
                        const std::optional<std::string>& attachment_name, bool hex);

// Adds `bin`.
void AddBinCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_BIN_COMMANDS_H_
