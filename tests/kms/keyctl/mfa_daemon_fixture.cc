#include "tests/kms/keyctl/mfa_daemon_fixture.h"

#include <unistd.h>

#include <memory>
#include <utility>

#include "nlohmann/json.hpp"

namespace coffer::testing {

Cofferd* MfaDaemonTest::daemon_ = nullptr;
TotpCodes MfaDaemonTest::codes_;
bool MfaDaemonTest::bootstrapped_ = false;

void MfaDaemonTest::StartDaemon(CofferdOptions options) {
  if (geteuid() != 0) return;
  options.mfa = true;
  daemon_ = Cofferd::Create(std::move(options)).release();
  codes_ = TotpCodes(daemon_);
}

void MfaDaemonTest::TearDownTestSuite() {
  delete daemon_;
  daemon_ = nullptr;
  codes_ = TotpCodes();
  bootstrapped_ = false;
}

void MfaDaemonTest::SetUp() {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run keyctl (and clients) as other uids";
  ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
  if (!bootstrapped_) {
    ASSERT_NO_FATAL_FAILURE(Bootstrap());
    bootstrapped_ = true;
  }
}

void MfaDaemonTest::Bootstrap() {
  ASSERT_NO_FATAL_FAILURE(Claim(kA));
  KeyctlResult invite = Run(kA, "--totp " + Code(kA) + " admin enroll --uid 65534");
  ASSERT_EQ(invite.exit_code, 0) << invite.err << invite.out;  // bootstrap: no approval
  ASSERT_NO_FATAL_FAILURE(Claim(kB));
}

KeyctlResult MfaDaemonTest::Run(uid_t uid, const std::string& args,
                                const std::string* terminal_input) {
  return KeyctlAs(uid, daemon_->keyctl(), daemon_->admin_socket(), args, terminal_input);
}

void MfaDaemonTest::Claim(uid_t uid) {
  KeyctlResult r = Run(uid, "--json admin enroll");
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  const std::string uri = r.JsonOrEmpty().value("otpauth_uri", "");
  ASSERT_EQ(uri.rfind("otpauth://", 0), 0u) << r.out;
  const std::string secret = SecretOf(uri);
  ASSERT_FALSE(secret.empty()) << "no secret in the URI";
  codes_.SetSecret(uid, secret);
  KeyctlResult human = Run(uid, "admin list");
  ASSERT_EQ(human.exit_code, 0) << human.err;
}

uint64_t MfaDaemonTest::FilePending(uid_t uid, const std::string& args) {
  KeyctlResult r = Run(uid, "--json --totp " + Code(uid) + " " + args);
  EXPECT_EQ(r.exit_code, 5) << args << ": " << r.err << r.out;
  nlohmann::json pending = r.JsonOrEmpty();
  if (!pending.contains("pending")) {
    ADD_FAILURE() << args << ": no pending document: " << r.out;
    return 0;
  }
  EXPECT_EQ(pending["pending"].value("state", ""), "APPROVAL_STATE_PENDING") << r.out;
  KeyctlResult human_list = Run(uid, "request list");
  EXPECT_NE(human_list.out.find(std::to_string(pending["pending"].value("id", 0))),
            std::string::npos)
      << human_list.out;
  return pending["pending"].value("id", uint64_t{0});
}

KeyctlResult MfaDaemonTest::Decide(uid_t uid, const std::string& verb, uint64_t id) {
  return Run(uid, "--json --totp " + Code(uid) + " request " + verb + " " + std::to_string(id));
}

}  // namespace coffer::testing
