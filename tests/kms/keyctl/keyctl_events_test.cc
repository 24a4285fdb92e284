// Notifications and canary records end to end (docs/events.md): a running cofferd (test-cofferd
// on a clock the test advances; fresh SoftHSM2 token, RocksDB, audit log; as root it runs as
// `nobody`), keyctl run as a process, and the client library on the data socket. Covers: a
// canary read raises exactly one event naming the caller's uid (normal reads none); canary
// plant/list/remove and their bad input; `keyctl events --json` output; and a subscriber
// across a daemon restart (no gap, no duplicate) next to an independent one. The hook, run by
// coffer-hook-runner: tests/kms/hooks/hook_runner_cofferd_test.cc.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::keyctl {
namespace {

namespace fs = std::filesystem;
namespace pb = ::coffer::v1;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::NonEmptyLines;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::SpawnWithOutput;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

// Eventually with this suite's poll interval.
bool Eventually(const std::function<bool()>& done) {
  return ::coffer::testing::Eventually(done, std::chrono::milliseconds(100));
}

// A development-mode cofferd whose jobs tick every second (due destructions). The hook runs in
// coffer-hook-runner: tests/kms/hooks/hook_runner_cofferd_test.cc.
std::unique_ptr<Cofferd> StartCofferd() {
  CofferdOptions options;
  options.name = "keyctl-events";
  options.rotation_check_seconds = 1;
  return Cofferd::Create(std::move(options));
}

class KeyctlEventsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { daemon_ = StartCofferd().release(); }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(daemon_, nullptr) << "cofferd did not start"; }

  Result Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  void Ok(const std::string& args) {
    Result r = Run(args);
    ASSERT_EQ(r.exit_code, 0) << args << ": " << r.err;
  }
  std::unique_ptr<client::Client> Data() {
    auto c = client::Client::Connect(daemon_->data_socket());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  // Reads `subscriber`'s events (keyctl events --json, each run acknowledging what it printed)
  // into `seen` until `done(seen)`.
  bool ReadUntil(const std::string& subscriber, std::vector<json>& seen,
                 const std::function<bool(const std::vector<json>&)>& done) {
    return Eventually([&] {
      Result r = Run("events --json --subscriber " + subscriber);
      EXPECT_EQ(r.exit_code, 0) << r.err;
      for (const std::string& line : NonEmptyLines(r.out)) seen.push_back(json::parse(line));
      return done(seen);
    });
  }
  static size_t Count(const std::vector<json>& events, const std::string& kind,
                      const std::string& dataset) {
    return static_cast<size_t>(std::count_if(events.begin(), events.end(), [&](const json& e) {
      return e.value("kind", "") == kind && e.value("dataset", "") == dataset;
    }));
  }

  static Cofferd* daemon_;
};
Cofferd* KeyctlEventsTest::daemon_ = nullptr;

TEST_F(KeyctlEventsTest, CanaryRecordReadRaisesExactlyOneEventNamingTheCaller) {
  Ok("dataset create canary-rec");
  auto data = Data();
  ASSERT_NE(data, nullptr);
  ASSERT_TRUE(data->PutRecord("canary-rec", "customer-1", "real").ok());
  Result planted = Run("canary plant canary-rec --record decoy-1 --value bait");
  ASSERT_EQ(planted.exit_code, 0) << planted.err;
  EXPECT_NE(planted.out.find("planted canary"), std::string::npos) << planted.out;

  Result listed = Run("--json canary list canary-rec");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  json list = json::parse(listed.out);
  ASSERT_EQ(list["canaries"].size(), 1u) << listed.out;
  EXPECT_EQ(list["canaries"][0]["id"], "decoy-1");
  EXPECT_EQ(list["canaries"][0]["kind"], "CANARY_RECORD");
  EXPECT_EQ(list["canaries"][0]["present"], true);

  // It looks like any other record: listed, and readable with the same grant.
  auto page = data->ListRecords("canary-rec", "");
  ASSERT_TRUE(page.ok()) << page.status();
  std::set<std::string> ids(page->ids.begin(), page->ids.end());
  EXPECT_EQ(ids, (std::set<std::string>{"customer-1", "decoy-1"}));
  ASSERT_TRUE(data->GetRecord("canary-rec", "customer-1").ok());
  ASSERT_TRUE(data->RecordExists("canary-rec", "decoy-1").ok());  // no content: no event
  auto bait = data->GetRecord("canary-rec", "decoy-1");
  ASSERT_TRUE(bait.ok()) << bait.status();
  EXPECT_EQ(*bait, "bait");
  ASSERT_TRUE(data->GetRecord("canary-rec", "customer-1").ok());
  // A later lifecycle event: once it is seen, everything audited before it was derived.
  Ok("key rotate canary-rec");

  std::vector<json> seen;
  ASSERT_TRUE(ReadUntil("canary-rec-test", seen, [](const std::vector<json>& events) {
    return Count(events, "EVENT_KEY_ROTATED", "canary-rec") > 0;
  }));
  ASSERT_EQ(Count(seen, "EVENT_CANARY_READ", "canary-rec"), 1u);
  for (const json& e : seen) {
    if (e.value("kind", "") != "EVENT_CANARY_READ" || e.value("dataset", "") != "canary-rec") {
      continue;
    }
    EXPECT_EQ(e["uid"], geteuid());
    EXPECT_GT(e["pid"].get<uint32_t>(), 0u);
    EXPECT_EQ(e["canary"], "decoy-1");
    EXPECT_EQ(e["canary_kind"], "CANARY_RECORD");
    EXPECT_GT(e["audit_sequence"].get<uint64_t>(), 0u);
  }
  // The read is in the audit log too, under the caller's uid.
  Result audit = Run("--json audit search --dataset canary-rec");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  EXPECT_NE(audit.out.find("CANARY_READ"), std::string::npos);
}

TEST_F(KeyctlEventsTest, CanaryAttachmentMetadataAndDownloadEachRaiseOne) {
  Ok("dataset create canary-att");
  const std::string content_file = daemon_->dir() + "/decoy.bin";
  {
    std::ofstream out(content_file, std::ios::binary);
    out << std::string(100000, 'z');
  }
  Ok("canary plant canary-att --attachment contract.pdf --file " + content_file +
     " --content-type application/pdf");
  auto data = Data();
  ASSERT_NE(data, nullptr);
  auto info = data->AttachmentMetadata("canary-att", "contract.pdf");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, 100000u);
  auto reader = data->OpenAttachment("canary-att", "contract.pdf");
  ASSERT_TRUE(reader.ok()) << reader.status();
  auto content = (*reader)->ReadAll();
  ASSERT_TRUE(content.ok());
  EXPECT_EQ(*content, std::string(100000, 'z'));
  Ok("key rotate canary-att");
  std::vector<json> seen;
  ASSERT_TRUE(ReadUntil("canary-att-test", seen, [](const std::vector<json>& events) {
    return Count(events, "EVENT_KEY_ROTATED", "canary-att") > 0;
  }));
  EXPECT_EQ(Count(seen, "EVENT_CANARY_READ", "canary-att"), 2u);
  for (const json& e : seen) {
    if (e.value("kind", "") == "EVENT_CANARY_READ" && e.value("dataset", "") == "canary-att") {
      EXPECT_EQ(e["canary"], "contract.pdf");
      EXPECT_EQ(e["canary_kind"], "CANARY_ATTACHMENT");
      EXPECT_EQ(e["uid"], geteuid());
    }
  }
}

TEST_F(KeyctlEventsTest, CanaryRemovePurgesAndForgets) {
  Ok("dataset create canary-rm");
  Ok("canary plant canary-rm --record decoy-2 --value bait");
  Result removed = Run("canary remove canary-rm --record decoy-2");
  ASSERT_EQ(removed.exit_code, 0) << removed.err;
  Result listed = Run("canary list canary-rm");
  ASSERT_EQ(listed.exit_code, 0);
  EXPECT_NE(listed.out.find("no canaries"), std::string::npos) << listed.out;
  auto data = Data();
  ASSERT_NE(data, nullptr);
  auto gone = data->GetRecord("canary-rm", "decoy-2");
  EXPECT_FALSE(gone.ok());
  Result again = Run("canary remove canary-rm --record decoy-2");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.err.find("no canary"), std::string::npos) << again.err;
}

TEST_F(KeyctlEventsTest, BadInputGetsClearErrorsAndPlantsNothing) {
  Ok("dataset create canary-bad");
  auto data = Data();
  ASSERT_NE(data, nullptr);
  ASSERT_TRUE(data->PutRecord("canary-bad", "customer-9", "real").ok());

  Result unknown = Run("canary plant no-such-dataset --record x --value y");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("no dataset by that name"), std::string::npos) << unknown.err;
  Result empty = Run("canary plant canary-bad --record '' --value y");
  EXPECT_NE(empty.exit_code, 0);
  EXPECT_NE(empty.err.find("1 byte to 1 KiB"), std::string::npos) << empty.err;
  Result over = Run("canary plant canary-bad --record customer-9 --value y");
  EXPECT_NE(over.exit_code, 0);
  EXPECT_NE(over.err.find("already exists"), std::string::npos) << over.err;
  auto kept = data->GetRecord("canary-bad", "customer-9");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, "real");  // never overwritten
  Result no_file = Run("canary plant canary-bad --record decoy --file /nonexistent/decoy");
  EXPECT_NE(no_file.exit_code, 0);
  EXPECT_NE(no_file.err.find("cannot read --file"), std::string::npos) << no_file.err;
  Result no_value = Run("canary plant canary-bad --record decoy");
  EXPECT_EQ(no_value.exit_code, 2) << no_value.err;
  Result neither = Run("canary plant canary-bad --value y");
  EXPECT_EQ(neither.exit_code, 2) << neither.err;
  Result listed = Run("canary list canary-bad");
  EXPECT_NE(listed.out.find("no canaries"), std::string::npos) << listed.out;
  EXPECT_FALSE(data->RecordExists("canary-bad", "decoy").value_or(true));

  Result bad_name = Run("events --subscriber 'Bad Name'");
  EXPECT_NE(bad_name.exit_code, 0);
  EXPECT_NE(bad_name.err.find("[a-z0-9._-]"), std::string::npos) << bad_name.err;

  auto admin = AdminClient::Connect(daemon_->admin_socket());
  ASSERT_TRUE(admin.ok());
  pb::Request beyond;
  beyond.mutable_events_read()->set_subscriber("cursor-test");
  beyond.mutable_events_read()->set_ack_through(uint64_t{1} << 40);
  auto refused = (*admin)->Call(beyond);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kEventCursorInvalid);

  // Admin operations are refused on the data socket.
  auto on_data = AdminClient::Connect(daemon_->data_socket());
  ASSERT_TRUE(on_data.ok());
  pb::Request list;
  list.mutable_canary_list();
  auto wrong = (*on_data)->Call(list);
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(ErrorCodeOf(wrong.status()), ErrorCode::kWrongSocket);
}

TEST_F(KeyctlEventsTest, EventsJsonLinesParseAndTextIsOneLinePerEvent) {
  Ok("dataset create events-out");
  Ok("dataset disable events-out");
  Ok("dataset enable events-out");
  std::vector<json> seen;
  ASSERT_TRUE(ReadUntil("json-test", seen, [](const std::vector<json>& events) {
    return Count(events, "EVENT_DATASET_ENABLED", "events-out") > 0;
  }));
  uint64_t previous = 0;
  for (const json& e : seen) {
    ASSERT_TRUE(e.contains("sequence"));
    EXPECT_GT(e["sequence"].get<uint64_t>(), previous);
    previous = e["sequence"].get<uint64_t>();
    EXPECT_TRUE(e.contains("kind"));
    EXPECT_TRUE(e.contains("time_micros"));
  }
  // Acknowledged: nothing pending for this subscriber any more.
  Result again = Run("events --json --subscriber json-test --limit 1000");
  ASSERT_EQ(again.exit_code, 0);
  for (const std::string& line : NonEmptyLines(again.out)) {
    EXPECT_GT(json::parse(line)["sequence"].get<uint64_t>(), previous);
  }
  Result text = Run("events --subscriber text-test");
  ASSERT_EQ(text.exit_code, 0) << text.err;
  bool found = false;
  for (const std::string& line : NonEmptyLines(text.out)) {
    EXPECT_EQ(line[0], '#') << line;
    found |= line.find("DATASET_DISABLED  dataset events-out") != std::string::npos;
  }
  EXPECT_TRUE(found) << text.out;
  Result none = Run("events --subscriber text-test");
  EXPECT_NE(none.out.find("no new events"), std::string::npos) << none.out;
}

TEST_F(KeyctlEventsTest, DestructionIsAnnouncedWarnedAndReportedWithTheDatasetName) {
  Ok("dataset create doomed --destruction-wait 4s");
  Ok("dataset disable doomed");
  Ok("dataset destroy doomed");
  std::vector<json> seen;
  // Announced and warned while the clock stands still; then the deadline passes.
  ASSERT_TRUE(ReadUntil("doom-test", seen, [](const std::vector<json>& events) {
    return Count(events, "EVENT_DESTRUCTION_DUE_SOON", "doomed") > 0;
  }));
  daemon_->AdvanceClock(std::chrono::seconds(5));
  ASSERT_TRUE(ReadUntil("doom-test", seen, [](const std::vector<json>& events) {
    return Count(events, "EVENT_DATASET_DESTROYED", "doomed") > 0;
  }));
  EXPECT_EQ(Count(seen, "EVENT_DATASET_DISABLED", "doomed"), 1u);
  EXPECT_EQ(Count(seen, "EVENT_DESTRUCTION_SCHEDULED", "doomed"), 1u);
  // Due within the default 7-day warning period: warned once.
  EXPECT_EQ(Count(seen, "EVENT_DESTRUCTION_DUE_SOON", "doomed"), 1u);
  EXPECT_EQ(Count(seen, "EVENT_DATASET_DESTROYED", "doomed"), 1u);
  int64_t due = 0;
  std::vector<std::string> order;
  for (const json& e : seen) {
    if (e.value("dataset", "") != "doomed") continue;
    order.push_back(e["kind"].get<std::string>());
    if (e["kind"] == "EVENT_DESTRUCTION_SCHEDULED") due = e["destruction_due_micros"];
  }
  EXPECT_GT(due, 0);
  ASSERT_FALSE(order.empty());
  EXPECT_EQ(order.front(), "EVENT_DATASET_DISABLED");
  EXPECT_EQ(order.back(), "EVENT_DATASET_DESTROYED");
}

TEST_F(KeyctlEventsTest, FollowPrintsNewEventsAndAcknowledgesWhenInterrupted) {
  Ok("dataset create follow-test");
  Result drained = Run("events --subscriber follower");  // creates the cursor at the end
  ASSERT_EQ(drained.exit_code, 0) << drained.err;
  const std::string out = daemon_->dir() + "/follow.out";
  pid_t pid = SpawnWithOutput({KEYCTL_BINARY, "--socket", daemon_->admin_socket(), "--json",
                               "events", "--follow", "--subscriber", "follower"},
                              out, {"COFFER_ADMIN_SOCKET"});
  ASSERT_GT(pid, 0);
  Ok("dataset disable follow-test");
  auto printed = [&] {
    for (const std::string& line : NonEmptyLines(ReadWholeFile(out))) {
      json e = json::parse(line);
      if (e.value("kind", "") == "EVENT_DATASET_DISABLED" &&
          e.value("dataset", "") == "follow-test") {
        return true;
      }
    }
    return false;
  };
  const bool seen = Eventually(printed);
  kill(pid, SIGINT);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(seen) << ReadWholeFile(out);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << ReadWholeFile(out);
  // Acknowledged when interrupted: the event is not printed again.
  Result after = Run("--json events --subscriber follower");
  ASSERT_EQ(after.exit_code, 0) << after.err;
  for (const std::string& line : NonEmptyLines(after.out)) {
    json e = json::parse(line);
    EXPECT_FALSE(e.value("kind", "") == "EVENT_DATASET_DISABLED" &&
                 e.value("dataset", "") == "follow-test")
        << line;
  }
}

// Last: restarts the daemon.
TEST_F(KeyctlEventsTest, SubscriberAcrossDaemonRestartSeesNoGapAndNoDuplicate) {
  Ok("dataset create restart-test");
  std::vector<json> before;
  ASSERT_TRUE(ReadUntil("restart", before, [](const std::vector<json>& events) {
    return Count(events, "EVENT_DATASET_DISABLED", "restart-test") +
               Count(events, "EVENT_KEY_ROTATED", "restart-test") ==
           0;  // drained whatever earlier tests left
  }));
  Ok("dataset disable restart-test");
  ASSERT_TRUE(ReadUntil("restart", before, [](const std::vector<json>& events) {
    return Count(events, "EVENT_DATASET_DISABLED", "restart-test") == 1;
  }));
  const uint64_t acknowledged = before.back()["sequence"].get<uint64_t>();
  Ok("dataset enable restart-test");  // not read before the restart
  ASSERT_TRUE(daemon_->Stop());
  ASSERT_TRUE(daemon_->Start());
  Ok("key rotate restart-test");
  std::vector<json> after;
  ASSERT_TRUE(ReadUntil("restart", after, [](const std::vector<json>& events) {
    return Count(events, "EVENT_KEY_ROTATED", "restart-test") >= 2;
  }));
  ASSERT_FALSE(after.empty());
  EXPECT_EQ(after.front()["sequence"].get<uint64_t>(), acknowledged + 1);  // no gap
  for (size_t i = 1; i < after.size(); ++i) {  // no duplicate, nothing skipped
    EXPECT_EQ(after[i]["sequence"].get<uint64_t>(), after[i - 1]["sequence"].get<uint64_t>() + 1);
  }
  EXPECT_EQ(Count(after, "EVENT_DATASET_DISABLED", "restart-test"), 0u);
  EXPECT_EQ(Count(after, "EVENT_DATASET_ENABLED", "restart-test"), 1u);
  EXPECT_EQ(Count(after, "EVENT_KEY_ROTATED", "restart-test"), 2u);  // records, attachments
  // Another subscriber's cursor is its own: it sees the whole story.
  std::vector<json> other;
  ASSERT_TRUE(ReadUntil("restart-other", other, [](const std::vector<json>& events) {
    return Count(events, "EVENT_KEY_ROTATED", "restart-test") >= 2;
  }));
  EXPECT_EQ(Count(other, "EVENT_DATASET_DISABLED", "restart-test"), 1u);
  EXPECT_EQ(Count(other, "EVENT_DATASET_ENABLED", "restart-test"), 1u);
}

}  // namespace
}  // namespace coffer::keyctl
