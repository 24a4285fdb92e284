#include "crypto/hmac.h"

#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "crypto/pooled_contexts.h"
#include "gtest/gtest.h"
#include "tests/crypto/wycheproof_cases.h"
#include "tests/testing/vectors.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::HexToBytes;
using ::coffer::testing::LoadWycheproofCases;
using ::coffer::testing::WycheproofCase;

constexpr char kHmacFile[] = "hmac_sha256_test.json";
// hmac_sha256_test.json at the pinned snapshot (see ../shared/vectors/wycheproof/README.md).
constexpr int kExpectedHmacCases = 174;

SecretBytes Secret(std::string_view bytes) {
  auto secret =
      SecretBytes::CopyFrom({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  EXPECT_TRUE(secret.ok()) << secret.status();
  return std::move(secret).value();
}

std::string TagBytes(const HmacSha256Tag& tag) {
  return {reinterpret_cast<const char*>(tag.data()), tag.size()};
}

TEST(HmacSha256WycheproofTest, EveryVectorInTheFileIsRun) {
  // Every case applies (keys of 16, 32 and 65 bytes; full and 16-byte tags), so the
  // parameterised suite below runs exactly this many.
  EXPECT_EQ(coffer::testing::DeclaredWycheproofCount(kHmacFile), kExpectedHmacCases);
  EXPECT_EQ(LoadWycheproofCases(kHmacFile).size(), static_cast<size_t>(kExpectedHmacCases));
}

class HmacSha256WycheproofTest : public ::testing::TestWithParam<WycheproofCase> {};

TEST_P(HmacSha256WycheproofTest, MatchesVector) {
  const WycheproofCase& vector = GetParam();
  auto hmac = HmacSha256::Create(Secret(vector.Bytes("key")));
  ASSERT_TRUE(hmac.ok()) << hmac.status();
  std::string message = vector.Bytes("msg");
  std::string expected_tag = vector.Bytes("tag");
  size_t tag_bytes = vector.group.at("tagSize").get<size_t>() / 8;
  ASSERT_EQ(expected_tag.size(), tag_bytes);

  auto tag = hmac->Compute(message);
  ASSERT_TRUE(tag.ok()) << tag.status();
  // Truncated-tag vectors compare the leading bytes of the full tag.
  std::string computed_prefix = TagBytes(*tag).substr(0, tag_bytes);
  EXPECT_EQ(ConstantTimeEquals(computed_prefix, expected_tag), vector.valid());

  absl::Status verified = hmac->Verify(message, expected_tag);
  if (vector.valid() && tag_bytes == kHmacSha256TagSize) {
    EXPECT_TRUE(verified.ok()) << verified;
  } else {
    // Invalid tags, and truncated tags (which Verify refuses by design), must both fail.
    EXPECT_EQ(ErrorCodeOf(verified), ErrorCode::kCiphertextCorrupt);
  }
}

INSTANTIATE_TEST_SUITE_P(Wycheproof, HmacSha256WycheproofTest,
                         ::testing::ValuesIn(LoadWycheproofCases(kHmacFile)),
                         coffer::testing::WycheproofCaseName());

TEST(HmacSha256Test, RejectsShortKeys) {
  for (size_t size : {0, 1, 15}) {
    auto hmac = HmacSha256::Create(Secret(std::string(size, 'k')));
    EXPECT_EQ(ErrorCodeOf(hmac.status()), ErrorCode::kInvalidArgument) << size;
  }
  EXPECT_TRUE(HmacSha256::Create(Secret(std::string(16, 'k'))).ok());
}

TEST(HmacSha256Test, Rfc4231Case1) {
  auto hmac = HmacSha256::Create(Secret(std::string(20, '\x0b')));
  ASSERT_TRUE(hmac.ok());
  auto tag = hmac->Compute("Hi There");
  ASSERT_TRUE(tag.ok());
  EXPECT_EQ(TagBytes(*tag),
            HexToBytes("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"));
}

TEST(HmacSha256Test, IncrementalMatchesOneShot) {
  auto hmac = HmacSha256::Create(Secret(std::string(32, 'k')));
  ASSERT_TRUE(hmac.ok());
  std::string data = "the quick brown fox jumps over the lazy dog";
  auto incremental = hmac->StartIncremental();
  ASSERT_TRUE(incremental.ok());
  for (char c : data) ASSERT_TRUE(incremental->Update(std::string_view(&c, 1)).ok());
  auto pieces = incremental->Finalize();
  ASSERT_TRUE(pieces.ok());
  EXPECT_EQ(*pieces, *hmac->Compute(data));
  EXPECT_EQ(ErrorCodeOf(incremental->Finalize().status()), ErrorCode::kFailedPrecondition);
  EXPECT_EQ(ErrorCodeOf(incremental->Update("x")), ErrorCode::kFailedPrecondition);
}

TEST(HmacSha256Test, VerifyRejectsWrongLengthAndFlippedTags) {
  auto hmac = HmacSha256::Create(Secret(std::string(32, 'k')));
  ASSERT_TRUE(hmac.ok());
  std::string tag = TagBytes(*hmac->Compute("id"));
  EXPECT_TRUE(hmac->Verify("id", tag).ok());
  EXPECT_EQ(ErrorCodeOf(hmac->Verify("id", tag.substr(0, 31))), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(hmac->Verify("id", tag + "x")), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(hmac->Verify("id", "")), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(hmac->Verify("other id", tag)), ErrorCode::kCiphertextCorrupt);
  for (size_t i = 0; i < tag.size(); ++i) {
    std::string flipped = tag;
    flipped[i] = static_cast<char>(flipped[i] ^ 0x01);
    EXPECT_EQ(ErrorCodeOf(hmac->Verify("id", flipped)), ErrorCode::kCiphertextCorrupt) << i;
  }
}

// Compute reuses pooled contexts, re-initialised under the key they hold (EVP_MAC_init with no
// key): four threads run every Wycheproof case on instances they share (one per case, so
// threads meet on them), each vector computation preceded on the same instance by a decoy of
// another length and a verification that fails. A context that were not restarted would carry
// the decoy's state into the vector's tag.
TEST(HmacSha256Test, SharedInstancesMatchEveryVectorUnderConcurrency) {
  const std::vector<WycheproofCase> cases = LoadWycheproofCases(kHmacFile);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kExpectedHmacCases));
  std::vector<HmacSha256> instances;
  for (const WycheproofCase& vector : cases) {
    auto hmac = HmacSha256::Create(Secret(vector.Bytes("key")));
    ASSERT_TRUE(hmac.ok()) << hmac.status();
    instances.push_back(*std::move(hmac));
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
          const HmacSha256& hmac = instances[i];
          const std::string decoy(1 + (i * 7 + static_cast<size_t>(t)) % 200, 'd');
          bool ok = hmac.Compute(decoy).ok() &&
                    ErrorCodeOf(hmac.Verify(decoy, std::string(kHmacSha256TagSize, 'z'))) ==
                        ErrorCode::kCiphertextCorrupt;
          const std::string message = vector.Bytes("msg");
          const std::string expected_tag = vector.Bytes("tag");
          auto tag = hmac.Compute(message);
          ok = ok && tag.ok() &&
               ConstantTimeEquals(TagBytes(*tag).substr(0, expected_tag.size()), expected_tag) ==
                   vector.valid();
          if (vector.valid() && expected_tag.size() == kHmacSha256TagSize) {
            ok = ok && hmac.Verify(message, expected_tag).ok();
          }
          if (!ok) wrong[t].push_back(vector.id());
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(wrong[t], std::vector<int>{}) << "thread " << t;
}

// The pooled contexts belong to the instance: they are freed (and wiped) with it. The second
// call reusing the first's context also shows that this OpenSSL restarts an HMAC on keyless
// EVP_MAC_init (3.0.3 on); where it does not, every call frees its context.
TEST(HmacSha256Test, PooledContextsAreFreedWithTheInstance) {
  const int64_t before = PooledKeyedContexts();
  {
    auto hmac = HmacSha256::Create(Secret(std::string(32, 'k')));
    ASSERT_TRUE(hmac.ok());
    ASSERT_TRUE(hmac->Compute("id").ok());
    EXPECT_EQ(PooledKeyedContexts(), before + 1);
    ASSERT_TRUE(hmac->Compute("id").ok());
    EXPECT_EQ(PooledKeyedContexts(), before + 1) << "the second call reuses the first's context";
  }
  EXPECT_EQ(PooledKeyedContexts(), before);
}

TEST(HmacSha256Test, MovedFromInstanceKeepsWorkingInItsNewHome) {
  auto created = HmacSha256::Create(Secret(std::string(32, 'k')));
  ASSERT_TRUE(created.ok());
  auto before = created->Compute("x");
  HmacSha256 moved = std::move(created).value();
  EXPECT_EQ(*moved.Compute("x"), *before);
}

TEST(ConstantTimeEqualsTest, ComparesContentAndLength) {
  EXPECT_TRUE(ConstantTimeEquals("", ""));
  EXPECT_TRUE(ConstantTimeEquals("abc", "abc"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "abd"));
  EXPECT_FALSE(ConstantTimeEquals("abc", "ab"));
  EXPECT_FALSE(ConstantTimeEquals("", "a"));
}

}  // namespace
}  // namespace coffer::crypto
