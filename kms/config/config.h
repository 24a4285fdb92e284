// cofferd's configuration file: a coffer.daemon.v1.Config (kms/config/config.proto) in protobuf
// text format. Loading parses it, fills in every default the .proto states, resolves relative
// paths against state_directory, and validates every field; the first unusable value is a
// CONFIG_INVALID (509) error whose message starts with the field's path (e.g.
// "limits.max_frame_bytes: ...") and says what to fix. A returned Config has every default
// filled in, so readers never need to know them. Names in grants and admins are checked for
// shape here and resolved to ids by kms/ops/authz.h (GrantTable::FromConfig).
//
// Thread safety: free functions without shared state. Failures: CONFIG_INVALID only (an
// unreadable file included; the message names the path, never file contents).

#ifndef COFFER_KMS_CONFIG_CONFIG_H_
#define COFFER_KMS_CONFIG_CONFIG_H_

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "kms/config/config.pb.h"
#include "kms/keys/key_manager_types.h"
#include "storage/data_db.h"

namespace coffer::daemon {

using Config = ::coffer::daemon::v1::Config;

inline constexpr std::string_view kDefaultStateDirectory = "./var";
inline constexpr std::string_view kDefaultHsmModulePath = "/usr/lib/softhsm/libsofthsm2.so";

// Reads and loads the file at `path`.
absl::StatusOr<Config> LoadConfigFile(const std::string& path);

// Parses `text` (protobuf text format), applies defaults, resolves paths and validates:
// ParseConfigText then FinishConfig. `origin` names the source in parse errors (a file path,
// "<flags>").
absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view origin);

// Parses `text` only: no defaults, no path resolution, no validation, so that a caller can
// change fields before FinishConfig (cofferd applies its flags). A syntax error or an unknown
// field is CONFIG_INVALID "ORIGIN:LINE:COLUMN: what".
absl::StatusOr<Config> ParseConfigText(std::string_view text, std::string_view origin);

// What cofferd's command-line flags set over the file; an empty or unset field keeps the file's
// value.
struct ConfigOverrides {
  std::string state_directory;
  std::string data_socket;
  std::string admin_socket;
  std::string hsm_module_path;
  std::string hsm_token_label;
  std::string hsm_pin_file;
  std::optional<uint32_t> crash_loss_window_millis;
  std::optional<Config::Durability> durability;
};

// Sets the fields `overrides` names in a parsed, not yet finished `config`.
void ApplyOverrides(const ConfigOverrides& overrides, Config& config);

// Applies defaults and resolves paths in `config`, then validates it; what ParseConfig does
// after parsing (for a Config built in code, e.g. from flags).
absl::StatusOr<Config> FinishConfig(Config config);

// Derived settings, from a finished Config.
storage::Durability DurabilityOf(const Config& config);
std::chrono::milliseconds CrashLossWindow(const Config& config);
// The key manager's default policy with the config's default_policy overrides applied.
kms::DatasetPolicy DefaultDatasetPolicy(const Config& config);

}  // namespace coffer::daemon

#endif  // COFFER_KMS_CONFIG_CONFIG_H_
