// keyctl's command tree and the ways to run it: one command from the process's arguments
// (main.cc), or a sequence of commands on ONE admin-socket connection — `keyctl shell` (lines
// from stdin, a `keyctl> ` prompt on stderr when stdin is a terminal) and `keyctl --batch FILE`
// (a file, or `-` for stdin). cofferd binds an MFA session to the connection whose request
// carried the TOTP code (kms/ops/admin_control.h), so a shell or a batch asks for one code —
// --totp CODE, else the prompt at the first command that needs it — and every later command on
// the connection runs under it until the session time ends or the connection closes.
//
// Each line is split into words like a POSIX shell without expansions (SplitWords: blanks
// separate words; '...' is literal; "..." keeps everything but \" \\ \$ \` escapes; a backslash
// outside quotes escapes the next character; a word starting with # begins a comment), then
// parsed by a fresh copy of the same CLI11 command tree keyctl's arguments use (AddCommands), so
// no option value of one line leaks into the next. --socket, --json and --totp belong to the
// keyctl process, not to a line (a usage error there names where they go); `shell` and
// `--batch` do not nest. Empty and comment lines do nothing.
//
// Batch: runs the lines in order and stops at the first failing one — a usage error or a
// command that fails or is filed for approval — printing `keyctl: FILE:LINE: message` and
// exiting with that command's exit code (main.cc's codes); 0 when every line succeeded.
// Shell: a failing line prints `keyctl: message` and the shell goes on; `exit` or `quit`
// or end of input ends it, with the exit code of the last command run (0 if none).
//
// A connection idle longer than cofferd's idle timeout is closed by the daemon, and its session
// with it: AdminClient dials again and the next command that needs MFA asks for a new code (on
// a terminal) or fails with MFA_REQUIRED.
//
// Thread safety: none (keyctl is single-threaded).

#ifndef COFFER_KMS_KEYCTL_SHELL_H_
#define COFFER_KMS_KEYCTL_SHELL_H_

#include <CLI/CLI.hpp>
#include <istream>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/keyctl/command_context.h"
#include "kms/keyctl/command_line.h"

namespace coffer::keyctl {

// Adds every command domain's sub-commands to `app`, in the order keyctl --help lists them.
void AddCommands(CLI::App& app, CommandLine& line);

// Splits `line` into words (see above). INVALID_ARGUMENT for an unterminated quote or a
// trailing backslash.
absl::StatusOr<std::vector<std::string>> SplitWords(std::string_view line);

// Prints the one-line usage error (with the command to ask for --help), prefixed "keyctl: "
// and `where` (e.g. "batch.txt:3: "), on `err`; returns exit code 2.
int ReportUsageError(const CLI::App& app, const CLI::ParseError& e, std::ostream& err,
                     std::string_view where = "");
// Prints a failed command's error ("keyctl: " `where` message on `err`; with --json also the
// {"error": ...} document on ctx.out()) and returns its exit code.
int ReportFailure(CommandContext& ctx, const absl::Status& status, std::ostream& err,
                  std::string_view where = "");

// Parses `words` (one command, without the program name) with a fresh command tree and runs
// it on `ctx`; prints its error (prefixed by `where`) and returns its exit code.
int RunWords(CommandContext& ctx, const std::vector<std::string>& words, std::ostream& err,
             std::string_view where = "");

// `keyctl --batch`: the lines of `in` (named `name` in messages) as described above.
int RunBatch(CommandContext& ctx, std::istream& in, const std::string& name, std::ostream& err);
// `keyctl shell`: prompts on `err` when `prompt` (stdin is a terminal).
int RunShell(CommandContext& ctx, std::istream& in, bool prompt, std::ostream& err);

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_SHELL_H_
