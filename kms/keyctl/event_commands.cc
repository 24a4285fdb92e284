#include "kms/keyctl/event_commands.h"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/files.h"
#include "kms/keyctl/output.h"
#include "nlohmann/json.hpp"

namespace coffer::keyctl {
namespace {

namespace pb = ::coffer::v1;

constexpr uint32_t kBatch = 100;
constexpr uint32_t kFollowWaitMillis = 1000;
// Canary content beyond this is refused before anything is sent (one request frame carries it).
constexpr size_t kMaxCanaryBytes = size_t{1} << 20;

std::atomic<bool> g_interrupted{false};

void OnInterrupt(int) { g_interrupted.store(true); }

// SIGINT and SIGTERM set a flag (reads complete: SA_RESTART); the previous handlers come back.
class InterruptFlag {
 public:
  InterruptFlag() {
    g_interrupted.store(false);
    struct sigaction action {};
    action.sa_handler = OnInterrupt;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    sigaction(SIGINT, &action, &old_int_);
    sigaction(SIGTERM, &action, &old_term_);
  }
  ~InterruptFlag() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  bool raised() const { return g_interrupted.load(); }

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

std::string KindName(pb::EventKind kind) {
  std::string name = pb::EventKind_Name(kind);
  if (name.rfind("EVENT_", 0) == 0) name = name.substr(6);
  return name;
}

// One readable line per event.
std::string EventLine(const pb::Event& e) {
  std::string line = absl::StrCat("#", e.sequence(), "  ", FormatLocalTime(e.time_micros()), "  ",
                                  KindName(e.kind()));
  if (!e.dataset().empty()) {
    absl::StrAppend(&line, "  dataset ", e.dataset());
  } else if (e.dataset_handle() != 0) {
    absl::StrAppend(&line, "  dataset handle ", e.dataset_handle());
  }
  switch (e.kind()) {
    case pb::EVENT_CANARY_READ:
      absl::StrAppend(&line, "  ",
                      e.canary_kind() == pb::CANARY_ATTACHMENT ? "attachment " : "record ", "'",
                      e.canary(), "'  by uid ", e.uid(), " pid ", e.pid());
      break;
    case pb::EVENT_KEY_ROTATED:
    case pb::EVENT_EMERGENCY_ROTATION:
      absl::StrAppend(&line, "  ", PurposeName(e.purpose()), " v", e.key_version());
      break;
    case pb::EVENT_DESTRUCTION_SCHEDULED:
    case pb::EVENT_DESTRUCTION_DUE_SOON:
      absl::StrAppend(&line, "  due ", FormatLocalTime(e.destruction_due_micros()), " (",
                      FormatAge(e.destruction_due_micros(), NowMicros()), ")");
      break;
    case pb::EVENT_AUDIT_WRITE_FAILURE:
    case pb::EVENT_HSM_UNAVAILABLE:
      absl::StrAppend(&line, "  ",
                      std::string(ErrorCodeName(static_cast<ErrorCode>(e.error_code()))));
      break;
    case pb::EVENT_DAMAGED_ITEM:
      absl::StrAppend(&line, "  ", e.damaged_ref(), "  ",
                      std::string(ErrorCodeName(static_cast<ErrorCode>(e.error_code()))));
      break;
    case pb::EVENT_FIRST_READ:
      absl::StrAppend(&line, "  by uid ", e.uid(), " pid ", e.pid());
      break;
    case pb::EVENT_READ_RATE_ANOMALY:
    case pb::EVENT_LOCKED_DATASET_READS:
      absl::StrAppend(&line, "  by uid ", e.uid(), " pid ", e.pid(), "  ",
                      absl::StrFormat("%.2f", e.recent_reads_per_second()), " reads/s");
      if (e.kind() == pb::EVENT_READ_RATE_ANOMALY) {
        absl::StrAppend(&line, " (baseline ",
                        absl::StrFormat("%.4f", e.baseline_reads_per_second()), ")");
      }
      break;
    default:
      break;
  }
  if (!e.detail().empty()) absl::StrAppend(&line, "  (", e.detail(), ")");
  return line;
}

void PrintEvent(CommandContext& ctx, const pb::Event& event) {
  if (ctx.json()) {
    ctx.out() << ProtoToJson(event).dump() << '\n';
  } else {
    ctx.out() << EventLine(event) << '\n';
  }
}

// `out`: a CanaryPlantRequest or CanaryRemoveRequest.
template <typename Request>
void FillTarget(const CanaryTarget& target, Request* out) {
  out->set_dataset(target.dataset);
  if (target.record_id) out->set_record_id(*target.record_id);
  if (target.attachment_name) out->set_attachment_name(*target.attachment_name);
}

void PrintCanaries(CommandContext& ctx, const std::vector<pb::CanaryInfo>& canaries) {
  Table table({"NUMBER", "DATASET", "KIND", "ID", "PLANTED", "BY UID", "PRESENT"});
  const int64_t now = NowMicros();
  for (const pb::CanaryInfo& c : canaries) {
    table.AddRow({std::to_string(c.number()), c.dataset(),
                  c.kind() == pb::CANARY_ATTACHMENT ? "attachment" : "record", c.id(),
                  FormatAge(c.planted_micros(), now), std::to_string(c.planted_by_uid()),
                  YesNo(c.present())});
  }
  table.Print(ctx.out());
}

absl::StatusOr<std::string> ReadContent(const std::string& path) {
  absl::StatusOr<std::string> content = ReadFileUpTo(path, "--file", kMaxCanaryBytes);
  if (ErrorCodeOf(content.status()) == ErrorCode::kInvalidArgument) {
    return MakeError(ErrorCode::kInvalidArgument, "--file " + path + " is larger than 1 MiB");
  }
  if (!content.ok()) return MakeError(ErrorCode::kInvalidArgument, "cannot read --file " + path);
  return content;
}

}  // namespace

std::string DefaultSubscriber() { return "keyctl-" + std::to_string(::getuid()); }

absl::Status EventsShow(CommandContext& ctx, const EventsOptions& options) {
  InterruptFlag interrupt;
  uint64_t printed_through = 0;  // printed and flushed, not yet acknowledged (0: none)
  uint64_t printed = 0;
  auto acknowledge = [&]() -> absl::Status {
    if (printed_through == 0) return absl::OkStatus();
    pb::Request request;
    auto* r = request.mutable_events_read();
    r->set_subscriber(options.subscriber);
    r->set_ack_through(printed_through);
    r->set_ack_only(true);
    COFFER_RETURN_IF_ERROR(ctx.Call(std::move(request)).status());
    printed_through = 0;
    return absl::OkStatus();
  };
  while (true) {
    if (interrupt.raised()) break;
    uint32_t batch = kBatch;
    if (!options.follow && options.limit > 0) {
      if (printed >= options.limit) break;
      batch = static_cast<uint32_t>(std::min<uint64_t>(kBatch, options.limit - printed));
    }
    pb::Request request;
    auto* r = request.mutable_events_read();
    r->set_subscriber(options.subscriber);
    r->set_max_events(batch);
    if (options.follow) r->set_wait_millis(kFollowWaitMillis);
    if (printed_through != 0) r->set_ack_through(printed_through);
    COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
    printed_through = 0;  // acknowledged by that read
    const pb::EventsReadResponse& read = response.events_read();
    if (read.missed() > 0 && !ctx.json()) {
      ctx.out() << "(" << read.missed()
                << " older events were deleted by retention before this subscriber read them)\n";
    }
    for (const pb::Event& event : read.events()) PrintEvent(ctx, event);
    ctx.out().flush();
    if (!ctx.out()) return MakeError(ErrorCode::kInternal, "cannot write to standard output");
    if (read.events_size() > 0) {
      printed_through = read.events().rbegin()->sequence();
      printed += static_cast<uint64_t>(read.events_size());
    }
    if (!options.follow && static_cast<uint32_t>(read.events_size()) < batch) break;
  }
  COFFER_RETURN_IF_ERROR(acknowledge());
  if (printed == 0 && !ctx.json() && !options.follow) ctx.out() << "no new events\n";
  return absl::OkStatus();
}

absl::Status CanaryPlant(CommandContext& ctx, const CanaryTarget& target, const std::string& value,
                         const std::string& content_type) {
  pb::Request request;
  auto* r = request.mutable_canary_plant();
  FillTarget(target, r);
  r->set_value(value);
  r->set_content_type(content_type);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::CanaryInfo& info = response.canary_plant().canary();
  if (ctx.json()) {
    ctx.out() << ProtoToJson(info).dump(2) << '\n';
  } else {
    ctx.out() << "planted canary " << info.number() << " in " << info.dataset() << ": "
              << (info.kind() == pb::CANARY_ATTACHMENT ? "attachment" : "record") << " '"
              << info.id() << "'\n";
  }
  return absl::OkStatus();
}

absl::Status CanaryList(CommandContext& ctx, const std::string& dataset) {
  pb::Request request;
  request.mutable_canary_list()->set_dataset(dataset);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    ctx.out() << ProtoToJson(response.canary_list()).dump(2) << '\n';
    return absl::OkStatus();
  }
  std::vector<pb::CanaryInfo> canaries(response.canary_list().canaries().begin(),
                                       response.canary_list().canaries().end());
  if (canaries.empty()) {
    ctx.out() << "no canaries\n";
    return absl::OkStatus();
  }
  PrintCanaries(ctx, canaries);
  return absl::OkStatus();
}

absl::Status CanaryRemove(CommandContext& ctx, const CanaryTarget& target) {
  pb::Request request;
  FillTarget(target, request.mutable_canary_remove());
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::CanaryInfo& info = response.canary_remove().canary();
  if (ctx.json()) {
    ctx.out() << ProtoToJson(info).dump(2) << '\n';
  } else {
    ctx.out() << "removed canary " << info.number() << " from " << info.dataset() << " (purged)\n";
  }
  return absl::OkStatus();
}

void AddEventCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    EventsOptions events;
    std::string dataset;
    ItemFlags plant_item, remove_item;
    std::string value, file, content_type = "application/octet-stream";
    std::string list_dataset;

    CanaryTarget Target(const ItemFlags& item) const {
      return {dataset, item.record_id(), item.attachment_name()};
    }
  };
  Values& v = line.NewValues<Values>();

  CLI::App* events = app.add_subcommand(
      "events",
      "Lifecycle events (disable, destruction, rotation, canary reads ...) not yet acknowledged "
      "by this subscriber; --follow keeps watching");
  events->footer("Example:\n  keyctl events --follow --subscriber pager --json");
  events->add_flag("--follow,-f", v.events.follow, "Keep printing new events until interrupted");
  events->add_option("--subscriber", v.events.subscriber,
                     "Your subscriber: whose cursor to read and move (default keyctl-UID; 1-64 of "
                     "[a-z0-9._-]; another uid's is refused)");
  events->add_option("--limit", v.events.limit, "Without --follow: at most this many events")
      ->check(CLI::Range(uint32_t{1}, uint32_t{1000000}));
  line.Runs(events, [&v](CommandContext& ctx) { return EventsShow(ctx, v.events); });

  CLI::App* canary =
      AddCommandGroup(app, "canary", "Canary records: decoys whose every read raises an event",
                      "keyctl canary plant crm --record decoy-7 --value '{\"n\":1}' --totp 123456");

  CLI::App* plant = AddCommand(
      canary, "plant", "Plant a canary record or attachment (never overwrites an existing item)",
      "keyctl canary plant crm --attachment contract-2019.pdf --file decoy.pdf");
  plant->add_option("DATASET", v.dataset, "The dataset")->required();
  v.plant_item.Add(plant, "A record id", "An attachment name");
  CLI::Option* value = plant->add_option("--value", v.value, "The content, as text");
  CLI::Option* file = plant->add_option("--file", v.file, "Read the content from this file");
  value->excludes(file);
  plant->add_option("--content-type", v.content_type, "Attachments: the content type");
  plant->callback([&v, &line, value, file] {
    v.plant_item.Require("canary plant");
    if (value->count() == 0 && file->count() == 0) {
      throw CLI::ValidationError("canary plant", "give --value TEXT or --file PATH");
    }
    const bool from_file = file->count() > 0;
    line.Choose([&v, from_file](CommandContext& ctx) -> absl::Status {
      std::string content = v.value;
      if (from_file) {
        COFFER_ASSIGN_OR_RETURN(content, ReadContent(v.file));
      }
      return CanaryPlant(ctx, v.Target(v.plant_item), content, v.content_type);
    });
  });

  CLI::App* list = AddCommand(canary, "list", "Canaries (all, or one dataset's)",
                              "keyctl canary list crm --json");
  list->add_option("DATASET", v.list_dataset, "Only this dataset");
  line.Runs(list, [&v](CommandContext& ctx) { return CanaryList(ctx, v.list_dataset); });

  CLI::App* remove = AddCommand(canary, "remove", "Purge a canary's item and stop watching it",
                                "keyctl canary remove crm --record decoy-7 --totp 123456");
  remove->add_option("DATASET", v.dataset, "The dataset")->required();
  v.remove_item.Add(remove, "A record id", "An attachment name");
  remove->callback([&v, &line] {
    v.remove_item.Require("canary remove");
    line.Choose([&v](CommandContext& ctx) { return CanaryRemove(ctx, v.Target(v.remove_item)); });
  });
}

}  // namespace coffer::keyctl
