#include "kms/keyctl/policy_commands.h"

#include <CLI/CLI.hpp>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

void PolicyFlags::Add(CLI::App* app) {
  options.push_back(app->add_option("--rotation-days", rotation_days,
                                    "Rotate the records and attachments keys every N days")
                        ->check(CLI::Range(int64_t{1}, int64_t{36500})));
  options.push_back(
      app->add_option("--bin-days", bin_days, "Days a deleted item stays in the recycle bin"));
  options.push_back(app->add_option("--usage-limit", usage_limit,
                                    "Encryptions per key version before it rotates"));
  options.push_back(app->add_option("--retention", retention,
                                    "Maximum age of data, then purged (e.g. 365d; 0 = none)")
                        ->check(DurationValidator()));
  options.push_back(
      app->add_option("--min-retention", min_retention,
                      "Compliance lock: nothing is deleted or purged younger (0 = none)")
          ->check(DurationValidator()));
  options.push_back(app->add_option("--destruction-wait", destruction_wait,
                                    "Waiting period between scheduling and destruction")
                        ->check(DurationValidator()));
  options.push_back(
      app->add_option("--auto-destroy-after-disabled", auto_destroy,
                      "Schedule destruction of a dataset disabled this long (0 = never)")
          ->check(DurationValidator()));
  options.push_back(
      app->add_option("--reencrypt-versions-back", reencrypt_versions_back,
                      "Re-encrypt data more than N versions behind the primary (0 = never; "
                      "daemon = the daemon's jobs.reencrypt_versions_back)")
          ->check(CLI::IsMember({"daemon"}) | CLI::Range(0, 1000000)));
  options.push_back(app->add_option("--max-records", max_records,
                                    "Quota on live records; a put beyond is refused (0 = none)"));
  options.push_back(
      app->add_option("--max-stored-bytes", max_stored_bytes,
                      "Quota on the bytes the dataset occupies, recycle bin included (e.g. "
                      "500MiB, 20GiB; 0 = none)")
          ->transform(CLI::AsSizeValue(false)));
}

bool PolicyFlags::AnyGiven() const {
  for (const CLI::Option* o : options) {
    if (o->count() > 0) return true;
  }
  return false;
}

pb::Policy PolicyFlags::Fill() const {
  pb::Policy policy;
  if (options[0]->count() > 0) {
    policy.set_records_rotation_seconds(rotation_days * 86400);
    policy.set_attachments_rotation_seconds(rotation_days * 86400);
  }
  if (options[1]->count() > 0) policy.set_bin_days(bin_days);
  if (options[2]->count() > 0) policy.set_usage_limit(usage_limit);
  // The validators accepted these; ParseDuration cannot fail on them here.
  if (options[3]->count() > 0) policy.set_retention_max_age_seconds(*ParseDuration(retention));
  if (options[4]->count() > 0) {
    policy.set_minimum_retention_seconds(*ParseDuration(min_retention));
  }
  if (options[5]->count() > 0) {
    policy.set_destruction_wait_seconds(*ParseDuration(destruction_wait));
  }
  if (options[6]->count() > 0) {
    policy.set_auto_destroy_after_disabled_seconds(*ParseDuration(auto_destroy));
  }
  if (options[7]->count() > 0) {
    // The validator accepted "daemon" or 0..1000000.
    policy.set_reencrypt_versions_back(
        reencrypt_versions_back == "daemon" ? -1 : std::stoi(reencrypt_versions_back));
  }
  if (options[8]->count() > 0) policy.set_max_records(max_records);
  if (options[9]->count() > 0) policy.set_max_stored_bytes(max_stored_bytes);
  return policy;
}

void PrintPolicy(CommandContext& ctx, const pb::Policy& policy) {
  Table table({"policy", "value"});
  table.AddRow({"records rotation", FormatDurationOrNone(policy.records_rotation_seconds())});
  table.AddRow(
      {"attachments rotation", FormatDurationOrNone(policy.attachments_rotation_seconds())});
  table.AddRow({"usage limit", std::to_string(policy.usage_limit())});
  table.AddRow({"bin days", std::to_string(policy.bin_days())});
  table.AddRow({"retention (max age)", FormatDurationOrNone(policy.retention_max_age_seconds())});
  table.AddRow({"minimum retention", FormatDurationOrNone(policy.minimum_retention_seconds())});
  table.AddRow({"destruction wait", FormatDurationOrNone(policy.destruction_wait_seconds())});
  table.AddRow({"auto-destroy after disabled",
                policy.has_auto_destroy_after_disabled_seconds()
                    ? FormatDurationOrNone(policy.auto_destroy_after_disabled_seconds())
                    : "none"});
  std::string reencrypt = "daemon's setting";
  if (policy.has_reencrypt_versions_back()) {
    reencrypt =
        policy.reencrypt_versions_back() == 0
            ? "never"
            : "over " + std::to_string(policy.reencrypt_versions_back()) + " versions behind";
  }
  table.AddRow({"scheduled re-encryption", reencrypt});
  table.AddRow({"quota: records",
                policy.max_records() == 0 ? "none" : std::to_string(policy.max_records())});
  table.AddRow({"quota: stored bytes",
                policy.max_stored_bytes() == 0 ? "none" : FormatBytes(policy.max_stored_bytes())});
  table.Print(ctx.out());
}

absl::Status PolicySet(CommandContext& ctx, const std::string& dataset, const pb::Policy& policy) {
  pb::Request request;
  request.mutable_policy_set()->set_dataset(dataset);
  *request.mutable_policy_set()->mutable_policy() = policy;
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.policy_set()));
    return absl::OkStatus();
  }
  ctx.out() << "policy of " << dataset << " now:\n";
  PrintPolicy(ctx, response.policy_set().policy());
  return absl::OkStatus();
}

absl::Status HoldSet(CommandContext& ctx, const std::string& dataset, bool hold) {
  pb::Request request;
  request.mutable_hold_set()->set_dataset(dataset);
  request.mutable_hold_set()->set_hold(hold);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.hold_set()));
  } else {
    ctx.out() << dataset << ": legal hold "
              << (response.hold_set().legal_hold() ? "set" : "cleared") << '\n';
  }
  return absl::OkStatus();
}

void AddPolicyCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string dataset;
    PolicyFlags policy;
  };
  Values& v = line.NewValues<Values>();

  CLI::App* policy = AddCommandGroup(app, "policy", "Change a dataset's policies",
                                     "keyctl policy set crm/contacts --retention 730d");
  CLI::App* set =
      AddCommand(policy, "set", "Change the policies given; the others keep their values",
                 "keyctl policy set crm/contacts --rotation-days 30 --bin-days 7 "
                 "--destruction-wait 14d");
  set->add_option("DATASET", v.dataset, "Dataset name")->required();
  v.policy.Add(set);
  set->callback([&v, &line] {
    if (!v.policy.AnyGiven()) {
      throw CLI::ValidationError("policy set", "give at least one policy flag");
    }
    line.Choose([&v](CommandContext& ctx) { return PolicySet(ctx, v.dataset, v.policy.Fill()); });
  });

  CLI::App* hold = AddCommandGroup(app, "hold", "Set or clear a dataset's legal hold",
                                   "keyctl hold set crm/contacts");
  for (bool on : {true, false}) {
    CLI::App* sub = AddCommand(
        hold, on ? "set" : "clear",
        on ? "Set the legal hold: no purge, expiry or destruction" : "Clear the legal hold",
        std::string("keyctl hold ") + (on ? "set" : "clear") + " crm/contacts");
    sub->add_option("DATASET", v.dataset, "Dataset name")->required();
    line.Runs(sub, [&v, on](CommandContext& ctx) { return HoldSet(ctx, v.dataset, on); });
  }
}

}  // namespace coffer::keyctl
