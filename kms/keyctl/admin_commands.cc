#include "kms/keyctl/admin_commands.h"

#include <CLI/CLI.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/dataset_commands.h"
#include "kms/keyctl/output.h"
#include "kms/keyctl/policy_commands.h"

namespace coffer::keyctl {

namespace pb = ::coffer::v1;

namespace {

std::string UidName(uint32_t uid, const std::string& name) {
  return name.empty() ? std::to_string(uid) : absl::StrCat(name, " (", uid, ")");
}

template <typename Admins>
void PrintAdmins(CommandContext& ctx, const Admins& admins) {
  const int64_t now = NowMicros();
  Table table(
      {"UID", "NAME", "ENROLLED", "AGE", "BOOTSTRAP", "LAST CODE", "FAILURES", "LOCKED UNTIL"});
  for (const pb::AdminInfo& a : admins) {
    table.AddRow(
        {std::to_string(a.uid()), a.name().empty() ? "-" : a.name(),
         FormatLocalTime(a.enrolled_micros()), FormatAge(a.enrolled_micros(), now),
         YesNo(a.bootstrap()),
         a.last_code_micros() == 0 ? "never" : FormatTimeWithAge(a.last_code_micros(), now),
         std::to_string(a.failed_codes()),
         a.locked_until_micros() == 0 ? "-" : FormatLocalTime(a.locked_until_micros())});
  }
  table.Print(ctx.out());
}

template <typename Invitations>
void PrintInvitations(CommandContext& ctx, const Invitations& invitations) {
  Table table({"INVITED UID", "BY", "CREATED", "EXPIRES"});
  for (const pb::AdminInvitation& i : invitations) {
    table.AddRow({std::to_string(i.uid()), std::to_string(i.invited_by()),
                  FormatLocalTime(i.created_micros()), FormatLocalTime(i.expires_micros())});
  }
  table.Print(ctx.out());
}

void PrintApprovals(CommandContext& ctx,
                    const google::protobuf::RepeatedPtrField<pb::ApprovalInfo>& requests) {
  Table table({"ID", "STATE", "DATASET", "SUMMARY", "REQUESTER", "CREATED", "EXPIRES", "DECIDED BY",
               "RESULT"});
  for (const pb::ApprovalInfo& r : requests) {
    table.AddRow({std::to_string(r.id()), ApprovalStateName(r.state()),
                  r.dataset().empty() ? "-" : r.dataset(), r.summary(),
                  UidName(r.requester_uid(), r.requester_name()),
                  FormatLocalTime(r.created_micros()), FormatLocalTime(r.expires_micros()),
                  r.decided_micros() == 0 ? "-" : UidName(r.approver_uid(), r.approver_name()),
                  r.has_result() && r.result().code() != 0 ? r.result().code_name() : "-"});
  }
  table.Print(ctx.out());
}

const char* ResultKind(const pb::Response& response) {
  const auto* field =
      pb::Response::descriptor()->FindFieldByNumber(static_cast<int>(response.result_case()));
  return field == nullptr ? "none" : field->name().c_str();
}

// The approved operation's own answer, printed as its command prints it where keyctl knows how.
void PrintOperationResult(CommandContext& ctx, const pb::Response& result) {
  if (result.has_error()) {
    ctx.out() << "operation failed: " << result.error().code_name() << ": "
              << result.error().message() << '\n';
    return;
  }
  ctx.out() << "operation " << ResultKind(result) << ": done\n";
  switch (result.result_case()) {
    case pb::Response::kDatasetLifecycle:
      PrintDataset(ctx, result.dataset_lifecycle());
      break;
    case pb::Response::kPolicySet:
      PrintPolicy(ctx, result.policy_set().policy());
      break;
    case pb::Response::kHoldSet:
      ctx.out() << result.hold_set().name() << ": legal hold "
                << (result.hold_set().legal_hold() ? "set" : "cleared") << '\n';
      break;
    case pb::Response::kAdminEnroll:
      if (result.admin_enroll().has_invitation()) {
        PrintInvitations(ctx, std::vector<pb::AdminInvitation>{result.admin_enroll().invitation()});
      }
      break;
    default:
      PrintJson(ctx, ProtoToJson(result));
      break;
  }
}

}  // namespace

absl::Status AdminEnroll(CommandContext& ctx, std::optional<uint32_t> uid) {
  pb::Request request;
  auto* r = request.mutable_admin_enroll();
  if (uid) r->set_uid(*uid);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AdminEnrollResponse& e = response.admin_enroll();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(e));
    return absl::OkStatus();
  }
  if (!e.otpauth_uri().empty()) {
    ctx.out() << "Add this to your authenticator app NOW; it is shown only this once and "
                 "cannot be shown again:\n\n  "
              << e.otpauth_uri() << "\n\n";
  }
  if (e.has_admin()) PrintAdmins(ctx, std::vector<pb::AdminInfo>{e.admin()});
  if (e.has_invitation()) {
    ctx.out() << "uid " << e.invitation().uid()
              << " is invited: it claims its enrolment with `keyctl admin enroll` before "
              << FormatLocalTime(e.invitation().expires_micros()) << '\n';
  }
  return absl::OkStatus();
}

absl::Status AdminList(CommandContext& ctx) {
  pb::Request request;
  request.mutable_admin_list();
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::AdminListResponse& l = response.admin_list();
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(l));
    return absl::OkStatus();
  }
  if (!l.mfa_required()) {
    ctx.out() << "MFA: development mode (off): no codes or dual control\n";
  } else {
    ctx.out() << "MFA: required; an accepted code opens a session of "
              << FormatDuration(l.session_seconds()) << '\n';
  }
  PrintAdmins(ctx, l.admins());
  if (l.invitations_size() > 0) {
    ctx.out() << '\n';
    PrintInvitations(ctx, l.invitations());
  }
  return absl::OkStatus();
}

absl::Status AdminRemove(CommandContext& ctx, uint32_t uid) {
  pb::Request request;
  request.mutable_admin_remove()->set_uid(uid);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, {{"removed", uid}});
  } else {
    ctx.out() << "admin " << uid << " removed; its TOTP secret is destroyed\n";
  }
  return absl::OkStatus();
}

absl::Status RequestList(CommandContext& ctx, bool include_closed) {
  pb::Request request;
  request.mutable_approval_list()->set_include_closed(include_closed);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  if (ctx.json()) {
    PrintJson(ctx, ProtoToJson(response.approval_list()));
    return absl::OkStatus();
  }
  PrintApprovals(ctx, response.approval_list().requests());
  return absl::OkStatus();
}

absl::Status RequestDecide(CommandContext& ctx, uint64_t id, bool approve) {
  pb::Request request;
  request.mutable_approval_decide()->set_id(id);
  request.mutable_approval_decide()->set_approve(approve);
  COFFER_ASSIGN_OR_RETURN(pb::Response response, ctx.Call(std::move(request)));
  const pb::ApprovalDecideResponse& d = response.approval_decide();
  if (ctx.json()) {
    nlohmann::json json = {{"request", ProtoToJson(d.request())}};
    if (d.has_result()) json["result"] = ProtoToJson(d.result());
    PrintJson(ctx, json);
    return absl::OkStatus();
  }
  ctx.out() << "request " << d.request().id() << " " << ApprovalStateName(d.request().state())
            << ": " << d.request().summary() << '\n';
  if (d.has_result()) PrintOperationResult(ctx, d.result());
  return absl::OkStatus();
}

void AddAdminCommands(CLI::App& app, CommandLine& line) {
  struct Values {
    uint32_t admin_uid = 0;
    bool all = false;
    uint64_t request_id = 0;
  };
  Values& v = line.NewValues<Values>();
  CLI::App* admin = AddCommandGroup(
      app, "admin", "Enrol, list and remove admins (TOTP MFA, dual control)", "keyctl admin list");
  CLI::App* enroll = AddCommand(
      admin, "enroll",
      "Without --uid: claim your own enrolment (prints the otpauth:// URI once). With --uid: "
      "invite that uid (dual control once two admins are enrolled)",
      "keyctl admin enroll --uid 1001 --totp 123456");
  CLI::Option* enroll_uid = enroll->add_option("--uid", v.admin_uid, "The uid to invite");
  enroll->callback([&v, &line, enroll_uid] {
    std::optional<uint32_t> uid;
    if (enroll_uid->count() > 0) uid = v.admin_uid;
    line.Choose([uid](CommandContext& ctx) { return AdminEnroll(ctx, uid); });
  });
  line.Runs(AddCommand(admin, "list", "Admins, their codes and lock-outs, and open invitations",
                       "keyctl admin list --json"),
            [](CommandContext& ctx) { return AdminList(ctx); });
  CLI::App* remove =
      AddCommand(admin, "remove", "Remove an admin and destroy its TOTP secret (dual control)",
                 "keyctl admin remove --uid 1001 --totp 123456");
  remove->add_option("--uid", v.admin_uid, "The admin's uid")->required();
  line.Runs(remove, [&v](CommandContext& ctx) { return AdminRemove(ctx, v.admin_uid); });

  CLI::App* request =
      AddCommandGroup(app, "request", "Approval requests of dual control", "keyctl request list");
  CLI::App* list =
      AddCommand(request, "list", "Pending approval requests (--all: also closed ones)",
                 "keyctl request list --all");
  list->add_flag("--all", v.all, "Also approved, denied, failed and expired requests");
  line.Runs(list, [&v](CommandContext& ctx) { return RequestList(ctx, v.all); });
  for (bool approve : {true, false}) {
    CLI::App* sub = AddCommand(
        request, approve ? "approve" : "deny",
        approve ? "Approve another admin's request; it runs now (needs a fresh "
                  "code of yours)"
                : "Deny another admin's request (needs a fresh code of yours)",
        std::string("keyctl request ") + (approve ? "approve" : "deny") + " 12 --totp 123456");
    sub->add_option("ID", v.request_id, "Request id (keyctl request list)")->required();
    line.Runs(sub, [&v, approve](CommandContext& ctx) {
      return RequestDecide(ctx, v.request_id, approve);
    });
  }
}

}  // namespace coffer::keyctl
