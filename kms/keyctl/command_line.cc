#include "kms/keyctl/command_line.h"

#include <string>
#include <utility>

#include "kms/keyctl/output.h"

namespace coffer::keyctl {

void CommandLine::Runs(CLI::App* command, Action action) {
  command->callback([this, action = std::move(action)] { Choose(action); });
}

CLI::App* AddCommand(CLI::App* parent, const std::string& name, const std::string& description,
                     const std::string& example) {
  CLI::App* app = parent->add_subcommand(name, description);
  app->footer("Example:\n  " + example);
  return app;
}

CLI::App* AddCommandGroup(CLI::App& app, const std::string& name, const std::string& description,
                          const std::string& example) {
  CLI::App* group = AddCommand(&app, name, description, example);
  group->require_subcommand(1);
  return group;
}

CLI::Validator DurationValidator() {
  return {[](std::string& text) -> std::string {
            auto parsed = ParseDuration(text);
            if (parsed.ok()) return {};
            return std::string(parsed.status().message());
          },
          "DURATION"};
}

CLI::Validator TimeValidator() {
  return {[](std::string& text) -> std::string {
            auto parsed = ParseTimePoint(text, NowMicros());
            if (parsed.ok()) return {};
            return std::string(parsed.status().message());
          },
          "TIME"};
}

}  // namespace coffer::keyctl
