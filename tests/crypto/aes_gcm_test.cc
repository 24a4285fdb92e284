#include "crypto/internal/aes_gcm.h"

#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/pooled_contexts.h"
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

// Pooled contexts under concurrency, against the vectors: four threads run every applicable
// Wycheproof case on instances they share (one per case, so threads meet on them), and before
// each vector call the same instance seals a decoy (another nonce, other associated data,
// another length) and fails to open a tampered one. So the context a vector call takes was
// last used for something else, by another call or another thread, in either direction:
// nonce, direction, associated data, lengths and the tag must all be set anew.
TEST(AesGcm256Test, SharedInstancesMatchEveryVectorUnderConcurrency) {
  const std::vector<WycheproofCase> cases = ApplicableCases();
  ASSERT_EQ(cases.size(), kExpectedApplicableCases);
  std::vector<AesGcm256> instances;
  for (const WycheproofCase& vector : cases) {
    auto gcm = AesGcm256::Create(SecretFrom(vector.Bytes("key")));
    ASSERT_TRUE(gcm.ok()) << gcm.status();
    instances.push_back(*std::move(gcm));
  }
  constexpr int kThreads = 4;
  constexpr int kRounds = 10;
  std::vector<std::vector<int>> wrong(kThreads);  // tcIds that came out wrong, per thread
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < kRounds; ++round) {
        for (size_t i = 0; i < cases.size(); ++i) {
          const WycheproofCase& vector = cases[i];
          const AesGcm256& gcm = instances[i];
          std::string decoy_nonce(12, static_cast<char>(t * kRounds + round));
          std::string decoy_ad(i % 41, 'd');
          std::string decoy(37 + i, static_cast<char>('a' + t));
          std::string decoy_sealed(decoy.size() + kAesGcmTagSize, '\0');
          std::string decoy_opened(decoy.size(), '\0');
          bool ok =
              gcm.Seal(SpanOf(decoy_nonce), decoy, "p", decoy_ad, MutableSpanOf(decoy_sealed)).ok();
          decoy_sealed[0] = static_cast<char>(decoy_sealed[0] ^ 1);
          ok = ok &&
               ErrorCodeOf(gcm.Open(SpanOf(decoy_nonce), decoy_sealed, "p", decoy_ad,
                                    MutableSpanOf(decoy_opened))) == ErrorCode::kCiphertextCorrupt;

          std::string iv = vector.Bytes("iv");
          std::string aad = vector.Bytes("aad");
          std::string message = vector.Bytes("msg");
          std::string sealed = vector.Bytes("ct") + vector.Bytes("tag");
          std::string opened(sealed.size() - kAesGcmTagSize, '\x55');
          absl::Status status = gcm.Open(SpanOf(iv), sealed, "", aad, MutableSpanOf(opened));
          if (vector.valid()) {
            std::string resealed(message.size() + kAesGcmTagSize, '\0');
            ok = ok && status.ok() && opened == message &&
                 gcm.Seal(SpanOf(iv), message, "", aad, MutableSpanOf(resealed)).ok() &&
                 resealed == sealed;
          } else {
            ok = ok && ErrorCodeOf(status) == ErrorCode::kCiphertextCorrupt &&
                 opened == std::string(opened.size(), '\0');
          }
          if (!ok) wrong[t].push_back(vector.id());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], std::vector<int>{}) << "thread " << t;
}

// A call that fails inside OpenSSL — here an open whose tag does not verify — frees its context
// instead of pooling it; the next call makes a fresh one from the template.
TEST(AesGcm256Test, AFailedCallDiscardsItsContext) {
  const int64_t before = PooledKeyedContexts();
  auto gcm = AesGcm256::Create(TestKey('k'));
  ASSERT_TRUE(gcm.ok());
  std::string nonce(12, 'n');
  std::string sealed(5 + kAesGcmTagSize, '\0');
  ASSERT_TRUE(gcm->Seal(SpanOf(nonce), "hello", "", "ad", MutableSpanOf(sealed)).ok());
  ASSERT_EQ(PooledKeyedContexts(), before + 1);
  std::string opened(5, '\0');
  EXPECT_EQ(ErrorCodeOf(gcm->Open(SpanOf(nonce), sealed, "", "other ad", MutableSpanOf(opened))),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(PooledKeyedContexts(), before) << "the failed open's context was kept";
  ASSERT_TRUE(gcm->Open(SpanOf(nonce), sealed, "", "ad", MutableSpanOf(opened)).ok());
  EXPECT_EQ(opened, "hello");
  EXPECT_EQ(PooledKeyedContexts(), before + 1);
}

// The pooled contexts belong to the instance: they are freed (and wiped) with it.
TEST(AesGcm256Test, PooledContextsAreFreedWithTheInstance) {
  const int64_t before = PooledKeyedContexts();
  {
    auto gcm = AesGcm256::Create(TestKey('k'));
    ASSERT_TRUE(gcm.ok());
    std::string nonce(12, 'n');
    std::string sealed(5 + kAesGcmTagSize, '\0');
    ASSERT_TRUE(gcm->Seal(SpanOf(nonce), "hello", "", "", MutableSpanOf(sealed)).ok());
    EXPECT_EQ(PooledKeyedContexts(), before + 1);
    std::string opened(5, '\0');
    ASSERT_TRUE(gcm->Open(SpanOf(nonce), sealed, "", "", MutableSpanOf(opened)).ok());
    EXPECT_EQ(PooledKeyedContexts(), before + 1) << "the open reuses the seal's context";
  }
  EXPECT_EQ(PooledKeyedContexts(), before);
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
