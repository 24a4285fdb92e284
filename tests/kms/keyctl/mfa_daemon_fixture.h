// MfaDaemonTest: the fixture of the keyctl suites that run against one test-cofferd with MFA and
// dual control on (keyctl_dual_control_test, keyctl_grants_test, keyctl_mfa_session_test,
// keyctl_trust_boundary_test). The suite's daemon starts once (StartDaemon, from the suite's
// SetUpTestSuite) and stops after its last test. Before the first test, admin A (root) claims
// its enrolment and invites B (nobody), who claims it: the bootstrap, which needs no approval; a
// suite adds its own steps by overriding Bootstrap. Admins run keyctl as their own uids
// (KeyctlAs); their TOTP codes come from the enrolment URIs at the daemon's clock, which advances
// a step per fresh code.
//
// Needs root (to run keyctl as other uids): without it every test is skipped and no daemon
// starts. Thread safety: none; one test thread. The daemon, the codes and the bootstrap are
// static: the tests of a suite run in order on one daemon; suites run one after another.

#ifndef COFFER_TESTS_KMS_KEYCTL_MFA_DAEMON_FIXTURE_H_
#define COFFER_TESTS_KMS_KEYCTL_MFA_DAEMON_FIXTURE_H_

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "gtest/gtest.h"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer::testing {

class MfaDaemonTest : public ::testing::Test {
 protected:
  // The admins, as the suites name them.
  static constexpr uid_t kA = kAdminA;
  static constexpr uid_t kB = kAdminB;
  static constexpr uid_t kC = kAdminC;

  // Starts the suite's daemon from `options` with MFA on; does nothing unless run as root. A
  // daemon that fails to start leaves daemon_ null, which fails every test in SetUp.
  static void StartDaemon(CofferdOptions options);
  // Stops the daemon and forgets the bootstrap.
  static void TearDownTestSuite();
  // Skips without root; bootstraps the admins before the suite's first test (again after a
  // bootstrap that failed).
  void SetUp() override;

  // Claims kAdminA's enrolment, invites kAdminB (no approval: the bootstrap) and claims it. A
  // suite that needs more before its first test overrides this and calls it first.
  virtual void Bootstrap();

  // Runs keyctl as `uid` against the admin socket (on a terminal fed `terminal_input`, if given:
  // KeyctlAs).
  static KeyctlResult Run(uid_t uid, const std::string& args,
                          const std::string* terminal_input = nullptr);
  // A fresh code of `uid` (TotpCodes::Next advances the daemon's clock to a new step).
  static std::string Code(uid_t uid) { return codes_.Next(uid); }
  // Claims `uid`'s enrolment (its invitation must be in force) and keeps its secret.
  static void Claim(uid_t uid);
  // `uid` runs `args` with a fresh code: it must be filed for approval, pending, and listed by
  // `request list`. Returns the request id (0, with a failure, when nothing was filed).
  static uint64_t FilePending(uid_t uid, const std::string& args);
  // `uid` runs `request VERB ID` (approve, deny) with a fresh code.
  static KeyctlResult Decide(uid_t uid, const std::string& verb, uint64_t id);
  static KeyctlResult Approve(uid_t uid, uint64_t id) { return Decide(uid, "approve", id); }

  static Cofferd* daemon_;
  static TotpCodes codes_;

 private:
  static bool bootstrapped_;
};

}  // namespace coffer::testing

#endif  // COFFER_TESTS_KMS_KEYCTL_MFA_DAEMON_FIXTURE_H_
