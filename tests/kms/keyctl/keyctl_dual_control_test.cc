// keyctl against a real cofferd with MFA and dual control on (control.proto's rules): three
// admin uids — root (0, "A"), nobody (65534, "B") and uid 1 ("C") — each running keyctl as its
// own uid (fork, setgroups/setgid/setuid, exec). TOTP codes are computed here from the otpauth://
// URI that `admin enroll` prints (RFC 6238 with a 2-second step, so the test waits for fresh
// codes instead of 30 s). Needs root (to run keyctl as other uids); skipped otherwise.

#include <fcntl.h>
#include <grp.h>
#include <openssl/hmac.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/keyctl/admin_client.h"
#include "nlohmann/json.hpp"
#include "tests/testing/process.h"

namespace coffer::keyctl {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunShell;
using ::coffer::testing::SpawnWithOutput;
using nlohmann::json;

constexpr uid_t kA = 0;
constexpr uid_t kB = 65534;
constexpr uid_t kC = 1;
constexpr int64_t kStepSeconds = 2;

gid_t NobodyGid() {
  passwd* nobody = getpwnam("nobody");
  return nobody == nullptr ? 65534 : nobody->pw_gid;
}

// A cofferd with MFA required, on a directory that survives restarts of the daemon.
class Cofferd {
 public:
  static std::unique_ptr<Cofferd> Create() {
    auto d = std::unique_ptr<Cofferd>(new Cofferd());
    char tmpl[] = "/tmp/keyctl-dual-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) return nullptr;
    d->dir_ = tmpl;
    chmod(d->dir_.c_str(), 0755);
    // The other uids run this copy of keyctl: the build tree need not be reachable by them
    // (CI builds in a mode-0700 temporary directory).
    std::error_code copied;
    fs::copy_file(KEYCTL_BINARY, d->keyctl(), copied);
    if (copied || chmod(d->keyctl().c_str(), 0755) != 0) return nullptr;
    if (RunShell(std::string(COFFER_SOFTHSM_TOKEN_SCRIPT) + " " + d->dir_ +
                 "/hsm coffer >/dev/null") != 0) {
      return nullptr;
    }
    passwd* nobody = getpwnam("nobody");
    if (nobody == nullptr) return nullptr;
    ::group* g = getgrgid(nobody->pw_gid);
    if (g == nullptr) return nullptr;
    const std::string group_name = g->gr_name;
    {
      std::ofstream out(d->dir_ + "/cofferd.conf", std::ios::trunc);
      out << "state_directory: \"" << d->dir_ << "\"\n"
          << "data_socket: \"data.sock\"\nadmin_socket: \"admin.sock\"\n"
          << "data_socket_group: \"" << group_name << "\"\n"
          << "admin_socket_group: \"" << group_name << "\"\n"
          << "hsm { token_label: \"coffer\" pin_file: \"hsm/user.pin\" token_directory: \"hsm\" "
             "}\n"
          << "durability: WAL\n"
          << "admins { uid: " << kA << " }\nadmins { uid: " << kB << " }\nadmins { uid: " << kC
          << " }\n"
          << "jobs { backup_interval_seconds: 86400 rotation_check_seconds: 1 }\n"
          << "mfa { required: true totp_step_seconds: " << kStepSeconds
          << " approval_ttl_seconds: 600 session_seconds: 600 }\n";
    }
    if (RunShell("chown -R " + std::to_string(nobody->pw_uid) + ":" +
                 std::to_string(nobody->pw_gid) + " " + d->dir_) != 0) {
      return nullptr;
    }
    if (!d->Start()) return nullptr;
    return d;
  }

  bool Start() {
    std::vector<std::string> args = {COFFERD_BINARY, "--config", dir_ + "/cofferd.conf", "--user",
                                     "nobody"};
    pid_t pid = SpawnWithOutput(std::move(args), log_path(), {"SOFTHSM2_CONF"});
    if (pid < 0) return false;
    pid_ = pid;
    // Serving once a status request answers (a safety net, not a measure).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (std::chrono::steady_clock::now() < deadline) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      auto client = AdminClient::Connect(admin_socket());
      if (client.ok()) {
        coffer::v1::Request request;
        request.mutable_status();
        if ((*client)->Call(request).ok()) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  }
  void Stop() {
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
    }
    pid_ = -1;
  }

  ~Cofferd() {
    Stop();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  const std::string& dir() const { return dir_; }
  std::string admin_socket() const { return dir_ + "/admin.sock"; }
  std::string keyctl() const { return dir_ + "/keyctl"; }
  std::string log_path() const { return dir_ + "/cofferd.log"; }

 private:
  Cofferd() = default;
  std::string dir_;
  pid_t pid_ = -1;
};

struct Result {
  int exit_code = -1;
  std::string out;
  std::string err;
  json Json() const {
    json parsed = json::parse(out, nullptr, false);
    return parsed.is_discarded() ? json::object() : parsed;
  }
  std::string CodeName() const {
    json j = Json();
    if (!j.contains("error")) return "";
    return j["error"].value("code_name", "");
  }
};

std::vector<std::string> Words(const std::string& text) {
  std::vector<std::string> words;
  std::string word;
  for (char c : text) {
    if (c == ' ') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  if (!word.empty()) words.push_back(word);
  return words;
}

// Runs keyctl as `uid` (group: nobody's) with `args` split at spaces; stdin is /dev/null.
// With `terminal_input`, keyctl runs under script(1) on a pseudo-terminal fed that text.
Result KeyctlAs(uid_t uid, const std::string& keyctl, const std::string& socket,
                const std::string& args, const std::string* terminal_input = nullptr) {
  static int counter = 0;
  const std::string base =
      "/tmp/keyctl-dual-out-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  const int out_fd = ::open((base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const int err_fd = ::open((base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::vector<std::string> argv_words = {keyctl, "--socket", socket};
  for (std::string& w : Words(args)) argv_words.push_back(std::move(w));
  std::string input_path = "/dev/null";
  if (terminal_input != nullptr) {
    input_path = base + ".in";
    std::ofstream(input_path, std::ios::trunc) << *terminal_input;
    chmod(input_path.c_str(), 0644);
    std::string command;
    for (const std::string& w : argv_words) command += (command.empty() ? "" : " ") + w;
    argv_words = {"/usr/bin/script", "-qec", command, "/dev/null"};
  }
  std::vector<char*> argv;
  for (std::string& w : argv_words) argv.push_back(w.data());
  argv.push_back(nullptr);
  const gid_t gid = NobodyGid();
  pid_t pid = fork();
  if (pid == 0) {
    const int null_fd = ::open(input_path.c_str(), O_RDONLY);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::unsetenv("COFFER_ADMIN_SOCKET");
    if (uid != 0) {
      if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(uid) != 0) _exit(126);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(out_fd);
  ::close(err_fd);
  int status = 0;
  waitpid(pid, &status, 0);
  Result result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadWholeFile(base + ".out");
  result.err = ReadWholeFile(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  if (terminal_input != nullptr) fs::remove(input_path);
  return result;
}

std::string Base32Decode(const std::string& text) {
  std::string bytes;
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a';
    } else if (c >= '2' && c <= '7') {
      v = c - '2' + 26;
    } else {
      continue;  // padding
    }
    buffer = (buffer << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      bytes.push_back(static_cast<char>((buffer >> (bits - 8)) & 0xff));
      bits -= 8;
    }
  }
  return bytes;
}

// The secret of an otpauth://totp/...?secret=BASE32&... URI.
std::string SecretOf(const std::string& uri) {
  size_t at = uri.find("secret=");
  if (at == std::string::npos) return "";
  at += 7;
  size_t end = uri.find('&', at);
  return Base32Decode(uri.substr(at, end == std::string::npos ? std::string::npos : end - at));
}

std::string Totp(const std::string& secret, uint64_t counter) {
  unsigned char message[8];
  for (int i = 7; i >= 0; --i) {
    message[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), message, sizeof(message), mac,
       &mac_len);
  const int offset = mac[mac_len - 1] & 0x0f;
  const uint32_t binary = ((mac[offset] & 0x7fu) << 24) | (mac[offset + 1] << 16) |
                          (mac[offset + 2] << 8) | mac[offset + 3];
  char code[7];
  std::snprintf(code, sizeof(code), "%06u", binary % 1000000u);
  return code;
}

uint64_t CurrentStep() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count() /
                               kStepSeconds);
}

class DualControlTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0) return;
    daemon_ = Cofferd::Create().release();
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run keyctl as other uids";
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    if (!bootstrapped_) Bootstrap();
  }

  static Result Run(uid_t uid, const std::string& args) {
    return KeyctlAs(uid, daemon_->keyctl(), daemon_->admin_socket(), args);
  }

  // A fresh code of `uid`: waits (bounded) for a step newer than the last one used, because
  // codes are single-use and monotonic per admin. Not a timing assertion.
  static std::string Code(uid_t uid) {
    const std::string& secret = secrets_[uid];
    uint64_t step = CurrentStep();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (step <= last_step_[uid] && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      step = CurrentStep();
    }
    last_step_[uid] = step;
    return Totp(secret, step);
  }

  // Claims `uid`'s enrolment and keeps its secret.
  static void Claim(uid_t uid) {
    Result r = Run(uid, "--json admin enroll");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    const std::string uri = r.Json().value("otpauth_uri", "");
    ASSERT_EQ(uri.rfind("otpauth://", 0), 0u) << r.out;
    secrets_[uid] = SecretOf(uri);
    ASSERT_FALSE(secrets_[uid].empty()) << "no secret in the URI";
    Result human = Run(uid, "admin list");
    ASSERT_EQ(human.exit_code, 0) << human.err;
  }

  void Bootstrap() {
    ASSERT_NO_FATAL_FAILURE(Claim(kA));
    Result invite = Run(kA, "--totp " + Code(kA) + " admin enroll --uid 65534");
    ASSERT_EQ(invite.exit_code, 0) << invite.err << invite.out;  // bootstrap: no approval
    ASSERT_NO_FATAL_FAILURE(Claim(kB));
    bootstrapped_ = true;
  }

  // `uid` files `args` (with a fresh code): it must go pending; returns the request id.
  static uint64_t FilePending(uid_t uid, const std::string& args) {
    Result r = Run(uid, "--json --totp " + Code(uid) + " " + args);
    EXPECT_EQ(r.exit_code, 5) << args << ": " << r.err << r.out;
    json pending = r.Json();
    if (!pending.contains("pending")) {
      ADD_FAILURE() << args << ": no pending document: " << r.out;
      return 0;
    }
    EXPECT_EQ(pending["pending"].value("state", ""), "APPROVAL_STATE_PENDING") << r.out;
    Result human_list = Run(uid, "request list");
    EXPECT_NE(human_list.out.find(std::to_string(pending["pending"].value("id", 0))),
              std::string::npos)
        << human_list.out;
    return pending["pending"].value("id", uint64_t{0});
  }
  static Result Approve(uid_t uid, uint64_t id) {
    return Run(uid, "--json --totp " + Code(uid) + " request approve " + std::to_string(id));
  }
  static json Describe(const std::string& dataset) {
    Result r = Run(kA, "--json dataset describe " + dataset);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return r.Json();
  }

  static Cofferd* daemon_;
  static bool bootstrapped_;
  static std::map<uid_t, std::string> secrets_;
  static std::map<uid_t, uint64_t> last_step_;
};
Cofferd* DualControlTest::daemon_ = nullptr;
bool DualControlTest::bootstrapped_ = false;
std::map<uid_t, std::string> DualControlTest::secrets_;
std::map<uid_t, uint64_t> DualControlTest::last_step_;

TEST_F(DualControlTest, InviteNeedsASecondAdminAndApprovalsAreSingleUse) {
  const uint64_t id = FilePending(kA, "admin enroll --uid 1");
  ASSERT_NE(id, 0u);
  Result self = Approve(kA, id);
  EXPECT_EQ(self.exit_code, 3) << self.err;
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;
  Result claim_early = Run(kC, "admin enroll");
  EXPECT_NE(claim_early.exit_code, 0) << "C claimed without an approved invitation";

  Result approved = Approve(kB, id);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(approved.Json()["request"].value("state", ""), "APPROVAL_STATE_APPROVED")
      << approved.out;
  Result twice = Approve(kB, id);
  EXPECT_EQ(twice.exit_code, 3) << twice.err;
  EXPECT_EQ(twice.CodeName(), "APPROVAL_CLOSED") << twice.out;
  Result unknown = Approve(kB, 999999);
  EXPECT_EQ(unknown.exit_code, 4) << unknown.err;

  ASSERT_NO_FATAL_FAILURE(Claim(kC));
  Result list = Run(kA, "--json admin list");
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(list.Json().value("mfa_required", false)) << list.out;
  EXPECT_EQ(list.Json()["admins"].size(), 3u) << list.out;

  // Removing an admin is dual control too; denied, it changes nothing.
  const uint64_t removal = FilePending(kA, "admin remove --uid 1");
  ASSERT_NE(removal, 0u);
  Result denied = Run(kC, "--totp " + Code(kC) + " request deny " + std::to_string(removal));
  ASSERT_EQ(denied.exit_code, 0) << denied.err << denied.out;
  Result after = Run(kB, "--json admin list");
  EXPECT_EQ(after.Json()["admins"].size(), 3u) << after.out;

  // The inventory lists each admin's TOTP secret (never the secret itself).
  Result inventory = Run(kB, "--json key inventory");
  ASSERT_EQ(inventory.exit_code, 0) << inventory.err;
  int secrets = 0;
  const json keys = inventory.Json()["keys"];
  for (const json& k : keys) secrets += k.value("kind", "") == "admin-totp-secret";
  EXPECT_EQ(secrets, 3) << inventory.out;
}

TEST_F(DualControlTest, ProtectionShorteningOperationsWaitForApproval) {
  Result created = Run(kA, "--totp " + Code(kA) + " dataset create dual/one");
  ASSERT_EQ(created.exit_code, 0) << created.err;
  ASSERT_EQ(Run(kA, "dataset create dual/two").exit_code, 0);  // the session covers it

  // Retention shortened to 1s.
  uint64_t id = FilePending(kA, "policy set dual/one --retention 1s");
  EXPECT_EQ(Describe("dual/one")["policy"].value("retention_max_age_seconds", int64_t{0}), 0);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(Describe("dual/one")["policy"].value("retention_max_age_seconds", int64_t{0}), 1);

  // Auto-destroy after 1s disabled.
  id = FilePending(kA, "policy set dual/two --auto-destroy-after-disabled 1s");
  EXPECT_EQ(Describe("dual/two")["policy"].value("auto_destroy_after_disabled_seconds", int64_t{0}),
            0);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_EQ(Describe("dual/two")["policy"].value("auto_destroy_after_disabled_seconds", int64_t{0}),
            1);

  // Legal hold: set freely, cleared only with approval.
  ASSERT_EQ(Run(kA, "hold set dual/one").exit_code, 0);
  id = FilePending(kA, "hold clear dual/one");
  EXPECT_TRUE(Describe("dual/one").value("legal_hold", false));
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  EXPECT_FALSE(Describe("dual/one").value("legal_hold", true));

  // Retiring key versions.
  ASSERT_EQ(Run(kA, "key rotate dual/one --purpose records").exit_code, 0);
  id = FilePending(kA, "key retire dual/one --purpose records --below 2");
  auto state_of_v1 = [] {
    const json info = Describe("dual/one");
    for (const json& v : info["versions"]) {
      if (v.value("purpose", "") == "PURPOSE_RECORDS" && v.value("version", 0) == 1) {
        return v.value("state", std::string());
      }
    }
    return std::string();
  };
  EXPECT_NE(state_of_v1(), "KEY_RETIRED");
  Result approved = Approve(kB, id);
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  EXPECT_EQ(state_of_v1(), "KEY_RETIRED");

  // Destruction.
  ASSERT_EQ(Run(kA, "dataset disable dual/one").exit_code, 0);
  id = FilePending(kA, "dataset destroy dual/one");
  EXPECT_EQ(Describe("dual/one").value("state", ""), "DATASET_DISABLED");
  Result destroyed = Run(kB, "--totp " + Code(kB) + " dataset approve " + std::to_string(id));
  ASSERT_EQ(destroyed.exit_code, 0) << destroyed.err << destroyed.out;
  EXPECT_NE(destroyed.out.find("APPROVED"), std::string::npos) << destroyed.out;
  EXPECT_EQ(Describe("dual/one").value("state", ""), "DATASET_PENDING_DESTRUCTION");

  // A denied request changes nothing.
  id = FilePending(kA, "policy set dual/two --retention 1s");
  Result denied = Run(kB, "--totp " + Code(kB) + " request deny " + std::to_string(id));
  ASSERT_EQ(denied.exit_code, 0) << denied.err;
  EXPECT_EQ(Describe("dual/two")["policy"].value("retention_max_age_seconds", int64_t{0}), 0);
  // The same in human form: one line naming the request and how to approve it.
  Result human = Run(kA, "policy set dual/two --retention 2s");
  EXPECT_EQ(human.exit_code, 5) << human.err;
  EXPECT_EQ(human.out.find("request "), 0u) << human.out;
  EXPECT_NE(human.out.find(" filed: "), std::string::npos) << human.out;
  EXPECT_NE(human.out.find("keyctl request approve "), std::string::npos) << human.out;
  EXPECT_TRUE(human.err.empty()) << human.err;
  Result list_human = Run(kB, "request list");
  EXPECT_EQ(list_human.exit_code, 0) << list_human.err;
  EXPECT_NE(list_human.out.find("PENDING"), std::string::npos) << list_human.out;

  Result all = Run(kA, "--json request list --all");
  ASSERT_EQ(all.exit_code, 0) << all.err;
  EXPECT_GE(all.Json()["requests"].size(), 6u) << all.out;
}

TEST_F(DualControlTest, CodesAreRefusedWhenWrongReusedOrMissing) {
  // Wrong code: refused and audited.
  const std::string wrong = Totp(secrets_[kA], CurrentStep() + 1000);
  Result bad = Run(kA, "--json --totp " + wrong + " dataset create dual/wrong");
  EXPECT_EQ(bad.exit_code, 3) << bad.err;
  EXPECT_EQ(bad.err.find(wrong), std::string::npos) << "the code is never printed";
  Result audit = Run(kA, "--json audit search --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  bool audited = false;
  const json entries = audit.Json()["entries"];
  for (const json& e : entries) {
    if (e.value("kind", "") == "MFA_VERIFY" && e.value("result_code", 0) != 0) audited = true;
  }
  EXPECT_TRUE(audited) << "no failed MFA_VERIFY entry";

  // Replay across a restart.
  const std::string code = Code(kA);
  ASSERT_EQ(Run(kA, "--totp " + code + " dataset create dual/replay").exit_code, 0);
  daemon_->Stop();
  ASSERT_TRUE(daemon_->Start()) << ReadWholeFile(daemon_->log_path());
  Result replay = Run(kA, "--json --totp " + code + " hold set dual/replay");
  EXPECT_EQ(replay.exit_code, 3) << replay.err;
  EXPECT_EQ(replay.CodeName(), "MFA_CODE_REUSED") << replay.out;

  // No code and no session (sessions end with the daemon): refused, told to pass --totp.
  Result missing = Run(kB, "hold set dual/replay");
  EXPECT_EQ(missing.exit_code, 3) << missing.err;
  EXPECT_NE(missing.err.find("--totp"), std::string::npos) << missing.err;
  // Read-only commands need no code.
  EXPECT_EQ(Run(kB, "dataset list").exit_code, 0);
}

TEST_F(DualControlTest, PromptsForTheCodeOnATerminal) {
  // Sessions end with the daemon: restart so that B has none.
  daemon_->Stop();
  ASSERT_TRUE(daemon_->Start()) << ReadWholeFile(daemon_->log_path());
  const std::string code = Code(kB) + "\n";
  Result r = KeyctlAs(kB, daemon_->keyctl(), daemon_->admin_socket(),
                      "dataset create dual/prompted", &code);
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("TOTP code for nobody: "), std::string::npos) << r.out;
  // (Whether the pseudo-terminal echoes input that arrives before keyctl turns echo off depends
  // on timing, so echo is not checked here.)
  EXPECT_EQ(Describe("dual/prompted").value("name", ""), "dual/prompted");
}

TEST_F(DualControlTest, WholeLifecycleWithKeyctlAlone) {
  const std::string d = "dual/life";
  ASSERT_EQ(
      Run(kA, "--totp " + Code(kA) + " dataset create " + d + " --destruction-wait 1s").exit_code,
      0);
  ASSERT_EQ(Run(kA, "key rotate " + d).exit_code, 0);
  Result reenc = Run(kA, "reencrypt start " + d + " --wait");
  ASSERT_EQ(reenc.exit_code, 0) << reenc.err;
  uint64_t id = FilePending(kA, "key retire " + d + " --purpose records --below 2");
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  Result backup = Run(kA, "backup create");
  ASSERT_EQ(backup.exit_code, 0) << backup.err;
  ASSERT_EQ(Run(kA, "hold set " + d).exit_code, 0);
  id = FilePending(kA, "hold clear " + d);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);
  ASSERT_EQ(Run(kA, "dataset disable " + d).exit_code, 0);
  id = FilePending(kA, "dataset destroy " + d);
  ASSERT_EQ(Approve(kB, id).exit_code, 0);

  // One second later the clock destroys it; its data is erased and the receipt, fetched by
  // the name it had, names B as the approver of request `id`.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  Result receipt;
  while (std::chrono::steady_clock::now() < deadline) {
    receipt = Run(kA, "receipt get " + d);
    if (receipt.exit_code == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(250));
  }
  ASSERT_EQ(receipt.exit_code, 0) << receipt.err;
  const std::string receipt_file = daemon_->dir() + "/life.receipt";
  std::ofstream(receipt_file, std::ios::trunc) << receipt.out;
  chmod(receipt_file.c_str(), 0644);

  Result status = Run(kA, "--json status");
  ASSERT_EQ(status.exit_code, 0) << status.err;
  const std::string pem_text = status.Json().value("audit_public_key_pem", "");
  ASSERT_FALSE(pem_text.empty()) << "status carries no audit public key";
  const std::string pem = daemon_->dir() + "/dual-audit-public.pem";
  std::ofstream(pem, std::ios::trunc) << pem_text;
  Result verify = Run(kA, "audit verify --offline --public-key " + pem + " --audit-dir " +
                              daemon_->dir() + "/audit");
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  Result checked =
      Run(kB, "--json receipt verify " + receipt_file + " --public-key " + pem + " --name " + d);
  ASSERT_EQ(checked.exit_code, 0) << checked.err;
  const json body = checked.Json()["receipt"];
  EXPECT_EQ(body["destruction_requested_by"].value("uid", 0u), kA) << checked.out;
  ASSERT_EQ(body["approvals"].size(), 1u) << checked.out;
  EXPECT_EQ(body["approvals"][0]["approver"].value("uid", 0u), kB) << checked.out;
  EXPECT_EQ(body["approvals"][0].value("request_id", ""), std::to_string(id)) << checked.out;

  Result audit = Run(kA, "--json audit search --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  std::map<uint32_t, int> admin_requests;
  bool schedule_names_approver = false;
  const json entries = audit.Json()["entries"];
  for (const json& e : entries) {
    if (e.value("kind", "") == "ADMIN_REQUEST") ++admin_requests[e.value("uid", 0u)];
    if (e.value("kind", "") == "DESTRUCTION_SCHEDULE" && e.value("stage", "") == "REQUESTED" &&
        e.value("uid", 0u) == kA && e.value("approver_uid", 0u) == kB) {
      schedule_names_approver = true;
    }
  }
  EXPECT_TRUE(schedule_names_approver) << "no DESTRUCTION_SCHEDULE naming A and approver B";
  EXPECT_GT(admin_requests[kA], 0) << audit.out.substr(0, 2000);
  EXPECT_GT(admin_requests[kB], 0) << audit.out.substr(0, 2000);
}

}  // namespace
}  // namespace coffer::keyctl
