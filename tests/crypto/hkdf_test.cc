#include "crypto/hkdf.h"

#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "tests/crypto/wycheproof_cases.h"
#include "tests/testing/vectors.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::HexToBytes;
using ::coffer::testing::LoadWycheproofCases;
using ::coffer::testing::WycheproofCase;

constexpr char kHkdfFile[] = "hkdf_sha256_test.json";
constexpr int kExpectedHkdfCases = 86;  // 83 valid, 3 invalid (output longer than 8160 bytes)

SecretBytes Secret(std::string_view bytes) {
  auto secret =
      SecretBytes::CopyFrom({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_TRUE(secret.ok()) << secret.status();
  return std::move(secret).value();
}

std::string Bytes(const SecretBytes& secret) {
  return {reinterpret_cast<const char*>(secret.data()), secret.size()};
}

TEST(HkdfSha256WycheproofTest, EveryVectorInTheFileIsRun) {
  EXPECT_EQ(coffer::testing::DeclaredWycheproofCount(kHkdfFile), kExpectedHkdfCases);
  auto cases = LoadWycheproofCases(kHkdfFile);
  EXPECT_EQ(cases.size(), static_cast<size_t>(kExpectedHkdfCases));
  size_t invalid = 0;
  for (const WycheproofCase& vector : cases) invalid += vector.valid() ? 0 : 1;
  EXPECT_EQ(invalid, 3u);  // the invalid cases must not silently disappear either
}

class HkdfSha256WycheproofTest : public ::testing::TestWithParam<WycheproofCase> {};

TEST_P(HkdfSha256WycheproofTest, MatchesVector) {
  const WycheproofCase& vector = GetParam();
  SecretBytes ikm = Secret(vector.Bytes("ikm"));
  std::string salt = vector.Bytes("salt");
  std::string info = vector.Bytes("info");
  size_t size = vector.test.at("size").get<size_t>();

  auto okm = HkdfSha256(ikm, salt, info, size);
  if (!vector.valid()) {
    EXPECT_EQ(ErrorCodeOf(okm.status()), ErrorCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(okm.ok()) << okm.status();
  EXPECT_EQ(Bytes(*okm), vector.Bytes("okm"));

  // The two-step form must agree with the one-shot form.
  auto prk = HkdfSha256Extract(ikm, salt);
  ASSERT_TRUE(prk.ok()) << prk.status();
  auto expanded = HkdfSha256Expand(*prk, info, size);
  ASSERT_TRUE(expanded.ok()) << expanded.status();
  EXPECT_EQ(Bytes(*expanded), vector.Bytes("okm"));
}

INSTANTIATE_TEST_SUITE_P(Wycheproof, HkdfSha256WycheproofTest,
                         ::testing::ValuesIn(LoadWycheproofCases(kHkdfFile)),
                         coffer::testing::WycheproofCaseName());

TEST(HkdfSha256Test, Rfc5869Case1ExtractAndExpand) {
  SecretBytes ikm = Secret(std::string(22, '\x0b'));
  auto prk = HkdfSha256Extract(ikm, HexToBytes("000102030405060708090a0b0c"));
  ASSERT_TRUE(prk.ok());
  EXPECT_EQ(Bytes(*prk),
            HexToBytes("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"));
  auto okm = HkdfSha256Expand(*prk, HexToBytes("f0f1f2f3f4f5f6f7f8f9"), 42);
  ASSERT_TRUE(okm.ok());
  EXPECT_EQ(Bytes(*okm), HexToBytes("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4"
                                    "c5bf34007208d5b887185865"));
}

TEST(HkdfSha256Test, RejectsBadLengthsAndEmptyKeys) {
  SecretBytes ikm = Secret(std::string(32, 'k'));
  EXPECT_EQ(ErrorCodeOf(HkdfSha256(ikm, "", "", 0).status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(HkdfSha256(ikm, "", "", kHkdfSha256MaxOutputSize + 1).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_TRUE(HkdfSha256(ikm, "", "", kHkdfSha256MaxOutputSize).ok());
  EXPECT_EQ(ErrorCodeOf(HkdfSha256(SecretBytes(), "salt", "info", 32).status()),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(HkdfSha256Expand(SecretBytes(), "info", 32).status()),
            ErrorCode::kInvalidArgument);
}

TEST(HkdfSha256Test, DistinctInfoGivesDistinctKeys) {
  SecretBytes ikm = Secret(std::string(32, 'k'));
  auto a = HkdfSha256(ikm, "salt", "purpose a", 32);
  auto b = HkdfSha256(ikm, "salt", "purpose b", 32);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_FALSE(SecretEquals(*a, *b));
}

}  // namespace
}  // namespace coffer::crypto
