#include "crypto/aes_siv.h"

#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "tests/crypto/test_keys.h"
#include "tests/crypto/wycheproof_cases.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::BytesToHex;
using ::coffer::testing::HexToBytes;
using ::coffer::testing::LoadWycheproofCases;
using ::coffer::testing::SecretFrom;
using ::coffer::testing::WycheproofCase;

constexpr char kSivFile[] = "aes_siv_cmac_test.json";
// Every case applies: the file has 256-, 384- and 512-bit keys (AES-128/192/256-SIV), all of
// which AesSiv takes, and one associated-data component per case.
constexpr int kExpectedSivCases = 442;
constexpr size_t kExpectedValid = 118;
constexpr size_t kExpectedEmptyMessages = 99;  // 18 valid: the S2V-of-empty path

std::unique_ptr<const AesSiv> MakeSiv(std::string_view key_hex) {
  auto siv = AesSiv::Create(SecretFrom(HexToBytes(key_hex)));
  EXPECT_TRUE(siv.ok()) << siv.status();
  return siv.ok() ? std::move(siv).value() : nullptr;
}

// Bytes 0x00..0x3f: an AES-256-SIV key for the known answers computed with pyca/cryptography
// 48.0.0 (AESSIV(bytes(range(64))).encrypt(...)), an implementation independent of this one.
constexpr char kKey64[] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

TEST(AesSivWycheproofTest, EveryVectorIsRun) {
  EXPECT_EQ(coffer::testing::DeclaredWycheproofCount(kSivFile), kExpectedSivCases);
  std::vector<WycheproofCase> cases = LoadWycheproofCases(kSivFile);
  ASSERT_EQ(cases.size(), static_cast<size_t>(kExpectedSivCases));
  size_t valid = 0;
  size_t empty = 0;
  for (const WycheproofCase& vector : cases) {
    valid += vector.valid() ? 1 : 0;
    empty += vector.Bytes("msg").empty() ? 1 : 0;
  }
  EXPECT_EQ(valid, kExpectedValid);
  EXPECT_EQ(empty, kExpectedEmptyMessages);
}

class AesSivWycheproofTest : public ::testing::TestWithParam<WycheproofCase> {};

TEST_P(AesSivWycheproofTest, MatchesVector) {
  const WycheproofCase& vector = GetParam();
  std::string key = vector.Bytes("key");
  auto siv = AesSiv::Create(SecretFrom(key));
  if (key.size() != 32 && key.size() != 48 && key.size() != 64) {
    EXPECT_FALSE(vector.valid());
    EXPECT_EQ(ErrorCodeOf(siv.status()), ErrorCode::kInvalidArgument);
    return;
  }
  ASSERT_TRUE(siv.ok()) << siv.status();
  std::string aad = vector.Bytes("aad");
  std::string message = vector.Bytes("msg");
  std::string sealed = vector.Bytes("ct");

  auto opened = (*siv)->Open(sealed, {aad});
  if (vector.valid()) {
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, message);
    auto resealed = (*siv)->Seal(message, {aad});
    ASSERT_TRUE(resealed.ok()) << resealed.status();
    EXPECT_EQ(BytesToHex(*resealed), BytesToHex(sealed));
  } else {
    EXPECT_EQ(ErrorCodeOf(opened.status()), ErrorCode::kCiphertextCorrupt) << opened.status();
  }
}

INSTANTIATE_TEST_SUITE_P(Wycheproof, AesSivWycheproofTest,
                         ::testing::ValuesIn(LoadWycheproofCases(kSivFile)),
                         coffer::testing::WycheproofCaseName());

TEST(AesSivTest, Rfc5297A1DeterministicAuthenticatedEncryption) {
  auto siv = MakeSiv("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  ASSERT_NE(siv, nullptr);
  std::string ad = HexToBytes("101112131415161718191a1b1c1d1e1f2021222324252627");
  std::string plaintext = HexToBytes("112233445566778899aabbccddee");
  auto sealed = siv->Seal(plaintext, {ad});
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(BytesToHex(*sealed),
            "85632d07c6e8f37f950acd320a2ecc93"  // V
            "40c02b9690c4dc04daef7f6afe5c");    // C
  EXPECT_EQ(*siv->Open(*sealed, {ad}), plaintext);
}

TEST(AesSivTest, Rfc5297A2SeveralAssociatedDataComponents) {
  auto siv = MakeSiv("7f7e7d7c7b7a79787776757473727170404142434445464748494a4b4c4d4e4f");
  ASSERT_NE(siv, nullptr);
  std::string ad1 = HexToBytes(
      "00112233445566778899aabbccddeeffdeaddadadeaddadaffeeddccbbaa99887766554433221100");
  std::string ad2 = HexToBytes("102030405060708090a0");
  std::string nonce = HexToBytes("09f911029d74e35bd84156c5635688c0");
  std::string plaintext = "this is some plaintext to encrypt using SIV-AES";
  auto sealed = siv->Seal(plaintext, {ad1, ad2, nonce});
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(BytesToHex(*sealed),
            "7bdb6e3b432667eb06f4d14bff2fbd0f"
            "cb900f2fddbe404326601965c889bf17dba77ceb094fa663b7a3f748ba8af829ea64ad544a272e9c"
            "485b62a3fd5c0d");
  EXPECT_EQ(*siv->Open(*sealed, {ad1, ad2, nonce}), plaintext);
  EXPECT_EQ(ErrorCodeOf(siv->Open(*sealed, {ad1, nonce, ad2}).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(AesSivTest, Aes256SivKnownAnswersWithSeveralOrNoComponents) {
  auto siv = MakeSiv(kKey64);
  ASSERT_NE(siv, nullptr);
  EXPECT_EQ(BytesToHex(*siv->Seal("jane@example.com", {"a", "", "bc"})),
            "ac49221be607d0523d153f7525a892db35527e0ead786be19ff10891677a0c30");
  EXPECT_EQ(BytesToHex(*siv->Seal("jane@example.com", {})),
            "3abdb03da0c6f9257fe1bcf5e9b41345a2eb4af4ff0b8b2f124ffe686ae8be4c");
  // The empty plaintext, which AesSiv computes itself.
  EXPECT_EQ(BytesToHex(*siv->Seal("", {"a", "", "bc"})), "582b1998348255c1c2d5a940a2215f80");
  EXPECT_EQ(BytesToHex(*siv->Seal("", {})), "d4fc53b9c44c2aeea87bfb8c983b136c");
  EXPECT_EQ(*siv->Open(HexToBytes("582b1998348255c1c2d5a940a2215f80"), {"a", "", "bc"}), "");
  EXPECT_EQ(
      ErrorCodeOf(siv->Open(HexToBytes("582b1998348255c1c2d5a940a2215f80"), {"a", "bc"}).status()),
      ErrorCode::kCiphertextCorrupt);
}

TEST(AesSivTest, SealIsDeterministicAndBindsTheAssociatedData) {
  auto siv = MakeSiv(kKey64);
  ASSERT_NE(siv, nullptr);
  std::string first = *siv->Seal("customer-42", {"dataset 1"});
  EXPECT_EQ(*siv->Seal("customer-42", {"dataset 1"}), first);
  EXPECT_EQ(first.size(), std::string("customer-42").size() + kAesSivTagSize);
  EXPECT_NE(*siv->Seal("customer-42", {"dataset 2"}), first);
  EXPECT_NE(*siv->Seal("customer-43", {"dataset 1"}), first);
  // Components are separate S2V inputs: their boundaries and count matter.
  EXPECT_NE(*siv->Seal("x", {"ab", "c"}), *siv->Seal("x", {"a", "bc"}));
  EXPECT_NE(*siv->Seal("x", {}), *siv->Seal("x", {""}));
  EXPECT_EQ(ErrorCodeOf(siv->Open(first, {"dataset 2"}).status()), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(siv->Open(first, {}).status()), ErrorCode::kCiphertextCorrupt);
  auto other_key = AesSiv::Create(SecretFrom(std::string(64, 'k')));
  ASSERT_TRUE(other_key.ok());
  EXPECT_EQ(ErrorCodeOf((*other_key)->Open(first, {"dataset 1"}).status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(AesSivTest, EveryFlippedBitTruncationAndExtensionFails) {
  auto siv = MakeSiv(kKey64);
  ASSERT_NE(siv, nullptr);
  for (std::string plaintext : {std::string(), std::string("a"), std::string(40, 'p')}) {
    std::string sealed = *siv->Seal(plaintext, {"ad"});
    for (size_t bit = 0; bit < sealed.size() * 8; ++bit) {
      std::string tampered = sealed;
      tampered[bit / 8] = static_cast<char>(tampered[bit / 8] ^ (1 << (bit % 8)));
      EXPECT_EQ(ErrorCodeOf(siv->Open(tampered, {"ad"}).status()), ErrorCode::kCiphertextCorrupt)
          << plaintext.size() << " bit " << bit;
    }
    for (size_t size = 0; size < sealed.size(); ++size) {
      EXPECT_EQ(ErrorCodeOf(siv->Open(sealed.substr(0, size), {"ad"}).status()),
                ErrorCode::kCiphertextCorrupt)
          << plaintext.size() << " truncated to " << size;
    }
    EXPECT_EQ(ErrorCodeOf(siv->Open(sealed + "x", {"ad"}).status()), ErrorCode::kCiphertextCorrupt);
    EXPECT_EQ(*siv->Open(sealed, {"ad"}), plaintext);
  }
}

TEST(AesSivTest, RejectsBadKeySizes) {
  for (size_t size : {0, 16, 24, 31, 33, 47, 49, 63, 65, 128}) {
    auto siv = AesSiv::Create(SecretFrom(std::string(size, 'k')));
    EXPECT_EQ(ErrorCodeOf(siv.status()), ErrorCode::kInvalidArgument) << size;
  }
}

TEST(AesSivTest, RejectsMoreThan126AssociatedDataComponents) {
  auto siv = MakeSiv(kKey64);
  ASSERT_NE(siv, nullptr);
  std::vector<std::string_view> most(kAesSivMaxAssociatedData, "c");
  auto sealed = siv->Seal("x", most);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(*siv->Open(*sealed, most), "x");
  std::vector<std::string_view> too_many(kAesSivMaxAssociatedData + 1, "c");
  EXPECT_EQ(ErrorCodeOf(siv->Seal("x", too_many).status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(siv->Seal("", too_many).status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(siv->Open(*sealed, too_many).status()), ErrorCode::kInvalidArgument);
}

TEST(AesSivTest, ConcurrentCallsOnOneInstanceAgree) {
  auto siv = MakeSiv(kKey64);
  ASSERT_NE(siv, nullptr);
  const std::string message(300, 'm');
  const std::string expected = *siv->Seal(message, {"ad", "more"});
  const std::string expected_empty = *siv->Seal("", {"ad"});
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  threads.reserve(mismatches.size());
  for (size_t t = 0; t < mismatches.size(); ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        auto sealed = siv->Seal(message, {"ad", "more"});
        auto opened = siv->Open(expected, {"ad", "more"});
        auto empty = siv->Seal("", {"ad"});
        if (!sealed.ok() || *sealed != expected || !opened.ok() || *opened != message ||
            !empty.ok() || *empty != expected_empty) {
          ++mismatches[t];
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

}  // namespace
}  // namespace coffer::crypto
