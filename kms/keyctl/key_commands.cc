#include "kms/keyctl/key_commands.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/job_commands.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

const std::vector<std::string> kPurposes = {"records", "attachments", "lookup", "pseudonym"};

pb::Purpose PurposeFromName(const std::string& name) {
  if (name == "records") return pb::PURPOSE_RECORDS;
  if (name == "attachments") return pb::PURPOSE_ATTACHMENTS;
  if (name == "lookup") return pb::PURPOSE_LOOKUP;
  return pb::PURPOSE_PSEUDONYM;  // the validator admits only these four
}

}  // namespace

void PrintVersions(CommandContext& ctx, const pb::DatasetInfo& info) {
  const int64_t now = NowMicros();
  Table table({"PURPOSE", "VERSION", "STATE", "CREATED", "AGE", "ENCRYPTIONS", "MODULE", "DWK"});
  for (const pb::KeyVersion& v : info.versions()) {
    table.AddRow({PurposeName(v.purpose()), std::to_string(v.version()), KeyStateName(v.state()),
                  FormatLocalTime(v.created_micros()), FormatAge(v.created_micros(), now),
                  std::to_string(v.encryptions()),
                  v.wrapping_module().empty() ? "-" : v.wrapping_module(),
                  std::to_string(v.wrapping_version())});
  }
  table.Print(ctx.out());
}

// The new primaries, and what an emergency rotation started (or why it could not).
void PrintRotation(CommandContext& ctx, const std::string& dataset,
                   const std::vector<pb::Purpose>& purposes, const pb::KeyRotateResponse& rotated,
                   bool emergency) {
  ctx.out() << (emergency ? "emergency rotation of " : "rotated ") << dataset
            << "; new primary versions:\n";
  Table table({"PURPOSE", "VERSION", "MODULE", "DWK"});
  for (const pb::KeyVersion& v : rotated.new_primaries()) {
    table.AddRow({PurposeName(v.purpose()), std::to_string(v.version()), v.wrapping_module(),
                  std::to_string(v.wrapping_version())});
  }
  table.Print(ctx.out());
  if (emergency) {
    ctx.out() << "older records, attachments and lookup versions are COMPROMISED; older "
                 "pseudonym versions stay until the CRM's translate run is confirmed (keyctl key "
                 "retire "
              << dataset << " --purpose pseudonym --below N --translate-done)\n";
    if (rotated.has_follow_up()) {
      ctx.out() << "job " << rotated.follow_up().id()
                << " re-encrypts, re-indexes, then retires the compromised versions; follow it "
                   "with: keyctl reencrypt wait "
                << rotated.follow_up().id() << "\n";
    }
  } else if (std::find(purposes.begin(), purposes.end(), pb::PURPOSE_LOOKUP) != purposes.end()) {
    ctx.out() << "items are found under every live lookup version until re-indexed; move them "
                 "with: keyctl reindex start "
              << dataset << " --wait\n";
  }
}

absl::Status KeyRotate(CommandContext& ctx, const std::string& dataset,
                       const std::vector<pb::Purpose>& purposes, bool emergency, bool wait) {
  pb::Request request;
  auto* r = request.mutable_key_rotate();
  r->set_dataset(dataset);
  for (pb::Purpose p : purposes) r->add_purposes(p);
  r->set_emergency(emergency);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  pb::KeyRotateResponse rotated = response.key_rotate();
  if (!ctx.json()) PrintRotation(ctx, dataset, purposes, rotated, emergency);
  if (emergency && !rotated.has_follow_up()) {
    if (ctx.json()) PrintJson(ctx, ProtoToJson(rotated));
    return MakeError(ErrorCode::kFailedPrecondition,
                     "the keys were rotated, but the re-encryption and re-index did not start (" +
                         rotated.follow_up_error() +
                         "); when the running job ends, run keyctl reencrypt start " + dataset +
                         " --wait, then keyctl reindex start " + dataset + " --wait");
  }
  if (emergency && wait) {
    // Progress on standard error; then the job's result, with the census of its last step (in
    // JSON: one document, the rotation with the job as it ended).
    if (!ctx.json()) return JobWait(ctx, rotated.follow_up().id());
    COFFER_ASSIGN_OR_RETURN(*rotated.mutable_follow_up(), ctx.WaitForJob(rotated.follow_up().id()));
  }
  if (ctx.json()) PrintJson(ctx, ProtoToJson(rotated));
  return absl::OkStatus();
}

absl::Status KeyVersions(CommandContext& ctx, const std::string& dataset) {
  pb::Request request;
  request.mutable_dataset_describe()->set_name(dataset);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::DatasetInfo& info = response.dataset_describe();
  if (ctx.json()) {
    nlohmann::json versions = nlohmann::json::array();
    for (const pb::KeyVersion& v : info.versions()) versions.push_back(ProtoToJson(v));
    PrintJson(ctx, {{"dataset", info.name()}, {"versions", std::move(versions)}});
  } else {
    PrintVersions(ctx, info);
  }
  return absl::OkStatus();
}

absl::Status KeyRetire(CommandContext& ctx, const std::string& dataset, pb::Purpose purpose,
                       uint32_t below, bool translate_done) {
  pb::Request request;
  auto* r = request.mutable_key_retire();
  r->set_dataset(dataset);
  r->set_purpose(purpose);
  r->set_below(below);
  r->set_translate_done(translate_done);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.key_retire()));
    return absl::OkStatus();
  }
  if (response.key_retire().retired_size() == 0) {
    ctx.out() << "no " << PurposeName(purpose) << " version below " << below
              << " was left to retire\n";
    return absl::OkStatus();
  }
  ctx.out() << "retired " << PurposeName(purpose) << " versions:";
  for (uint32_t v : response.key_retire().retired()) ctx.out() << ' ' << v;
  ctx.out() << '\n';
  return absl::OkStatus();
}

absl::Status KeyRewrap(CommandContext& ctx, const std::string& dataset, const std::string& module,
                       bool destroy_old) {
  pb::Request request;
  auto* r = request.mutable_key_rewrap();
  r->set_dataset(dataset);
  r->set_module(module);
  r->set_destroy_old(destroy_old);
  COFFER_ASSIGN_OR_RETURN(pb::Response response,
                          ctx.CallWithProgress(std::move(request), "key rewrap " + dataset));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.key_rewrap()));
    return absl::OkStatus();
  }
  ctx.out() << "re-wrapped every key of " << dataset
            << (destroy_old ? "; old wrapping keys destroyed" : "") << '\n';
  PrintVersions(ctx, response.key_rewrap().dataset());
  return absl::OkStatus();
}

absl::Status KeyInventory(CommandContext& ctx, const std::string& dataset) {
  pb::Request request;
  request.mutable_key_inventory()->set_dataset(dataset);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::KeyInventoryResponse& inv = response.key_inventory();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(inv));
    return absl::OkStatus();
  }
  const int64_t now = NowMicros();
  Table table({"KIND", "DATASET", "PURPOSE", "VERSION", "STATE", "CREATED", "ALGORITHM",
               "LOCATION / WRAPPED BY"});
  for (const pb::InventoryKey& k : inv.keys()) {
    std::string where = k.location();
    if (!k.wrapped_by().empty()) where += (where.empty() ? "" : ", ") + k.wrapped_by();
    if (!k.fingerprint().empty())
      where += (where.empty() ? "" : ", ") + ("sha256 " + k.fingerprint());
    if (k.kind() == "admin-totp-secret") where += absl::StrCat(" (uid ", k.admin_uid(), ")");
    table.AddRow(
        {k.kind(), k.dataset().empty() ? "-" : k.dataset(), k.purpose().empty() ? "-" : k.purpose(),
         k.version() == 0 ? "-" : std::to_string(k.version()), k.state().empty() ? "-" : k.state(),
         k.created_micros() == 0 ? "-" : FormatTimeWithAge(k.created_micros(), now),
         k.algorithm().empty() ? "-" : k.algorithm(), where.empty() ? "-" : where});
  }
  table.Print(ctx.out());
  return absl::OkStatus();
}

void AddKeyCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string dataset;
    std::vector<std::string> purposes;
    std::string purpose;
    bool emergency = false;
    bool wait = false;
    uint32_t below = 0;
    bool translate_done = false;
    std::string module;
    bool destroy_old = false;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* key = AddCommandGroup(app, "key", "Rotate, list, retire and re-wrap key versions",
                                  "keyctl key versions crm/contacts");

  CLI::App* rotate = AddCommand(key, "rotate",
                                "Rotate primary key versions (default: records and "
                                "attachments)",
                                "keyctl key rotate crm/contacts --purpose records");
  rotate->add_option("DATASET", v.dataset, "Dataset name")->required();
  rotate->add_option("--purpose", v.purposes, "Purpose to rotate (repeatable)")
      ->check(CLI::IsMember(kPurposes));
  rotate->add_flag("--emergency", v.emergency,
                   "Rotate every purpose, mark older records, attachments and lookup versions "
                   "COMPROMISED, and start one job that re-encrypts, re-indexes and retires them");
  rotate->add_flag("--wait", v.wait, "With --emergency: wait for that job, showing its progress");
  line.Runs(rotate, [&v](CommandContext& ctx) {
    if (v.wait && !v.emergency) {
      return MakeError(ErrorCode::kInvalidArgument, "--wait goes with --emergency");
    }
    if (v.emergency && !v.purposes.empty()) {
      return MakeError(ErrorCode::kInvalidArgument,
                       "--emergency rotates every purpose: give no --purpose");
    }
    std::vector<pb::Purpose> purposes;
    for (const std::string& p : v.purposes) purposes.push_back(PurposeFromName(p));
    return KeyRotate(ctx, v.dataset, purposes, v.emergency, v.wait);
  });

  CLI::App* versions = AddCommand(key, "versions", "List a dataset's key versions",
                                  "keyctl key versions crm/contacts --json");
  versions->add_option("DATASET", v.dataset, "Dataset name")->required();
  line.Runs(versions, [&v](CommandContext& ctx) { return KeyVersions(ctx, v.dataset); });

  CLI::App* retire = AddCommand(
      key, "retire", "Retire every version of a purpose below N (no data may remain under it)",
      "keyctl key retire crm/contacts --purpose records --below 3");
  retire->add_option("DATASET", v.dataset, "Dataset name")->required();
  retire->add_option("--purpose", v.purpose, "Purpose")
      ->required()
      ->check(CLI::IsMember(kPurposes));
  retire->add_option("--below", v.below, "Retire versions below this one")
      ->required()
      ->check(CLI::Range(uint32_t{1}, UINT32_MAX));
  retire->add_flag("--translate-done", v.translate_done,
                   "pseudonym only: the CRM's translate run moved every stored token to a "
                   "version >= N (nothing else can tell; required to retire pseudonym versions)");
  line.Runs(retire, [&v](CommandContext& ctx) {
    return KeyRetire(ctx, v.dataset, PurposeFromName(v.purpose), v.below, v.translate_done);
  });

  CLI::App* rewrap =
      AddCommand(key, "rewrap", "Re-wrap every key of a dataset under a new wrapping key",
                 "keyctl key rewrap crm/contacts --module backup-hsm --destroy-old");
  rewrap->add_option("DATASET", v.dataset, "Dataset name")->required();
  rewrap->add_option("--module", v.module, "Configured PKCS#11 module name (default: current)");
  rewrap->add_flag("--destroy-old", v.destroy_old, "Destroy the old wrapping keys afterwards");
  line.Runs(rewrap, [&v](CommandContext& ctx) {
    return KeyRewrap(ctx, v.dataset, v.module, v.destroy_old);
  });

  CLI::App* inventory =
      AddCommand(key, "inventory",
                 "Every key the daemon holds: data keys, wrapping keys, audit and admin secrets",
                 "keyctl key inventory --dataset crm/contacts --json");
  inventory->add_option("--dataset", v.dataset,
                        "Only this dataset (default: all, and service keys)");
  line.Runs(inventory, [&v](CommandContext& ctx) { return KeyInventory(ctx, v.dataset); });
}

}  // namespace coffer::keyctl
