// What keyctl's command domains share while they add their sub-commands to the command line
// (CLI11): each domain's Add...Commands function (dataset_commands.h, key_commands.h, ...) binds
// its options to values held by a CommandLine and, from the callback of the sub-command the user
// chose, records the command to run. main.cc parses, then runs that command.
//
// Thread safety: none; keyctl builds and parses its command line on one thread.

#ifndef COFFER_KMS_KEYCTL_COMMAND_LINE_H_
#define COFFER_KMS_KEYCTL_COMMAND_LINE_H_

#include <CLI/CLI.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kms/keyctl/command_context.h"

namespace coffer::keyctl {

// A parsed command, ready to run against the daemon (or locally).
using Action = std::function<absl::Status(CommandContext&)>;

class CommandLine {
 public:
  CommandLine() = default;
  CommandLine(const CommandLine&) = delete;
  CommandLine& operator=(const CommandLine&) = delete;

  // A new T that lives as long as this CommandLine: the variables a domain's options bind to
  // must outlive parsing, until the chosen action has run.
  template <typename T>
  T& NewValues() {
    auto values = std::make_shared<T>();
    T& result = *values;
    held_.push_back(std::move(values));
    return result;
  }

  // When `command` is the sub-command parsed, `action` becomes the command to run. For checks
  // that need the parsed values, set your own callback and call Choose from it.
  void Runs(CLI::App* command, Action action);
  void Choose(Action action) { action_ = std::move(action); }
  // Empty until a sub-command was chosen.
  const Action& action() const { return action_; }

 private:
  std::vector<std::shared_ptr<void>> held_;
  Action action_;
};

// Adds sub-command `name` under `parent` with its help line and one example (the help footer).
CLI::App* AddCommand(CLI::App* parent, const std::string& name, const std::string& description,
                     const std::string& example);
// A command group (`keyctl dataset ...`): AddCommand that also requires one sub-command.
CLI::App* AddCommandGroup(CLI::App& app, const std::string& name, const std::string& description,
                          const std::string& example);

// --record ID or --attachment NAME, never both: the item a command acts on (bin, canary).
class ItemFlags {
 public:
  void Add(CLI::App* command, const std::string& record_help, const std::string& attachment_help);
  // For a command's callback: neither given is a usage error naming `command`.
  void Require(const std::string& command) const;
  // The one given, after parsing.
  std::optional<std::string> record_id() const;
  std::optional<std::string> attachment_name() const;

 private:
  std::string record_id_, attachment_name_;
  CLI::Option* record_ = nullptr;
  CLI::Option* attachment_ = nullptr;
};

// Check option text with ParseDuration / ParseTimePoint (output.h), printing their message.
CLI::Validator DurationValidator();
CLI::Validator TimeValidator();

}  // namespace coffer::keyctl

#endif  // COFFER_KMS_KEYCTL_COMMAND_LINE_H_
