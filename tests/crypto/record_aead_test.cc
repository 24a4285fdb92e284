#include "crypto/record_aead.h"

#include <set>
#include <string>

#include "crypto/base/status.h"
#include "crypto/internal/big_endian.h"
#include "gtest/gtest.h"
#include "tests/crypto/test_keys.h"

namespace coffer::crypto {
namespace {

using ::coffer::testing::SecretFrom;
using ::coffer::testing::TestKey;

constexpr uint32_t kVersion = 7;

RecordAead MakeAead(char fill = 'k', uint32_t version = kVersion) {
  auto aead = RecordAead::Create(TestKey(fill), version);
  EXPECT_TRUE(aead.ok()) << aead.status();
  return std::move(aead).value();
}

TEST(RecordAeadTest, RoundTripsAndLaysOutTheHeader) {
  RecordAead aead = MakeAead();
  for (const std::string& plaintext : {std::string(), std::string("x"), std::string(1000, 'p')}) {
    auto sealed = aead.Seal(plaintext, "associated");
    ASSERT_TRUE(sealed.ok()) << sealed.status();
    ASSERT_EQ(sealed->size(), plaintext.size() + kRecordOverhead);
    EXPECT_EQ(static_cast<uint8_t>((*sealed)[0]), kRecordFormatV1);
    EXPECT_EQ(internal::LoadBigEndian32(reinterpret_cast<const uint8_t*>(sealed->data()) + 1),
              kVersion);
    auto opened = aead.Open(*sealed, "associated");
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(*opened, plaintext);
  }
}

TEST(RecordAeadTest, EachSealDrawsAFreshNonce) {
  RecordAead aead = MakeAead();
  std::set<std::string> nonces;
  for (int i = 0; i < 1000; ++i) {
    nonces.insert(aead.Seal("same", "same")->substr(kRecordHeaderSize, kRecordNonceSize));
  }
  EXPECT_EQ(nonces.size(), 1000u);
}

TEST(RecordAeadTest, FlippingAnyBitOfAnyByteFails) {
  RecordAead aead = MakeAead();
  std::string sealed = *aead.Seal("a small record value", "ad");
  for (size_t i = 0; i < sealed.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::string tampered = sealed;
      tampered[i] = static_cast<char>(tampered[i] ^ (1 << bit));
      auto opened = aead.Open(tampered, "ad");
      ASSERT_FALSE(opened.ok()) << "byte " << i << " bit " << bit;
      ErrorCode code = ErrorCodeOf(opened.status());
      if (i == 0) {
        EXPECT_EQ(code, ErrorCode::kUnsupportedFormat);
      } else if (i < kRecordHeaderSize) {
        EXPECT_EQ(code, ErrorCode::kKeyVersionMismatch);
      } else {
        EXPECT_EQ(code, ErrorCode::kCiphertextCorrupt) << "byte " << i;
      }
    }
  }
}

TEST(RecordAeadTest, RelabelledKeyVersionFailsAuthentication) {
  // An attacker who rewrites the version field to match another key's version must still fail:
  // the header is part of the associated data.
  RecordAead version7 = MakeAead('k', 7);
  RecordAead version8_same_key = MakeAead('k', 8);
  std::string sealed = *version7.Seal("value", "ad");
  internal::StoreBigEndian32(8, reinterpret_cast<uint8_t*>(sealed.data()) + 1);
  EXPECT_EQ(ErrorCodeOf(version8_same_key.Open(sealed, "ad").status()),
            ErrorCode::kCiphertextCorrupt);
}

TEST(RecordAeadTest, WrongAssociatedDataKeyOrVersionFails) {
  RecordAead aead = MakeAead();
  std::string sealed = *aead.Seal("value", "dataset-1|records|key");
  EXPECT_EQ(ErrorCodeOf(aead.Open(sealed, "dataset-2|records|key").status()),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(aead.Open(sealed, "").status()), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(MakeAead('z').Open(sealed, "dataset-1|records|key").status()),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(MakeAead('k', kVersion + 1).Open(sealed, "dataset-1|records|key").status()),
            ErrorCode::kKeyVersionMismatch);
}

TEST(RecordAeadTest, TruncationAtEveryLengthFails) {
  RecordAead aead = MakeAead();
  std::string sealed = *aead.Seal("value", "ad");
  for (size_t length = 0; length < sealed.size(); ++length) {
    ErrorCode code = ErrorCodeOf(aead.Open(sealed.substr(0, length), "ad").status());
    EXPECT_EQ(code, ErrorCode::kCiphertextCorrupt) << length;
  }
  EXPECT_EQ(ErrorCodeOf(aead.Open(sealed + "x", "ad").status()), ErrorCode::kCiphertextCorrupt);
}

TEST(RecordAeadTest, ParseRecordHeaderReportsVersionAndRejectsJunk) {
  std::string sealed = *MakeAead('k', 0xA1B2C3D4).Seal("v", "");
  auto header = ParseRecordHeader(sealed);
  ASSERT_TRUE(header.ok());
  EXPECT_EQ(header->format, kRecordFormatV1);
  EXPECT_EQ(header->key_version, 0xA1B2C3D4u);
  EXPECT_EQ(ErrorCodeOf(ParseRecordHeader("").status()), ErrorCode::kCiphertextCorrupt);
  EXPECT_EQ(ErrorCodeOf(ParseRecordHeader(std::string("\x02", 1) + std::string(40, 'x')).status()),
            ErrorCode::kUnsupportedFormat);
  EXPECT_EQ(ErrorCodeOf(ParseRecordHeader(sealed.substr(0, kRecordOverhead - 1)).status()),
            ErrorCode::kCiphertextCorrupt);
  EXPECT_TRUE(ParseRecordHeader(sealed.substr(0, kRecordOverhead)).ok());
}

TEST(RecordAeadTest, SealToAppendsAndRejectsAliasedInputs) {
  RecordAead aead = MakeAead();
  std::string out = "prefix:";
  ASSERT_TRUE(aead.SealTo("value", "ad", &out).ok());
  ASSERT_EQ(out.size(), 7 + 5 + kRecordOverhead);
  EXPECT_EQ(out.substr(0, 7), "prefix:");
  EXPECT_EQ(*aead.Open(std::string_view(out).substr(7), "ad"), "value");

  std::string before = out;
  EXPECT_EQ(ErrorCodeOf(aead.SealTo(std::string_view(out).substr(0, 6), "ad", &out)),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(aead.SealTo("value", std::string_view(out).substr(0, 3), &out)),
            ErrorCode::kInvalidArgument);
  EXPECT_EQ(out, before) << "a failed SealTo must leave its output unchanged";
}

TEST(RecordAeadTest, RejectsBadKeySizes) {
  for (size_t size : {0, 16, 31, 33}) {
    auto aead = RecordAead::Create(SecretFrom(std::string(size, 'k')), 1);
    EXPECT_EQ(ErrorCodeOf(aead.status()), ErrorCode::kInvalidArgument) << size;
  }
}

}  // namespace
}  // namespace coffer::crypto
