// Test harness: a throwaway SoftHSM2 token per suite, created by scripts/softhsm-token in a fresh
// mkdtemp() directory and removed afterwards.
//
// SoftHSM2 reads SOFTHSM2_CONF when the module is initialised (C_Initialize), and a PKCS#11
// module is initialised once per process, so a suite creates its token, points SOFTHSM2_CONF at
// it, opens its client, and closes the client (C_Finalize) before the next suite starts.
// Suites in one binary therefore run one after another (GoogleTest's default).
//
// SoftHsmSuite is a fixture base: SetUpTestSuite creates a token and opens an HsmClient on it
// (shared by the suite's tests); TearDownTestSuite closes the client and deletes the token.

#ifndef COFFER_TESTS_HSM_SOFTHSM_TOKEN_H_
#define COFFER_TESTS_HSM_SOFTHSM_TOKEN_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gtest/gtest.h"
#include "hsm/hsm_client.h"

namespace coffer::hsm::testing {

class SoftHsmToken {
 public:
  // Creates the token (label `label`) in a new temporary directory and sets SOFTHSM2_CONF.
  static absl::StatusOr<std::unique_ptr<SoftHsmToken>> Create(const std::string& label);
  SoftHsmToken(const SoftHsmToken&) = delete;
  SoftHsmToken& operator=(const SoftHsmToken&) = delete;
  // Deletes the directory (token objects included).
  ~SoftHsmToken();

  const std::string& dir() const { return dir_; }
  const std::string& label() const { return label_; }
  std::string pin_file() const { return dir_ + "/user.pin"; }
  std::string conf_file() const { return dir_ + "/softhsm2.conf"; }
  // Options for HsmClient::Open on this token (default module, PIN from the 0600 file).
  HsmOptions Options(size_t session_pool_size = 4) const;

 private:
  SoftHsmToken(std::string dir, std::string label)
      : dir_(std::move(dir)), label_(std::move(label)) {}

  std::string dir_;
  std::string label_;
};

class SoftHsmSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite();
  static void TearDownTestSuite();

  static inline std::unique_ptr<SoftHsmToken> token_;
  static inline std::unique_ptr<HsmClient> client_;
};

// A dataset handle no other test in this process has used.
uint64_t UniqueDatasetHandle();

}  // namespace coffer::hsm::testing

#endif  // COFFER_TESTS_HSM_SOFTHSM_TOKEN_H_
