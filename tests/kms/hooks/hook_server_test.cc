// HookServer with real sockets and processes (kms/hooks/hook_server.h): it serves its one
// allowed uid — and nobody else, root included (SO_PEERCRED, not anything the peer says) — and
// answers DELIVERED, FAILED or REJECTED as the hook and the request deserve.

#include "kms/hooks/hook_server.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>

#include "gtest/gtest.h"
#include "kms/hooks/hook_process.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/hooks/hook_test_util.h"
#include "tests/testing/process.h"

namespace coffer::hooks {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::kms::audit::testing::TempDir;
using ::coffer::testing::ReadWholeFile;
using testing::AskRunner;
using testing::AskRunnerAs;
using testing::ServingHookServer;

pb::HookRunRequest Request(uint64_t sequence) {
  pb::HookRunRequest request;
  request.mutable_event()->set_sequence(sequence);
  request.mutable_event()->set_kind(pb::EVENT_DATASET_DISABLED);
  request.set_timeout_millis(30000);
  return request;
}

HookServerOptions Options(const TempDir& dir, uid_t allowed, const std::string& script) {
  HookServerOptions options;
  options.socket_path = dir.Sub("hook.sock");
  options.allowed_uid = allowed;
  options.argv = {"/bin/sh", "-c", script};
  return options;
}

TEST(HookServer, AnswersTheAllowedUidWithTheHooksOutcome) {
  TempDir dir;
  const std::string out = dir.Sub("stdin");
  auto serving = ServingHookServer::Start(Options(
      dir, ::geteuid(), "cat >> " + out + "; [ \"$COFFER_EVENT_SEQUENCE\" != 2 ] || exit 3"));
  ASSERT_TRUE(serving.ok()) << serving.status();
  struct stat info {};
  ASSERT_EQ(::lstat(dir.Sub("hook.sock").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0660u);

  auto delivered = AskRunner(dir.Sub("hook.sock"), Request(1));
  ASSERT_TRUE(delivered.ok()) << delivered.status();
  EXPECT_EQ(delivered->outcome(), pb::HookRunResult::DELIVERED);
  EXPECT_EQ(delivered->exit_status(), 0);
  EXPECT_GT(delivered->pid(), 0u);
  auto failed = AskRunner(dir.Sub("hook.sock"), Request(2));
  ASSERT_TRUE(failed.ok()) << failed.status();
  EXPECT_EQ(failed->outcome(), pb::HookRunResult::FAILED);
  EXPECT_EQ(failed->exit_status(), 3);
  EXPECT_FALSE(failed->killed());
  EXPECT_EQ((*serving)->server().stats().runs, 2u);
  EXPECT_NE(ReadWholeFile(out).find("EVENT_DATASET_DISABLED"), std::string::npos);
}

TEST(HookServer, RefusesAPeerOfAnotherUidWithoutRunningTheHook) {
  TempDir dir;
  const std::string marker = dir.Sub("ran");
  // Root is refused like anyone else when it is not the allowed uid.
  const uid_t allowed = ::geteuid() == 0 ? 65534 : ::geteuid() + 1;
  HookServerOptions options = Options(dir, allowed, "touch " + marker);
  const passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  if (::geteuid() == 0) {
    options.socket_group = nobody->pw_gid;
    ASSERT_EQ(::chmod(dir.path().c_str(), 0755), 0);
  }
  auto serving = ServingHookServer::Start(std::move(options));
  ASSERT_TRUE(serving.ok()) << serving.status();

  auto refused = AskRunner(dir.Sub("hook.sock"), Request(1));
  EXPECT_FALSE(refused.ok());  // closed without an answer
  EXPECT_EQ((*serving)->server().stats().refused, 1u);
  EXPECT_EQ((*serving)->server().stats().runs, 0u);
  EXPECT_NE(::access(marker.c_str(), F_OK), 0) << "the hook ran for a refused peer";

  if (::geteuid() != 0) GTEST_SKIP() << "serving the allowed uid from another process needs root";
  // The allowed uid itself, from another process: served.
  EXPECT_EQ(AskRunnerAs(allowed, nobody->pw_gid, dir.Sub("hook.sock"), Request(2)),
            pb::HookRunResult::DELIVERED);
  EXPECT_EQ(::access(marker.c_str(), F_OK), 0);
  EXPECT_EQ((*serving)->server().stats().refused, 1u);
}

TEST(HookServer, RejectsWhatNoAttemptCouldRun) {
  TempDir dir;
  auto server = HookServer::Listen(Options(dir, ::geteuid(), "exit 0"));
  ASSERT_TRUE(server.ok()) << server.status();
  pb::HookRunRequest no_event;
  no_event.set_timeout_millis(1000);
  EXPECT_EQ((*server)->Run(no_event).outcome(), pb::HookRunResult::REJECTED);
  pb::HookRunRequest no_timeout = Request(1);
  no_timeout.set_timeout_millis(0);
  EXPECT_EQ((*server)->Run(no_timeout).outcome(), pb::HookRunResult::REJECTED);
  pb::HookRunRequest too_long = Request(1);
  too_long.set_timeout_millis(kMaxHookTimeoutMillis + 1);
  EXPECT_EQ((*server)->Run(too_long).outcome(), pb::HookRunResult::REJECTED);
  pb::HookRunRequest too_large = Request(1);
  too_large.mutable_event()->set_canary(std::string(kMaxHookInputBytes, 'x'));
  pb::HookRunResult rejected = (*server)->Run(too_large);
  EXPECT_EQ(rejected.outcome(), pb::HookRunResult::REJECTED);
  EXPECT_NE(rejected.message().find("too large"), std::string::npos) << rejected.message();
  EXPECT_EQ((*server)->stats().runs, 0u);
  EXPECT_EQ((*server)->Run(Request(1)).outcome(), pb::HookRunResult::DELIVERED);

  // A relative program is refused at start.
  HookServerOptions relative = Options(dir, ::geteuid(), "exit 0");
  relative.socket_path = dir.Sub("other.sock");
  relative.argv = {"sh", "-c", "exit 0"};
  EXPECT_FALSE(HookServer::Listen(std::move(relative)).ok());
}

}  // namespace
}  // namespace coffer::hooks
