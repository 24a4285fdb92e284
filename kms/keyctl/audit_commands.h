// keyctl's audit-log commands (docs/keyctl.md, docs/audit.md):
//   keyctl audit show [--limit N]                 (the newest entries)
//   keyctl audit search [--since T] [--until T] [--dataset NAME] [--caller UID] [--limit N]
//   keyctl audit verify                           (by the daemon)
//   keyctl audit verify --offline --public-key PEM [--audit-dir DIR]   (here, no daemon)
//   keyctl audit policy [--access-failure fail-closed|serve-and-count]
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_AUDIT_COMMANDS_H_
#define COFFER_KMS_KEYCTL_AUDIT_COMMANDS_H_

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

// What `keyctl audit search` filters on (AuditQueryRequest) and how many entries it prints.
struct AuditFilter {
  int64_t since_micros = 0;
  int64_t until_micros = 0;
  std::string dataset;
  std::optional<uint32_t> caller_uid;
  uint32_t limit = 100;
};

// The newest `limit` entries of the whole log.
absl::Status AuditShow(CommandContext& ctx, uint32_t limit);
absl::Status AuditSearch(CommandContext& ctx, const AuditFilter& filter);
// Breach scope: per caller uid, the successful reads of `filter.dataset` in [since, until] —
// records, attachments, re-identified pseudonyms, first and last time (filter.limit unused).
absl::Status AuditWhoRead(CommandContext& ctx, const AuditFilter& filter);
// Every entry matching `filter` as JSON lines, oldest first, for a SIEM (filter.limit unused).
absl::Status AuditExport(CommandContext& ctx, const AuditFilter& filter);
absl::Status AuditVerify(CommandContext& ctx);
// Verifies an audit log directory locally with kms/audit's offline verifier (no daemon).
absl::Status AuditVerifyOffline(CommandContext& ctx, const std::string& public_key_file,
                                const std::string& audit_directory);

// Shows the access audit's failure policy (from status) when `access_failure` is empty, or sets
// it ("fail-closed" or "serve-and-count"; the daemon asks a second admin for the latter).
absl::Status AuditPolicy(CommandContext& ctx, const std::string& access_failure);

// Adds `audit`.
void AddAuditCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_AUDIT_COMMANDS_H_
