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

void ItemFlags::Add(CLI::App* command, const std::string& record_help,
                    const std::string& attachment_help) {
  record_ = command->add_option("--record", record_id_, record_help);
  attachment_ = command->add_option("--attachment", attachment_name_, attachment_help);
  record_->excludes(attachment_);
}

void ItemFlags::Require(const std::string& command) const {
  if (record_->count() == 0 && attachment_->count() == 0) {
    throw CLI::ValidationError(command, "give --record ID or --attachment NAME");
  }
}

std::optional<std::string> ItemFlags::record_id() const {
  if (record_->count() == 0) return std::nullopt;
  return record_id_;
}

std::optional<std::string> ItemFlags::attachment_name() const {
  if (attachment_->count() == 0) return std::nullopt;
  return attachment_name_;
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
