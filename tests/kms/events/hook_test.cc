// The hook runner and delivery with real processes: the event JSON arrives on stdin, no other
// descriptor is inherited, a hook past its timeout is killed with its process group, a failing
// hook is retried and then skipped, and delivery resumes at its persisted cursor.

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/events/event_log.h"
#include "kms/events/hook_delivery.h"
#include "kms/events/hook_runner.h"
#include "nlohmann/json.hpp"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::events {
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

// Eventually with this suite's poll interval.
bool Eventually(const std::function<bool()>& done) {
  return ::coffer::testing::Eventually(done, std::chrono::milliseconds(20));
}

TEST(RunHook, EventArrivesOnStdin) {
  TempDir dir;
  const std::string out = dir.Sub("stdin");
  const std::string input = "{\"sequence\":\"7\",\"kind\":\"EVENT_CANARY_READ\"}\n";
  auto run = RunHook({"/bin/sh", "-c", "cat > " + out}, input, std::chrono::seconds(30));
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
  auto run =
      RunHook({"/bin/sh", "-c", "ls /proc/self/fd > " + out}, "{}\n", std::chrono::seconds(30));
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
                     std::chrono::milliseconds(500));
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
  auto run = RunHook({"/bin/sh", "-c", "exit 3"}, "{}\n", std::chrono::seconds(30));
  ASSERT_TRUE(run.ok());
  EXPECT_FALSE(run->killed);
  EXPECT_EQ(run->exit_status, 3);
  EXPECT_FALSE(RunHook({}, "{}", std::chrono::seconds(1)).ok());
  EXPECT_FALSE(
      RunHook({"/bin/true"}, std::string(kMaxHookInputBytes + 1, 'x'), std::chrono::seconds(1))
          .ok());
  auto missing = RunHook({"/nonexistent/hook"}, "{}\n", std::chrono::seconds(1));
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/nonexistent/hook"), std::string::npos);
}

class HookDeliveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EventLogOptions options;
    options.directory = dir_.Sub("events");
    options.clock = &coffer::SystemClock();  // delivery is under test, not event times
    auto log = EventLog::Open(options);
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
  }
  std::unique_ptr<HookDelivery> Deliver(const std::string& script, uint32_t attempts,
                                        std::chrono::milliseconds timeout) {
    HookDeliveryOptions options;
    options.log = log_.get();
    options.argv = {"/bin/sh", "-c", script};
    options.attempts = attempts;
    options.timeout = timeout;
    options.log_warning = [this](const std::string& text) {
      std::lock_guard<std::mutex> lock(mu_);
      warnings_.push_back(text);
    };
    auto delivery = std::make_unique<HookDelivery>(std::move(options));
    delivery->Start();
    return delivery;
  }
  void Add(pb::EventKind kind) {
    pb::Event event;
    event.set_kind(kind);
    event.set_dataset("crm");
    ASSERT_TRUE(log_->Append({event}).ok());
  }
  std::vector<nlohmann::json> Delivered() {
    std::vector<nlohmann::json> out;
    for (const std::string& line : NonEmptyLines(ReadWholeFile(out_)))
      out.push_back(nlohmann::json::parse(line));
    return out;
  }

  TempDir dir_;
  std::string out_ = dir_.Sub("hook.out");
  std::unique_ptr<EventLog> log_;
  std::mutex mu_;
  std::vector<std::string> warnings_;
};

TEST_F(HookDeliveryTest, DeliversEveryEventInOrderAsJsonAndResumesAfterRestart) {
  auto delivery = Deliver("cat >> " + out_, 3, std::chrono::seconds(30));
  Add(pb::EVENT_DATASET_DISABLED);
  Add(pb::EVENT_KEY_ROTATED);
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 2; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().delivered, 2u);
  Add(pb::EVENT_DATASET_DESTROYED);  // while no hook runs
  delivery = Deliver("cat >> " + out_, 3, std::chrono::seconds(30));
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 3; }));
  delivery->Stop();
  std::vector<nlohmann::json> events = Delivered();
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0]["kind"], "EVENT_DATASET_DISABLED");
  EXPECT_EQ(events[0]["dataset"], "crm");
  EXPECT_EQ(events[1]["kind"], "EVENT_KEY_ROTATED");
  EXPECT_EQ(events[2]["kind"], "EVENT_DATASET_DESTROYED");
  EXPECT_EQ(events[2]["sequence"], "3");  // protobuf's JSON mapping: 64-bit ints as strings
  EXPECT_EQ(log_->hook_cursor(), 3u);
}

TEST_F(HookDeliveryTest, HangingHookIsKilledAndTheNextEventStillDelivered) {
  // Records every event, then hangs on the first one.
  const std::string script = "read -r line; printf '%s\\n' \"$line\" >> " + out_ +
                             "; case \"$line\" in *EVENT_DATASET_DISABLED*) exec sleep 1000;; esac";
  auto delivery = Deliver(script, 1, std::chrono::milliseconds(500));
  Add(pb::EVENT_DATASET_DISABLED);
  Add(pb::EVENT_DATASET_ENABLED);
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 2; }));
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 2; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().killed, 1u);
  EXPECT_EQ(delivery->stats().failed, 1u);
  EXPECT_EQ(delivery->stats().delivered, 1u);
  EXPECT_EQ(Delivered()[1]["kind"], "EVENT_DATASET_ENABLED");
  std::lock_guard<std::mutex> lock(mu_);
  bool logged_kill = false;
  for (const std::string& w : warnings_) logged_kill |= w.find("hook killed") != std::string::npos;
  EXPECT_TRUE(logged_kill);
}

TEST_F(HookDeliveryTest, FailingHookIsRetriedThenSkipped) {
  const std::string attempts = dir_.Sub("attempts");
  auto delivery = Deliver("echo x >> " + attempts + "; exit 1", 2, std::chrono::seconds(30));
  Add(pb::EVENT_KEY_ROTATED);
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 1; }));
  delivery->Stop();
  EXPECT_EQ(NonEmptyLines(ReadWholeFile(attempts)).size(), 2u);
  EXPECT_EQ(delivery->stats().failed, 1u);
  EXPECT_EQ(delivery->stats().delivered, 0u);
}

}  // namespace
}  // namespace coffer::events
