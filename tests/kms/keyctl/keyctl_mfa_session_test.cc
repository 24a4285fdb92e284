// The trust boundary of MFA sessions and event subscribers, against a running cofferd with MFA
// on (test-cofferd on a clock the test advances; admins A = root and B = nobody, each running
// keyctl as its own uid; session_seconds 600):
//  - an MFA session belongs to the connection whose request carried the code: a `keyctl shell`
//    of A keeps running MFA-needing commands under its one code while a second keyctl process of
//    A without a code is refused MFA_REQUIRED; the shell's session ends at the session time,
//    reached by advancing the daemon's clock, never by sleeping;
//  - `keyctl --batch FILE` runs several MFA-needing commands under one code (one MFA_VERIFY in
//    the audit log), asks for the code once on a terminal, and stops at the first failing line;
//  - a subscriber belongs to the uid that created it: B can neither read nor acknowledge A's
//    (NOT_GRANTED, nothing moves: A still gets its alert), and every acknowledgement — and every
//    refused attempt — is in the audit log (keyctl audit search).
// Needs root (to run keyctl as other uids); skipped otherwise.

#include <fcntl.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/keyctl/mfa_daemon_fixture.h"

namespace coffer::keyctl {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

constexpr int kSessionSeconds = 600;  // the harness's mfa.session_seconds

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A `keyctl ... shell` of the test's uid (root: admin A) whose stdin is a pipe the test writes
// command lines to; its stdout and stderr go to files.
class ShellProcess {
 public:
  ShellProcess(const std::string& dir, const std::string& socket, const std::string& code)
      : out_(dir + "/shell.out"), err_(dir + "/shell.err") {
    int fds[2];
    if (::pipe(fds) != 0) return;
    const int out_fd = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err_fd = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    std::vector<std::string> words = {KEYCTL_BINARY, "--socket", socket, "--totp", code, "shell"};
    std::vector<char*> argv;
    for (std::string& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[0], 0);
      ::dup2(out_fd, 1);
      ::dup2(err_fd, 2);
      ::close(fds[1]);
      ::execv(argv[0], argv.data());
      _exit(127);
    }
    ::close(fds[0]);
    ::close(out_fd);
    ::close(err_fd);
    in_ = fds[1];
  }
  ~ShellProcess() {
    if (pid_ > 0 && exit_code_ < -1) Finish();
  }
  bool started() const { return pid_ > 0 && in_ >= 0; }
  // Sends one command line.
  bool Send(const std::string& line) {
    const std::string text = line + "\n";
    return ::write(in_, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  }
  // Ends the input and waits: the shell's exit code (its last command's).
  int Finish() {
    if (in_ >= 0) ::close(in_);
    in_ = -1;
    int status = 0;
    ::waitpid(pid_, &status, 0);
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    return exit_code_;
  }
  std::string err() const { return ReadFile(err_); }

 private:
  std::string out_, err_;
  pid_t pid_ = -1;
  int in_ = -1;
  int exit_code_ = -2;
};

class MfaSessionTest : public ::coffer::testing::MfaDaemonTest {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "keyctl-mfa-session";
    StartDaemon(std::move(options));
  }

  static bool Exists(const std::string& dataset) {
    return Run(kA, "--json dataset describe " + dataset).exit_code == 0;
  }
  // The audit log's entries (keyctl audit search, as A).
  static json AuditEntries() {
    Result audit = Run(kA, "--json audit search --limit 100000");
    EXPECT_EQ(audit.exit_code, 0) << audit.err;
    return audit.JsonOrEmpty().value("entries", json::array());
  }
  static int CountEntries(const std::string& kind, uid_t uid, const std::string& detail = "",
                          int result_code = 0) {
    int n = 0;
    for (const json& e : AuditEntries()) {
      n += e.value("kind", "") == kind && e.value("uid", 0u) == uid &&
           (detail.empty() || e.value("detail", "") == detail) &&
           e.value("result_code", 0) == result_code;
    }
    return n;
  }
  // A batch file readable by every admin uid.
  static std::string WriteBatch(const std::string& name, const std::string& text) {
    const std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::trunc) << text;
    chmod(path.c_str(), 0644);
    return path;
  }
};

TEST_F(MfaSessionTest, ASessionServesItsConnectionOnlyAndEndsAtTheSessionTime) {
  ShellProcess shell(daemon_->dir(), daemon_->admin_socket(), Code(kA));
  ASSERT_TRUE(shell.started());
  // The shell's first command carries the code and opens the session on its connection.
  ASSERT_TRUE(shell.Send("dataset create sess/one"));
  ASSERT_TRUE(Cofferd::WaitUntil([] { return Exists("sess/one"); })) << shell.err();

  // Malware running as A on its own connection, without a code: refused, nothing created.
  Result rider = Run(kA, "--json dataset create sess/rider");
  EXPECT_EQ(rider.exit_code, 3) << rider.err;
  EXPECT_EQ(rider.CodeName(), "MFA_REQUIRED") << rider.out;
  Result hold = Run(kA, "--json hold set sess/one");
  EXPECT_EQ(hold.CodeName(), "MFA_REQUIRED") << hold.out;
  EXPECT_FALSE(Exists("sess/rider"));

  // The shell's connection still runs MFA-needing commands with no new code, up to the
  // session time (600 s after the code, on the daemon's clock).
  ASSERT_TRUE(shell.Send("hold set sess/one"));
  ASSERT_TRUE(Cofferd::WaitUntil([] {
    Result d = Run(kA, "--json dataset describe sess/one");
    return d.JsonOrEmpty().value("legal_hold", false);
  })) << shell.err();
  daemon_->AdvanceClock(std::chrono::seconds(kSessionSeconds - 1));
  ASSERT_TRUE(shell.Send("dataset create sess/two"));
  ASSERT_TRUE(Cofferd::WaitUntil([] { return Exists("sess/two"); })) << shell.err();
  daemon_->AdvanceClock(std::chrono::seconds(1));
  ASSERT_TRUE(shell.Send("dataset create sess/late"));
  ASSERT_TRUE(shell.Send("exit"));
  EXPECT_EQ(shell.Finish(), 3) << "the last command was refused MFA: " << shell.err();
  EXPECT_NE(shell.err().find("needs a TOTP code"), std::string::npos) << shell.err();
  EXPECT_FALSE(Exists("sess/late"));
}

TEST_F(MfaSessionTest, ABatchRunsSeveralMfaCommandsUnderOneCode) {
  const int verifies_before = CountEntries("MFA_VERIFY", kA);
  const std::string batch = WriteBatch("setup.keyctl",
                                       "# one code for the whole file\n"
                                       "dataset create batch/one\n"
                                       "\n"
                                       "key rotate batch/one --purpose records  # a comment\n"
                                       "hold set batch/one\n"
                                       "dataset create 'batch/two'\n");
  Result r = Run(kA, "--totp " + Code(kA) + " --batch " + batch);
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_EQ(CountEntries("MFA_VERIFY", kA), verifies_before + 1) << "one code, checked once";
  EXPECT_TRUE(Exists("batch/two"));
  Result one = Run(kA, "--json dataset describe batch/one");
  EXPECT_TRUE(one.JsonOrEmpty().value("legal_hold", false)) << one.out;

  // Without a code (and no terminal) the first MFA-needing line fails and the batch stops there.
  const std::string stops = WriteBatch("stops.keyctl",
                                       "dataset list\n"
                                       "dataset create batch/three\n"
                                       "dataset create batch/four\n");
  Result refused = Run(kA, "--batch " + stops);
  EXPECT_EQ(refused.exit_code, 3) << refused.err;
  EXPECT_NE(refused.err.find(stops + ":2: "), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("needs a TOTP code"), std::string::npos) << refused.err;
  EXPECT_FALSE(Exists("batch/three"));
  EXPECT_FALSE(Exists("batch/four"));

  // A failing command stops the batch with its line number and exit code: line 3 never runs.
  const std::string fails = WriteBatch("fails.keyctl",
                                       "dataset create batch/five\n"
                                       "dataset create batch/five\n"
                                       "dataset create batch/six\n");
  Result failed = Run(kA, "--totp " + Code(kA) + " --batch " + fails);
  EXPECT_NE(failed.exit_code, 0) << failed.err;
  EXPECT_NE(failed.err.find(fails + ":2: "), std::string::npos) << failed.err;
  EXPECT_TRUE(Exists("batch/five"));
  EXPECT_FALSE(Exists("batch/six"));
}

TEST_F(MfaSessionTest, OnATerminalTheBatchAsksForTheCodeOnce) {
  const int verifies_before = CountEntries("MFA_VERIFY", kB);
  const std::string batch = WriteBatch("prompted.keyctl",
                                       "dataset list\n"
                                       "dataset create prompt/one\n"
                                       "hold set prompt/one\n"
                                       "dataset create prompt/two\n");
  const std::string typed = Code(kB) + "\n";
  Result r = Run(kB, "--batch " + batch, &typed);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  size_t prompts = 0;
  for (size_t at = r.out.find("TOTP code for nobody: "); at != std::string::npos;
       at = r.out.find("TOTP code for nobody: ", at + 1)) {
    ++prompts;
  }
  EXPECT_EQ(prompts, 1u) << r.out;
  EXPECT_TRUE(Exists("prompt/two"));
  EXPECT_EQ(CountEntries("MFA_VERIFY", kB), verifies_before + 1);
}

// B's events_read of `subscriber` on its own connection (a child process running as B): the
// error code answered (0: none), acknowledging through `ack_through` when set.
int ReadAsB(const std::string& socket, const std::string& subscriber,
            std::optional<uint64_t> ack_through) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    constexpr uid_t b = ::coffer::testing::kAdminB;  // nobody
    const gid_t gid = b;                             // nobody's group owns the admin socket
    if (::setgroups(1, &gid) != 0 || ::setresgid(b, b, b) != 0 || ::setresuid(b, b, b) != 0) {
      _exit(250);
    }
    auto client = AdminClient::Connect(socket);
    if (!client.ok()) _exit(251);
    pb::Request request;
    auto* r = request.mutable_events_read();
    r->set_subscriber(subscriber);
    if (ack_through.has_value()) {
      r->set_ack_through(*ack_through);
      r->set_ack_only(true);
    }
    auto response = (*client)->Call(std::move(request));
    _exit(response.ok() ? 0 : (static_cast<int>(ErrorCodeOf(response.status())) % 250));
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST_F(MfaSessionTest, AnAdminCannotReadOrAcknowledgeAnotherAdminsSubscriber) {
  // A's security subscriber, created (and caught up) by A.
  Result created = Run(kA, "--json events --subscriber security");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  const int acks_before = CountEntries("ADMIN_REQUEST", kA, "events_read: acknowledgement");
  // An alert: a dataset disabled. Wait until the event log has it (A's probe only reads).
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset create alert/one").exit_code, 0);
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset disable alert/one").exit_code, 0);
  uint64_t newest = 0;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    auto client = AdminClient::Connect(daemon_->admin_socket());
    if (!client.ok()) return false;
    pb::Request request;
    request.mutable_events_read()->set_subscriber("probe");
    auto response = (*client)->Call(std::move(request));
    if (!response.ok()) return false;
    for (const pb::Event& e : response->events_read().events()) {
      if (e.kind() == pb::EVENT_DATASET_DISABLED) {  // the suite disables one dataset
        newest = e.sequence();
        return true;
      }
    }
    return false;
  }));

  // B tries to acknowledge A's subscriber up to the alert, and to read it: refused, audited.
  const int nobody_refusals_before =
      CountEntries("ADMIN_REQUEST", kB, "events_read: refused: another uid's subscriber",
                   static_cast<int>(ErrorCode::kNotGranted));
  const int not_granted = static_cast<int>(ErrorCode::kNotGranted) % 250;
  EXPECT_EQ(ReadAsB(daemon_->admin_socket(), "security", newest), not_granted);
  EXPECT_EQ(ReadAsB(daemon_->admin_socket(), "security", std::nullopt), not_granted);
  Result by_b = Run(kB, "--json events --subscriber security");
  EXPECT_EQ(by_b.exit_code, 3) << by_b.err;
  EXPECT_EQ(by_b.CodeName(), "NOT_GRANTED") << by_b.out;
  EXPECT_NE(by_b.err.find("belongs to uid 0"), std::string::npos) << by_b.err;
  EXPECT_EQ(CountEntries("ADMIN_REQUEST", kB, "events_read: refused: another uid's subscriber",
                         static_cast<int>(ErrorCode::kNotGranted)),
            nobody_refusals_before + 3);
  // B's own subscriber works (the default one is per uid).
  EXPECT_EQ(Run(kB, "events").exit_code, 0);

  // A still gets the alert, and A's acknowledgement of it is in the audit log.
  Result alert = Run(kA, "--json events --subscriber security");
  ASSERT_EQ(alert.exit_code, 0) << alert.err;
  EXPECT_NE(alert.out.find("EVENT_DATASET_DISABLED"), std::string::npos) << alert.out;
  EXPECT_EQ(CountEntries("ADMIN_REQUEST", kA, "events_read: acknowledgement"), acks_before + 1);
  Result again = Run(kA, "--json events --subscriber security");
  EXPECT_EQ(again.out.find("EVENT_DATASET_DISABLED"), std::string::npos)
      << "acknowledged: " << again.out;
}

}  // namespace
}  // namespace coffer::keyctl
