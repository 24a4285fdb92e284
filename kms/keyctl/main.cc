// keyctl: the admin CLI for cofferd's admin socket (docs/keyctl.md). This file holds the global
// options, the registration of each command domain (dataset_commands.h, key_commands.h, ...: each
// file owns its commands and their sub-command line) and the mapping of results to exit codes.
//
// Exit codes: 0 success, 1 error, 2 usage, 3 refused (also MFA and approval refusals), 4 not
// found, 5 pending approval (the operation was filed for a second admin). Errors are one line on
// stderr ("keyctl: ..."); with --json, stdout also gets
// {"error": {"code", "code_name", "message"}}.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "kms/keyctl/admin_commands.h"
#include "kms/keyctl/audit_commands.h"
#include "kms/keyctl/backup_commands.h"
#include "kms/keyctl/bin_commands.h"
#include "kms/keyctl/command_context.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/dataset_commands.h"
#include "kms/keyctl/event_commands.h"
#include "kms/keyctl/export_commands.h"
#include "kms/keyctl/job_commands.h"
#include "kms/keyctl/key_commands.h"
#include "kms/keyctl/output.h"
#include "kms/keyctl/policy_commands.h"
#include "kms/keyctl/receipt_commands.h"

namespace coffer::keyctl {
namespace {

// The deepest subcommand the command line selected, for the usage hint.
const CLI::App* Deepest(const CLI::App* app) {
  for (const CLI::App* sub : app->get_subcommands()) return Deepest(sub);
  return app;
}
std::string CommandPath(const CLI::App* app) {
  std::string path = app->get_name();
  for (const CLI::App* sub : app->get_subcommands()) return path + " " + CommandPath(sub);
  return path;
}

std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  return text;
}

// Prints the one-line usage error (with the command to ask for --help) and returns exit code 2.
int ReportUsageError(const CLI::App& app, const CLI::ParseError& e) {
  // "keyctl frob" fails as a missing subcommand; name the word that is not one.
  // With fallthrough the word may have been handed up to a parent: look there too.
  const CLI::App* deepest = Deepest(&app);
  std::vector<std::string> unused;
  for (const CLI::App* a = deepest; a != nullptr && unused.empty(); a = a->get_parent()) {
    unused = a->remaining();
  }
  if (!unused.empty() && deepest->get_require_subcommand_min() > 0) {
    std::cerr << "keyctl: unknown command '" << unused.front() << "' (see: " << CommandPath(&app)
              << " --help)\n";
    return kExitUsage;
  }
  std::cerr << "keyctl: " << OneLine(e.what()) << " (see: " << CommandPath(&app) << " --help)\n";
  return kExitUsage;
}

// Prints a failed command's error (stderr; with --json also stdout) and returns its exit code.
int ReportFailure(const absl::Status& status, bool json) {
  // A request filed for approval was printed (stdout) by the command: exit 5.
  if (IsPendingApproval(status)) return ExitCodeFor(status);
  std::string message = OneLine(std::string(status.message()));
  std::cerr << "keyctl: " << message << '\n';
  if (json) {
    ErrorCode code = ErrorCodeOf(status);
    nlohmann::json error = {{"code", static_cast<int>(code)},
                            {"code_name", std::string(ErrorCodeName(code))},
                            {"message", message}};
    std::cout << nlohmann::json{{"error", std::move(error)}}.dump(2) << '\n';
  }
  return ExitCodeFor(status);
}

int Run(int argc, char** argv) {
  CLI::App app{"keyctl: administer cofferd over its admin socket (docs/keyctl.md)", "keyctl"};
  app.fallthrough();
  app.require_subcommand(1);
  std::string socket = "./var/admin.sock";
  bool json = false;
  app.add_option("--socket", socket,
                 "cofferd's admin socket (default: $COFFER_ADMIN_SOCKET, else ./var/admin.sock)")
      ->envname("COFFER_ADMIN_SOCKET");
  app.add_flag("--json", json, "Print machine-readable JSON instead of tables");
  std::string totp;
  CLI::Option* totp_option = app.add_option(
      "--totp", totp, "Your current 6-digit TOTP code (opens an MFA session; single-use)");

  // In the order keyctl --help lists them.
  CommandLine line;
  AddDatasetCommands(app, line);
  AddExportCommands(app, line);  // also adds `dataset export`
  AddKeyCommands(app, line);
  AddPolicyCommands(app, line);
  AddBinCommands(app, line);
  AddJobCommands(app, line);
  AddBackupCommands(app, line);
  AddAuditCommands(app, line);
  AddStatusCommand(app, line);
  AddAdminCommands(app, line);
  AddReceiptCommands(app, line);
  AddEventCommands(app, line);
  app.footer(
      "Exit codes: 0 success, 1 error, 2 usage, 3 refused (incl. MFA), 4 not found, 5 pending "
      "approval.\n"
      "Example:\n  keyctl --socket /run/coffer/admin.sock dataset list");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return ReportUsageError(app, e);
  }
  const Action& action = line.action();
  if (!action) {
    std::cerr << "keyctl: no command given (see: keyctl --help)\n";
    return kExitUsage;
  }
  if (totp_option->count() > 0 && !IsTotpCode(totp)) {
    std::cerr << "keyctl: --totp takes exactly 6 digits: the current code of your "
                 "authenticator app\n";
    return kExitUsage;
  }

  CommandContext ctx(socket, json, std::cout, std::cerr, ::isatty(STDERR_FILENO) == 1);
  if (totp_option->count() > 0) ctx.set_totp_code(std::move(totp));
  absl::Status status = action(ctx);
  std::cout.flush();
  if (status.ok()) return kExitOk;
  return ReportFailure(status, json);
}

}  // namespace
}  // namespace coffer::keyctl

int main(int argc, char** argv) {
  try {
    return coffer::keyctl::Run(argc, argv);
  } catch (const std::exception& e) {
    // CLI11 throws while parsing (caught in Run); commands report failures as statuses.
    std::cerr << "keyctl: unexpected failure: " << e.what() << '\n';
  }
  return coffer::keyctl::kExitError;
}
