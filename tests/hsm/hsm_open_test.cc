// Opening the HSM: each configuration mistake gives its own error code and a message that says
// what to fix (and never the PIN); a reopened client finds its keys again through the one
// start-up enumeration.

#include <dlfcn.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <fstream>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "gtest/gtest.h"
#include "hsm/hsm_client.h"
#include "tests/hsm/softhsm_token.h"

namespace coffer::hsm {
namespace {

using ::coffer::hsm::testing::SoftHsmToken;

class HsmOpenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<SoftHsmToken>> token = SoftHsmToken::Create("open-test");
    ASSERT_TRUE(token.ok()) << token.status();
    token_ = *std::move(token);
  }
  static void TearDownTestSuite() { token_.reset(); }

  std::string WriteFile(const std::string& name, const std::string& content, mode_t mode) {
    std::string path = token_->dir() + "/" + name;
    {
      std::ofstream out(path, std::ios::trunc);
      out << content;
    }
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }

  static inline std::unique_ptr<SoftHsmToken> token_;
};

TEST_F(HsmOpenTest, MissingModule) {
  HsmOptions options = token_->Options();
  options.module_path = "/nonexistent/libpkcs11.so";
  absl::Status status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmModuleNotFound) << status;
  EXPECT_NE(status.message().find("/nonexistent/libpkcs11.so"), std::string::npos);
}

TEST_F(HsmOpenTest, NotAPkcs11Module) {
  HsmOptions options = token_->Options();
  options.module_path = WriteFile("not-a-library.so", "hello", 0644);
  absl::Status status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmNotPkcs11Module) << status;

  // A real shared library without C_GetFunctionList: libcrypto itself.
  Dl_info info;
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&EVP_sha256), &info), 0);
  options.module_path = info.dli_fname;
  status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmNotPkcs11Module) << status;
  EXPECT_NE(status.message().find("C_GetFunctionList"), std::string::npos) << status;
}

TEST_F(HsmOpenTest, TokenLabelNotFound) {
  HsmOptions options = token_->Options();
  options.token_label = "no-such-token";
  absl::Status status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmTokenNotFound) << status;
  EXPECT_NE(status.message().find("'open-test'"), std::string::npos) << "lists present tokens";
}

TEST_F(HsmOpenTest, WrongPinIsReportedWithoutThePin) {
  const std::string wrong_pin = "wrong-pin-0000";
  HsmOptions options = token_->Options();
  options.pin = PinSource::FromFile(WriteFile("wrong.pin", wrong_pin + "\n", 0600));
  absl::Status status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmWrongPin) << status;
  EXPECT_NE(status.message().find("CKR_PIN_INCORRECT"), std::string::npos) << status;
  EXPECT_EQ(status.message().find(wrong_pin), std::string::npos) << "the PIN leaked";
}

TEST_F(HsmOpenTest, PinFileReadableByOthersIsRefused) {
  HsmOptions options = token_->Options();
  std::ifstream in(token_->pin_file());
  std::string pin;
  std::getline(in, pin);
  std::string path = WriteFile("open.pin", pin, 0644);
  options.pin = PinSource::FromFile(path);
  absl::Status status = HsmClient::Open(options).status();
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmPinUnavailable) << status;
  EXPECT_NE(status.message().find("chmod 600 " + path), std::string::npos) << status;
  EXPECT_EQ(status.message().find(pin), std::string::npos) << "the PIN leaked";
}

TEST_F(HsmOpenTest, PinFromEnvironmentVariable) {
  std::ifstream in(token_->pin_file());
  std::string pin;
  std::getline(in, pin);
  ASSERT_EQ(::setenv("COFFER_TEST_HSM_PIN", pin.c_str(), 1), 0);
  HsmOptions options = token_->Options();
  options.pin = PinSource::FromEnvironment("COFFER_TEST_HSM_PIN");
  absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(options);
  ::unsetenv("COFFER_TEST_HSM_PIN");
  ASSERT_TRUE(client.ok()) << client.status();
  EXPECT_TRUE((*client)->Close().ok());

  options.pin = PinSource::FromEnvironment("COFFER_TEST_HSM_PIN_UNSET");
  EXPECT_EQ(ErrorCodeOf(HsmClient::Open(options).status()), ErrorCode::kHsmPinUnavailable);
}

TEST_F(HsmOpenTest, ReopenedClientFindsItsKeysThroughOneEnumeration) {
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  WrappedKey wrapped;
  std::string public_key;
  {
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
    ASSERT_TRUE(client.ok()) << client.status();
    for (uint32_t version = 1; version <= 3; ++version) {
      ASSERT_TRUE((*client)->wrapping_keys().CreateWrappingKey({77, version}).ok());
    }
    absl::StatusOr<WrappedKey> w = (*client)->wrapping_keys().Wrap({77, 2}, dek);
    ASSERT_TRUE(w.ok());
    wrapped = *w;
    ASSERT_TRUE((*client)->wrapping_keys().DestroyWrappingKey({77, 3}).ok());
    absl::StatusOr<std::string> pem = (*client)->signer().PublicKeyPem();
    ASSERT_TRUE(pem.ok());
    public_key = *pem;
    ASSERT_TRUE((*client)->Close().ok());  // C_Finalize
  }
  absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::vector<WrappingKeyId>> ids = (*client)->wrapping_keys().ListWrappingKeys();
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, (std::vector<WrappingKeyId>{{77, 1}, {77, 2}}));
  absl::StatusOr<crypto::SecretBytes> unwrapped = (*client)->wrapping_keys().Unwrap(wrapped);
  ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
  EXPECT_TRUE(crypto::SecretEquals(*unwrapped, dek));
  absl::StatusOr<std::string> pem = (*client)->signer().PublicKeyPem();
  ASSERT_TRUE(pem.ok());
  EXPECT_EQ(*pem, public_key) << "the service key is found again, not recreated";
  EXPECT_EQ(ErrorCodeOf((*client)->wrapping_keys().CreateWrappingKey({77, 1})),
            ErrorCode::kAlreadyExists);
  ASSERT_TRUE((*client)->Close().ok());
  EXPECT_EQ(ErrorCodeOf((*client)->wrapping_keys().Unwrap(wrapped).status()),
            ErrorCode::kFailedPrecondition);
}

// Every role builds its handles from the one enumeration: a reopened client finds the row HMAC
// key and an admin's TOTP secret again (same tags, no second key), as well as the DWKs above.
TEST_F(HsmOpenTest, ReopenedClientFindsItsServiceKeysAgain) {
  const uint64_t admin = 41;
  crypto::SecretBytes secret = *crypto::RandomSecret(20);
  std::array<uint8_t, 32> row_tag{};
  std::array<uint8_t, 20> totp_tag{};
  {
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->totp_secrets().ImportTotpSecret(admin, secret).ok());
    absl::StatusOr<std::array<uint8_t, 20>> totp = (*client)->totp_secrets().TotpHmac(admin, 9);
    absl::StatusOr<std::array<uint8_t, 32>> row = (*client)->row_authenticator().HmacRowKey("r");
    ASSERT_TRUE(totp.ok() && row.ok());
    totp_tag = *totp;
    row_tag = *row;
    ASSERT_TRUE((*client)->Close().ok());
  }
  absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
  ASSERT_TRUE(client.ok()) << client.status();
  absl::StatusOr<std::array<uint8_t, 20>> totp = (*client)->totp_secrets().TotpHmac(admin, 9);
  ASSERT_TRUE(totp.ok()) << totp.status();
  EXPECT_EQ(*totp, totp_tag);
  EXPECT_EQ(ErrorCodeOf((*client)->totp_secrets().ImportTotpSecret(admin, secret)),
            ErrorCode::kAlreadyExists);
  absl::StatusOr<std::array<uint8_t, 32>> row = (*client)->row_authenticator().HmacRowKey("r");
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(*row, row_tag) << "the row key is found again, not recreated";
  ASSERT_TRUE((*client)->totp_secrets().DestroyTotpSecret(admin).ok());
  ASSERT_TRUE((*client)->Close().ok());
}

// A Token runs nothing before Connect() and connects once; the roles then share its login.
TEST_F(HsmOpenTest, TokenRunsNothingBeforeConnectAndConnectsOnce) {
  {
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(token_->Options());
    ASSERT_TRUE(client.ok()) << client.status();
    absl::Status created = (*client)->wrapping_keys().CreateWrappingKey({88, 1});
    ASSERT_TRUE(created.ok() || ErrorCodeOf(created) == ErrorCode::kAlreadyExists) << created;
    ASSERT_TRUE((*client)->Close().ok());
  }
  absl::StatusOr<std::unique_ptr<Token>> token = Token::Load(token_->Options());
  ASSERT_TRUE(token.ok()) << token.status();
  bool ran = false;
  absl::Status early = (*token)->Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE) {
    ran = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(ErrorCodeOf(early), ErrorCode::kFailedPrecondition) << early;
  EXPECT_FALSE(ran);

  DatasetWrappingKeys keys(**token);
  ASSERT_TRUE((*token)->Connect({&keys}).ok());
  EXPECT_EQ(ErrorCodeOf((*token)->Connect({&keys})), ErrorCode::kFailedPrecondition);
  absl::StatusOr<std::vector<WrappingKeyId>> ids = keys.ListWrappingKeys();
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_NE(std::find(ids->begin(), ids->end(), WrappingKeyId{88, 1}), ids->end())
      << "Connect() hands the enumeration to the index it was given";
  ASSERT_TRUE((*token)->Close().ok());
  EXPECT_EQ(ErrorCodeOf(keys.ListWrappingKeys().status()), ErrorCode::kFailedPrecondition);
}

}  // namespace
}  // namespace coffer::hsm
