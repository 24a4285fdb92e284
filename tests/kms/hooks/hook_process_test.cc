// RunHook with real processes (kms/hooks/hook_process.h): the event JSON arrives on stdin, the
// environment is exactly the one given (nothing of the runner's, which here holds a fake
// SOFTHSM2_CONF and CREDENTIALS_DIRECTORY), no other descriptor is inherited, and a hook past its
// timeout is killed with its process group.

#include "kms/hooks/hook_process.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::hooks {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::kms::audit::testing::TempDir;
using ::coffer::testing::NonEmptyLines;
using ::coffer::testing::ReadWholeFile;

// Gone, or a zombie nobody reaped yet (no init reaper in some containers).
bool ProcessGone(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return true;
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  size_t paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

const std::vector<std::string> kPathOnly = {"PATH=/usr/bin:/bin"};

// Eventually with this suite's poll interval.
bool Eventually(const std::function<bool()>& done) {
  return ::coffer::testing::Eventually(done, std::chrono::milliseconds(20));
}

TEST(RunHook, EventArrivesOnStdin) {
  TempDir dir;
  const std::string out = dir.Sub("stdin");
  const std::string input = "{\"sequence\":\"7\",\"kind\":\"EVENT_CANARY_READ\"}\n";
  auto run = RunHook({"/bin/sh", "-c", "cat > " + out}, input, kPathOnly, std::chrono::seconds(30));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_TRUE(run->ok());
  EXPECT_EQ(ReadWholeFile(out), input);
}

TEST(RunHook, InheritsNoOtherDescriptor) {
  TempDir dir;
  // Descriptors a careless daemon would leak: one without close-on-exec, one with it.
  int leaked = ::open("/dev/null", O_RDONLY);
  int cloexec = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(leaked, 3);
  const std::string out = dir.Sub("fds");
  auto run = RunHook({"/bin/sh", "-c", "ls /proc/self/fd > " + out}, "{}\n", kPathOnly,
                     std::chrono::seconds(30));
  ::close(leaked);
  ::close(cloexec);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(run->ok());
  std::set<std::string> fds;
  for (const std::string& line : NonEmptyLines(ReadWholeFile(out))) fds.insert(line);
  // ls's own: stdin, stdout (the file), stderr, and the directory it is listing.
  EXPECT_EQ(fds, (std::set<std::string>{"0", "1", "2", "3"}));
}

TEST(RunHook, KilledWithItsProcessGroupAtTheTimeout) {
  TempDir dir;
  const std::string pid_file = dir.Sub("child.pid");
  // The hook starts a grandchild and waits for ever.
  auto run = RunHook({"/bin/sh", "-c", "sleep 1000 & echo $! > " + pid_file + "; wait"}, "{}\n",
                     kPathOnly, std::chrono::milliseconds(500));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_TRUE(run->killed);
  EXPECT_FALSE(run->ok());
  EXPECT_TRUE(ProcessGone(run->pid));
  const std::string child = ReadWholeFile(pid_file);
  ASSERT_FALSE(child.empty());
  const pid_t grandchild = static_cast<pid_t>(std::stol(child));
  EXPECT_TRUE(Eventually([&] { return ProcessGone(grandchild); }));
}

TEST(RunHook, ReportsExitStatusAndBadInput) {
  auto run = RunHook({"/bin/sh", "-c", "exit 3"}, "{}\n", kPathOnly, std::chrono::seconds(30));
  ASSERT_TRUE(run.ok());
  EXPECT_FALSE(run->killed);
  EXPECT_EQ(run->exit_status, 3);
  EXPECT_FALSE(RunHook({}, "{}", kPathOnly, std::chrono::seconds(1)).ok());
  EXPECT_FALSE(RunHook({"/bin/true"}, std::string(kMaxHookInputBytes + 1, 'x'), kPathOnly,
                       std::chrono::seconds(1))
                   .ok());
  auto missing = RunHook({"/nonexistent/hook"}, "{}\n", kPathOnly, std::chrono::seconds(1));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/hook"), std::string::npos);
}

TEST(RunHook, EnvironmentIsExactlyTheGivenOneAndNothingOfTheRunners) {
  TempDir dir;
  // What a runner started carelessly (or cofferd itself) would hand down.
  ::setenv("SOFTHSM2_CONF", "/etc/coffer/softhsm2.conf", 1);
  ::setenv("CREDENTIALS_DIRECTORY", "/run/credentials/cofferd.service", 1);
  pb::Event event;
  event.set_sequence(42);
  event.set_kind(pb::EVENT_CANARY_READ);
  event.set_time_micros(1700000000000000);
  event.set_dataset("crm");
  event.set_uid(1001);
  event.set_canary("decoy-7");
  event.set_canary_kind(pb::CANARY_RECORD);
  const std::string out = dir.Sub("environ");
  // The shell's own initial environment, as the kernel handed it over.
  auto run = RunHook({"/bin/sh", "-c", "tr '\\0' '\\n' < /proc/$$/environ > " + out},
                     EventJsonLine(event), HookEnvironment(event), std::chrono::seconds(30));
  ::unsetenv("SOFTHSM2_CONF");
  ::unsetenv("CREDENTIALS_DIRECTORY");
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE(run->ok());
  std::vector<std::string> lines = NonEmptyLines(ReadWholeFile(out));
  std::set<std::string> env(lines.begin(), lines.end());
  EXPECT_EQ(env, (std::set<std::string>{
                     "PATH=/usr/bin:/bin",
                     "COFFER_EVENT_SEQUENCE=42",
                     "COFFER_EVENT_KIND=EVENT_CANARY_READ",
                     "COFFER_EVENT_TIME_MICROS=1700000000000000",
                     "COFFER_EVENT_DATASET=crm",
                     "COFFER_EVENT_UID=1001",
                     "COFFER_EVENT_CANARY=decoy-7",
                     "COFFER_EVENT_CANARY_KIND=CANARY_RECORD",
                 }))
      << ReadWholeFile(out);
}

TEST(HookEnvironment, LeavesOutTextItCannotCarryAndKeepsTheJson) {
  pb::Event event;
  event.set_sequence(1);
  event.set_canary(std::string("a\0b", 3));
  for (const std::string& entry : HookEnvironment(event)) {
    EXPECT_EQ(entry.rfind("COFFER_EVENT_CANARY=", 0), std::string::npos) << entry;
  }
  nlohmann::json json = nlohmann::json::parse(EventJsonLine(event));
  EXPECT_EQ(json["canary"], std::string("a\0b", 3));
  EXPECT_EQ(json["sequence"], "1");  // protobuf's JSON mapping: 64-bit ints as strings
  EXPECT_FALSE(RunHook({"/bin/true"}, "{}\n", {"NO_EQUALS_SIGN"}, std::chrono::seconds(1)).ok());
}

}  // namespace
}  // namespace coffer::hooks
