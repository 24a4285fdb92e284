#include "kms/keyctl/grant_commands.h"

#include <CLI/CLI.hpp>
#include <charconv>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

constexpr char kPrincipalForms[] = "uid:N, user:NAME, gid:N or group:NAME";
constexpr char kRightNames[] = "read, write, delete, metadata, pseudonymize, reidentify";

absl::Status BadPrincipal(const std::string& text) {
  return MakeError(ErrorCode::kInvalidArgument,
                   absl::StrCat("PRINCIPAL '", text, "' is not one of ", kPrincipalForms));
}

std::string PrincipalText(const pb::GrantPrincipal& p) {
  switch (p.who_case()) {
    case pb::GrantPrincipal::kUid:
      return absl::StrCat("uid:", p.uid());
    case pb::GrantPrincipal::kUser:
      return absl::StrCat("user:", p.user());
    case pb::GrantPrincipal::kGid:
      return absl::StrCat("gid:", p.gid());
    case pb::GrantPrincipal::kGroup:
      return absl::StrCat("group:", p.group());
    case pb::GrantPrincipal::WHO_NOT_SET:
      break;
  }
  return "-";
}

std::string RightsText(const google::protobuf::RepeatedField<int>& rights) {
  std::vector<std::string> names;
  for (int right : rights) {
    names.push_back(absl::AsciiStrToLower(pb::GrantInfo::Right_Name(right)));
  }
  return names.empty() ? "-" : absl::StrJoin(names, ",");
}

// What keeps a grant from giving anything, if something does.
std::string Notes(const pb::GrantInfo& g) {
  std::vector<std::string> notes;
  if (g.dataset_destroyed()) notes.emplace_back("dataset destroyed: gives nothing");
  if (g.unresolved()) notes.emplace_back("name does not resolve: gives nothing");
  if (g.holder_is_admin()) notes.emplace_back("an enrolled admin: no content served to it");
  return notes.empty() ? "-" : absl::StrJoin(notes, "; ");
}

void PrintGrants(CommandContext& ctx,
                 const google::protobuf::RepeatedPtrField<pb::GrantInfo>& grants) {
  const int64_t now = NowMicros();
  Table table(
      {"ORIGIN", "ID", "PRINCIPALS", "DATASETS", "RIGHTS", "ADDED", "BY", "APPROVED BY", "NOTES"});
  for (const pb::GrantInfo& g : grants) {
    std::vector<std::string> principals;
    for (const pb::GrantPrincipal& p : g.principals()) principals.push_back(PrincipalText(p));
    std::vector<std::string> datasets(g.datasets().begin(), g.datasets().end());
    if (g.dataset_destroyed())
      datasets.push_back(absl::StrCat("(handle ", g.dataset_handle(), ")"));
    const bool stored = g.origin() == pb::GrantInfo::STORED;
    table.AddRow(
        {stored ? "stored" : "config",
         stored ? std::to_string(g.id()) : absl::StrCat("grants[", g.config_index(), "]"),
         absl::StrJoin(principals, ","), absl::StrJoin(datasets, ","), RightsText(g.rights()),
         stored ? FormatTimeWithAge(g.created_micros(), now) : "-",
         stored ? absl::StrCat(g.requested_by_name().empty() ? std::to_string(g.requested_by_uid())
                                                             : g.requested_by_name())
                : "-",
         stored && g.approved_by_uid() + g.approval_id() != 0
             ? absl::StrCat(g.approved_by_name().empty() ? std::to_string(g.approved_by_uid())
                                                         : g.approved_by_name(),
                            " (request ", g.approval_id(), ")")
             : "-",
         Notes(g)});
  }
  table.Print(ctx.out());
}

void PrintGrant(CommandContext& ctx, const char* what, const pb::GrantInfo& g) {
  std::vector<std::string> datasets(g.datasets().begin(), g.datasets().end());
  ctx.out() << what << " stored grant " << g.id() << ": "
            << (g.principals_size() > 0 ? PrincipalText(g.principals(0)) : "-") << " "
            << RightsText(g.rights()) << " on "
            << (datasets.empty() ? absl::StrCat("handle ", g.dataset_handle())
                                 : absl::StrJoin(datasets, ","))
            << '\n';
}

}  // namespace

absl::StatusOr<pb::GrantPrincipal> ParseGrantPrincipal(const std::string& text) {
  const size_t colon = text.find(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return BadPrincipal(text);
  const std::string kind = text.substr(0, colon);
  const std::string value = text.substr(colon + 1);
  pb::GrantPrincipal principal;
  if (kind == "uid" || kind == "gid") {
    uint32_t number = 0;
    auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), number);
    if (ec != std::errc() || end != value.data() + value.size()) return BadPrincipal(text);
    if (kind == "uid") {
      principal.set_uid(number);
    } else {
      principal.set_gid(number);
    }
  } else if (kind == "user") {
    principal.set_user(value);
  } else if (kind == "group") {
    principal.set_group(value);
  } else {
    return BadPrincipal(text);
  }
  return principal;
}

absl::StatusOr<std::vector<pb::GrantInfo::Right>> ParseGrantRights(
    const std::vector<std::string>& words) {
  std::vector<pb::GrantInfo::Right> rights;
  for (const std::string& word : words) {
    for (absl::string_view part : absl::StrSplit(word, ',', absl::SkipEmpty())) {
      pb::GrantInfo::Right right = pb::GrantInfo::RIGHT_UNSPECIFIED;
      const std::string upper = absl::AsciiStrToUpper(part);
      if (!pb::GrantInfo::Right_Parse(upper, &right) || right == pb::GrantInfo::RIGHT_UNSPECIFIED) {
        return MakeError(ErrorCode::kInvalidArgument,
                         absl::StrCat("unknown right '", part, "': the rights are ", kRightNames));
      }
      rights.push_back(right);
    }
  }
  if (rights.empty()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     absl::StrCat("name at least one right: ", kRightNames));
  }
  return rights;
}

absl::Status GrantList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_grant_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.grant_list()));
    return absl::OkStatus();
  }
  PrintGrants(ctx, response.grant_list().grants());
  return absl::OkStatus();
}

absl::Status GrantAdd(CommandContext& ctx, const pb::GrantPrincipal& principal,
                      const std::string& dataset, const std::vector<pb::GrantInfo::Right>& rights) {
  pb::Request request;
  auto* r = request.mutable_grant_add();
  *r->mutable_principal() = principal;
  r->set_dataset(dataset);
  for (pb::GrantInfo::Right right : rights) r->add_rights(right);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.grant_add()));
    return absl::OkStatus();
  }
  PrintGrant(ctx, "added", response.grant_add().grant());
  return absl::OkStatus();
}

absl::Status GrantRemove(CommandContext& ctx, uint64_t id) {
  pb::Request request;
  request.mutable_grant_remove()->set_id(id);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.grant_remove()));
    return absl::OkStatus();
  }
  PrintGrant(ctx, "removed", response.grant_remove().grant());
  return absl::OkStatus();
}

void AddGrantCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    std::string principal;
    std::string dataset;
    std::vector<std::string> rights;
    uint64_t id = 0;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* grant = AddCommandGroup(
      app, "grant",
      "Data-socket grants: the configuration's and those added at run time (dual control)",
      "keyctl grant list");
  line.Runs(AddCommand(grant, "list",
                       "Every grant, the configuration file's and the stored ones, with origin",
                       "keyctl grant list --json"),
            [](CommandContext& ctx) { return GrantList(ctx); });

  CLI::App* add = AddCommand(
      grant, "add",
      "Give a principal rights on a dataset (or '*'), kept in the key DB; a second admin "
      "approves it",
      "keyctl grant add user:crm crm read write --totp 123456");
  add->add_option("PRINCIPAL", v.principal, std::string("Who: ") + kPrincipalForms)->required();
  add->add_option("DATASET", v.dataset, "An existing dataset's name, or '*' for every dataset")
      ->required();
  add->add_option("RIGHTS", v.rights, std::string("One or more of ") + kRightNames)->required();
  add->callback([&v, &line] {
    absl::StatusOr<pb::GrantPrincipal> principal = ParseGrantPrincipal(v.principal);
    if (!principal.ok()) {
      throw CLI::ValidationError("grant add", std::string(principal.status().message()));
    }
    absl::StatusOr<std::vector<pb::GrantInfo::Right>> rights = ParseGrantRights(v.rights);
    if (!rights.ok())
      throw CLI::ValidationError("grant add", std::string(rights.status().message()));
    line.Choose([&v, principal = *principal, rights = *rights](CommandContext& ctx) {
      return GrantAdd(ctx, principal, v.dataset, rights);
    });
  });

  CLI::App* remove =
      AddCommand(grant, "remove",
                 "Remove a stored grant by its id (grant list); a second admin approves it. The "
                 "configuration's grants are removed from its file (then SIGHUP)",
                 "keyctl grant remove 3 --totp 123456");
  remove->add_option("ID", v.id, "The stored grant's id (keyctl grant list)")->required();
  line.Runs(remove, [&v](CommandContext& ctx) { return GrantRemove(ctx, v.id); });
}

}  // namespace coffer::keyctl
