// keyctl: the admin CLI for cofferd's admin socket (docs/keyctl.md). This file holds the global
// options and runs one command, `keyctl shell` or `keyctl --batch FILE` (shell.h: the command
// tree of every domain — dataset_commands.h, key_commands.h, ...: each file owns its commands
// and their sub-command line —, the error reports and the mapping of results to exit codes).
//
// Exit codes: 0 success, 1 error, 2 usage, 3 refused (also MFA and approval refusals), 4 not
// found, 5 pending approval (the operation was filed for a second admin). Errors are one line on
// stderr ("keyctl: ..."); with --json, stdout also gets
// {"error": {"code", "code_name", "message"}}.

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "kms/keyctl/command_context.h"
#include "kms/keyctl/command_line.h"
#include "kms/keyctl/output.h"
#include "kms/keyctl/shell.h"

namespace coffer::keyctl {
namespace {

int Run(int argc, char** argv) {
  CLI::App app{"keyctl: administer cofferd over its admin socket (docs/keyctl.md)", "keyctl"};
  app.fallthrough();
  app.require_subcommand(0, 1);  // none with --batch
  std::string socket = "./var/admin.sock";
  bool json = false;
  app.add_option("--socket", socket,
                 "cofferd's admin socket (default: $COFFER_ADMIN_SOCKET, else ./var/admin.sock)")
      ->envname("COFFER_ADMIN_SOCKET");
  app.add_flag("--json", json, "Print machine-readable JSON instead of tables");
  std::string totp;
  CLI::Option* totp_option = app.add_option(
      "--totp", totp,
      "Your current 6-digit TOTP code (opens an MFA session on this connection; single-use)");
  std::string batch;
  CLI::Option* batch_option = app.add_option("--batch", batch,
                                             "Run the commands of FILE (one a line, # comments; - "
                                             "for stdin) on one connection under "
                                             "one TOTP code; stops at the first failing line")
                                  ->type_name("FILE");

  CommandLine line;
  AddCommands(app, line);
  CLI::App* shell = AddCommand(
      &app, "shell",
      "Read commands from stdin, one a line, on one connection: one TOTP code serves them all",
      "keyctl --totp 123456 shell");
  bool shell_chosen = false;
  shell->callback([&shell_chosen] { shell_chosen = true; });
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
    return ReportUsageError(app, e, std::cerr);
  }
  const Action& action = line.action();
  const bool batch_given = batch_option->count() > 0;
  if (batch_given && (shell_chosen || action)) {
    std::cerr << "keyctl: --batch FILE runs the file's commands: give no command with it\n";
    return kExitUsage;
  }
  if (!action && !shell_chosen && !batch_given) {
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
  if (shell_chosen) return RunShell(ctx, std::cin, ::isatty(STDIN_FILENO) == 1, std::cerr);
  if (batch_given) {
    if (batch == "-") return RunBatch(ctx, std::cin, "stdin", std::cerr);
    std::ifstream file(batch);
    if (!file) {
      std::cerr << "keyctl: cannot open --batch " << batch << '\n';
      return kExitUsage;
    }
    return RunBatch(ctx, file, batch, std::cerr);
  }
  absl::Status status = action(ctx);
  std::cout.flush();
  if (status.ok()) return kExitOk;
  return ReportFailure(ctx, status, std::cerr);
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
