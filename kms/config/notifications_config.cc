#include "kms/config/notifications_config.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::daemon {
namespace {

// sun_path holds 108 bytes, the last one the terminating NUL.
constexpr size_t kMaxHookSocketBytes = 107;

absl::Status Invalid(std::string_view field, std::string_view what) {
  return MakeError(ErrorCode::kConfigInvalid,
                   absl::StrCat(std::string(field), ": ", std::string(what)));
}

}  // namespace

void ApplyNotificationDefaults(const std::string& state_directory,
                               ::coffer::daemon::v1::Config& config) {
  namespace fs = std::filesystem;
  if (config.events_directory().empty()) config.set_events_directory("events");
  fs::path events(config.events_directory());
  if (events.is_relative()) {
    config.set_events_directory((fs::path(state_directory) / events).lexically_normal().string());
  }
  auto* n = config.mutable_notifications();
  if (n->hook_timeout_seconds() == 0) n->set_hook_timeout_seconds(10);
  if (n->hook_attempts() == 0) n->set_hook_attempts(3);
  if (!n->has_destruction_warning_seconds()) n->set_destruction_warning_seconds(7 * 86400);
  if (n->retention_days() == 0) n->set_retention_days(30);
  if (n->max_age_days() == 0) n->set_max_age_days(std::max<uint32_t>(365, n->retention_days()));
  if (n->hsm_check_seconds() == 0) n->set_hsm_check_seconds(60);
}

absl::Status ValidateNotifications(const ::coffer::daemon::v1::Config& config) {
  const auto& n = config.notifications();
  if (n.hook_command_size() > 0) {
    return Invalid("notifications.hook_command",
                   "cofferd no longer starts the hook itself (it would share cofferd's uid and "
                   "environment, and so could read the HSM PIN): run coffer-hook-runner under a "
                   "user of its own with this command after its --, and set "
                   "notifications.hook_socket to its --socket (docs/events.md, \"The hook "
                   "runner\")");
  }
  if (!n.hook_socket().empty()) {
    if (n.hook_socket().front() != '/') {
      return Invalid("notifications.hook_socket", "must be an absolute path");
    }
    if (n.hook_socket().size() > kMaxHookSocketBytes) {
      return Invalid("notifications.hook_socket",
                     "is longer than a Unix socket allows (107 bytes)");
    }
    if (n.hook_socket().find('\0') != std::string::npos) {
      return Invalid("notifications.hook_socket", "contains a NUL byte");
    }
  }
  if (n.hook_timeout_seconds() > 3600) {
    return Invalid("notifications.hook_timeout_seconds", "must be 1-3600");
  }
  if (n.hook_attempts() > 100) return Invalid("notifications.hook_attempts", "must be 1-100");
  if (n.destruction_warning_seconds() < 0) {
    return Invalid("notifications.destruction_warning_seconds", "must not be negative");
  }
  if (n.retention_days() > 3650) return Invalid("notifications.retention_days", "must be 1-3650");
  if (n.max_age_days() > 3650 || n.max_age_days() < n.retention_days()) {
    return Invalid("notifications.max_age_days", "must be retention_days to 3650");
  }
  if (n.hsm_check_seconds() > 86400) {
    return Invalid("notifications.hsm_check_seconds", "must be 1-86400");
  }
  return absl::OkStatus();
}

}  // namespace coffer::daemon
