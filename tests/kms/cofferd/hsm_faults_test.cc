// HSM faults against a running cofferd (issue 19 item 3). test-cofferd loads the fault-injecting
// PKCS#11 module (tests/hsm/fault_module/fault_pkcs11.cc), which forwards to SoftHSM2 on the
// suite's own token and fails the calls that <token directory>/faults names, so each test can
// break the HSM under a live daemon and mend it again:
//  - a device that stops answering (CKR_DEVICE_ERROR, CKR_TOKEN_NOT_PRESENT): keys in the cache
//    keep serving, a request that needs the token fails with the HSM's error and the daemon
//    stays up, status shows the token down with the error, and once the device answers again
//    the next request reconnects and is served, with nothing lost or damaged;
//  - a module that only a restart brings back (every call fails until C_Finalize + C_Initialize):
//    the daemon re-initialises it by itself and the request that met the fault is served;
//  - a session handle the token forgot (CKR_SESSION_HANDLE_INVALID once): served after a
//    reconnect, no re-initialisation;
//  - at start-up, a wrong PIN (real SoftHSM2), a locked and an expired PIN: cofferd refuses to
//    start with a message that says what to do and never shows the PIN.
// The module's log (faults.log beside the rules) counts the faults injected; the suite prints
// the total.

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"
#include "tests/testing/process.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::JsonNumber;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using ::coffer::testing::ReadWholeFile;
using json = nlohmann::json;
namespace fs = std::filesystem;

constexpr char kCached[] = "crm/hsm-cached";  // its keys are in the cache when the HSM fails
constexpr char kCold[] = "crm/hsm-cold";      // its keys are not
constexpr char kCold2[] = "crm/hsm-cold-2";   // nor these: for a second fault after the first
constexpr char kModuleName[] = "libcoffer_fault_softhsm2.so";

// Faults injected by every daemon of the suite (from the module's logs).
int g_faults_injected = 0;

class HsmFaultsTest : public ::testing::Test {
 protected:
  static void TearDownTestSuite() {
    std::cout << "hsm faults: " << g_faults_injected << " faults injected in all\n";
  }
  void TearDown() override {
    if (daemon_ != nullptr) {
      g_faults_injected += Count("fault ");
      if (HasFailure()) {
        std::cerr << "cofferd's log:\n" << daemon_->Logs() << "\nfault module's log:\n" << Log();
      }
    }
  }

  // A daemon on the fault module (copied into its directory, which every uid can reach).
  std::unique_ptr<Cofferd> Create(bool start) {
    CofferdOptions options;
    options.name = "cofferd-hsm-faults";
    options.start = start;
    options.prepare = [](const std::string& dir) {
      fs::copy_file(FAULT_PKCS11_MODULE, dir + "/" + kModuleName);
      chmod((dir + "/" + kModuleName).c_str(), 0755);
    };
    options.hsm_module = [](const std::string& dir) { return dir + "/" + kModuleName; };
    return Cofferd::Create(std::move(options));
  }

  // Replaces the module's rules (atomically: the module reads them on every call).
  void SetFaults(const std::string& rules) {
    const std::string path = daemon_->dir() + "/hsm/faults";
    {
      std::ofstream out(path + ".new");
      out << rules;
    }
    ASSERT_EQ(rename((path + ".new").c_str(), path.c_str()), 0);
  }
  std::string Log() const { return ReadWholeFile(daemon_->dir() + "/hsm/faults.log"); }
  // Lines of the module's log that start with `prefix`.
  int Count(const std::string& prefix) const {
    std::istringstream lines(Log());
    int n = 0;
    for (std::string line; std::getline(lines, line);) n += line.rfind(prefix, 0) == 0 ? 1 : 0;
    return n;
  }

  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  json HsmStatus() {
    KeyctlResult status = Run("--json status");
    EXPECT_EQ(status.exit_code, 0) << status.err;
    return status.JsonOrEmpty().value("hsm", json::object());
  }
  // The kinds of the HSM events subscriber "hsm-watch" has not seen yet (acknowledged).
  std::vector<std::string> HsmEvents() {
    std::vector<std::string> kinds;
    for (const json& event :
         ::coffer::testing::UnseenEvents(daemon_->admin_socket(), "hsm-watch", "EVENT_HSM_")) {
      kinds.push_back(event.value("kind", ""));
    }
    return kinds;
  }
  std::unique_ptr<client::Client> Connect() {
    auto c = client::Client::Connect(daemon_->data_socket());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Two datasets with a record each, then a restart, then a read and a write of kCached only:
  // kCached's keys are in the cache, with a block of encryptions reserved in the key DB (a
  // reservation is a key DB row the token authenticates, written once per
  // usage_reservation_block encryptions), and kCold's keys are not.
  void PrepareCachedAndCold() {
    daemon_ = Create(/*start=*/true);
    ASSERT_NE(daemon_, nullptr);
    for (const char* dataset : {kCached, kCold, kCold2}) {
      ASSERT_EQ(Run(std::string("dataset create ") + dataset).exit_code, 0);
      auto c = Connect();
      ASSERT_NE(c, nullptr);
      ASSERT_TRUE(c->PutRecord(dataset, "r-1", std::string("value in ") + dataset).ok());
    }
    ASSERT_TRUE(daemon_->Stop());
    ASSERT_TRUE(daemon_->Start());
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    auto warm = c->GetRecord(kCached, "r-1");
    ASSERT_TRUE(warm.ok()) << warm.status();
    ASSERT_TRUE(c->PutRecord(kCached, "r-0", "reserves a block of encryptions").ok());
  }

  // Every record reads, a scrub finds nothing damaged and the audit log verifies.
  void ExpectNothingLostOrDamaged() {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    for (const char* dataset : {kCached, kCold, kCold2}) {
      auto value = c->GetRecord(dataset, "r-1");
      ASSERT_TRUE(value.ok()) << dataset << ": " << value.status();
      EXPECT_EQ(*value, std::string("value in ") + dataset);
      KeyctlResult scrub = Run(std::string("scrub ") + dataset + " --wait --json");
      ASSERT_EQ(scrub.exit_code, 0) << scrub.err << scrub.out;
      EXPECT_EQ(scrub.JsonOrEmpty().value("state", ""), "JOB_DONE") << scrub.out;
      EXPECT_EQ(JsonNumber(scrub.JsonOrEmpty().value("damaged", json(0))), 0u) << scrub.out;
    }
    KeyctlResult verified = Run("audit verify");
    EXPECT_EQ(verified.exit_code, 0) << verified.err << verified.out;
  }

  std::unique_ptr<Cofferd> daemon_;
};

TEST_F(HsmFaultsTest, ADeviceThatStopsAnsweringFailsOnlyCacheMissesAndRecoversByItself) {
  ASSERT_NO_FATAL_FAILURE(PrepareCachedAndCold());
  ASSERT_TRUE(HsmEvents().empty());  // the subscriber starts here
  for (const std::string fault : {"CKR_DEVICE_ERROR", "CKR_TOKEN_NOT_PRESENT"}) {
    SCOPED_TRACE(fault);
    const std::string cold_dataset = fault == "CKR_DEVICE_ERROR" ? kCold : kCold2;
    SetFaults("* " + fault + "\n");
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    // The cached keys keep serving, reads and writes alike.
    auto cached = c->GetRecord(kCached, "r-1");
    ASSERT_TRUE(cached.ok()) << cached.status();
    absl::Status written = c->PutRecord(kCached, "r-2", "written while the HSM is down");
    ASSERT_TRUE(written.ok()) << written;
    // A miss fails with the HSM's error, at once, and the daemon keeps serving.
    const ErrorCode expected =
        fault == "CKR_DEVICE_ERROR" ? ErrorCode::kHsmDeviceError : ErrorCode::kHsmTokenNotFound;
    for (int attempt = 0; attempt < 3; ++attempt) {
      auto cold = c->GetRecord(cold_dataset, "r-1");
      ASSERT_FALSE(cold.ok());
      EXPECT_EQ(ErrorCodeOf(cold.status()), expected) << cold.status();
    }
    // The token's fall is checked at once and raised as an event (bounded wait for the event
    // source's thread, not a measure).
    std::vector<std::string> raised;
    EXPECT_TRUE(Cofferd::WaitUntil([&] {
      for (const std::string& kind : HsmEvents()) raised.push_back(kind);
      return !raised.empty();
    }));
    EXPECT_EQ(raised, std::vector<std::string>{"EVENT_HSM_UNAVAILABLE"});
    json down = HsmStatus();
    EXPECT_FALSE(down.value("connected", false)) << down.dump();
    EXPECT_NE(down.value("last_error", "").find(fault), std::string::npos) << down.dump();
    EXPECT_GE(JsonNumber(down.value("failed_reconnects", json(0))), 1u) << down.dump();

    // The device answers again: the next request reconnects and is served.
    SetFaults("");
    auto back = c->GetRecord(cold_dataset, "r-1");
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(*back, "value in " + cold_dataset);
    json up = HsmStatus();
    EXPECT_TRUE(up.value("connected", false)) << up.dump();
    raised.clear();
    EXPECT_TRUE(Cofferd::WaitUntil([&] {
      for (const std::string& kind : HsmEvents()) raised.push_back(kind);
      return !raised.empty();
    }));
    EXPECT_EQ(raised, std::vector<std::string>{"EVENT_HSM_AVAILABLE"});
  }
  EXPECT_GE(Count("fault "), 6);
  ExpectNothingLostOrDamaged();
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(*c->GetRecord(kCached, "r-2"), "written while the HSM is down");
}

TEST_F(HsmFaultsTest, AModuleThatOnlyARestartBringsBackIsReinitialisedByTheDaemon) {
  ASSERT_NO_FATAL_FAILURE(PrepareCachedAndCold());
  const int initialised_before = Count("call C_Initialize");
  SetFaults("* CKR_DEVICE_REMOVED until_reinit\n");
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  // New sessions cannot help; C_Finalize + C_Initialize can, and the daemon does it itself:
  // the request that met the fault is served.
  auto cold = c->GetRecord(kCold, "r-1");
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ(*cold, std::string("value in ") + kCold);
  EXPECT_EQ(Count("call C_Initialize"), initialised_before + 1) << Log();
  EXPECT_GE(Count("fault "), 1);
  json status = HsmStatus();
  EXPECT_TRUE(status.value("connected", false)) << status.dump();
  EXPECT_EQ(JsonNumber(status.value("reinitializations", json(0))), 1u) << status.dump();
  // keyctl's table says it too.
  KeyctlResult table = Run("status");
  EXPECT_NE(table.out.find("hsm reconnects / re-initialisations / failed"), std::string::npos)
      << table.out;
  ExpectNothingLostOrDamaged();
}

TEST_F(HsmFaultsTest, AForgottenSessionIsReopenedWithoutReinitialising) {
  ASSERT_NO_FATAL_FAILURE(PrepareCachedAndCold());
  SetFaults("C_UnwrapKey CKR_SESSION_HANDLE_INVALID 1\n");
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto cold = c->GetRecord(kCold, "r-1");
  ASSERT_TRUE(cold.ok()) << cold.status();
  EXPECT_EQ(Count("fault C_UnwrapKey CKR_SESSION_HANDLE_INVALID"), 1) << Log();
  json status = HsmStatus();
  EXPECT_TRUE(status.value("connected", false)) << status.dump();
  EXPECT_GE(JsonNumber(status.value("reconnects", json(0))), 1u) << status.dump();
  EXPECT_EQ(JsonNumber(status.value("reinitializations", json(0))), 0u) << status.dump();
  ExpectNothingLostOrDamaged();
}

TEST_F(HsmFaultsTest, AWrongLockedOrExpiredPinStopsStartUpWithAClearMessage) {
  daemon_ = Create(/*start=*/false);
  ASSERT_NE(daemon_, nullptr);
  const std::string pin_file = daemon_->dir() + "/hsm/user.pin";
  const std::string pin = ReadWholeFile(pin_file);
  ASSERT_FALSE(pin.empty());
  struct Case {
    std::string rules;  // the module's rules ("" with a wrong PIN in the file)
    std::string code;   // the error code name the message must give
    std::string hint;   // and a word of what to do
  };
  for (const Case& c : {Case{"", "HSM_WRONG_PIN", "PIN"},
                        Case{"C_Login CKR_PIN_LOCKED\n", "HSM_PIN_LOCKED", "lock"},
                        Case{"C_Login CKR_PIN_EXPIRED\n", "CKR_PIN_EXPIRED", "PIN"}}) {
    SCOPED_TRACE(c.code);
    struct stat owner {};
    ASSERT_EQ(stat(pin_file.c_str(), &owner), 0);
    {
      std::ofstream out(pin_file, std::ios::trunc);
      out << (c.rules.empty() ? std::string("not-the-pin-4711") : pin);
    }
    ASSERT_EQ(chown(pin_file.c_str(), owner.st_uid, owner.st_gid), 0);
    SetFaults(c.rules);
    auto [exit_code, output] = daemon_->RunToExit({daemon_->UserArg()});
    EXPECT_NE(exit_code, 0) << output;
    EXPECT_NE(exit_code, 124) << "cofferd started: " << output;
    EXPECT_NE(output.find(c.code), std::string::npos) << output;
    EXPECT_NE(output.find(c.hint), std::string::npos) << output;
    EXPECT_EQ(output.find(pin), std::string::npos) << "the PIN is in the message";
    EXPECT_EQ(output.find("not-the-pin-4711"), std::string::npos) << "the PIN is in the message";
  }
}

}  // namespace
}  // namespace coffer
