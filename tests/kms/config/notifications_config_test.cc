// The notifications part of cofferd's configuration: defaults, path resolution and every
// refusal naming its field (kms/config/notifications_config.h through ParseConfig).

#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/config/config.h"

namespace coffer::daemon {
namespace {

absl::StatusOr<Config> Parse(const std::string& notifications) {
  return ParseConfig("state_directory: \"/srv/coffer\"\n" + notifications, "<test>");
}

TEST(NotificationsConfig, DefaultsAreFilledAndTheDirectoryResolved) {
  auto config = Parse("");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->events_directory(), "/srv/coffer/events");
  const auto& n = config->notifications();
  EXPECT_EQ(n.hook_command_size(), 0);
  EXPECT_EQ(n.hook_socket(), "");
  EXPECT_EQ(n.hook_timeout_seconds(), 10u);
  EXPECT_EQ(n.hook_attempts(), 3u);
  EXPECT_EQ(n.destruction_warning_seconds(), 7 * 86400);
  EXPECT_EQ(n.retention_days(), 30u);
  EXPECT_EQ(n.max_age_days(), 365u);
  EXPECT_EQ(n.hsm_check_seconds(), 60u);
}

TEST(NotificationsConfig, ExplicitValuesAreKept) {
  auto config = Parse(
      "events_directory: \"/var/lib/coffer-events\"\n"
      "notifications { hook_socket: \"/run/coffer-hooks/hook.sock\" "
      "hook_timeout_seconds: 2 hook_attempts: 1 "
      "destruction_warning_seconds: 0 retention_days: 7 max_age_days: 7 }");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->events_directory(), "/var/lib/coffer-events");
  EXPECT_EQ(config->notifications().hook_socket(), "/run/coffer-hooks/hook.sock");
  EXPECT_EQ(config->notifications().hook_timeout_seconds(), 2u);
  EXPECT_EQ(config->notifications().destruction_warning_seconds(), 0);  // 0 = never, kept
  EXPECT_EQ(config->notifications().max_age_days(), 7u);
}

TEST(NotificationsConfig, BadValuesNameTheirField) {
  const std::pair<std::string, std::string> cases[] = {
      {"notifications { hook_socket: \"hook.sock\" }", "notifications.hook_socket"},
      {"notifications { hook_socket: \"/" + std::string(107, 'h') + "\" }",
       "notifications.hook_socket"},
      {"notifications { hook_timeout_seconds: 3601 }", "notifications.hook_timeout_seconds"},
      {"notifications { hook_attempts: 101 }", "notifications.hook_attempts"},
      {"notifications { destruction_warning_seconds: -1 }",
       "notifications.destruction_warning_seconds"},
      {"notifications { retention_days: 40 max_age_days: 30 }", "notifications.max_age_days"},
      {"notifications { hsm_check_seconds: 86401 }", "notifications.hsm_check_seconds"},
      {"events_directory: \"audit\"", "events_directory"},
  };
  for (const auto& [text, field] : cases) {
    auto config = Parse(text);
    ASSERT_FALSE(config.ok()) << text;
    EXPECT_EQ(ErrorCodeOf(config.status()), ErrorCode::kConfigInvalid) << text;
    EXPECT_NE(config.status().message().find(field), std::string::npos)
        << text << ": " << config.status().message();
  }
}

// A configuration from before the hook runner: refused at load, saying where the hook went and
// why, rather than silently dropping the hook or running it with cofferd's uid and environment.
TEST(NotificationsConfig, HookCommandIsRefusedPointingToTheHookRunner) {
  for (const std::string& command :
       {std::string("hook_command: \"/usr/local/bin/coffer-notify\" hook_command: \"-v\""),
        std::string("hook_command: \"notify.sh\"")}) {
    auto config = Parse("notifications { " + command + " }");
    ASSERT_FALSE(config.ok()) << command;
    EXPECT_EQ(ErrorCodeOf(config.status()), ErrorCode::kConfigInvalid);
    const std::string message(config.status().message());
    EXPECT_NE(message.find("notifications.hook_command"), std::string::npos) << message;
    EXPECT_NE(message.find("coffer-hook-runner"), std::string::npos) << message;
    EXPECT_NE(message.find("notifications.hook_socket"), std::string::npos) << message;
    EXPECT_NE(message.find("HSM PIN"), std::string::npos) << message;
  }
}

}  // namespace
}  // namespace coffer::daemon
