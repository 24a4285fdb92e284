#include "kms/cofferd/startup_checks.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "crypto/base/status.h"

namespace coffer::cofferd {
namespace {

namespace fs = std::filesystem;

absl::Status Invalid(const std::string& message) {
  return MakeError(ErrorCode::kConfigInvalid, message);
}

std::string Trim(const std::string& s) {
  size_t begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  size_t end = s.find_last_not_of(" \t\r\n");
  return s.substr(begin, end - begin + 1);
}

// An absolute, normalised path with symlinks of its existing prefix resolved.
fs::path Canonical(const std::string& path) {
  std::error_code ec;
  fs::path absolute = fs::absolute(path, ec);
  if (ec) absolute = path;
  fs::path canonical = fs::weakly_canonical(absolute, ec);
  if (ec) return absolute.lexically_normal();
  return canonical.lexically_normal();
}

// Whether `inner` is `outer` or lies below it.
bool IsWithin(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> ResolvePinFile(const std::string& pin_file,
                                           const std::string& pin_credential,
                                           const std::string& credentials_directory) {
  if (!pin_credential.empty()) {
    if (!credentials_directory.empty()) {
      if (pin_credential.find('/') != std::string::npos) {
        return Invalid("hsm.pin_credential: a credential name, not a path (\"" + pin_credential +
                       "\")");
      }
      return credentials_directory + "/" + pin_credential;
    }
    if (pin_file.empty()) {
      return Invalid(
          "hsm.pin_credential is set but $CREDENTIALS_DIRECTORY is not: start "
          "cofferd through its systemd unit (LoadCredential=" +
          pin_credential + ":...), or set hsm.pin_file");
    }
  }
  if (pin_file.empty()) {
    return Invalid(
        "hsm: set pin_file (a file of mode 0600 holding the token's user PIN) or "
        "pin_credential (systemd LoadCredential)");
  }
  return pin_file;
}

bool IsSoftHsmModule(const std::string& module_path) {
  return fs::path(module_path).filename().string().find("softhsm") != std::string::npos;
}

std::optional<std::string> SoftHsmConfig(const std::string& env_conf,
                                         const std::string& token_directory) {
  if (!env_conf.empty()) return env_conf;
  std::error_code ec;
  if (!token_directory.empty()) {
    std::string beside = (fs::path(token_directory) / "softhsm2.conf").string();
    if (fs::is_regular_file(beside, ec)) return beside;
  }
  if (fs::is_regular_file("/etc/softhsm/softhsm2.conf", ec)) return "/etc/softhsm/softhsm2.conf";
  return std::nullopt;
}

absl::StatusOr<std::string> SoftHsmTokenDirectory(const std::string& conf_path) {
  std::ifstream in(conf_path);
  if (!in) {
    return Invalid("SoftHSM2 configuration " + conf_path +
                   " cannot be read: point SOFTHSM2_CONF at the token's softhsm2.conf "
                   "(scripts/softhsm-token writes one) and make it readable by cofferd's user");
  }
  std::string line;
  while (std::getline(in, line)) {
    line = Trim(line);
    if (line.empty() || line[0] == '#') continue;
    size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    if (Trim(line.substr(0, eq)) != "directories.tokendir") continue;
    std::string dir = Trim(line.substr(eq + 1));
    if (dir.empty()) break;
    return dir;
  }
  return Invalid("SoftHSM2 configuration " + conf_path +
                 " names no directories.tokendir; add one (outside the data, key-DB, audit "
                 "and backup directories)");
}

absl::Status CheckTokenOutside(const std::string& token_dir,
                               const std::vector<std::pair<std::string, std::string>>& dirs) {
  if (token_dir.empty()) return absl::OkStatus();
  fs::path token = Canonical(token_dir);
  for (const auto& [what, dir] : dirs) {
    if (dir.empty()) continue;
    fs::path other = Canonical(dir);
    if (IsWithin(token, other)) {
      std::string message = "the HSM token storage ";
      message += token.string();
      message += " lies inside ";
      message += what;
      message += " ";
      message += other.string();
      message +=
          ": a backup or copy of it would carry the token's keys, and shredding would not be "
          "final. Move the token (SoftHSM2 directories.tokendir) or ";
      message += what;
      message += " so that neither contains the other";
      return Invalid(message);
    }
    if (IsWithin(other, token)) {
      return Invalid(what + " " + other.string() + " lies inside the HSM token storage " +
                     token.string() + "; move it out");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckStateDirectory(const std::string& path) {
  const std::string what = "state_directory " + path;
  if (path.empty()) return Invalid("state_directory: empty path");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return Invalid(what + " cannot be examined: " + std::strerror(errno) +
                     "; check the permissions of its parent directories");
    }
    std::error_code ec;
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec || mkdir(path.c_str(), 0700) != 0) {
      return Invalid(what + " does not exist and cannot be created (" +
                     (ec ? ec.message() : std::string(std::strerror(errno))) +
                     "); create it, owned by cofferd's user, mode 0755 or 0700");
    }
    if (stat(path.c_str(), &st) != 0) return Invalid(what + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Invalid(what + " is not a directory; remove it or point state_directory elsewhere");
  }
  const std::string uid = std::to_string(geteuid());
  if (st.st_uid != geteuid()) {
    return Invalid(what + " is owned by uid " + std::to_string(st.st_uid) + ", not cofferd's uid " +
                   uid +
                   ": whoever owns it can replace the stores, sockets and audit public key in "
                   "it. Fix: chown " +
                   uid + " " + path + " && chmod go-w " + path);
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    std::string mode;
    for (int shift = 9; shift >= 0; shift -= 3) {
      mode += static_cast<char>('0' + ((st.st_mode >> shift) & 07));
    }
    return Invalid(what + " is writable by group or others (mode " + mode +
                   "): they could replace the stores, sockets and audit public key in it. Fix: "
                   "chmod go-w " +
                   path);
  }
  return absl::OkStatus();
}

absl::Status PrepareStateDirectory(const std::string& what, const std::string& path,
                                   bool* tightened) {
  if (tightened != nullptr) *tightened = false;
  if (path.empty()) return Invalid(what + ": empty path");
  struct stat st {};
  if (stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) {
      return Invalid(what + " " + path + " cannot be examined: " + std::strerror(errno) +
                     "; check the permissions of its parent directories");
    }
    std::error_code ec;
    fs::path parent = fs::path(path).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    if (ec || mkdir(path.c_str(), 0700) != 0) {
      return Invalid(what + " " + path + " does not exist and cannot be created (" +
                     (ec ? ec.message() : std::string(std::strerror(errno))) +
                     "); create it, owned by cofferd's user, mode 0700");
    }
    if (stat(path.c_str(), &st) != 0) {
      return Invalid(what + " " + path + ": " + std::strerror(errno));
    }
  }
  if (!S_ISDIR(st.st_mode)) {
    return Invalid(what + " " + path + " is not a directory; remove it or point " + what +
                   " elsewhere");
  }
  if (st.st_uid != geteuid()) {
    return Invalid(what + " " + path + " is owned by uid " + std::to_string(st.st_uid) +
                   ", not cofferd's uid " + std::to_string(geteuid()) + "; chown -R it to " +
                   "cofferd's user");
  }
  if (access(path.c_str(), R_OK | W_OK | X_OK) != 0) {
    return Invalid(what + " " + path + " is not writable by cofferd's user (" +
                   std::strerror(errno) + "); chmod 0700 it");
  }
  if ((st.st_mode & 077) != 0) {
    if (chmod(path.c_str(), 0700) != 0) {
      return Invalid(what + " " + path + " is accessible to others and cannot be tightened (" +
                     std::strerror(errno) + "); chmod 0700 it");
    }
    if (tightened != nullptr) *tightened = true;
  }
  return absl::OkStatus();
}

}  // namespace coffer::cofferd
