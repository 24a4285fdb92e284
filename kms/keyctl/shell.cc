#include "kms/keyctl/shell.h"

#include <algorithm>
#include <iostream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/keyctl/admin_commands.h"
#include "kms/keyctl/audit_commands.h"
#include "kms/keyctl/backup_commands.h"
#include "kms/keyctl/bin_commands.h"
#include "kms/keyctl/dataset_commands.h"
#include "kms/keyctl/event_commands.h"
#include "kms/keyctl/export_commands.h"
#include "kms/keyctl/grant_commands.h"
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

bool IsBlank(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

}  // namespace

void AddCommands(CLI::App& app, CommandLine& line) {
  AddDatasetCommands(app, line);
  AddExportCommands(app, line);  // also adds `dataset export`
  AddKeyCommands(app, line);
  AddPolicyCommands(app, line);
  AddBinCommands(app, line);
  AddJobCommands(app, line);
  AddJobRunCommand(app, line);
  AddBackupCommands(app, line);
  AddAuditCommands(app, line);
  AddStatusCommand(app, line);
  AddAdminCommands(app, line);
  AddReceiptCommands(app, line);
  AddEventCommands(app, line);
  AddGrantCommands(app, line);
}

absl::StatusOr<std::vector<std::string>> SplitWords(std::string_view line) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;  // a word has begun (possibly empty: '' or "")
  size_t i = 0;
  while (i < line.size()) {
    const char c = line[i];
    if (IsBlank(c)) {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      ++i;
      continue;
    }
    if (c == '#' && !in_word) break;  // a comment to the end of the line
    in_word = true;
    if (c == '\\') {
      if (i + 1 >= line.size()) {
        return MakeError(ErrorCode::kInvalidArgument, "a backslash ends the line");
      }
      word.push_back(line[i + 1]);
      i += 2;
      continue;
    }
    if (c == '\'') {
      const size_t end = line.find('\'', i + 1);
      if (end == std::string_view::npos) {
        return MakeError(ErrorCode::kInvalidArgument, "unterminated single quote");
      }
      word.append(line.substr(i + 1, end - i - 1));
      i = end + 1;
      continue;
    }
    if (c == '"') {
      ++i;
      bool closed = false;
      while (i < line.size()) {
        const char q = line[i];
        if (q == '"') {
          closed = true;
          ++i;
          break;
        }
        if (q == '\\' && i + 1 < line.size() &&
            (line[i + 1] == '"' || line[i + 1] == '\\' || line[i + 1] == '$' ||
             line[i + 1] == '`')) {
          word.push_back(line[i + 1]);
          i += 2;
          continue;
        }
        word.push_back(q);
        ++i;
      }
      if (!closed) return MakeError(ErrorCode::kInvalidArgument, "unterminated double quote");
      continue;
    }
    word.push_back(c);
    ++i;
  }
  if (in_word) words.push_back(std::move(word));
  return words;
}

int ReportUsageError(const CLI::App& app, const CLI::ParseError& e, std::ostream& err,
                     std::string_view where) {
  // "keyctl frob" fails as a missing or unexpected subcommand; name the word that is not one.
  // With fallthrough the word may have been handed up to a parent: look there too.
  const CLI::App* deepest = Deepest(&app);
  std::vector<std::string> unused;
  for (const CLI::App* a = deepest; a != nullptr && unused.empty(); a = a->get_parent()) {
    unused = a->remaining();
  }
  if (!unused.empty() && (deepest == &app || deepest->get_require_subcommand_min() > 0) &&
      unused.front().rfind('-', 0) != 0) {
    err << "keyctl: " << where << "unknown command '" << unused.front()
        << "' (see: " << CommandPath(&app) << " --help)\n";
    return kExitUsage;
  }
  err << "keyctl: " << where << OneLine(e.what()) << " (see: " << CommandPath(&app) << " --help)\n";
  return kExitUsage;
}

int ReportFailure(CommandContext& ctx, const absl::Status& status, std::ostream& err,
                  std::string_view where) {
  // A request filed for approval was printed (stdout) by the command: exit 5.
  if (IsPendingApproval(status)) {
    if (!where.empty()) err << "keyctl: " << where << "filed for approval; stopping here\n";
    return ExitCodeFor(status);
  }
  std::string message = OneLine(std::string(status.message()));
  err << "keyctl: " << where << message << '\n';
  if (ctx.json()) {
    ErrorCode code = ErrorCodeOf(status);
    nlohmann::json error = {{"code", static_cast<int>(code)},
                            {"code_name", std::string(ErrorCodeName(code))},
                            {"message", message}};
    ctx.out() << nlohmann::json{{"error", std::move(error)}}.dump(2) << '\n';
  }
  return ExitCodeFor(status);
}

int RunWords(CommandContext& ctx, const std::vector<std::string>& words, std::ostream& err,
             std::string_view where) {
  if (words.empty()) return kExitOk;
  if (words.front() == "shell") {
    err << "keyctl: " << where << "`shell` does not nest: this is already one connection\n";
    return kExitUsage;
  }
  CLI::App app{"keyctl commands on this connection (docs/keyctl.md)", "keyctl"};
  app.fallthrough();
  app.require_subcommand(1);
  // The process's options: named here so that a line using one gets a clear error.
  std::string ignored;
  bool ignored_flag = false;
  CLI::Option* process_options[] = {
      app.add_option("--socket", ignored, "given to keyctl itself")->group(""),
      app.add_flag("--json", ignored_flag, "given to keyctl itself")->group(""),
      app.add_option("--totp", ignored, "given to keyctl itself")->group(""),
      app.add_option("--batch", ignored, "given to keyctl itself")->group("")};
  CommandLine line;
  AddCommands(app, line);
  std::vector<std::string> reversed(words.rbegin(), words.rend());
  try {
    app.parse(reversed);
  } catch (const CLI::CallForHelp& e) {
    app.exit(e, ctx.out(), err);
    return kExitOk;
  } catch (const CLI::CallForAllHelp& e) {
    app.exit(e, ctx.out(), err);
    return kExitOk;
  } catch (const CLI::ParseError& e) {
    return ReportUsageError(app, e, err, where);
  }
  for (CLI::Option* option : process_options) {
    if (option->count() > 0) {
      err << "keyctl: " << where << option->get_name() << " belongs to keyctl itself (keyctl "
          << option->get_name()
          << " ... shell / --batch FILE), not to a line; a TOTP code is asked for at the "
             "first command that needs one\n";
      return kExitUsage;
    }
  }
  const Action& action = line.action();
  if (!action) {
    err << "keyctl: " << where << "no command given (see: keyctl --help)\n";
    return kExitUsage;
  }
  absl::Status status = action(ctx);
  ctx.out().flush();
  if (status.ok()) return kExitOk;
  return ReportFailure(ctx, status, err, where);
}

int RunBatch(CommandContext& ctx, std::istream& in, const std::string& name, std::ostream& err) {
  std::string text;
  uint64_t number = 0;
  while (std::getline(in, text)) {
    ++number;
    const std::string where = absl::StrCat(name, ":", number, ": ");
    absl::StatusOr<std::vector<std::string>> words = SplitWords(text);
    if (!words.ok()) {
      err << "keyctl: " << where << words.status().message() << '\n';
      return kExitUsage;
    }
    const int code = RunWords(ctx, *words, err, where);
    if (code != kExitOk) return code;
  }
  if (in.bad()) {
    err << "keyctl: cannot read " << name << '\n';
    return kExitError;
  }
  return kExitOk;
}

int RunShell(CommandContext& ctx, std::istream& in, bool prompt, std::ostream& err) {
  int last = kExitOk;
  std::string text;
  while (true) {
    if (prompt) err << "keyctl> " << std::flush;
    if (!std::getline(in, text)) {
      if (prompt) err << '\n';  // end of input (Ctrl-D): end the prompt's line
      break;
    }
    absl::StatusOr<std::vector<std::string>> words = SplitWords(text);
    if (!words.ok()) {
      err << "keyctl: " << words.status().message() << '\n';
      last = kExitUsage;
      continue;
    }
    if (words->size() == 1 && (words->front() == "exit" || words->front() == "quit")) break;
    if (words->size() == 1 && words->front() == "help") {
      (*words)[0] = "--help";
    }
    last = RunWords(ctx, *words, err);
  }
  return last;
}

}  // namespace coffer::keyctl
