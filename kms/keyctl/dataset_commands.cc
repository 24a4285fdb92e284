#include "kms/keyctl/dataset_commands.h"

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keyctl/admin_commands.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/key_commands.h"
#include "kms/keyctl/output.h"
#include "kms/keyctl/policy_commands.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

void PrintDataset(CommandContext& ctx, const pb::DatasetInfo& info) {
  const int64_t now = NowMicros();
  Table table({"dataset", info.name()});
  table.AddRow({"state", DatasetStateName(info.state())});
  table.AddRow({"legal hold", YesNo(info.legal_hold())});
  table.AddRow({"created", FormatTimeWithAge(info.created_micros(), now)});
  if (info.state() == pb::DATASET_PENDING_DESTRUCTION) {
    table.AddRow({"destruction due", FormatTimeWithAge(info.destruction_due_micros(), now)});
  }
  table.AddRow({"records", std::to_string(info.records())});
  table.AddRow({"attachments", std::to_string(info.attachments())});
  table.AddRow({"recycle bin items", std::to_string(info.recycle_bin_items())});
  if (info.has_stored_bytes()) table.AddRow({"stored bytes", FormatBytes(info.stored_bytes())});
  // Given to the dataset's customer: it checks a deletion receipt's name commitment.
  if (!info.name_salt().empty()) table.AddRow({"name salt", info.name_salt()});
  table.Print(ctx.out());
  ctx.out() << '\n';
  PrintPolicy(ctx, info.policy());
  if (info.versions_size() > 0) {
    ctx.out() << '\n';
    PrintVersions(ctx, info);
  }
}

absl::Status DatasetCreate(CommandContext& ctx, const std::string& name, const pb::Policy& policy) {
  pb::Request request;
  request.mutable_dataset_create()->set_name(name);
  *request.mutable_dataset_create()->mutable_policy() = policy;
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_create()));
  } else {
    ctx.out() << "created dataset " << name << "\n\n";
    PrintDataset(ctx, response.dataset_create());
  }
  return absl::OkStatus();
}

absl::Status DatasetList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_dataset_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_list()));
    return absl::OkStatus();
  }
  // The list carries names, states and holds; policies, times, versions and counts are in
  // `dataset describe`.
  Table table({"NAME", "STATE", "LEGAL HOLD"});
  for (const pb::DatasetInfo& d : response.dataset_list().datasets()) {
    table.AddRow({d.name(), DatasetStateName(d.state()), YesNo(d.legal_hold())});
  }
  if (table.rows() == 1) {
    ctx.out() << "no datasets (create one with: keyctl dataset create NAME)\n";
  } else {
    table.Print(ctx.out());
  }
  return absl::OkStatus();
}

absl::Status DatasetDescribe(CommandContext& ctx, const std::string& name) {
  pb::Request request;
  request.mutable_dataset_describe()->set_name(name);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.dataset_describe()));
  } else {
    PrintDataset(ctx, response.dataset_describe());
  }
  return absl::OkStatus();
}

absl::Status DatasetLifecycle(CommandContext& ctx, const std::string& name,
                              pb::DatasetLifecycleRequest::Action action) {
  pb::Request request;
  request.mutable_dataset_lifecycle()->set_name(name);
  request.mutable_dataset_lifecycle()->set_action(action);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::DatasetInfo& info = response.dataset_lifecycle();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(info));
    return absl::OkStatus();
  }
  ctx.out() << name << ": " << DatasetStateName(info.state());
  if (info.state() == pb::DATASET_PENDING_DESTRUCTION) {
    ctx.out() << ", destroyed at " << FormatTimeWithAge(info.destruction_due_micros(), NowMicros())
              << " unless cancelled (keyctl dataset cancel-destroy " << name << ")";
  }
  ctx.out() << '\n';
  return absl::OkStatus();
}

void AddDatasetCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string name;
    PolicyFlags policy;
    uint64_t request_id = 0;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* dataset = AddCommandGroup(app, "dataset", "Create, list, describe and lock datasets",
                                      "keyctl dataset list");

  CLI::App* create =
      AddCommand(dataset, "create", "Create a dataset (unset policies take defaults)",
                 "keyctl dataset create crm/contacts --bin-days 14 --retention 365d");
  create->add_option("NAME", v.name, "Dataset name: 1-128 of [a-z0-9._/-]")->required();
  v.policy.Add(create);
  line.Runs(create,
            [&v](CommandContext& ctx) { return DatasetCreate(ctx, v.name, v.policy.Fill()); });

  CLI::App* list = AddCommand(dataset, "list", "List every dataset", "keyctl dataset list --json");
  line.Runs(list, [](CommandContext& ctx) { return DatasetList(ctx); });

  CLI::App* describe =
      AddCommand(dataset, "describe", "Show a dataset: state, policies, key versions and counts",
                 "keyctl dataset describe crm/contacts");
  describe->add_option("NAME", v.name, "Dataset name")->required();
  line.Runs(describe, [&v](CommandContext& ctx) { return DatasetDescribe(ctx, v.name); });

  CLI::App* approve =
      AddCommand(dataset, "approve", "Approve a pending request (as: request approve)",
                 "keyctl dataset approve 12 --totp 123456");
  approve->add_option("ID", v.request_id, "Request id (keyctl request list)")->required();
  line.Runs(approve, [&v](CommandContext& ctx) { return RequestDecide(ctx, v.request_id, true); });

  const struct {
    const char* name;
    const char* help;
    pb::DatasetLifecycleRequest::Action action;
  } lifecycle[] = {
      {"disable", "Lock a dataset: reads and writes refused until enabled",
       pb::DatasetLifecycleRequest::DISABLE},
      {"enable", "Unlock a disabled dataset", pb::DatasetLifecycleRequest::ENABLE},
      {"destroy", "Schedule destruction after the dataset's waiting period",
       pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION},
      {"cancel-destroy", "Cancel a scheduled destruction (the dataset stays disabled)",
       pb::DatasetLifecycleRequest::CANCEL_DESTRUCTION},
  };
  for (const auto& entry : lifecycle) {
    CLI::App* sub = AddCommand(dataset, entry.name, entry.help,
                               std::string("keyctl dataset ") + entry.name + " crm/contacts");
    sub->add_option("NAME", v.name, "Dataset name")->required();
    line.Runs(sub, [&v, what = entry.action](CommandContext& ctx) {
      return DatasetLifecycle(ctx, v.name, what);
    });
  }
}

}  // namespace coffer::keyctl
