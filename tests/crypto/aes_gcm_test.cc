#include "crypto/internal/aes_gcm.h"

#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "tests/crypto/test_keys.h"
#include "tests/crypto/wycheproof_cases.h"

namespace coffer::crypto::internal {
namespace {

using ::coffer::testing::LoadWycheproofCases;
using ::coffer::testing::MutableSpanOf;
using ::coffer::testing::SecretFrom;
using ::coffer::testing::SpanOf;
using ::coffer::testing::TestKey;
using ::coffer::testing::WycheproofCase;

constexpr char kGcmFile[] = "aes_gcm_test.json";
constexpr int kExpectedGcmCases = 316;
// Cases with a 256-bit key, 96-bit IV and 128-bit tag, the only parameters coffer uses.
constexpr size_t kExpectedApplicableCases = 66;
constexpr size_t kExpectedApplicableInvalid = 27;

bool Applicable(const WycheproofCase& vector) {
  return vector.group.at("keySize") == 256 && vector.group.at("ivSize") == 96 &&
         vector.group.at("tagSize") == 128;
}

std::vector<WycheproofCase> ApplicableCases() {
  std::vector<WycheproofCase> cases;
  for (WycheproofCase& vector : LoadWycheproofCases(kGcmFile)) {
    if (Applicable(vector)) cases.push_back(std::move(vector));
  }
  return cases;
}

TEST(AesGcm256WycheproofTest, EveryApplicableVectorIsRun) {
  EXPECT_EQ(coffer::testing::DeclaredWycheproofCount(kGcmFile), kExpectedGcmCases);
  auto cases = ApplicableCases();
  EXPECT_EQ(cases.size(), kExpectedApplicableCases);
  size_t invalid = 0;
  for (const WycheproofCase& vector : cases) invalid += vector.valid() ? 0 : 1;
  EXPECT_EQ(invalid, kExpectedApplicableInvalid);
}

class AesGcm256WycheproofTest : public ::testing::TestWithParam<WycheproofCase> {};

TEST_P(AesGcm256WycheproofTest, MatchesVector) {
  const WycheproofCase& vector = GetParam();
  auto gcm = AesGcm256::Create(SecretFrom(vector.Bytes("key")));
  ASSERT_TRUE(gcm.ok()) << gcm.status();
  std::string iv = vector.Bytes("iv");
  std::string aad = vector.Bytes("aad");
  std::string message = vector.Bytes("msg");
  std::string sealed = vector.Bytes("ct") + vector.Bytes("tag");

  std::string opened(sealed.size() - kAesGcmTagSize, '\x55');
  absl::Status status = gcm->Open(SpanOf(iv), sealed, "", aad, MutableSpanOf(opened));
  if (vector.valid()) {
    ASSERT_TRUE(status.ok()) << status;
    EXPECT_EQ(opened, message);
    // Sealing under the same nonce must reproduce the vector byte for byte.
    std::string resealed(message.size() + kAesGcmTagSize, '\0');
    ASSERT_TRUE(gcm->Seal(SpanOf(iv), message, "", aad, MutableSpanOf(resealed)).ok());
    EXPECT_EQ(resealed, sealed);
    // Splitting the associated data between prefix and suffix changes nothing.
    std::string split_opened(opened.size(), '\0');
    EXPECT_TRUE(gcm->Open(SpanOf(iv), sealed, std::string_view(aad).substr(0, aad.size() / 2),
                          std::string_view(aad).substr(aad.size() / 2), MutableSpanOf(split_opened))
                    .ok());
  } else {
    EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kCiphertextCorrupt) << status;
    EXPECT_EQ(opened, std::string(opened.size(), '\0')) << "unauthenticated output left behind";
  }
}

INSTANTIATE_TEST_SUITE_P(Wycheproof, AesGcm256WycheproofTest,
                         ::testing::ValuesIn(ApplicableCases()),
                         coffer::testing::WycheproofCaseName());

TEST(AesGcm256Test, RejectsKeysOtherThan256Bits) {
  for (size_t size : {0, 16, 24, 31, 33, 64}) {
    auto gcm = AesGcm256::Create(SecretFrom(std::string(size, 'k')));
    EXPECT_EQ(ErrorCodeOf(gcm.status()), ErrorCode::kInvalidArgument) << size;
  }
}

TEST(AesGcm256Test, RejectsWrongNonceAndOutputSizes) {
  auto gcm = AesGcm256::Create(TestKey('k'));
  ASSERT_TRUE(gcm.ok());
  std::string out(5 + kAesGcmTagSize, '\0');
  std::string short_nonce(11, 'n');
  std::string nonce(12, 'n');
  EXPECT_EQ(ErrorCodeOf(gcm->Seal(SpanOf(short_nonce), "hello", "", "", MutableSpanOf(out))),
            ErrorCode::kInvalidArgument);
  std::string wrong_out(5, '\0');
  EXPECT_EQ(ErrorCodeOf(gcm->Seal(SpanOf(nonce), "hello", "", "", MutableSpanOf(wrong_out))),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(gcm->Open(SpanOf(nonce), "short", "", "", {})),
            ErrorCode::kCiphertextCorrupt);
}

TEST(AesGcm256Test, ConcurrentCallsOnOneInstanceAgree) {
  auto gcm = AesGcm256::Create(TestKey('k'));
  ASSERT_TRUE(gcm.ok());
  std::string nonce(12, 'n');
  std::string message(4096, 'm');
  std::string expected(message.size() + kAesGcmTagSize, '\0');
  ASSERT_TRUE(gcm->Seal(SpanOf(nonce), message, "", "ad", MutableSpanOf(expected)).ok());
  std::vector<std::thread> threads;
  threads.reserve(4);
  std::vector<int> mismatches(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        std::string sealed(expected.size(), '\0');
        std::string opened(message.size(), '\0');
        bool ok = gcm->Seal(SpanOf(nonce), message, "", "ad", MutableSpanOf(sealed)).ok() &&
                  gcm->Open(SpanOf(nonce), sealed, "", "ad", MutableSpanOf(opened)).ok();
        if (!ok || sealed != expected || opened != message) ++mismatches[t];
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace coffer::crypto::internal
