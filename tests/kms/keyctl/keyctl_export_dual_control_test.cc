// Dual control of `keyctl dataset export` against a real cofferd with MFA on (control.proto,
// docs/keyctl.md "Export"): the requester (root, "A") files the export (exit 5, nothing
// written); it cannot approve it itself; a second admin (nobody, "B") approves it and receives
// no archive; only A redeems it, once, for the dataset and recipient key it filed, and the
// archive opens with the recipient's private key. Harness as keyctl_dual_control_test.cc:
// keyctl runs as each admin's uid, TOTP codes from the enrolment URIs with a 2-second step.
// Needs root; skipped otherwise.

#include <fcntl.h>
#include <grp.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
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

#include "absl/strings/escaping.h"
#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
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
    char tmpl[] = "/tmp/keyctl-export-dual-XXXXXX";
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
          << "grants { principals { uid: 0 } datasets: \"*\" rights: READ rights: WRITE }\n"
          << "jobs { backup_interval_seconds: 86400 }\n"
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
      "/tmp/keyctl-export-dual-out-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
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

void WriteKeyPair(const std::string& dir, const std::string& name, const char* type) {
  EVP_PKEY* key = std::string(type) == "RSA"
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  ASSERT_NE(key, nullptr);
  BIO* priv = BIO_new_file((dir + "/" + name + ".pem").c_str(), "w");
  BIO* pub = BIO_new_file((dir + "/" + name + ".pub.pem").c_str(), "w");
  ASSERT_EQ(PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  ASSERT_EQ(PEM_write_bio_PUBKEY(pub, key), 1);
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
  chmod((dir + "/" + name + ".pub.pem").c_str(), 0644);
}

class KeyctlExportDualControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to run keyctl as other uids";
    daemon_ = Cofferd::Create();
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    work_ = daemon_->dir() + "/work";
    fs::create_directories(work_);
    chmod(work_.c_str(), 0777);  // B may try to write here
    ASSERT_NO_FATAL_FAILURE(WriteKeyPair(work_, "x25519", "X25519"));
    ASSERT_NO_FATAL_FAILURE(WriteKeyPair(work_, "rsa", "RSA"));
    // Bootstrap: A claims, invites B (no approval while one admin is enrolled), B claims.
    ASSERT_NO_FATAL_FAILURE(Claim(kA));
    Result invite = Run(kA, "--totp " + Code(kA) + " admin enroll --uid 65534");
    ASSERT_EQ(invite.exit_code, 0) << invite.err << invite.out;
    ASSERT_NO_FATAL_FAILURE(Claim(kB));
  }

  Result Run(uid_t uid, const std::string& args) {
    return KeyctlAs(uid, daemon_->keyctl(), daemon_->admin_socket(), args);
  }
  std::string Code(uid_t uid) {
    uint64_t step = CurrentStep();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (step <= last_step_[uid] && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      step = CurrentStep();
    }
    last_step_[uid] = step;
    return Totp(secrets_[uid], step);
  }
  void Claim(uid_t uid) {
    Result r = Run(uid, "--json admin enroll");
    ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
    secrets_[uid] = SecretOf(r.Json().value("otpauth_uri", ""));
    ASSERT_FALSE(secrets_[uid].empty());
  }
  bool NothingWritten(const std::string& file) {
    for (const auto& entry : fs::directory_iterator(work_)) {
      if (entry.path().filename().string().rfind(file, 0) == 0) return false;
    }
    return true;
  }

  std::unique_ptr<Cofferd> daemon_;
  std::string work_;
  std::map<uid_t, std::string> secrets_;
  std::map<uid_t, uint64_t> last_step_;
};

TEST_F(KeyctlExportDualControlTest, FiledApprovedByAnotherAdminRedeemedOnceByTheRequester) {
  ASSERT_EQ(Run(kA, "--totp " + Code(kA) + " dataset create exp/dual").exit_code, 0);
  {
    auto client = client::Client::Connect(daemon_->dir() + "/data.sock");
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->PutRecord("exp/dual", "customer-1", "alice@example.com").ok());
    ASSERT_TRUE((*client)->PutRecord("exp/dual", "customer-2", "").ok());
  }
  // An ACTIVE dataset is refused at filing: nothing to approve.
  const std::string key = " --recipient-key " + work_ + "/x25519.pub.pem";
  Result active = Run(kA, "--json dataset export exp/dual" + key + " --out " + work_ + "/a.cfx");
  EXPECT_EQ(active.CodeName(), "DATASET_STATE_FORBIDS") << active.out << active.err;
  ASSERT_EQ(Run(kA, "dataset disable exp/dual").exit_code, 0);  // the MFA session covers it

  const std::string archive = work_ + "/dual.cfx";
  Result filed = Run(kA, "--json dataset export exp/dual" + key + " --out " + archive);
  ASSERT_EQ(filed.exit_code, 5) << filed.err << filed.out;
  const uint64_t id = filed.Json()["pending"].value("id", uint64_t{0});
  ASSERT_NE(id, 0u) << filed.out;
  EXPECT_TRUE(NothingWritten("dual.cfx"));
  const std::string redeem = "--json dataset export exp/dual" + key + " --out " + archive +
                             " --approval " + std::to_string(id);

  Result self = Run(kA, "--json --totp " + Code(kA) + " request approve " + std::to_string(id));
  EXPECT_EQ(self.exit_code, 3) << self.err;
  EXPECT_EQ(self.CodeName(), "APPROVAL_FORBIDDEN") << self.out;
  Result early = Run(kA, redeem);
  EXPECT_EQ(early.CodeName(), "APPROVAL_CLOSED") << early.out << early.err;  // not approved yet
  EXPECT_TRUE(NothingWritten("dual.cfx"));

  // B approves: the request is approved, and B receives no archive.
  Result approved = Run(kB, "--json --totp " + Code(kB) + " request approve " + std::to_string(id));
  ASSERT_EQ(approved.exit_code, 0) << approved.err << approved.out;
  json decided = approved.Json();
  EXPECT_EQ(decided["request"].value("state", ""), "APPROVAL_STATE_APPROVED") << approved.out;
  const json export_result = decided["result"]["dataset_export"];
  EXPECT_TRUE(export_result.value("approved_for_redemption", false)) << approved.out;
  EXPECT_TRUE(export_result.value("data", std::string()).empty()) << "the approver got data";
  EXPECT_FALSE(export_result.contains("summary")) << approved.out;
  EXPECT_TRUE(NothingWritten("dual.cfx"));

  // Only the requester redeems, only for the recipient key filed.
  Result by_b = Run(kB, "--json dataset export exp/dual" + key + " --out " + work_ +
                            "/b.cfx --approval " + std::to_string(id));
  EXPECT_EQ(by_b.CodeName(), "APPROVAL_FORBIDDEN") << by_b.out << by_b.err;
  EXPECT_TRUE(NothingWritten("b.cfx"));
  Result other_key =
      Run(kA, "--json dataset export exp/dual --recipient-key " + work_ + "/rsa.pub.pem --out " +
                  work_ + "/rsa.cfx --approval " + std::to_string(id));
  EXPECT_EQ(other_key.CodeName(), "APPROVAL_FORBIDDEN") << other_key.out << other_key.err;
  EXPECT_TRUE(NothingWritten("rsa.cfx"));

  Result redeemed = Run(kA, redeem);
  ASSERT_EQ(redeemed.exit_code, 0) << redeemed.err << redeemed.out;
  EXPECT_EQ(redeemed.Json().value("records", 0), 2) << redeemed.out;
  Result opened = Run(kA, "--json export open " + archive + " --private-key " + work_ +
                              "/x25519.pem --out-dir " + work_ + "/opened --public-key " +
                              daemon_->dir() + "/audit-public-key.pem");
  ASSERT_EQ(opened.exit_code, 0) << opened.err << opened.out;
  EXPECT_EQ(opened.Json().value("approval_id", uint64_t{0}), id);
  const std::string records = ReadWholeFile(work_ + "/opened/records.jsonl");
  std::string alice;
  absl::Base64Unescape(json::parse(records.substr(0, records.find('\n'))).value("value", ""),
                       &alice);
  std::string other;
  absl::Base64Unescape(
      json::parse(records.substr(records.find('\n') + 1)).value("value", std::string("x")), &other);
  EXPECT_TRUE((alice == "alice@example.com" && other.empty()) ||
              (other == "alice@example.com" && alice.empty()))
      << records;

  // Single use.
  Result again = Run(kA, "--json dataset export exp/dual" + key + " --out " + work_ +
                             "/again.cfx --approval " + std::to_string(id));
  EXPECT_EQ(again.exit_code, 3) << again.err;
  EXPECT_EQ(again.CodeName(), "APPROVAL_CLOSED") << again.out;
  EXPECT_TRUE(NothingWritten("again.cfx"));

  // The redemption is audited (the entry also names the approver; audit_query's rows do not
  // show approvers, so only the entry itself is checked here).
  Result audit = Run(kA, "--json audit search --dataset exp/dual");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  const json entries = audit.Json()["entries"];
  int redeemed_entries = 0;
  for (const json& entry : entries) {
    if (entry.value("kind", "") != "DATASET_EXPORT_REDEEMED") continue;
    ++redeemed_entries;
    EXPECT_EQ(entry.value("record_count", uint64_t{0}), id) << entry.dump();
    EXPECT_EQ(entry.value("uid", -1), 0) << entry.dump();
  }
  EXPECT_EQ(redeemed_entries, 1) << audit.out;
}

}  // namespace
}  // namespace coffer::keyctl
