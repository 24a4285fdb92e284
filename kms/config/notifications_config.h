// The notifications part of cofferd's configuration (config.proto: events_directory,
// notifications; docs/events.md): defaults and validation, called by config.cc's
// ApplyDefaults and Validate so that a finished Config has every field set.
//
// Thread safety: free functions without shared state. Failures: CONFIG_INVALID naming the field.

#ifndef COFFER_KMS_CONFIG_NOTIFICATIONS_CONFIG_H_
#define COFFER_KMS_CONFIG_NOTIFICATIONS_CONFIG_H_

#include <string>

#include "absl/status/status.h"
#include "kms/config/config.pb.h"

namespace coffer::daemon {

// Fills the defaults; resolves events_directory against `state_directory`.
void ApplyNotificationDefaults(const std::string& state_directory,
                               ::coffer::daemon::v1::Config& config);

absl::Status ValidateNotifications(const ::coffer::daemon::v1::Config& config);

}  // namespace coffer::daemon

#endif  // COFFER_KMS_CONFIG_NOTIFICATIONS_CONFIG_H_
