// keyctl's notification and canary commands (docs/events.md, docs/keyctl.md):
//   keyctl events [--follow] [--subscriber NAME] [--limit N]      (--json: one object per line)
//   keyctl canary plant DATASET (--record ID | --attachment NAME) (--value TEXT | --file PATH)
//   keyctl canary list [DATASET]
//   keyctl canary remove DATASET (--record ID | --attachment NAME)
//
// A subscriber belongs to the uid that first read it (docs/events.md): another admin's is
// refused (NOT_GRANTED, exit 3). The default subscriber is "keyctl-UID", one per uid.
//
// `events` prints the subscriber's pending events, oldest first, then acknowledges them (the
// acknowledgement goes out only after the lines are flushed to stdout); with --follow it keeps
// polling (the daemon holds each read up to a second while nothing is pending) until SIGINT or
// SIGTERM, then acknowledges what it printed and exits 0. A keyctl killed between printing and
// acknowledging prints those events again next time (same sequence numbers).
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_EVENT_COMMANDS_H_
#define COFFER_KMS_KEYCTL_EVENT_COMMANDS_H_

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

// "keyctl-UID" for the calling uid.
std::string DefaultSubscriber();

struct EventsOptions {
  std::string subscriber = DefaultSubscriber();
  bool follow = false;
  uint32_t limit = 0;  // without --follow: stop after this many (0: all pending)
};

absl::Status EventsShow(CommandContext& ctx, const EventsOptions& options);

struct CanaryTarget {
  std::string dataset;
  std::optional<std::string> record_id;
  std::optional<std::string> attachment_name;
};
// `value` is the record's value or the attachment's content.
absl::Status CanaryPlant(CommandContext& ctx, const CanaryTarget& target, const std::string& value,
                         const std::string& content_type);
absl::Status CanaryList(CommandContext& ctx, const std::string& dataset);
absl::Status CanaryRemove(CommandContext& ctx, const CanaryTarget& target);

// Adds `events` and `canary`.
void AddEventCommands(CLI::App& app, CommandLine& line);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_EVENT_COMMANDS_H_
