#include "tests/kms/cofferd/cofferd_harness.h"

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
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>
#include <utility>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/keyctl/admin_client.h"
#include "tests/testing/process.h"

namespace coffer::testing {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A fresh pair of output files per keyctl run.
std::string OutputBase() {
  static int counter = 0;
  return "/tmp/keyctl-harness-out-" + std::to_string(getpid()) + "-" + std::to_string(counter++);
}

// The result of a run that ended with wait status `status` and wrote BASE.out and BASE.err
// (removed here).
KeyctlResult Collect(int status, const std::string& base) {
  KeyctlResult result;
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.out = ReadWholeFile(base + ".out");
  result.err = ReadWholeFile(base + ".err");
  fs::remove(base + ".out");
  fs::remove(base + ".err");
  return result;
}

gid_t NobodyGid() {
  passwd* nobody = getpwnam("nobody");
  return nobody == nullptr ? 65534 : nobody->pw_gid;
}

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

// The keyctl suites' configuration body (see CofferdOptions::config_body).
std::string KeyctlConfigBody(const CofferdOptions& options) {
  std::string text;
  if (options.mfa) {
    for (uid_t admin : {kAdminA, kAdminB, kAdminC}) {
      text += "admins { uid: " + std::to_string(admin) + " }\n";
    }
  } else {
    const std::string me = std::to_string(geteuid());
    text += "grants { principals { uid: " + me +
            " } datasets: \"*\" rights: READ rights: WRITE rights: DELETE }\n";
    text += "admins { uid: " + me + " }\n";
  }
  text += "jobs { backup_interval_seconds: 86400 scrub_interval_seconds: 86400";
  if (options.rotation_check_seconds.has_value()) {
    text += " rotation_check_seconds: " + std::to_string(*options.rotation_check_seconds);
  }
  text += " }\n";
  if (options.mfa) {
    text += "mfa { required: true totp_step_seconds: " + std::to_string(kTotpStepSeconds) +
            " approval_ttl_seconds: 600 session_seconds: 600 }\n";
  } else {
    text += "mfa { required: false }\n";  // development mode: no MFA or dual control
  }
  return text;
}

// The configuration of `options` for a daemon on `dir`; `group` is nobody's group when the
// daemon runs as nobody, "" otherwise.
std::string ConfigText(const CofferdOptions& options, const std::string& dir,
                       const std::string& group, const std::string& extra) {
  std::string text = "state_directory: \"" + dir + "\"\n" +
                     "data_socket: \"data.sock\"\nadmin_socket: \"admin.sock\"\n";
  if (!group.empty()) text += "data_socket_group: \"" + group + "\"\n";
  if (options.mfa) text += "admin_socket_group: \"" + group + "\"\n";
  text += "hsm { token_label: \"coffer\" pin_file: \"hsm/user.pin\" token_directory: \"hsm\"";
  if (options.hsm_module) text += " module_path: \"" + options.hsm_module(dir) + "\"";
  text += " }\n";
  text += "durability: WAL\n";
  text += options.config_body ? options.config_body(dir, group) : KeyctlConfigBody(options);
  if (options.extra_config) text += options.extra_config(dir);
  return text + extra;
}

}  // namespace

std::unique_ptr<Cofferd> Cofferd::Create(CofferdOptions options) {
  auto d = std::unique_ptr<Cofferd>(new Cofferd());
  d->as_root_ = geteuid() == 0;
  if (options.mfa && !d->as_root_) return nullptr;
  std::string tmpl = "/tmp/" + options.name + "-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) return nullptr;
  d->dir_ = tmpl;
  d->options_ = std::move(options);
  chmod(d->dir_.c_str(), 0755);  // other uids reach the sockets through it
  if (d->options_.mfa) {
    std::error_code copied;
    fs::copy_file(KEYCTL_BINARY, d->keyctl(), copied);
    if (copied || chmod(d->keyctl().c_str(), 0755) != 0) return nullptr;
  }
  if (d->options_.controlled_clock) {
    // Starts at the real time, so that times printed by keyctl read as today.
    d->clock_ = MappedClock::Create(d->dir_ + "/clock", std::chrono::system_clock::now());
    if (d->clock_ == nullptr) return nullptr;
  }
  if (RunShell(std::string(COFFER_SOFTHSM_TOKEN_SCRIPT) + " " + d->dir_ +
               "/hsm coffer >/dev/null") != 0) {
    return nullptr;
  }
  d->daemon_uid_ = geteuid();
  d->daemon_gid_ = getegid();
  if (d->as_root_) {
    passwd* nobody = getpwnam("nobody");
    if (nobody == nullptr) return nullptr;
    d->daemon_uid_ = nobody->pw_uid;
    d->daemon_gid_ = nobody->pw_gid;
    ::group* g = getgrgid(d->daemon_gid_);
    if (g == nullptr) return nullptr;
    d->group_ = g->gr_name;
  }
  if (d->options_.prepare) d->options_.prepare(d->dir_);
  d->WriteConfig();
  if (d->as_root_ && RunShell("chown -R " + std::to_string(d->daemon_uid_) + ":" +
                              std::to_string(d->daemon_gid_) + " " + d->dir_) != 0) {
    return nullptr;
  }
  if (d->options_.start && !d->Start()) return nullptr;
  return d;
}

std::string Cofferd::Binary() const { return clock_ ? TEST_COFFERD_BINARY : COFFERD_BINARY; }

void Cofferd::WriteConfig(const std::string& extra) {
  std::ofstream out(dir_ + "/cofferd.conf", std::ios::trunc);
  out << ConfigText(options_, dir_, group_, extra);
}

::testing::AssertionResult Cofferd::Start(const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = options_.launcher;
  args.insert(args.end(), {Binary(), "--config", dir_ + "/cofferd.conf"});
  if (as_root_) args.insert(args.end(), {"--user", "nobody"});
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  std::vector<std::pair<std::string, std::string>> env;
  if (clock_) env.emplace_back(kClockFileEnv, dir_ + "/clock");
  // Without SOFTHSM2_CONF the daemon finds hsm/softhsm2.conf itself.
  pid_t pid = SpawnWithOutput(std::move(args), dir_ + "/cofferd.log" + std::to_string(starts_++),
                              {"SOFTHSM2_CONF"}, env);
  if (pid < 0) return ::testing::AssertionFailure() << "cannot open the log or fork";
  pid_ = pid;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (std::chrono::steady_clock::now() < deadline) {
    if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return ::testing::AssertionFailure() << "cofferd exited at start:\n" << Logs();
    }
    auto client = keyctl::AdminClient::Connect(admin_socket());
    if (client.ok()) {
      coffer::v1::Request request;
      request.mutable_status();
      absl::StatusOr<coffer::v1::Response> response = (*client)->Call(request);
      if (response.ok() && !response->has_error()) return ::testing::AssertionSuccess();
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return ::testing::AssertionFailure() << "cofferd did not start serving:\n" << Logs();
}

int Cofferd::SignalAndWait(int signal) {
  if (pid_ <= 0) return -1;
  kill(pid_, signal);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

bool Cofferd::Stop() { return SignalAndWait(SIGTERM) == 0; }

std::pair<int, std::string> Cofferd::RunToExit(const std::vector<std::string>& extra_args,
                                               const std::string& env) {
  const std::string out = dir_ + "/run.log";
  std::string command;
  for (const std::string& word : options_.launcher) command += word + " ";
  command += Binary() + " --config " + dir_ + "/cofferd.conf";
  for (const std::string& a : extra_args) command += " " + a;
  command += " >" + out + " 2>&1 </dev/null";
  std::string variables = env;
  if (clock_) variables += std::string(" ") + kClockFileEnv + "=" + dir_ + "/clock";
  // A daemon that wrongly starts would serve forever: timeout ends it (exit 124).
  int status = RunShell("env " + variables + " timeout 120 " + command);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, ReadWholeFile(out)};
}

std::string Cofferd::UserArg() const { return as_root_ ? "--user nobody" : ""; }

std::chrono::system_clock::time_point Cofferd::Now() const {
  return clock_ ? clock_->Now() : std::chrono::system_clock::now();
}

void Cofferd::AdvanceClock(std::chrono::seconds by) {
  ASSERT_NE(clock_, nullptr) << "AdvanceClock needs a daemon on a controlled clock";
  clock_->Advance(by);
}

KeyctlResult Cofferd::RunJobAfter(std::chrono::seconds by, const std::string& job) {
  if (clock_ == nullptr) {
    ADD_FAILURE() << "RunJobAfter needs a daemon on a controlled clock";
    return KeyctlResult{};
  }
  clock_->Advance(by);
  return Keyctl(admin_socket(), "job run " + job);
}

uint64_t Cofferd::TotpStep() const {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(Now().time_since_epoch()).count() /
      kTotpStepSeconds);
}

bool Cofferd::WaitUntil(const std::function<bool()>& done) {
  return Eventually(done, std::chrono::milliseconds(20));
}

bool Cofferd::WaitForLog(const std::string& text, size_t from) const {
  return WaitUntil([&] {
    std::string log = Logs();
    return log.size() > from && log.find(text, from) != std::string::npos;
  });
}

Cofferd::~Cofferd() {
  if (pid_ > 0) Stop();
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

std::string Cofferd::Logs() const {
  std::string all;
  for (int i = 0; i < starts_; ++i) all += ReadWholeFile(dir_ + "/cofferd.log" + std::to_string(i));
  return all;
}

json KeyctlResult::JsonOrEmpty() const {
  json parsed = json::parse(out, nullptr, false);
  return parsed.is_discarded() ? json::object() : parsed;
}

std::string KeyctlResult::CodeName() const {
  json j = JsonOrEmpty();
  if (!j.contains("error")) return "";
  return j["error"].value("code_name", "");
}

KeyctlResult Keyctl(const std::string& socket, const std::string& args) {
  const std::string base = OutputBase();
  const std::string command = std::string(KEYCTL_BINARY) + " --socket " + socket + " " + args +
                              " >" + base + ".out 2>" + base + ".err </dev/null";
  return Collect(RunShell("env -u COFFER_ADMIN_SOCKET " + command), base);
}

KeyctlResult KeyctlAs(uid_t uid, const std::string& keyctl, const std::string& socket,
                      const std::string& args, const std::string* terminal_input) {
  const std::string base = OutputBase();
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
  if (terminal_input != nullptr) fs::remove(input_path);
  return Collect(status, base);
}

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

std::string TotpCodes::Next(uid_t uid) {
  uint64_t step = daemon_->TotpStep();
  if (daemon_->controlled_clock()) {
    if (step <= last_step_[uid]) {
      // Into step last + 1: from anywhere inside `step`, whole steps later.
      daemon_->AdvanceClock(std::chrono::seconds((last_step_[uid] + 1 - step) * kTotpStepSeconds));
      step = daemon_->TotpStep();
    }
  } else {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (step <= last_step_[uid] && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      step = daemon_->TotpStep();
    }
  }
  last_step_[uid] = step;
  return Totp(secrets_[uid], step);
}

void WriteKeyPair(const std::string& dir, const std::string& name, const std::string& type) {
  EVP_PKEY* key = nullptr;
  if (type == "RSA") key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048});
  if (type == "RSA1024") key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{1024});
  if (type == "X25519") key = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  if (type == "EC") key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(key, nullptr) << type;
  BIO* priv = BIO_new_file((dir + "/" + name + ".pem").c_str(), "w");
  BIO* pub = BIO_new_file((dir + "/" + name + ".pub.pem").c_str(), "w");
  ASSERT_EQ(PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  ASSERT_EQ(PEM_write_bio_PUBKEY(pub, key), 1);
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
}

std::string RunAsUid(uid_t uid, gid_t group, const std::function<std::string()>& body) {
  int fds[2];
  if (pipe(fds) != 0) return "pipe failed";
  pid_t pid = fork();
  if (pid == 0) {
    close(fds[0]);
    if (setgroups(1, &group) != 0 || setresgid(uid, uid, uid) != 0 ||
        setresuid(uid, uid, uid) != 0) {
      _exit(3);
    }
    std::string out = body();
    size_t written = 0;
    while (written < out.size()) {
      ssize_t n = write(fds[1], out.data() + written, out.size() - written);
      if (n <= 0) _exit(4);
      written += static_cast<size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string result;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0) result.append(buf, static_cast<size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return "child failed";
  return result;
}

}  // namespace coffer::testing
