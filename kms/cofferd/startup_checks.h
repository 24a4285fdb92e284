// The checks cofferd makes before it opens anything, each failing with a message that says
// what to fix (CONFIG_INVALID unless stated):
//
//  - ResolvePinFile: where the HSM user PIN comes from. With hsm.pin_credential set and
//    $CREDENTIALS_DIRECTORY present (systemd LoadCredential), $CREDENTIALS_DIRECTORY/<name>;
//    otherwise hsm.pin_file. The file itself is checked when it is read (hsm/pin.h: a regular
//    file only its owner may read, mode 0600 or 0400; HSM_PIN_UNAVAILABLE otherwise).
//  - SoftHsmConfig / SoftHsmTokenDirectory: for a SoftHSM2 module, the configuration file
//    (SOFTHSM2_CONF, else <hsm.token_directory>/softhsm2.conf as scripts/softhsm-token writes
//    it, else /etc/softhsm/softhsm2.conf) and its directories.tokendir, where the token's keys
//    live as files.
//  - CheckTokenOutside: the token storage must not lie inside (or contain) the data, key-DB,
//    audit or backup directory: a backup or copy of those would carry the token with it, and
//    SoftHSM2 shredding is only as final as the token directory is unbacked-up
//    (docs/threat-model.md).
//  - CheckStateDirectory: state_directory itself (it holds the sockets, the published audit
//    public key and, by default, every store): created (mode 0700, with its parents) when
//    missing; refused when it is not a directory, not owned by the daemon's uid, or writable by
//    group or others (who could replace a store, a socket or the public key). Read and search
//    permission for others is allowed: clients of other uids reach the sockets through it.
//  - PrepareStateDirectory: creates a missing directory (mode 0700), and refuses one that is
//    not a directory, not owned by the daemon's user, or not writable by it; a directory
//    others may read is tightened to 0700 (reported through `tightened`).
//
// Thread safety: pure functions over the file system. Nothing secret is read here.

#ifndef COFFER_KMS_COFFERD_STARTUP_CHECKS_H_
#define COFFER_KMS_COFFERD_STARTUP_CHECKS_H_

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace coffer::cofferd {

// `credentials_directory` is $CREDENTIALS_DIRECTORY (empty when unset).
absl::StatusOr<std::string> ResolvePinFile(const std::string& pin_file,
                                           const std::string& pin_credential,
                                           const std::string& credentials_directory);

// Whether `module_path` names SoftHSM2 (its file name contains "softhsm").
bool IsSoftHsmModule(const std::string& module_path);

// The SoftHSM2 configuration file to use: `env_conf` (SOFTHSM2_CONF) when set, else
// `token_directory`/softhsm2.conf when it exists, else /etc/softhsm/softhsm2.conf when it
// exists; nullopt when none.
std::optional<std::string> SoftHsmConfig(const std::string& env_conf,
                                         const std::string& token_directory);

// directories.tokendir from a SoftHSM2 configuration file. CONFIG_INVALID when the file cannot
// be read or names no token directory.
absl::StatusOr<std::string> SoftHsmTokenDirectory(const std::string& conf_path);

// `token_dir` against each (what, directory): refuses overlap in either direction.
absl::Status CheckTokenOutside(const std::string& token_dir,
                               const std::vector<std::pair<std::string, std::string>>& dirs);

// See above.
absl::Status CheckStateDirectory(const std::string& path);

// See above. `what` names the config field in messages (e.g. "data_directory").
absl::Status PrepareStateDirectory(const std::string& what, const std::string& path,
                                   bool* tightened = nullptr);

}  // namespace coffer::cofferd

#endif  // COFFER_KMS_COFFERD_STARTUP_CHECKS_H_
