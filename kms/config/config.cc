#include "kms/config/config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "kms/api/framing.h"
#include "kms/config/notifications_config.h"

namespace coffer::daemon {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kFrameOverhead = uint64_t{64} << 10;  // room for a request's other fields
constexpr size_t kMaxSocketPathBytes = 107;              // sun_path minus its NUL

absl::Status Invalid(std::string_view field, std::string_view what) {
  return MakeError(ErrorCode::kConfigInvalid,
                   absl::StrCat(std::string(field), ": ", std::string(what)));
}

// Collects parse errors as "origin:line:column: message" (the first one is reported).
class ErrorCollector final : public google::protobuf::io::ErrorCollector {
 public:
  explicit ErrorCollector(std::string_view origin) : origin_(origin) {}
  void AddError(int line, int column, const std::string& message) override {
    if (first_.empty()) {
      first_ = absl::StrCat(origin_, ":", line + 1, ":", column + 1, ": ", message);
    }
  }
  const std::string& first() const { return first_; }

 private:
  std::string origin_;
  std::string first_;
};

std::string Resolve(const std::string& base, const std::string& path) {
  if (path.empty() || fs::path(path).is_absolute()) return path;
  return (fs::path(base) / path).lexically_normal().string();
}

void SetDefault(std::string* field, std::string_view value) {
  if (field->empty()) *field = std::string(value);
}

// True when `inner` is `outer` or lies below it (lexically, on normalised absolute paths).
bool Contains(const std::string& outer, const std::string& inner) {
  fs::path o = fs::path(outer).lexically_normal();
  fs::path i = fs::path(inner).lexically_normal();
  auto oi = std::mismatch(o.begin(), o.end(), i.begin(), i.end()).first;
  if (oi == o.end()) return true;
  // A trailing separator makes an empty last element.
  return oi != o.end() && oi->empty() && std::next(oi) == o.end();
}

void ApplyDefaults(Config& c) {
  SetDefault(c.mutable_state_directory(), kDefaultStateDirectory);
  c.set_state_directory(fs::absolute(c.state_directory()).lexically_normal().string());
  const std::string& base = c.state_directory();

  SetDefault(c.mutable_data_socket(), "data.sock");
  SetDefault(c.mutable_admin_socket(), "admin.sock");
  SetDefault(c.mutable_key_db_directory(), "keys");
  SetDefault(c.mutable_data_directory(), "data");
  SetDefault(c.mutable_audit_directory(), "audit");
  SetDefault(c.mutable_backup_directory(), "backups");
  SetDefault(c.mutable_admin_directory(), "admins");
  c.set_data_socket(Resolve(base, c.data_socket()));
  c.set_admin_socket(Resolve(base, c.admin_socket()));
  c.set_key_db_directory(Resolve(base, c.key_db_directory()));
  c.set_data_directory(Resolve(base, c.data_directory()));
  c.set_audit_directory(Resolve(base, c.audit_directory()));
  c.set_backup_directory(Resolve(base, c.backup_directory()));
  c.set_admin_directory(Resolve(base, c.admin_directory()));
  if (!c.audit_anchor_file().empty()) {
    c.set_audit_anchor_file(Resolve(base, c.audit_anchor_file()));
  }

  auto* hsm = c.mutable_hsm();
  SetDefault(hsm->mutable_module_path(), kDefaultHsmModulePath);
  SetDefault(hsm->mutable_token_label(), "coffer");
  SetDefault(hsm->mutable_token_directory(), "hsm");
  hsm->set_token_directory(Resolve(base, hsm->token_directory()));
  if (hsm->pin_credential().empty()) SetDefault(hsm->mutable_pin_file(), "hsm/user.pin");
  hsm->set_pin_file(Resolve(base, hsm->pin_file()));

  if (c.durability() == Config::DURABILITY_UNSPECIFIED) c.set_durability(Config::WAL);

  auto* limits = c.mutable_limits();
  if (limits->workers() == 0) limits->set_workers(8);
  if (limits->max_connections() == 0) limits->set_max_connections(256);
  if (limits->max_frame_bytes() == 0) limits->set_max_frame_bytes(api::kDefaultMaxFrameBytes);
  if (limits->idle_timeout_seconds() == 0) limits->set_idle_timeout_seconds(300);
  if (limits->request_timeout_seconds() == 0) limits->set_request_timeout_seconds(30);
  if (limits->max_value_bytes() == 0) limits->set_max_value_bytes(4 * kMiB);
  if (!limits->has_admin_reserved_connections()) {
    limits->set_admin_reserved_connections(std::min(16u, limits->max_connections() - 1));
  }
  if (!limits->has_admin_reserved_workers()) {
    limits->set_admin_reserved_workers(std::min(2u, limits->workers() - 1));
  }
  if (limits->max_connections_per_uid() == 0) {
    limits->set_max_connections_per_uid(std::min(64u, limits->max_connections()));
  }
  if (limits->max_requests_per_uid() == 0) limits->set_max_requests_per_uid(32);
  if (limits->max_buffered_bytes_per_uid() == 0) limits->set_max_buffered_bytes_per_uid(64 * kMiB);
  if (limits->max_buffered_bytes() == 0) limits->set_max_buffered_bytes(512 * kMiB);
  if (limits->max_output_bytes_per_connection() == 0) {
    limits->set_max_output_bytes_per_connection(2 * kMiB);
  }
  if (limits->max_refusals_in_a_row() == 0) limits->set_max_refusals_in_a_row(16);
  if (!limits->has_min_free_bytes()) limits->set_min_free_bytes(256 * kMiB);

  auto* storage = c.mutable_storage();
  if (!storage->has_block_cache_bytes()) storage->set_block_cache_bytes(64 * kMiB);

  auto* rate = c.mutable_rate_limit();
  if (!rate->has_default_limit()) {
    rate->mutable_default_limit()->set_requests_per_second(2000);
    rate->mutable_default_limit()->set_burst(4000);
  }

  auto* jobs = c.mutable_jobs();
  if (jobs->rotation_check_seconds() == 0) jobs->set_rotation_check_seconds(60);
  if (jobs->retention_interval_seconds() == 0) jobs->set_retention_interval_seconds(3600);
  if (!jobs->has_backup_max_age_days()) jobs->set_backup_max_age_days(30);
  if (!jobs->has_reencrypt_items_per_second()) jobs->set_reencrypt_items_per_second(200);

  auto* mfa = c.mutable_mfa();
  if (!mfa->has_required()) mfa->set_required(true);
  if (mfa->session_seconds() == 0) mfa->set_session_seconds(300);
  if (mfa->max_failures() == 0) mfa->set_max_failures(5);
  if (mfa->lockout_seconds() == 0) mfa->set_lockout_seconds(300);
  if (mfa->approval_ttl_seconds() == 0) mfa->set_approval_ttl_seconds(86400);
  if (mfa->invitation_ttl_seconds() == 0) mfa->set_invitation_ttl_seconds(86400);
  if (mfa->totp_step_seconds() == 0) mfa->set_totp_step_seconds(30);

  auto* anomalies = c.mutable_anomalies();
  if (!anomalies->has_first_read()) anomalies->set_first_read(true);
  if (anomalies->recent_half_life_seconds() == 0) anomalies->set_recent_half_life_seconds(300);
  if (anomalies->baseline_half_life_seconds() == 0) {
    anomalies->set_baseline_half_life_seconds(7 * 86400);
  }
  if (!anomalies->has_warm_up_seconds()) anomalies->set_warm_up_seconds(86400);
  if (!anomalies->has_rate_factor()) anomalies->set_rate_factor(10);
  if (!anomalies->has_min_reads_per_second()) anomalies->set_min_reads_per_second(1);
  if (!anomalies->has_locked_reads()) anomalies->set_locked_reads(20);
  if (!anomalies->has_cooldown_seconds()) anomalies->set_cooldown_seconds(3600);
  if (anomalies->max_pairs() == 0) anomalies->set_max_pairs(100000);

  ApplyNotificationDefaults(base, c);
}

absl::Status ValidatePrincipal(const std::string& field, const v1::Principal& p, bool users_only) {
  switch (p.who_case()) {
    case v1::Principal::WHO_NOT_SET:
      return Invalid(field, "set one of uid, user, gid, group");
    case v1::Principal::kUser:
      if (p.user().empty()) return Invalid(field + ".user", "empty user name");
      break;
    case v1::Principal::kGroup:
      if (users_only) return Invalid(field, "only uid or user is allowed here");
      if (p.group().empty()) return Invalid(field + ".group", "empty group name");
      break;
    case v1::Principal::kGid:
      if (users_only) return Invalid(field, "only uid or user is allowed here");
      break;
    case v1::Principal::kUid:
      break;
  }
  return absl::OkStatus();
}

bool ValidDatasetName(std::string_view name) {
  if (name.empty() || name.size() > kms::kMaxDatasetNameSize) return false;
  for (char ch : name) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
              ch == '/' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

absl::Status ValidateRate(const std::string& field, const v1::RateLimit& limit) {
  double rps = limit.requests_per_second();
  if (!std::isfinite(rps) || rps <= 0 || rps > 1e7) {
    return Invalid(field + ".requests_per_second", "must be above 0 and at most 1e7");
  }
  if (limit.burst() < 1) return Invalid(field + ".burst", "must be at least 1");
  return absl::OkStatus();
}

absl::Status ValidateDirectories(const Config& c) {
  struct Dir {
    const char* field;
    const std::string* path;
  };
  // The token's storage first: when it collides, it is what must move.
  const Dir dirs[] = {{"hsm.token_directory", &c.hsm().token_directory()},
                      {"key_db_directory", &c.key_db_directory()},
                      {"data_directory", &c.data_directory()},
                      {"audit_directory", &c.audit_directory()},
                      {"backup_directory", &c.backup_directory()},
                      {"admin_directory", &c.admin_directory()},
                      {"events_directory", &c.events_directory()}};
  for (size_t i = 0; i < std::size(dirs); ++i) {
    for (size_t j = 0; j < std::size(dirs); ++j) {
      if (i == j) continue;
      if (Contains(*dirs[j].path, *dirs[i].path)) {
        return Invalid(dirs[i].field, absl::StrCat("must not be ", dirs[j].field,
                                                   " or lie inside it; give each its own place"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateFairShares(const v1::Limits& l) {
  if (l.admin_reserved_connections() >= l.max_connections()) {
    return Invalid("limits.admin_reserved_connections", "must be below limits.max_connections");
  }
  if (l.admin_reserved_workers() >= l.workers()) {
    return Invalid("limits.admin_reserved_workers", "must be below limits.workers");
  }
  if (l.max_connections_per_uid() > l.max_connections()) {
    return Invalid("limits.max_connections_per_uid", "must be 1 to limits.max_connections");
  }
  if (l.max_requests_per_uid() > 65536) {
    return Invalid("limits.max_requests_per_uid", "must be 1-65536");
  }
  if (l.max_buffered_bytes_per_uid() < l.max_frame_bytes()) {
    return Invalid("limits.max_buffered_bytes_per_uid", "must be at least limits.max_frame_bytes");
  }
  if (l.max_buffered_bytes() < l.max_buffered_bytes_per_uid() ||
      l.max_buffered_bytes() > 64 * 1024 * kMiB) {
    return Invalid("limits.max_buffered_bytes",
                   "must be limits.max_buffered_bytes_per_uid to 64 GiB");
  }
  if (l.max_output_bytes_per_connection() < 64 * 1024 ||
      l.max_output_bytes_per_connection() > 256 * kMiB) {
    return Invalid("limits.max_output_bytes_per_connection", "must be 64 KiB to 256 MiB");
  }
  if (l.min_free_bytes() > uint64_t{1024} * 1024 * kMiB) {
    return Invalid("limits.min_free_bytes", "must be at most 1 TiB (0 turns the check off)");
  }
  if (l.max_refusals_in_a_row() > 1000000) {
    return Invalid("limits.max_refusals_in_a_row", "must be 1-1000000");
  }
  return absl::OkStatus();
}

// The two socket paths and how the daemon reaches its token.
absl::Status ValidateSocketsAndHsm(const Config& c) {
  if (c.data_socket().size() > kMaxSocketPathBytes) {
    return Invalid("data_socket", "longer than 107 bytes; use a shorter path");
  }
  if (c.admin_socket().size() > kMaxSocketPathBytes) {
    return Invalid("admin_socket", "longer than 107 bytes; use a shorter path");
  }
  if (c.data_socket() == c.admin_socket()) {
    return Invalid("admin_socket", "must differ from data_socket");
  }
  if (!fs::path(c.hsm().module_path()).is_absolute()) {
    return Invalid("hsm.module_path", "must be an absolute path");
  }
  if (!c.hsm().pin_file().empty() && !c.hsm().pin_credential().empty()) {
    return Invalid("hsm.pin_credential", "set either hsm.pin_file or hsm.pin_credential, not both");
  }
  if (c.hsm().pin_credential().find('/') != std::string::npos) {
    return Invalid("hsm.pin_credential", "a credential name, not a path");
  }
  return absl::OkStatus();
}

// The metrics endpoint serves every local user who can reach it, so it listens on loopback only:
// "127.0.0.1:PORT" or "[::1]:PORT", PORT 0-65535 (0: a free port).
absl::Status ValidateMetricsListen(const std::string& listen) {
  if (listen.empty()) return absl::OkStatus();
  bool loopback = false;
  std::string port;
  for (std::string prefix : {"127.0.0.1:", "[::1]:"}) {
    if (listen.rfind(prefix, 0) != 0) continue;
    loopback = true;
    port = listen.substr(prefix.size());
  }
  if (!loopback) {
    return Invalid("metrics_listen",
                   "must be 127.0.0.1:PORT or [::1]:PORT (a loopback address: the metrics "
                   "endpoint has no authentication)");
  }
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
      std::stoul(port) > 65535) {
    return Invalid("metrics_listen", "the port must be a number 0-65535 (0: a free port)");
  }
  return absl::OkStatus();
}

// Transport limits: sizes, timeouts and the fair shares.
absl::Status ValidateLimits(const v1::Limits& l) {
  if (l.workers() > 1024) return Invalid("limits.workers", "must be 1-1024");
  if (l.max_connections() > 65536) return Invalid("limits.max_connections", "must be 1-65536");
  if (l.max_frame_bytes() < api::kDefaultChunkBytes + kFrameOverhead ||
      l.max_frame_bytes() > 256 * kMiB) {
    return Invalid("limits.max_frame_bytes", "must be 1 MiB + 64 KiB to 256 MiB");
  }
  if (l.idle_timeout_seconds() > 86400) {
    return Invalid("limits.idle_timeout_seconds", "must be 1-86400");
  }
  if (l.request_timeout_seconds() > 86400) {
    return Invalid("limits.request_timeout_seconds", "must be 1-86400");
  }
  if (l.max_value_bytes() > l.max_frame_bytes() - kFrameOverhead) {
    return Invalid("limits.max_value_bytes",
                   "must leave 64 KiB of limits.max_frame_bytes for the request's other fields");
  }
  COFFER_RETURN_IF_ERROR(ValidateFairShares(l));
  return absl::OkStatus();
}

// Grants name principals, datasets and rights.
absl::Status ValidateGrants(const Config& c) {
  for (int g = 0; g < c.grants_size(); ++g) {
    const auto& grant = c.grants(g);
    std::string field = absl::StrCat("grants[", g, "]");
    if (grant.principals_size() == 0) return Invalid(field + ".principals", "name at least one");
    for (int p = 0; p < grant.principals_size(); ++p) {
      COFFER_RETURN_IF_ERROR(ValidatePrincipal(absl::StrCat(field, ".principals[", p, "]"),
                                               grant.principals(p), /*users_only=*/false));
    }
    if (grant.datasets_size() == 0) return Invalid(field + ".datasets", "name at least one");
    for (int d = 0; d < grant.datasets_size(); ++d) {
      const std::string& name = grant.datasets(d);
      if (name != "*" && !ValidDatasetName(name)) {
        return Invalid(absl::StrCat(field, ".datasets[", d, "]"),
                       "not a dataset name (1-128 of [a-z0-9._/-]) or \"*\"");
      }
    }
    if (grant.rights_size() == 0) return Invalid(field + ".rights", "name at least one");
    for (int r = 0; r < grant.rights_size(); ++r) {
      if (grant.rights(r) == v1::Grant::RIGHT_UNSPECIFIED ||
          !v1::Grant::Right_IsValid(grant.rights(r))) {
        return Invalid(absl::StrCat(field, ".rights[", r, "]"),
                       "must be READ, WRITE, DELETE, METADATA, PSEUDONYMIZE or REIDENTIFY");
      }
    }
  }
  return absl::OkStatus();
}

// Admins and per-principal rate limits.
absl::Status ValidateAdminsAndRates(const Config& c) {
  for (int a = 0; a < c.admins_size(); ++a) {
    COFFER_RETURN_IF_ERROR(ValidatePrincipal(absl::StrCat("admins[", a, "]"), c.admins(a),
                                             /*users_only=*/true));
  }
  COFFER_RETURN_IF_ERROR(ValidateRate("rate_limit.default_limit", c.rate_limit().default_limit()));
  for (int o = 0; o < c.rate_limit().overrides_size(); ++o) {
    const auto& override_limit = c.rate_limit().overrides(o);
    std::string field = absl::StrCat("rate_limit.overrides[", o, "]");
    if (!override_limit.has_principal()) return Invalid(field + ".principal", "missing");
    COFFER_RETURN_IF_ERROR(
        ValidatePrincipal(field + ".principal", override_limit.principal(), true));
    if (!override_limit.has_limit()) return Invalid(field + ".limit", "missing");
    COFFER_RETURN_IF_ERROR(ValidateRate(field + ".limit", override_limit.limit()));
  }
  return absl::OkStatus();
}

// MFA sessions, lockouts, approvals and invitations.
absl::Status ValidateMfa(const v1::Mfa& mfa) {
  if (mfa.session_seconds() > 86400) return Invalid("mfa.session_seconds", "must be 1-86400");
  if (mfa.max_failures() > 100) return Invalid("mfa.max_failures", "must be 1-100");
  if (mfa.lockout_seconds() > 86400) return Invalid("mfa.lockout_seconds", "must be 1-86400");
  if (mfa.approval_ttl_seconds() > 2592000) {
    return Invalid("mfa.approval_ttl_seconds", "must be 1-2592000 (30 days)");
  }
  if (mfa.invitation_ttl_seconds() > 2592000) {
    return Invalid("mfa.invitation_ttl_seconds", "must be 1-2592000 (30 days)");
  }
  if (mfa.totp_step_seconds() > 300) return Invalid("mfa.totp_step_seconds", "must be 1-300");
  return absl::OkStatus();
}

// The policy a new dataset starts with.
absl::Status ValidateDefaultPolicy(const v1::DefaultPolicy& p) {
  if (p.has_records_rotation_seconds() && p.records_rotation_seconds() <= 0) {
    return Invalid("default_policy.records_rotation_seconds", "must be above 0");
  }
  if (p.has_attachments_rotation_seconds() && p.attachments_rotation_seconds() <= 0) {
    return Invalid("default_policy.attachments_rotation_seconds", "must be above 0");
  }
  if (p.has_usage_limit() && (p.usage_limit() == 0 || p.usage_limit() > (uint64_t{1} << 32))) {
    return Invalid("default_policy.usage_limit", "must be 1 to 2^32");
  }
  if (p.has_bin_days() && p.bin_days() > 3650) {
    return Invalid("default_policy.bin_days", "must be 0-3650");
  }
  if (p.has_retention_max_age_seconds() && p.retention_max_age_seconds() < 0) {
    return Invalid("default_policy.retention_max_age_seconds", "must not be negative");
  }
  if (p.has_minimum_retention_seconds() && p.minimum_retention_seconds() < 0) {
    return Invalid("default_policy.minimum_retention_seconds", "must not be negative");
  }
  if (p.has_destruction_wait_seconds() && p.destruction_wait_seconds() < 0) {
    return Invalid("default_policy.destruction_wait_seconds", "must not be negative");
  }
  return absl::OkStatus();
}

// Access anomaly rules: half-lives, factors and bounds that make sense together.
absl::Status ValidateAnomalies(const v1::AccessAnomalies& a) {
  constexpr uint32_t kYear = 31536000;
  if (a.recent_half_life_seconds() > 86400) {
    return Invalid("anomalies.recent_half_life_seconds", "must be 1-86400");
  }
  if (a.baseline_half_life_seconds() <= a.recent_half_life_seconds() ||
      a.baseline_half_life_seconds() > kYear) {
    return Invalid("anomalies.baseline_half_life_seconds",
                   "must be longer than recent_half_life_seconds and at most a year");
  }
  if (a.warm_up_seconds() > kYear) return Invalid("anomalies.warm_up_seconds", "at most a year");
  if (a.cooldown_seconds() > kYear) return Invalid("anomalies.cooldown_seconds", "at most a year");
  if (!std::isfinite(a.rate_factor()) ||
      (a.rate_factor() != 0 && (a.rate_factor() < 1.5 || a.rate_factor() > 1e6))) {
    return Invalid("anomalies.rate_factor", "must be 0 (off) or 1.5-1000000");
  }
  if (!std::isfinite(a.min_reads_per_second()) || a.min_reads_per_second() < 0) {
    return Invalid("anomalies.min_reads_per_second", "must be 0 or more");
  }
  if (!std::isfinite(a.locked_reads()) || a.locked_reads() < 0) {
    return Invalid("anomalies.locked_reads", "must be 0 (off) or more");
  }
  if (a.max_pairs() > 100000000) return Invalid("anomalies.max_pairs", "must be 1-100000000");
  return absl::OkStatus();
}

absl::Status Validate(const Config& c) {
  COFFER_RETURN_IF_ERROR(ValidateSocketsAndHsm(c));
  COFFER_RETURN_IF_ERROR(ValidateMetricsListen(c.metrics_listen()));
  COFFER_RETURN_IF_ERROR(ValidateDirectories(c));
  if (!Config::Durability_IsValid(c.durability())) {
    return Invalid("durability", "must be WAL or SYNC");
  }
  COFFER_RETURN_IF_ERROR(ValidateLimits(c.limits()));
  if (c.storage().block_cache_bytes() < 16 * kMiB ||
      c.storage().block_cache_bytes() > (uint64_t{1} << 40)) {
    return Invalid("storage.block_cache_bytes",
                   absl::StrCat("must be 16 MiB to 1 TiB (16777216-1099511627776 bytes), got ",
                                c.storage().block_cache_bytes()));
  }
  if (c.access_audit().crash_loss_window_millis() > 60000) {
    return Invalid("access_audit.crash_loss_window_millis", "must be 0-60000");
  }
  COFFER_RETURN_IF_ERROR(ValidateGrants(c));
  COFFER_RETURN_IF_ERROR(ValidateAdminsAndRates(c));
  if (c.jobs().reencrypt_items_per_second() < 1) {
    return Invalid("jobs.reencrypt_items_per_second", "must be at least 1 (a bounded rate)");
  }
  if (c.jobs().backup_max_age_days() < 1) {
    return Invalid("jobs.backup_max_age_days", "must be at least 1");
  }
  COFFER_RETURN_IF_ERROR(ValidateMfa(c.mfa()));
  COFFER_RETURN_IF_ERROR(ValidateAnomalies(c.anomalies()));
  COFFER_RETURN_IF_ERROR(ValidateDefaultPolicy(c.default_policy()));
  COFFER_RETURN_IF_ERROR(ValidateNotifications(c));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Config> FinishConfig(Config config) {
  ApplyDefaults(config);
  COFFER_RETURN_IF_ERROR(Validate(config));
  return config;
}

absl::StatusOr<Config> ParseConfigText(std::string_view text, std::string_view origin) {
  Config config;
  google::protobuf::TextFormat::Parser parser;
  ErrorCollector errors(origin);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return MakeError(ErrorCode::kConfigInvalid,
                     errors.first().empty() ? absl::StrCat(std::string(origin), ": does not parse")
                                            : errors.first());
  }
  return config;
}

absl::StatusOr<Config> ParseConfig(std::string_view text, std::string_view origin) {
  COFFER_ASSIGN_OR_RETURN(Config config, ParseConfigText(text, origin));
  return FinishConfig(std::move(config));
}

void ApplyOverrides(const ConfigOverrides& overrides, Config& config) {
  if (!overrides.state_directory.empty()) config.set_state_directory(overrides.state_directory);
  if (!overrides.data_socket.empty()) config.set_data_socket(overrides.data_socket);
  if (!overrides.admin_socket.empty()) config.set_admin_socket(overrides.admin_socket);
  if (!overrides.hsm_module_path.empty()) {
    config.mutable_hsm()->set_module_path(overrides.hsm_module_path);
  }
  if (!overrides.hsm_token_label.empty()) {
    config.mutable_hsm()->set_token_label(overrides.hsm_token_label);
  }
  if (!overrides.hsm_pin_file.empty()) config.mutable_hsm()->set_pin_file(overrides.hsm_pin_file);
  if (overrides.crash_loss_window_millis.has_value()) {
    config.mutable_access_audit()->set_crash_loss_window_millis(
        *overrides.crash_loss_window_millis);
  }
  if (overrides.durability.has_value()) config.set_durability(*overrides.durability);
}

absl::StatusOr<Config> LoadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return MakeError(ErrorCode::kConfigInvalid, absl::StrCat(path, ": cannot be read"));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return MakeError(ErrorCode::kConfigInvalid, absl::StrCat(path, ": read failed"));
  return ParseConfig(text.str(), path);
}

storage::Durability DurabilityOf(const Config& config) {
  return config.durability() == Config::SYNC ? storage::Durability::kSync
                                             : storage::Durability::kWal;
}

std::chrono::milliseconds CrashLossWindow(const Config& config) {
  return std::chrono::milliseconds(config.access_audit().crash_loss_window_millis());
}

kms::DatasetPolicy DefaultDatasetPolicy(const Config& config) {
  kms::DatasetPolicy policy;
  const auto& p = config.default_policy();
  if (p.has_records_rotation_seconds()) {
    policy.records_rotation = kms::Seconds(p.records_rotation_seconds());
  }
  if (p.has_attachments_rotation_seconds()) {
    policy.attachments_rotation = kms::Seconds(p.attachments_rotation_seconds());
  }
  if (p.has_usage_limit()) policy.usage_limit = p.usage_limit();
  if (p.has_bin_days()) policy.bin_days = p.bin_days();
  if (p.has_retention_max_age_seconds()) {
    policy.retention_max_age = kms::Seconds(p.retention_max_age_seconds());
  }
  if (p.has_minimum_retention_seconds()) {
    policy.minimum_retention = kms::Seconds(p.minimum_retention_seconds());
  }
  if (p.has_destruction_wait_seconds()) {
    policy.destruction_wait = kms::Seconds(p.destruction_wait_seconds());
  }
  return policy;
}

}  // namespace coffer::daemon
