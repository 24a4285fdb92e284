// The fixture of the daemon suites that need a test-cofferd of their own per test, with one
// dataset created through keyctl: data through the client library, admin steps through keyctl,
// and the daemon's log printed when a test fails. (Header-only: its suites link the client
// library, which the harness itself does not.)

#ifndef COFFER_TESTS_KMS_COFFERD_ONE_DATASET_DAEMON_H_
#define COFFER_TESTS_KMS_COFFERD_ONE_DATASET_DAEMON_H_

#include <cstdint>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer::testing {

class OneDatasetDaemonTest : public ::testing::Test {
 protected:
  // `name` names the daemon's directory; `dataset` is created in SetUp; `extra_config` is
  // appended to the daemon's configuration.
  OneDatasetDaemonTest(std::string name, std::string dataset, std::string extra_config = "")
      : name_(std::move(name)),
        dataset_(std::move(dataset)),
        extra_config_(std::move(extra_config)) {}

  void SetUp() override {
    CofferdOptions options;
    options.name = name_;
    if (!extra_config_.empty()) {
      options.extra_config = [this](const std::string&) { return extra_config_; };
    }
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    KeyctlResult created = Run("dataset create " + dataset_ + " --json");
    ASSERT_EQ(created.exit_code, 0) << created.err;
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }

  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  std::unique_ptr<client::Client> Connect() {
    auto c = client::Client::Connect(daemon_->data_socket());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<Cofferd> daemon_;

 private:
  const std::string name_;
  const std::string dataset_;
  const std::string extra_config_;
};

// An access-audit crash-loss window above 0: the data requests the operation table runs on the
// reactor do so (kms/ops/operation_table.h, Runs); with the default window 0 they run on the
// workers.
inline constexpr char kReactorRequestsConfig[] = "access_audit { crash_loss_window_millis: 50 }\n";

// A uint64 of keyctl's JSON output, written as a number or (above 2^53) as a string.
inline uint64_t JsonNumber(const nlohmann::json& value) {
  return value.is_string() ? std::stoull(value.get<std::string>()) : value.get<uint64_t>();
}

// The events subscriber `subscriber` has not seen yet whose kind starts with `kind_prefix`
// (`keyctl events --subscriber NAME --json` on `admin_socket`: it acknowledges what it shows, and
// the first call creates the subscriber, which starts there).
inline std::vector<nlohmann::json> UnseenEvents(const std::string& admin_socket,
                                                const std::string& subscriber,
                                                std::string_view kind_prefix) {
  KeyctlResult read = Keyctl(admin_socket, "events --subscriber " + subscriber + " --json");
  EXPECT_EQ(read.exit_code, 0) << read.err;
  std::vector<nlohmann::json> found;
  std::istringstream lines(read.out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    nlohmann::json event = nlohmann::json::parse(line);
    if (event.value("kind", "").rfind(kind_prefix, 0) == 0) found.push_back(std::move(event));
  }
  return found;
}

}  // namespace coffer::testing

#endif  // COFFER_TESTS_KMS_COFFERD_ONE_DATASET_DAEMON_H_
