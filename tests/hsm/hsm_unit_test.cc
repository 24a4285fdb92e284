// hsm/ pieces that need no token: the wrapped-key blob, CK_RV mapping, labels and IDs, HOTP
// truncation, PIN sources.

#include <openssl/hmac.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/labels.h"
#include "hsm/key_wrapper.h"
#include "hsm/otp.h"
#include "hsm/pin.h"

namespace coffer::hsm {
namespace {

WrappedKey SampleBlob() {
  WrappedKey key;
  key.key = {0x0102030405060708ull, 0x0a0b0c0d};
  key.wrapped = std::string(40, '\x5a');
  return key;
}

TEST(WrappedKeyTest, LayoutIsAsDocumented) {
  std::string blob = SampleBlob().Serialize();
  ASSERT_EQ(blob.size(), WrappedKey::kHeaderBytes + 40);
  const std::string header(
      "\x01\x00\x00\x21\x09\x01\x02\x03\x04\x05\x06\x07\x08\x0a\x0b\x0c\x0d"
      "\x00\x28",
      19);
  EXPECT_EQ(blob.substr(0, 19), header);
  absl::StatusOr<WrappedKey> parsed = WrappedKey::Parse(blob);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, SampleBlob());
}

TEST(WrappedKeyTest, EveryTruncationAndExtensionIsRejected) {
  std::string blob = SampleBlob().Serialize();
  for (size_t len = 0; len < blob.size(); ++len) {
    EXPECT_FALSE(WrappedKey::Parse(blob.substr(0, len)).ok()) << len;
  }
  EXPECT_FALSE(WrappedKey::Parse(blob + "x").ok());
}

TEST(WrappedKeyTest, UnknownFormatOrMechanismIsUnsupported) {
  std::string blob = SampleBlob().Serialize();
  std::string format = blob;
  format[0] = 2;
  EXPECT_EQ(ErrorCodeOf(WrappedKey::Parse(format).status()), ErrorCode::kUnsupportedFormat);
  WrappedKey pad = SampleBlob();
  pad.mechanism = 0x210A;
  EXPECT_EQ(ErrorCodeOf(WrappedKey::Parse(pad.Serialize()).status()),
            ErrorCode::kUnsupportedFormat);
}

TEST(WrappedKeyTest, WrappedLengthMustBeRfc3394Shaped) {
  for (size_t len : {0, 8, 16, 25, 39}) {
    WrappedKey key = SampleBlob();
    key.wrapped.resize(len);
    EXPECT_EQ(ErrorCodeOf(WrappedKey::Parse(key.Serialize()).status()), ErrorCode::kInvalidArgument)
        << len;
  }
}

TEST(CkErrorTest, EachFailureHasItsOwnCodeAndNamesTheCkr) {
  using internal::CkError;
  struct Case {
    CK_RV rv;
    ErrorCode code;
  } cases[] = {
      {CKR_PIN_INCORRECT, ErrorCode::kHsmWrongPin},
      {CKR_PIN_LOCKED, ErrorCode::kHsmPinLocked},
      {CKR_MECHANISM_INVALID, ErrorCode::kHsmMechanismUnsupported},
      {CKR_MECHANISM_PARAM_INVALID, ErrorCode::kHsmMechanismUnsupported},
      {CKR_WRAPPED_KEY_INVALID, ErrorCode::kWrappedKeyCorrupt},
      {CKR_ENCRYPTED_DATA_INVALID, ErrorCode::kWrappedKeyCorrupt},
      {CKR_KEY_HANDLE_INVALID, ErrorCode::kHsmKeyNotFound},
      {CKR_DEVICE_ERROR, ErrorCode::kHsmDeviceError},
      {CKR_DEVICE_REMOVED, ErrorCode::kHsmDeviceError},
      {CKR_GENERAL_ERROR, ErrorCode::kHsmDeviceError},
      {CKR_SESSION_HANDLE_INVALID, ErrorCode::kHsmSessionError},
      {CKR_USER_NOT_LOGGED_IN, ErrorCode::kHsmSessionError},
      {CKR_TOKEN_NOT_PRESENT, ErrorCode::kHsmTokenNotFound},
      {CKR_ATTRIBUTE_SENSITIVE, ErrorCode::kPermissionDenied},
  };
  for (const Case& c : cases) {
    absl::Status status = CkError("C_Test", c.rv, "context");
    EXPECT_EQ(ErrorCodeOf(status), c.code) << internal::CkrName(c.rv);
    EXPECT_NE(status.message().find(internal::CkrName(c.rv)), std::string::npos) << status;
    EXPECT_NE(status.message().find("C_Test failed"), std::string::npos) << status;
  }
  EXPECT_EQ(internal::CkrName(0x8000ABCDul), "CKR_0x8000ABCD");
  EXPECT_TRUE(internal::IsConnectionLoss(CKR_SESSION_CLOSED));
  EXPECT_TRUE(internal::IsConnectionLoss(CKR_DEVICE_ERROR));
  EXPECT_FALSE(internal::IsConnectionLoss(CKR_GENERAL_ERROR));
  EXPECT_FALSE(internal::IsConnectionLoss(CKR_PIN_INCORRECT));
}

TEST(LabelsTest, IdsRoundTripAndForeignIdsAreIgnored) {
  using internal::ObjectKind;
  internal::ObjectId id{ObjectKind::kDatasetWrappingKey, 0xfedcba9876543210ull, 0x89abcdef};
  std::string encoded = internal::EncodeObjectId(id);
  ASSERT_EQ(encoded.size(), internal::kObjectIdBytes);
  std::optional<internal::ObjectId> decoded = internal::DecodeObjectId(encoded);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->kind, ObjectKind::kDatasetWrappingKey);
  EXPECT_EQ(decoded->a, id.a);
  EXPECT_EQ(decoded->b, id.b);
  EXPECT_EQ(internal::ObjectLabel({ObjectKind::kDatasetWrappingKey, 12, 3}), "coffer/dwk/12/3");
  EXPECT_EQ(internal::ObjectLabel({ObjectKind::kTotpSecret, 5}), "coffer/totp/5");
  EXPECT_FALSE(internal::DecodeObjectId("").has_value());
  EXPECT_FALSE(internal::DecodeObjectId(encoded.substr(0, 15)).has_value());
  std::string other_kind = encoded;
  other_kind[3] = 'Z';
  EXPECT_FALSE(internal::DecodeObjectId(other_kind).has_value());
  std::string other_app = encoded;
  other_app[0] = 'x';
  EXPECT_FALSE(internal::DecodeObjectId(other_app).has_value());
}

// RFC 4226 Appendix D: secret "12345678901234567890", counters 0..9.
TEST(OtpTest, HotpTruncationMatchesRfc4226AppendixD) {
  const char* expected[] = {"755224", "287082", "359152", "969429", "338314",
                            "254676", "287922", "162583", "399871", "520489"};
  const std::string secret = "12345678901234567890";
  for (uint64_t counter = 0; counter < 10; ++counter) {
    unsigned char message[8];
    for (int i = 0; i < 8; ++i) message[i] = static_cast<unsigned char>(counter >> (56 - 8 * i));
    std::array<uint8_t, 20> mac{};
    unsigned int len = 0;
    ASSERT_NE(HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), message, 8,
                   mac.data(), &len),
              nullptr);
    absl::StatusOr<std::string> code = HotpTruncate(mac, 6);
    ASSERT_TRUE(code.ok());
    EXPECT_EQ(*code, expected[counter]) << counter;
  }
  std::array<uint8_t, 20> zero{};
  EXPECT_EQ(*HotpTruncate(zero, 8), "00000000");
  EXPECT_FALSE(HotpTruncate(zero, 5).ok());
  EXPECT_FALSE(HotpTruncate(zero, 10).ok());
  EXPECT_EQ(*TotpCounter(59), 1u);
  EXPECT_EQ(*TotpCounter(1111111109), 37037036u);
  EXPECT_FALSE(TotpCounter(10, 0).ok());
  EXPECT_FALSE(TotpCounter(10, 30, 20).ok());
}

class PinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("coffer-pin-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& content, mode_t mode) {
    std::string path = (dir_ / name).string();
    std::ofstream(path) << content;
    ::chmod(path.c_str(), mode);
    return path;
  }
  static std::string Text(const crypto::SecretBytes& secret) {
    return {reinterpret_cast<const char*>(secret.data()), secret.size()};
  }
  std::filesystem::path dir_;
};

TEST_F(PinTest, FileWithOwnerOnlyModeIsReadAndNewlineStripped) {
  absl::StatusOr<crypto::SecretBytes> pin =
      PinSource::FromFile(Write("a.pin", "1234\n", 0600)).ReadPin();
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(Text(*pin), "1234");
  pin = PinSource::FromFile(Write("b.pin", "abcd\r\n", 0400)).ReadPin();
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(Text(*pin), "abcd");
}

TEST_F(PinTest, OpenMissingOrEmptyFilesAreRefused) {
  for (mode_t mode : {0640, 0604, 0644, 0660}) {
    std::string path = Write("open.pin", "secret-pin", mode);
    absl::Status status = PinSource::FromFile(path).ReadPin().status();
    EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kHsmPinUnavailable) << mode;
    EXPECT_NE(status.message().find("chmod 600"), std::string::npos);
    EXPECT_EQ(status.message().find("secret-pin"), std::string::npos);
  }
  EXPECT_EQ(ErrorCodeOf(PinSource::FromFile((dir_ / "missing").string()).ReadPin().status()),
            ErrorCode::kHsmPinUnavailable);
  EXPECT_EQ(ErrorCodeOf(PinSource::FromFile(Write("empty.pin", "", 0600)).ReadPin().status()),
            ErrorCode::kHsmPinUnavailable);
  EXPECT_EQ(ErrorCodeOf(PinSource::FromFile(Write("nl.pin", "\n", 0600)).ReadPin().status()),
            ErrorCode::kHsmPinUnavailable);
  EXPECT_EQ(ErrorCodeOf(PinSource().ReadPin().status()), ErrorCode::kHsmPinUnavailable);
}

TEST_F(PinTest, EnvironmentVariable) {
  ASSERT_EQ(::setenv("COFFER_PIN_TEST", "9876", 1), 0);
  absl::StatusOr<crypto::SecretBytes> pin = PinSource::FromEnvironment("COFFER_PIN_TEST").ReadPin();
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(Text(*pin), "9876");
  ::unsetenv("COFFER_PIN_TEST");
  EXPECT_EQ(ErrorCodeOf(PinSource::FromEnvironment("COFFER_PIN_TEST").ReadPin().status()),
            ErrorCode::kHsmPinUnavailable);
}

}  // namespace
}  // namespace coffer::hsm
