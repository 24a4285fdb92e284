// keyctl's job commands and the daemon's status (docs/keyctl.md):
//   keyctl reencrypt start DATASET [--rate N] [--wait]
//   keyctl reencrypt status [ID]
//   keyctl reencrypt wait ID                      (any job: re-encryption or scrub)
//   keyctl reindex start DATASET [--rate N] [--wait]
//   keyctl reindex status [ID]
//   keyctl reindex wait ID
//   keyctl scrub [DATASET] [--wait]
//   keyctl status                                 (version, sockets, counters and jobs)
// --wait and `wait` show progress on stderr until the job ends; a failed job is the error.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_JOB_COMMANDS_H_
#define COFFER_KMS_KEYCTL_JOB_COMMANDS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "coffer/v1/service.pb.h"
#include "kms/keyctl/command_context.h"

namespace CLI {
class App;
}  // namespace CLI

namespace coffer::keyctl {

class CommandLine;

// Starts a re-encryption or scrub job; with `wait`, follows it to its end.
absl::Status JobStart(CommandContext& ctx, coffer::v1::JobKind kind, const std::string& dataset,
                      uint32_t max_items_per_second, bool wait);
// id 0: every job the daemon knows.
absl::Status JobStatus(CommandContext& ctx, uint64_t id);
absl::Status JobWait(CommandContext& ctx, uint64_t id);

absl::Status DaemonStatus(CommandContext& ctx);
// The Prometheus text the daemon's metrics operation answers, as is.
absl::Status DaemonMetrics(CommandContext& ctx);

// Adds `reencrypt`, `reindex` and `scrub`.
void AddJobCommands(CLI::App& app, CommandLine& line);
// `keyctl job run NAME`.
void AddJobRunCommand(CLI::App& app, CommandLine& line);
// Adds `status` and `metrics` (separate so that they keep their place in keyctl --help).
void AddStatusCommand(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_JOB_COMMANDS_H_
