// keyctl's policy and legal-hold commands (docs/keyctl.md):
//   keyctl policy set DATASET [--rotation-days N] [--bin-days N] [--usage-limit N]
//                 [--retention D] [--min-retention D] [--destruction-wait D]
//                 [--auto-destroy-after-disabled D]
//   keyctl hold set|clear DATASET
// The policy flags and the policy table are shared with `dataset create` and `describe`.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_POLICY_COMMANDS_H_
#define COFFER_KMS_KEYCTL_POLICY_COMMANDS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
class Option;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// The policy flags of `dataset create` and `policy set`; Fill sets only the flags given.
struct PolicyFlags {
  int64_t rotation_days = 0;
  uint32_t bin_days = 0;
  uint64_t usage_limit = 0;
  std::string retention, min_retention, destruction_wait, auto_destroy;
  std::string reencrypt_versions_back;  // N, or "daemon"
  uint64_t max_records = 0, max_stored_bytes = 0;
  std::vector<CLI::Option*> options;

  void Add(CLI::App* app);
  bool AnyGiven() const;
  coffer::v1::Policy Fill() const;
};

// The policy as a two-column table (`dataset describe`, `policy set`, an approved change).
void PrintPolicy(CommandContext& ctx, const coffer::v1::Policy& policy);

absl::Status PolicySet(CommandContext& ctx, const std::string& dataset,
                       const coffer::v1::Policy& policy);
absl::Status HoldSet(CommandContext& ctx, const std::string& dataset, bool hold);

// Adds `policy` and `hold`.
void AddPolicyCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_POLICY_COMMANDS_H_
