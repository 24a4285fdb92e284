// HookDelivery (kms/events/hook_delivery.h) against an in-process HookServer on a real socket,
// hooks as real processes: every event in order as JSON, resumed at the persisted cursor; a
// hanging hook killed and the next event still delivered; a failing hook retried then skipped;
// a runner that is absent or refuses cofferd's uid spends no attempt and the event is delivered
// once it answers; a rejected event skipped at once; Stop abandons a request without
// acknowledging it.

#include "kms/events/hook_delivery.h"

#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "crypto/base/clock.h"
#include "gtest/gtest.h"
#include "kms/events/event_log.h"
#include "nlohmann/json.hpp"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/hooks/hook_test_util.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::hooks::HookServerOptions;
using ::coffer::hooks::testing::ServingHookServer;
using ::coffer::kms::audit::testing::TempDir;
using ::coffer::testing::NonEmptyLines;
using ::coffer::testing::ReadWholeFile;

bool Eventually(const std::function<bool()>& done) {
  return ::coffer::testing::Eventually(done, std::chrono::milliseconds(20));
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
  // A runner serving `allowed` (default: this process's uid) with `script` as the hook.
  std::unique_ptr<ServingHookServer> Runner(const std::string& script,
                                            uid_t allowed = ::geteuid()) {
    HookServerOptions options;
    options.socket_path = socket_;
    options.allowed_uid = allowed;
    options.argv = {"/bin/sh", "-c", script};
    auto runner = ServingHookServer::Start(std::move(options));
    EXPECT_TRUE(runner.ok()) << runner.status();
    return runner.ok() ? *std::move(runner) : nullptr;
  }
  std::unique_ptr<HookDelivery> Deliver(uint32_t attempts, std::chrono::milliseconds timeout) {
    HookDeliveryOptions options;
    options.log = log_.get();
    options.socket_path = socket_;
    options.attempts = attempts;
    options.timeout = timeout;
    options.first_backoff = std::chrono::milliseconds(20);
    options.log_warning = [this](const std::string& text) {
      std::lock_guard<std::mutex> lock(mu_);
      warnings_.push_back(text);
    };
    auto delivery = std::make_unique<HookDelivery>(std::move(options));
    delivery->Start();
    return delivery;
  }
  void Add(pb::EventKind kind, const std::string& canary = "") {
    pb::Event event;
    event.set_kind(kind);
    event.set_dataset("crm");
    event.set_canary(canary);
    ASSERT_TRUE(log_->Append({event}).ok());
  }
  std::vector<nlohmann::json> Delivered() {
    std::vector<nlohmann::json> out;
    for (const std::string& line : NonEmptyLines(ReadWholeFile(out_))) {
      out.push_back(nlohmann::json::parse(line));
    }
    return out;
  }
  bool Warned(const std::string& text) {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& w : warnings_) {
      if (w.find(text) != std::string::npos) return true;
    }
    return false;
  }

  TempDir dir_;
  std::string socket_ = dir_.Sub("hook.sock");
  std::string out_ = dir_.Sub("hook.out");
  std::unique_ptr<EventLog> log_;
  std::mutex mu_;
  std::vector<std::string> warnings_;
};

TEST_F(HookDeliveryTest, DeliversEveryEventInOrderAsJsonAndResumesAfterRestart) {
  auto runner = Runner("cat >> " + out_);
  ASSERT_NE(runner, nullptr);
  auto delivery = Deliver(3, std::chrono::seconds(30));
  Add(pb::EVENT_DATASET_DISABLED);
  Add(pb::EVENT_KEY_ROTATED);
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 2; }));
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 2; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().delivered, 2u);
  Add(pb::EVENT_DATASET_DESTROYED);  // while no delivery runs
  delivery = Deliver(3, std::chrono::seconds(30));
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 3; }));
  // The hook writes its line before the delivery records the cursor: a Stop in between would
  // leave the event to be delivered again (at least once), so wait for the cursor as above.
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 3; }));
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
  auto runner = Runner("read -r line; printf '%s\\n' \"$line\" >> " + out_ +
                       "; case \"$line\" in *EVENT_DATASET_DISABLED*) exec sleep 1000;; esac");
  ASSERT_NE(runner, nullptr);
  auto delivery = Deliver(1, std::chrono::milliseconds(500));
  Add(pb::EVENT_DATASET_DISABLED);
  Add(pb::EVENT_DATASET_ENABLED);
  ASSERT_TRUE(Eventually([&] { return Delivered().size() == 2; }));
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 2; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().killed, 1u);
  EXPECT_EQ(delivery->stats().failed, 1u);
  EXPECT_EQ(delivery->stats().delivered, 1u);
  EXPECT_EQ(Delivered()[1]["kind"], "EVENT_DATASET_ENABLED");
  EXPECT_TRUE(Warned("hook killed"));
}

TEST_F(HookDeliveryTest, FailingHookIsRetriedThenSkipped) {
  const std::string attempts = dir_.Sub("attempts");
  auto runner = Runner("echo x >> " + attempts + "; exit 1");
  ASSERT_NE(runner, nullptr);
  auto delivery = Deliver(2, std::chrono::seconds(30));
  Add(pb::EVENT_KEY_ROTATED);
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 1; }));
  delivery->Stop();
  EXPECT_EQ(NonEmptyLines(ReadWholeFile(attempts)).size(), 2u);
  EXPECT_EQ(delivery->stats().failed, 1u);
  EXPECT_EQ(delivery->stats().delivered, 0u);
  EXPECT_TRUE(Warned("gave up on event 1"));
}

TEST_F(HookDeliveryTest, AbsentOrRefusingRunnerSpendsNoAttemptAndTheEventWaits) {
  // One attempt per event: were an unanswered try counted, the event would be skipped at once.
  auto delivery = Deliver(1, std::chrono::seconds(30));
  Add(pb::EVENT_CANARY_READ);
  ASSERT_TRUE(Eventually([&] { return delivery->stats().unanswered >= 3; }));  // no runner
  EXPECT_EQ(log_->hook_cursor(), 0u);
  EXPECT_EQ(delivery->stats().failed, 0u);
  EXPECT_TRUE(Warned("does not answer"));
  {
    // A runner that serves another uid closes cofferd's connections unanswered.
    auto refusing = Runner("cat >> " + out_, ::geteuid() + 1);
    ASSERT_NE(refusing, nullptr);
    ASSERT_TRUE(Eventually([&] { return refusing->server().stats().refused >= 2; }));
    EXPECT_EQ(log_->hook_cursor(), 0u);
    EXPECT_EQ(delivery->stats().failed, 0u);
  }
  auto runner = Runner("cat >> " + out_);
  ASSERT_NE(runner, nullptr);
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 1; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().delivered, 1u);
  EXPECT_EQ(delivery->stats().failed, 0u);
  ASSERT_EQ(Delivered().size(), 1u);
  EXPECT_EQ(Delivered()[0]["kind"], "EVENT_CANARY_READ");
}

TEST_F(HookDeliveryTest, RejectedEventIsSkippedWithoutRetryAndTheNextDelivered) {
  auto runner = Runner("cat >> " + out_);
  ASSERT_NE(runner, nullptr);
  auto delivery = Deliver(3, std::chrono::seconds(30));
  Add(pb::EVENT_CANARY_READ, std::string(40 * 1024, 'x'));  // too large for the hook's stdin
  Add(pb::EVENT_KEY_ROTATED);
  ASSERT_TRUE(Eventually([&] { return log_->hook_cursor() == 2; }));
  delivery->Stop();
  EXPECT_EQ(delivery->stats().rejected, 1u);
  EXPECT_EQ(delivery->stats().delivered, 1u);
  EXPECT_EQ(runner->server().stats().runs, 1u);
  ASSERT_EQ(Delivered().size(), 1u);
  EXPECT_EQ(Delivered()[0]["kind"], "EVENT_KEY_ROTATED");
  EXPECT_TRUE(Warned("rejected event 1"));
}

TEST_F(HookDeliveryTest, StopAbandonsARunningRequestWithoutAcknowledgingIt) {
  const std::string started = dir_.Sub("started");
  auto runner = Runner("touch " + started + "; exec sleep 1000");
  ASSERT_NE(runner, nullptr);
  auto delivery = Deliver(3, std::chrono::seconds(5));
  Add(pb::EVENT_DATASET_DISABLED);
  ASSERT_TRUE(Eventually([&] { return ::access(started.c_str(), F_OK) == 0; }));
  delivery->Stop();                    // does not wait for the hook's timeout
  EXPECT_EQ(log_->hook_cursor(), 0u);  // delivered again after a restart
  EXPECT_EQ(delivery->stats().delivered + delivery->stats().failed, 0u);
}

}  // namespace
}  // namespace coffer::events
