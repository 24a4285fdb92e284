// The hook cannot read the HSM PIN (docs/threat-model.md; issue 16 item 9), against a running
// cofferd (test-cofferd as `nobody`, fresh SoftHSM2 token; tests/kms/cofferd/cofferd_harness.h)
// and the real coffer-hook-runner started as uid 2 (`bin`) with nobody's group as its only
// supplementary group (to own the socket cofferd connects to). The runner's own environment
// carries a SOFTHSM2_CONF and a CREDENTIALS_DIRECTORY, as careless packaging might; the hook
// must see neither. Covers: the hook runs as the runner's uid with PATH and COFFER_EVENT_* only
// and no other descriptor, and can read neither the PIN file nor softhsm2.conf (which cofferd's
// uid can); a hanging hook is killed and the next event delivered; a stopped runner holds the
// events (no attempt spent) until it is back; the runner serves no other uid and refuses to run
// as root or as cofferd's uid. Needs root (other uids); skipped otherwise.

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/hooks/hook_test_util.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::hooks {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::NonEmptyLines;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunAsUid;
using nlohmann::json;

constexpr uid_t kRunnerUid = 2;  // `bin`: neither root nor cofferd's `nobody`

bool Eventually(const std::function<bool()>& done) {
  return ::coffer::testing::Eventually(done, std::chrono::milliseconds(50));
}

gid_t NobodyGid() {
  const passwd* nobody = ::getpwnam("nobody");
  return nobody == nullptr ? 65534 : nobody->pw_gid;
}

uid_t NobodyUid() {
  const passwd* nobody = ::getpwnam("nobody");
  return nobody == nullptr ? 65534 : nobody->pw_uid;
}

// Starts `args` as `uid` (gid `uid`, supplementary groups `groups` only) with exactly `env`,
// output appended to `log`. Returns the pid, or -1.
pid_t StartAs(uid_t uid, const std::vector<gid_t>& groups, std::vector<std::string> args,
              std::vector<std::string> env, const std::string& log) {
  int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (out < 0) return -1;
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (std::string& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out, STDOUT_FILENO);
    ::dup2(out, STDERR_FILENO);
    if (::setgroups(groups.size(), groups.data()) != 0 || ::setresgid(uid, uid, uid) != 0 ||
        ::setresuid(uid, uid, uid) != 0) {
      _exit(126);
    }
    ::execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  ::close(out);
  return pid;
}

int WaitExit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class HookRunnerCofferdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (::geteuid() != 0) return;
    std::string tmpl = "/tmp/hook-runner-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) return;
    runner_dir_ = new std::string(tmpl);
    // The runner's directory: its socket and the hook's reports.
    if (::chown(runner_dir_->c_str(), kRunnerUid, kRunnerUid) != 0 ||
        ::chmod(runner_dir_->c_str(), 0755) != 0) {
      return;
    }
    // The build tree need not be reachable by other uids: they run a copy.
    std::error_code copied;
    fs::copy_file(HOOK_RUNNER_BINARY, Binary(), copied);
    if (copied || ::chmod(Binary().c_str(), 0755) != 0) return;
    daemon_ = Cofferd::Create(Options()).release();
    if (daemon_ == nullptr) return;
    WriteHook();
    runner_pid_ = StartRunner();
  }
  static void TearDownTestSuite() {
    StopRunner();
    delete daemon_;
    daemon_ = nullptr;
    if (runner_dir_ != nullptr) {
      std::error_code ignored;
      fs::remove_all(*runner_dir_, ignored);
      delete runner_dir_;
      runner_dir_ = nullptr;
    }
  }
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "runs the hook runner and cofferd as other uids";
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    ASSERT_GT(runner_pid_, 0) << "the hook runner did not start";
  }

  static std::string Dir() { return *runner_dir_; }
  static std::string Socket() { return Dir() + "/hook.sock"; }
  static std::string Binary() { return Dir() + "/coffer-hook-runner"; }

  static CofferdOptions Options() {
    CofferdOptions options;
    options.name = "hook-runner";
    const std::string socket = Socket();
    options.extra_config = [socket](const std::string&) {
      return "notifications { hook_socket: \"" + socket +
             "\" hook_timeout_seconds: 1 hook_attempts: 1 }\n";
    };
    return options;
  }

  // Reports, per event sequence, what the hook saw; the event line comes last, once the
  // reports are in place. Hangs on DATASET_DISABLED (killed at the 1 s timeout).
  static void WriteHook() {
    const std::string d = Dir();
    const std::string hsm = daemon_->dir() + "/hsm";
    std::ofstream hook(d + "/hook.sh", std::ios::trunc);
    hook << "read -r line\n"
         << "s=$COFFER_EVENT_SEQUENCE\n"
         << "tr '\\0' '\\n' < /proc/$$/environ > " << d << "/env.$s\n"
         << "id -u > " << d << "/uid.$s\n"
         << "ls /proc/self/fd > " << d << "/fds.$s\n"
         << "if cat " << hsm << "/user.pin > /dev/null 2>&1; then echo readable; "
         << "else echo denied; fi > " << d << "/pin.$s\n"
         << "if cat " << hsm << "/softhsm2.conf > /dev/null 2>&1; then echo readable; "
         << "else echo denied; fi > " << d << "/conf.$s\n"
         << "printf '%s\\n' \"$line\" >> " << d << "/hook.out\n"
         << "case \"$line\" in *EVENT_DATASET_DISABLED*) exec sleep 1000;; esac\n";
    hook.close();
    ::chmod((d + "/hook.sh").c_str(), 0755);
  }

  static pid_t StartRunner() {
    const std::string hsm = daemon_->dir() + "/hsm";
    pid_t pid =
        StartAs(kRunnerUid, {NobodyGid()},
                {Binary(), "--socket", Socket(), "--allowed-uid", "nobody", "--socket-group",
                 std::to_string(NobodyGid()), "--", "/bin/sh", Dir() + "/hook.sh"},
                {"PATH=/usr/bin:/bin", "SOFTHSM2_CONF=" + hsm + "/softhsm2.conf",
                 "CREDENTIALS_DIRECTORY=" + hsm, "COFFER_TEST_INHERITED=1"},
                Dir() + "/runner.log");
    if (pid <= 0) return -1;
    struct stat info {};
    if (!Eventually([&] {
          return ::lstat(Socket().c_str(), &info) == 0 || ::waitpid(pid, nullptr, WNOHANG) == pid;
        }) ||
        !S_ISSOCK(info.st_mode)) {
      return -1;
    }
    return pid;
  }
  static int StopRunner() {
    if (runner_pid_ <= 0) return -1;
    ::kill(runner_pid_, SIGTERM);
    int status = WaitExit(runner_pid_);
    runner_pid_ = -1;
    return status;
  }

  void Ok(const std::string& args) {
    auto r = Keyctl(daemon_->admin_socket(), args);
    ASSERT_EQ(r.exit_code, 0) << args << ": " << r.err;
  }
  // The sequence of the hook's line for `kind` on `dataset`; 0 when there is none yet.
  static uint64_t Delivered(const std::string& kind, const std::string& dataset) {
    for (const std::string& line : NonEmptyLines(ReadWholeFile(Dir() + "/hook.out"))) {
      json e = json::parse(line);
      if (e.value("kind", "") == kind && e.value("dataset", "") == dataset) {
        return std::stoull(e["sequence"].get<std::string>());
      }
    }
    return 0;
  }
  static std::string Report(const std::string& name, uint64_t sequence) {
    return ReadWholeFile(Dir() + "/" + name + "." + std::to_string(sequence));
  }

  static Cofferd* daemon_;
  static std::string* runner_dir_;
  static pid_t runner_pid_;
};
Cofferd* HookRunnerCofferdTest::daemon_ = nullptr;
std::string* HookRunnerCofferdTest::runner_dir_ = nullptr;
pid_t HookRunnerCofferdTest::runner_pid_ = -1;

TEST_F(HookRunnerCofferdTest, HookRunsAsTheRunnersUserWithOnlyTheEventAndCannotReadThePin) {
  Ok("dataset create hook-env");
  Ok("key rotate hook-env");
  uint64_t sequence = 0;
  ASSERT_TRUE(Eventually([&] {
    sequence = Delivered("EVENT_KEY_ROTATED", "hook-env");
    return sequence != 0;
  })) << ReadWholeFile(Dir() + "/runner.log")
      << daemon_->Logs();

  EXPECT_EQ(Report("uid", sequence), std::to_string(kRunnerUid) + "\n");
  // The hook's whole environment, as the kernel handed it over: PATH and the event, nothing
  // of the runner's (SOFTHSM2_CONF, CREDENTIALS_DIRECTORY, COFFER_TEST_INHERITED).
  const std::vector<std::string> env = NonEmptyLines(Report("env", sequence));
  ASSERT_FALSE(env.empty());
  std::set<std::string> names;
  for (const std::string& entry : env) {
    names.insert(entry.substr(0, entry.find('=')));
    EXPECT_TRUE(entry == "PATH=/usr/bin:/bin" || entry.rfind("COFFER_EVENT_", 0) == 0) << entry;
  }
  EXPECT_EQ(names.count("SOFTHSM2_CONF"), 0u);
  EXPECT_EQ(names.count("CREDENTIALS_DIRECTORY"), 0u);
  EXPECT_EQ(names.count("COFFER_TEST_INHERITED"), 0u);
  std::set<std::string> entries(env.begin(), env.end());
  EXPECT_EQ(entries.count("COFFER_EVENT_KIND=EVENT_KEY_ROTATED"), 1u);
  EXPECT_EQ(entries.count("COFFER_EVENT_DATASET=hook-env"), 1u);
  EXPECT_EQ(entries.count("COFFER_EVENT_SEQUENCE=" + std::to_string(sequence)), 1u);
  // stdin, stdout (the report), stderr, and the directory ls lists: no socket of the runner's.
  std::vector<std::string> fd_lines = NonEmptyLines(Report("fds", sequence));
  EXPECT_EQ(std::set<std::string>(fd_lines.begin(), fd_lines.end()),
            (std::set<std::string>{"0", "1", "2", "3"}));

  // The PIN and the token's configuration are out of the hook's reach...
  EXPECT_EQ(Report("pin", sequence), "denied\n");
  EXPECT_EQ(Report("conf", sequence), "denied\n");
  // ... though not out of cofferd's uid's, which is where the hook ran before the runner (with
  // cofferd's environment, where cofferd itself sets SOFTHSM2_CONF).
  const std::string hsm = daemon_->dir() + "/hsm";
  const std::string as_cofferd = RunAsUid(NobodyUid(), NobodyGid(), [&] {
    return ReadWholeFile(hsm + "/user.pin").empty() || ReadWholeFile(hsm + "/softhsm2.conf").empty()
               ? std::string("denied")
               : std::string("readable");
  });
  EXPECT_EQ(as_cofferd, "readable");
}

TEST_F(HookRunnerCofferdTest, HangingHookIsKilledAndTheNextEventStillDelivered) {
  Ok("dataset create hook-hang");
  Ok("dataset disable hook-hang");  // the hook hangs on this one and is killed at 1 s
  Ok("dataset enable hook-hang");
  ASSERT_TRUE(Eventually([] { return Delivered("EVENT_DATASET_ENABLED", "hook-hang") != 0; }))
      << ReadWholeFile(Dir() + "/runner.log");
  EXPECT_NE(Delivered("EVENT_DATASET_DISABLED", "hook-hang"), 0u);
  EXPECT_LT(Delivered("EVENT_DATASET_DISABLED", "hook-hang"),
            Delivered("EVENT_DATASET_ENABLED", "hook-hang"));
  EXPECT_NE(ReadWholeFile(Dir() + "/runner.log").find("hook killed"), std::string::npos);
  EXPECT_NE(daemon_->Logs().find("hook killed"), std::string::npos) << daemon_->Logs();
}

TEST_F(HookRunnerCofferdTest, StoppedRunnerHoldsTheEventsUntilItIsBack) {
  ASSERT_EQ(StopRunner(), 0) << ReadWholeFile(Dir() + "/runner.log");
  const size_t from = daemon_->Logs().size();
  Ok("dataset create hook-wait");
  Ok("key rotate hook-wait");
  // One attempt per event (hook_attempts: 1): were an unanswered try an attempt, the event
  // would be given up on here.
  ASSERT_TRUE(daemon_->WaitForLog("does not answer", from)) << daemon_->Logs();
  EXPECT_EQ(Delivered("EVENT_KEY_ROTATED", "hook-wait"), 0u);
  runner_pid_ = StartRunner();
  ASSERT_GT(runner_pid_, 0) << ReadWholeFile(Dir() + "/runner.log");
  ASSERT_TRUE(Eventually([] { return Delivered("EVENT_KEY_ROTATED", "hook-wait") != 0; }))
      << daemon_->Logs();
  EXPECT_EQ(daemon_->Logs().find("gave up on event", from), std::string::npos) << daemon_->Logs();
}

TEST_F(HookRunnerCofferdTest, RunnerServesNoOtherUidAndRunsNeitherAsRootNorAsCofferd) {
  // Root is not cofferd's uid: its connection is closed unanswered and no hook runs.
  coffer::v1::HookRunRequest request;
  request.mutable_event()->set_sequence(999999);
  request.mutable_event()->set_kind(coffer::v1::EVENT_DATASET_DESTROYED);
  request.set_timeout_millis(1000);
  EXPECT_FALSE(testing::AskRunner(Socket(), request).ok());
  EXPECT_TRUE(Eventually([] {
    return ReadWholeFile(Dir() + "/runner.log").find("refused a connection from uid 0") !=
           std::string::npos;
  }));
  EXPECT_EQ(Report("uid", 999999), "");

  const std::vector<std::string> args = {
      Binary(), "--socket", Dir() + "/other.sock", "--allowed-uid", "nobody", "--", "/bin/true"};
  const std::string log = Dir() + "/refusals.log";
  EXPECT_EQ(WaitExit(StartAs(0, {0}, args, {"PATH=/usr/bin:/bin"}, log)), 1);
  EXPECT_NE(ReadWholeFile(log).find("refusing to run as root"), std::string::npos)
      << ReadWholeFile(log);
  EXPECT_EQ(WaitExit(StartAs(NobodyUid(), {NobodyGid()}, args, {"PATH=/usr/bin:/bin"}, log)), 1);
  EXPECT_NE(ReadWholeFile(log).find("refusing to run as cofferd's uid"), std::string::npos)
      << ReadWholeFile(log);
  EXPECT_NE(::access((Dir() + "/other.sock").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace coffer::hooks
