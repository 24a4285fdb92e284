// cofferd's configuration: the annotated example parses, defaults are filled in and paths
// resolved, and every unusable value is CONFIG_INVALID naming its field.

#include "kms/config/config.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"

namespace coffer::daemon {
namespace {

std::string ReadAll(const std::string& path) {
  std::ostringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

// Whether `status`'s message starts with `prefix` (the field it names).
bool MessageStartsWith(const absl::Status& status, std::string_view prefix) {
  return std::string(status.message()).starts_with(prefix);
}

TEST(DaemonConfigTest, TheAnnotatedExampleParses) {
  auto config = LoadConfigFile(COFFER_DAEMON_EXAMPLE_CONFIG);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->grants_size(), 2);
  EXPECT_EQ(config->admins_size(), 1);
  EXPECT_EQ(config->durability(), Config::WAL);
  EXPECT_EQ(config->limits().max_frame_bytes(), api::kDefaultMaxFrameBytes);
  EXPECT_EQ(config->rate_limit().overrides_size(), 1);
  EXPECT_EQ(config->jobs().backup_max_age_days(), 30u);
  EXPECT_EQ(config->storage().block_cache_bytes(), uint64_t{64} << 20);
  EXPECT_EQ(DefaultDatasetPolicy(*config).bin_days, 30u);
}

TEST(DaemonConfigTest, DefaultsAreFilledInAndPathsResolveAgainstTheStateDirectory) {
  auto config = ParseConfig("state_directory: \"/srv/coffer\"\nhsm { token_label: \"t\" }", "test");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->data_socket(), "/srv/coffer/data.sock");
  EXPECT_EQ(config->admin_socket(), "/srv/coffer/admin.sock");
  EXPECT_EQ(config->key_db_directory(), "/srv/coffer/keys");
  EXPECT_EQ(config->data_directory(), "/srv/coffer/data");
  EXPECT_EQ(config->audit_directory(), "/srv/coffer/audit");
  EXPECT_EQ(config->backup_directory(), "/srv/coffer/backups");
  EXPECT_EQ(config->hsm().module_path(), kDefaultHsmModulePath);
  EXPECT_EQ(config->hsm().token_label(), "t");
  EXPECT_EQ(config->hsm().pin_file(), "/srv/coffer/hsm/user.pin");
  EXPECT_EQ(config->hsm().token_directory(), "/srv/coffer/hsm");
  EXPECT_EQ(config->limits().workers(), 8u);
  EXPECT_EQ(config->limits().request_timeout_seconds(), 30u);
  EXPECT_EQ(config->limits().admin_reserved_connections(), 16u);
  EXPECT_EQ(config->limits().admin_reserved_workers(), 2u);
  EXPECT_EQ(config->limits().max_connections_per_uid(), 64u);
  EXPECT_EQ(config->limits().max_requests_per_uid(), 32u);
  EXPECT_EQ(config->limits().max_buffered_bytes_per_uid(), uint64_t{64} << 20);
  EXPECT_EQ(config->limits().max_buffered_bytes(), uint64_t{512} << 20);
  EXPECT_EQ(config->limits().max_output_bytes_per_connection(), uint64_t{2} << 20);
  EXPECT_EQ(config->limits().max_refusals_in_a_row(), 16u);
  EXPECT_EQ(config->storage().block_cache_bytes(), uint64_t{64} << 20);
  // The reserves leave the data socket at least one connection and one worker.
  auto small = ParseConfig("limits { workers: 1 max_connections: 4 }", "test");
  ASSERT_TRUE(small.ok()) << small.status();
  EXPECT_EQ(small->limits().admin_reserved_workers(), 0u);
  EXPECT_EQ(small->limits().admin_reserved_connections(), 3u);
  EXPECT_EQ(small->limits().max_connections_per_uid(), 4u);
  EXPECT_EQ(config->jobs().rotation_check_seconds(), 60u);
  EXPECT_EQ(config->jobs().backup_interval_seconds(), 0u);
  EXPECT_EQ(config->rate_limit().default_limit().burst(), 4000u);
  EXPECT_EQ(CrashLossWindow(*config).count(), 0);
  EXPECT_EQ(DurabilityOf(*config), storage::Durability::kWal);

  auto relative = ParseConfig("", "test");
  ASSERT_TRUE(relative.ok()) << relative.status();
  EXPECT_TRUE(relative->state_directory().ends_with("/var")) << relative->state_directory();
  EXPECT_EQ(relative->state_directory().front(), '/');

  auto sync = ParseConfig("durability: SYNC\naccess_audit { crash_loss_window_millis: 5 }", "t");
  ASSERT_TRUE(sync.ok()) << sync.status();
  EXPECT_EQ(DurabilityOf(*sync), storage::Durability::kSync);
  EXPECT_EQ(CrashLossWindow(*sync).count(), 5);
}

struct InvalidCase {
  std::string text;
  const char* field;  // the message must start with it
};

// The data DB's block cache: the bounds themselves are accepted, and a value outside them is
// refused with the range and the value given, so the operator sees what to write instead.
TEST(DaemonConfigTest, BlockCacheBytesIsBoundedWithAClearMessage) {
  for (const char* text : {"storage { block_cache_bytes: 16777216 }",
                           "storage { block_cache_bytes: 1099511627776 }"}) {
    auto config = ParseConfig(text, "test");
    ASSERT_TRUE(config.ok()) << text << " -> " << config.status();
  }
  auto accepted = ParseConfig("storage { block_cache_bytes: 268435456 }", "test");
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(accepted->storage().block_cache_bytes(), uint64_t{256} << 20);
  auto refused = ParseConfig("storage { block_cache_bytes: 16777215 }", "test");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kConfigInvalid);
  EXPECT_EQ(refused.status().message(),
            "storage.block_cache_bytes: must be 16 MiB to 1 TiB (16777216-1099511627776 bytes), "
            "got 16777215");
}

TEST(DaemonConfigTest, EveryInvalidValueIsConfigInvalidNamingItsField) {
  const std::vector<InvalidCase> cases = {
      {"no_such_field: 1", "test:1:1"},
      {"data_socket: \"/" + std::string(120, 'x') + "\"", "data_socket"},
      {"admin_socket: \"/" + std::string(120, 'x') + "\"", "admin_socket"},
      {"data_socket: \"s\" admin_socket: \"s\"", "admin_socket"},
      {"hsm { module_path: \"libsofthsm2.so\" }", "hsm.module_path"},
      {"hsm { pin_file: \"p\" pin_credential: \"c\" }", "hsm.pin_credential"},
      {"hsm { pin_credential: \"a/b\" }", "hsm.pin_credential"},
      {"hsm { token_directory: \"data/hsm\" }", "hsm.token_directory"},
      {"hsm { token_directory: \"backups\" }", "hsm.token_directory"},
      {"key_db_directory: \"data\"", "key_db_directory"},
      {"audit_directory: \"keys/audit\"", "audit_directory"},
      {"durability: 7", "durability"},
      {"limits { workers: 5000 }", "limits.workers"},
      {"limits { max_connections: 100000 }", "limits.max_connections"},
      {"limits { max_frame_bytes: 1000 }", "limits.max_frame_bytes"},
      {"limits { idle_timeout_seconds: 100000 }", "limits.idle_timeout_seconds"},
      {"limits { request_timeout_seconds: 100000 }", "limits.request_timeout_seconds"},
      {"limits { max_value_bytes: 4259840 }", "limits.max_value_bytes"},
      {"limits { max_connections: 8 admin_reserved_connections: 8 }",
       "limits.admin_reserved_connections"},
      {"limits { workers: 2 admin_reserved_workers: 2 }", "limits.admin_reserved_workers"},
      {"limits { max_connections: 8 max_connections_per_uid: 9 }",
       "limits.max_connections_per_uid"},
      {"limits { max_requests_per_uid: 70000 }", "limits.max_requests_per_uid"},
      {"limits { max_buffered_bytes_per_uid: 1048576 }", "limits.max_buffered_bytes_per_uid"},
      {"limits { max_buffered_bytes: 4259840 }", "limits.max_buffered_bytes"},
      {"limits { max_output_bytes_per_connection: 1000 }",
       "limits.max_output_bytes_per_connection"},
      {"limits { max_refusals_in_a_row: 2000000 }", "limits.max_refusals_in_a_row"},
      {"storage { block_cache_bytes: 0 }", "storage.block_cache_bytes"},
      {"storage { block_cache_bytes: 1048576 }", "storage.block_cache_bytes"},
      {"storage { block_cache_bytes: 1099511627777 }", "storage.block_cache_bytes"},
      {"access_audit { crash_loss_window_millis: 70000 }", "access_audit.crash_loss_window_millis"},
      {"grants { datasets: \"a\" rights: READ }", "grants[0].principals"},
      {"grants { principals { } datasets: \"a\" rights: READ }", "grants[0].principals[0]"},
      {"grants { principals { user: \"\" } datasets: \"a\" rights: READ }",
       "grants[0].principals[0].user"},
      {"grants { principals { uid: 1 } rights: READ }", "grants[0].datasets"},
      {"grants { principals { uid: 1 } datasets: \"Bad Name\" rights: READ }",
       "grants[0].datasets[0]"},
      {"grants { principals { uid: 1 } datasets: \"a\" }", "grants[0].rights"},
      {"grants { principals { uid: 1 } datasets: \"a\" rights: RIGHT_UNSPECIFIED }",
       "grants[0].rights[0]"},
      {"admins { group: \"wheel\" }", "admins[0]"},
      {"admins { }", "admins[0]"},
      {"rate_limit { default_limit { requests_per_second: 0 burst: 1 } }",
       "rate_limit.default_limit.requests_per_second"},
      {"rate_limit { default_limit { requests_per_second: 5 burst: 0 } }",
       "rate_limit.default_limit.burst"},
      {"rate_limit { overrides { limit { requests_per_second: 1 burst: 1 } } }",
       "rate_limit.overrides[0].principal"},
      {"rate_limit { overrides { principal { uid: 3 } } }", "rate_limit.overrides[0].limit"},
      {"rate_limit { overrides { principal { gid: 3 } limit { requests_per_second: 1 burst: 1 } } "
       "}",
       "rate_limit.overrides[0].principal"},
      {"jobs { backup_max_age_days: 0 }", "jobs.backup_max_age_days"},
      {"default_policy { records_rotation_seconds: 0 }", "default_policy.records_rotation_seconds"},
      {"default_policy { attachments_rotation_seconds: -5 }",
       "default_policy.attachments_rotation_seconds"},
      {"default_policy { usage_limit: 0 }", "default_policy.usage_limit"},
      {"default_policy { bin_days: 4000 }", "default_policy.bin_days"},
      {"default_policy { retention_max_age_seconds: -1 }",
       "default_policy.retention_max_age_seconds"},
      {"default_policy { minimum_retention_seconds: -1 }",
       "default_policy.minimum_retention_seconds"},
      {"default_policy { destruction_wait_seconds: -1 }",
       "default_policy.destruction_wait_seconds"},
      {"jobs { reencrypt_items_per_second: 0 }", "jobs.reencrypt_items_per_second"},
      {"anomalies { recent_half_life_seconds: 90000 }", "anomalies.recent_half_life_seconds"},
      {"anomalies { baseline_half_life_seconds: 60 }", "anomalies.baseline_half_life_seconds"},
      {"anomalies { rate_factor: 1.2 }", "anomalies.rate_factor"},
      {"anomalies { min_reads_per_second: -1 }", "anomalies.min_reads_per_second"},
      {"anomalies { locked_reads: -3 }", "anomalies.locked_reads"},
      {"anomalies { warm_up_seconds: 40000000 }", "anomalies.warm_up_seconds"},
      {"metrics_listen: \"0.0.0.0:9464\"", "metrics_listen"},
      {"metrics_listen: \"localhost:9464\"", "metrics_listen"},
      {"metrics_listen: \"9464\"", "metrics_listen"},
      {"metrics_listen: \"127.0.0.1:\"", "metrics_listen"},
      {"metrics_listen: \"127.0.0.1:70000\"", "metrics_listen"},
      {"metrics_listen: \"127.0.0.1:94x4\"", "metrics_listen"},
      {"metrics_listen: \"[::1]:-1\"", "metrics_listen"},
  };
  for (const InvalidCase& c : cases) {
    auto config = ParseConfig(c.text, "test");
    ASSERT_FALSE(config.ok()) << c.text;
    EXPECT_EQ(ErrorCodeOf(config.status()), ErrorCode::kConfigInvalid) << c.text;
    EXPECT_TRUE(MessageStartsWith(config.status(), c.field))
        << c.text << " -> " << config.status().message();
  }
}

TEST(DaemonConfigTest, TheMetricsEndpointListensOnLoopbackOnly) {
  for (const char* listen : {"127.0.0.1:9464", "127.0.0.1:0", "[::1]:65535"}) {
    auto config = ParseConfig(std::string("metrics_listen: \"") + listen + "\"", "test");
    ASSERT_TRUE(config.ok()) << listen << ": " << config.status();
    EXPECT_EQ(config->metrics_listen(), listen);
  }
  auto refused = ParseConfig("metrics_listen: \"0.0.0.0:9464\"", "test");
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("loopback"), std::string::npos) << refused.status();
}

TEST(DaemonConfigTest, AMissingFileIsConfigInvalidNamingThePath) {
  auto config = LoadConfigFile("/nonexistent/cofferd.conf");
  EXPECT_EQ(ErrorCodeOf(config.status()), ErrorCode::kConfigInvalid);
  EXPECT_TRUE(MessageStartsWith(config.status(), "/nonexistent/cofferd.conf"));
}

// cofferd parses its file once (ParseConfigText), applies its flags, and finishes once: a bad
// field still names file and line, and the flags win over the file.
TEST(DaemonConfigTest, ABadFieldInAFileNamesTheFileAndLine) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("config-test-" + std::to_string(getpid()) + ".conf"))
                               .string();
  std::ofstream(path, std::ios::trunc) << "state_directory: \"/srv/coffer\"\n"
                                       << "durability: WAL\n"
                                       << "no_such_field: 1\n";
  for (const absl::StatusOr<Config>& config :
       {LoadConfigFile(path), ParseConfigText(ReadAll(path), path)}) {
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(ErrorCodeOf(config.status()), ErrorCode::kConfigInvalid);
    EXPECT_TRUE(MessageStartsWith(config.status(), path + ":3:")) << config.status().message();
  }
  std::filesystem::remove(path);
}

TEST(DaemonConfigTest, FlagsOverrideTheFileBeforeItIsFinished) {
  absl::StatusOr<Config> parsed = ParseConfigText(
      "state_directory: \"/from/file\" data_socket: \"file.sock\" durability: WAL "
      "access_audit { crash_loss_window_millis: 50 } hsm { token_label: \"file-token\" }",
      "test");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->admin_socket(), "") << "ParseConfigText must not fill in defaults";
  ConfigOverrides flags;
  flags.state_directory = "/from/flags";
  flags.hsm_pin_file = "/run/pin";
  flags.durability = Config::SYNC;
  flags.crash_loss_window_millis = 0;
  ApplyOverrides(flags, *parsed);
  absl::StatusOr<Config> config = FinishConfig(*std::move(parsed));
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->state_directory(), "/from/flags");
  // The file's relative paths resolve against the flag's state directory.
  EXPECT_EQ(config->data_socket(), "/from/flags/file.sock");
  EXPECT_EQ(config->hsm().pin_file(), "/run/pin");
  EXPECT_EQ(config->hsm().token_label(), "file-token");  // no flag: the file's
  EXPECT_EQ(DurabilityOf(*config), storage::Durability::kSync);
  EXPECT_EQ(CrashLossWindow(*config).count(), 0);
}

}  // namespace
}  // namespace coffer::daemon
