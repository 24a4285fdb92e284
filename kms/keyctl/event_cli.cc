// The command-line part of keyctl's `events` and `canary` commands (event_commands.h).

#include <iterator>
#include <memory>

#include "CLI/CLI.hpp"
#include "crypto/base/status.h"
#include "kms/keyctl/event_commands.h"
#include "kms/keyctl/files.h"

namespace coffer::keyctl {
namespace {

// Canary content beyond this is refused before anything is sent (one request frame carries it).
constexpr size_t kMaxCanaryBytes = size_t{1} << 20;

struct EventValues {
  EventsOptions events;
  CanaryTarget target;
  std::string record_id, attachment_name, value, file, content_type = "application/octet-stream";
  std::string list_dataset;
};

absl::StatusOr<std::string> ReadContent(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFileUpTo(path, "--file", kMaxCanaryBytes);
  if (ErrorCodeOf(content.status()) == ErrorCode::kInvalidArgument) {
    return MakeError(ErrorCode::kInvalidArgument, "--file " + path + " is larger than 1 MiB");
  }
  if (!content.ok()) return MakeError(ErrorCode::kInvalidArgument, "cannot read --file " + path);
  return content;
}

// --record or --attachment, exactly one.
void AddTargetOptions(CLI::App* app, EventValues& v, CLI::Option** record,
                      CLI::Option** attachment) {
  app->add_option("DATASET", v.target.dataset, "The dataset")->required();
  *record = app->add_option("--record", v.record_id, "A record id");
  *attachment = app->add_option("--attachment", v.attachment_name, "An attachment name");
  (*record)->excludes(*attachment);
}

void TakeTarget(EventValues& v, const CLI::Option* record, const CLI::Option* attachment,
                const std::string& command) {
  if (record->count() == 0 && attachment->count() == 0) {
    throw CLI::ValidationError(command, "give --record ID or --attachment NAME");
  }
  v.target.record_id.reset();
  v.target.attachment_name.reset();
  if (record->count() > 0) v.target.record_id = v.record_id;
  if (attachment->count() > 0) v.target.attachment_name = v.attachment_name;
}

}  // namespace

void DefineEventCommands(CLI::App& app, std::function<absl::Status(CommandContext&)>& action) {
  // Bound by the options below; lives as long as keyctl runs.
  static EventValues& v = *new EventValues();

  CLI::App* events = app.add_subcommand(
      "events",
      "Lifecycle events (disable, destruction, rotation, canary reads ...) not yet acknowledged "
      "by this subscriber; --follow keeps watching");
  events->footer("Example:\n  keyctl events --follow --subscriber pager --json");
  events->add_flag("--follow,-f", v.events.follow, "Keep printing new events until interrupted");
  events->add_option("--subscriber", v.events.subscriber,
                     "Whose cursor to read and move (default keyctl; 1-64 of [a-z0-9._-])");
  events->add_option("--limit", v.events.limit, "Without --follow: at most this many events")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1000000}));
  events->callback(
      [&action] { action = [](CommandContext& ctx) { return EventsShow(ctx, v.events); }; });

  CLI::App* canary =
      app.add_subcommand("canary", "Canary records: decoys whose every read raises an event");
  canary->require_subcommand(1);
  canary->footer(
      "Example:\n  keyctl canary plant crm --record decoy-7 --value '{\"n\":1}' --totp 123456");

  CLI::App* plant = canary->add_subcommand(
      "plant", "Plant a canary record or attachment (never overwrites an existing item)");
  plant->footer(
      "Example:\n  keyctl canary plant crm --attachment contract-2019.pdf --file decoy.pdf");
  CLI::Option* record = nullptr;
  CLI::Option* attachment = nullptr;
  AddTargetOptions(plant, v, &record, &attachment);
  CLI::Option* value = plant->add_option("--value", v.value, "The content, as text");
  CLI::Option* file = plant->add_option("--file", v.file, "Read the content from this file");
  value->excludes(file);
  plant->add_option("--content-type", v.content_type, "Attachments: the content type");
  plant->callback([&action, record, attachment, value, file] {
    TakeTarget(v, record, attachment, "canary plant");
    if (value->count() == 0 && file->count() == 0) {
      throw CLI::ValidationError("canary plant", "give --value TEXT or --file PATH");
    }
    const bool from_file = file->count() > 0;
    action = [from_file](CommandContext& ctx) -> absl::Status {
      std::string content = v.value;
      if (from_file) {
        COFFER_ASSIGN_OR_RETURN(content, ReadContent(v.file));
      }
      return CanaryPlant(ctx, v.target, content, v.content_type);
    };
  });

  CLI::App* list = canary->add_subcommand("list", "Canaries (all, or one dataset's)");
  list->footer("Example:\n  keyctl canary list crm --json");
  list->add_option("DATASET", v.list_dataset, "Only this dataset");
  list->callback(
      [&action] { action = [](CommandContext& ctx) { return CanaryList(ctx, v.list_dataset); }; });

  CLI::App* remove = canary->add_subcommand("remove", "Purge a canary's item and stop watching it");
  remove->footer("Example:\n  keyctl canary remove crm --record decoy-7 --totp 123456");
  CLI::Option* remove_record = nullptr;
  CLI::Option* remove_attachment = nullptr;
  AddTargetOptions(remove, v, &remove_record, &remove_attachment);
  remove->callback([&action, remove_record, remove_attachment] {
    TakeTarget(v, remove_record, remove_attachment, "canary remove");
    action = [](CommandContext& ctx) { return CanaryRemove(ctx, v.target); };
  });
}

}  // namespace coffer::keyctl
