#include "storage/pseudonymizer.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/testing/fakes.h"

namespace coffer::storage {
namespace {

using ::coffer::storage::testing::FakeKeyProvider;

constexpr uint64_t kDataset = 0x0102030405060708;
constexpr uint64_t kOtherDataset = 0x0102030405060709;

// Every dataset and version gets the same DEK (bytes 0x00..0x1f), so the known answers below
// pin the format alone, and cross-dataset tests show that the associated data, not only the
// key, keeps datasets apart. Versions 1..max_version exist; others are KEY_VERSION_NOT_FOUND,
// as the key manager reports them.
class FixedKeyProvider final : public KeyProvider {
 public:
  explicit FixedKeyProvider(uint32_t max_version = 7) : max_version_(max_version) {}

  absl::StatusOr<std::shared_ptr<const DataKey>> PrimaryKey(uint64_t, KeyPurpose purpose,
                                                            uint64_t) override {
    return Key(purpose, max_version_);
  }
  absl::StatusOr<std::shared_ptr<const DataKey>> KeyForVersion(uint64_t, KeyPurpose purpose,
                                                               uint32_t version) override {
    if (version == 0 || version > max_version_) {
      return MakeError(ErrorCode::kKeyVersionNotFound, "no such key version");
    }
    return Key(purpose, version);
  }
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t, KeyPurpose) override {
    std::vector<uint32_t> live;
    for (uint32_t v = max_version_; v >= 1; --v) live.push_back(v);
    return live;
  }

 private:
  static absl::StatusOr<std::shared_ptr<const DataKey>> Key(KeyPurpose purpose, uint32_t version) {
    std::vector<uint8_t> bytes(32);
    for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i);
    COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes dek, crypto::SecretBytes::CopyFrom(bytes));
    return DataKey::Create(purpose, version, std::move(dek));
  }

  uint32_t max_version_;
};

ErrorCode CodeOf(const absl::Status& status) { return ErrorCodeOf(status); }

// The base64url part of a token.
std::string Encoded(const std::string& token) { return token.substr(token.rfind('.') + 1); }

std::string Decoded(const std::string& token) {
  std::string sealed;
  EXPECT_TRUE(absl::WebSafeBase64Unescape(Encoded(token), &sealed));
  return sealed;
}

std::string TokenOf(uint32_t version, const std::string& sealed) {
  return "cp1." + std::to_string(version) + "." + absl::WebSafeBase64Escape(sealed);
}

class PseudonymizerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(keys_.CreateDataset(kDataset).ok());
    ASSERT_TRUE(keys_.CreateDataset(kOtherDataset).ok());
  }

  std::string Token(uint64_t dataset, std::string_view identifier) {
    auto token = pseudonymizer_.Pseudonymize(dataset, identifier);
    EXPECT_TRUE(token.ok()) << token.status();
    return token.ok() ? *token : std::string();
  }

  FakeKeyProvider keys_;
  Pseudonymizer pseudonymizer_{&keys_};
};

TEST_F(PseudonymizerTest, SameIdentifierGivesTheSameTokenAndReidentifies) {
  std::string token = Token(kDataset, "jane@example.com");
  EXPECT_EQ(Token(kDataset, "jane@example.com"), token);
  EXPECT_EQ(token.substr(0, 6), "cp1.1.");
  EXPECT_EQ(*Pseudonymizer::TokenVersion(token), 1u);
  EXPECT_EQ(Encoded(token).find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
            std::string::npos);
  EXPECT_EQ(*pseudonymizer_.Reidentify(kDataset, token), "jane@example.com");
  EXPECT_NE(Token(kDataset, "john@example.com"), token);
  EXPECT_NE(Token(kDataset, "Jane@example.com"), token);
  // Deterministic encryption draws no nonce: nothing is counted against the key's budget.
  EXPECT_EQ(keys_.Encryptions(kDataset, KeyPurpose::kPseudonym, 1), 0u);
}

TEST_F(PseudonymizerTest, IdentifiersAreAnyBytesUpToOneKibibyte) {
  for (std::string identifier :
       {std::string("x"), std::string("a\0b\xff", 4), std::string(kMaxIdentifierBytes, 'i')}) {
    std::string token = Token(kDataset, identifier);
    EXPECT_EQ(*pseudonymizer_.Reidentify(kDataset, token), identifier);
    EXPECT_LE(token.size(), kMaxPseudonymTokenBytes);
  }
  // The longest token at version 1: "cp1.1." and base64url of 16 + 1024 bytes.
  EXPECT_EQ(Token(kDataset, std::string(kMaxIdentifierBytes, 'i')).size(), 6u + 1387u);
}

TEST_F(PseudonymizerTest, RefusesEmptyAndOverlongIdentifiersWithoutQuotingThem) {
  EXPECT_EQ(CodeOf(pseudonymizer_.Pseudonymize(kDataset, "").status()),
            ErrorCode::kIdentifierInvalid);
  std::string overlong = "secret-" + std::string(kMaxIdentifierBytes, 's');
  auto status = pseudonymizer_.Pseudonymize(kDataset, overlong).status();
  EXPECT_EQ(CodeOf(status), ErrorCode::kIdentifierInvalid);
  EXPECT_EQ(std::string(status.message()).find("secret"), std::string::npos) << status;
}

TEST_F(PseudonymizerTest, DatasetsGiveUnrelatedTokensThatDoNotCross) {
  std::string mine = Token(kDataset, "jane@example.com");
  std::string theirs = Token(kOtherDataset, "jane@example.com");
  EXPECT_NE(mine, theirs);
  EXPECT_NE(Decoded(mine).substr(0, 16), Decoded(theirs).substr(0, 16));
  auto crossed = pseudonymizer_.Reidentify(kDataset, theirs);
  EXPECT_EQ(CodeOf(crossed.status()), ErrorCode::kPseudonymTokenMismatch);
  EXPECT_EQ(std::string(crossed.status().message()).find(Encoded(theirs)), std::string::npos);
  EXPECT_EQ(CodeOf(pseudonymizer_.Translate(kDataset, theirs).status()),
            ErrorCode::kPseudonymTokenMismatch);
}

TEST(PseudonymizerFixedKeyTest, SameKeyInTwoDatasetsStillGivesUnrelatedTokens) {
  FixedKeyProvider keys;
  Pseudonymizer pseudonymizer(&keys);
  std::string mine = *pseudonymizer.Pseudonymize(kDataset, "jane@example.com");
  std::string theirs = *pseudonymizer.Pseudonymize(kOtherDataset, "jane@example.com");
  EXPECT_NE(Encoded(mine), Encoded(theirs));
  EXPECT_EQ(CodeOf(pseudonymizer.Reidentify(kDataset, theirs).status()),
            ErrorCode::kPseudonymTokenMismatch);
  EXPECT_EQ(*pseudonymizer.Reidentify(kOtherDataset, theirs), "jane@example.com");
}

// pseudonym-v1 must not drift: tokens live on in the CRM's tables. The expected values were
// computed from docs/formats.md#pseudonym-v1 alone with pyca/cryptography 48.0.0 (HKDF,
// AESSIV, base64.urlsafe_b64encode without '='), independently of this code.
TEST(PseudonymizerFixedKeyTest, KnownAnswerTokens) {
  FixedKeyProvider keys(/*max_version=*/7);
  Pseudonymizer pseudonymizer(&keys);
  EXPECT_EQ(*pseudonymizer.Pseudonymize(kDataset, "jane@example.com"),
            "cp1.7.Ywk5s8D_OQ3pnkh4SvR2E-kiJd3i-mPrii-snQ9pr7k");
  EXPECT_EQ(
      *pseudonymizer.Reidentify(kDataset, "cp1.1.NqgARKuvcFt5oay7zLvRA5hnItsbAaY9ojyYULUFeeM"),
      "jane@example.com");
  EXPECT_EQ(
      *pseudonymizer.Reidentify(kOtherDataset, "cp1.1.2TQq_ysoD05ASiwbHEo0tdaHwmcfohN2eaE0M42IeG8"),
      "jane@example.com");
  EXPECT_EQ(*pseudonymizer.Translate(kDataset, "cp1.1.NqgARKuvcFt5oay7zLvRA5hnItsbAaY9ojyYULUFeeM"),
            "cp1.7.Ywk5s8D_OQ3pnkh4SvR2E-kiJd3i-mPrii-snQ9pr7k");
}

TEST(PseudonymizerFixedKeyTest, AVersionTheDatasetDoesNotHaveIsAMismatch) {
  FixedKeyProvider keys(/*max_version=*/2);
  Pseudonymizer pseudonymizer(&keys);
  std::string sealed = Decoded(*pseudonymizer.Pseudonymize(kDataset, "jane@example.com"));
  for (uint32_t version : {3u, 4294967295u}) {
    std::string token = TokenOf(version, sealed);
    EXPECT_EQ(*Pseudonymizer::TokenVersion(token), version);
    EXPECT_EQ(CodeOf(pseudonymizer.Reidentify(kDataset, token).status()),
              ErrorCode::kPseudonymTokenMismatch);
    EXPECT_EQ(CodeOf(pseudonymizer.Translate(kDataset, token).status()),
              ErrorCode::kPseudonymTokenMismatch);
  }
}

TEST_F(PseudonymizerTest, EveryAlteredBitOrVersionIsAMismatch) {
  std::string token = Token(kDataset, "jane@example.com");
  std::string sealed = Decoded(token);
  ASSERT_EQ(TokenOf(1, sealed), token);
  for (size_t bit = 0; bit < sealed.size() * 8; ++bit) {
    std::string altered = sealed;
    altered[bit / 8] = static_cast<char>(altered[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, TokenOf(1, altered)).status()),
              ErrorCode::kPseudonymTokenMismatch)
        << "bit " << bit;
  }
  // Truncated or extended ciphertexts that still have a token's length.
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, TokenOf(1, sealed.substr(0, 17))).status()),
            ErrorCode::kPseudonymTokenMismatch);
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, TokenOf(1, sealed + "x")).status()),
            ErrorCode::kPseudonymTokenMismatch);
  // Relabelled to another existing version: the version is in the associated data.
  ASSERT_EQ(*keys_.Rotate(kDataset, KeyPurpose::kPseudonym), 2u);
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, TokenOf(2, sealed)).status()),
            ErrorCode::kPseudonymTokenMismatch);
}

TEST_F(PseudonymizerTest, TranslateMovesTokensToTheNewPrimaryVersion) {
  std::string old_token = Token(kDataset, "jane@example.com");
  std::string other_old = Token(kDataset, "+1 (555) 123-4567");
  ASSERT_EQ(*keys_.Rotate(kDataset, KeyPurpose::kPseudonym), 2u);
  // Another purpose's rotation changes nothing here.
  ASSERT_EQ(*keys_.Rotate(kDataset, KeyPurpose::kRecords), 2u);
  ASSERT_EQ(*keys_.Rotate(kDataset, KeyPurpose::kRecords), 3u);

  std::string new_token = Token(kDataset, "jane@example.com");
  EXPECT_EQ(*Pseudonymizer::TokenVersion(new_token), 2u);
  EXPECT_NE(new_token, old_token);
  auto translated = pseudonymizer_.Translate(kDataset, old_token);
  ASSERT_TRUE(translated.ok()) << translated.status();
  EXPECT_EQ(*translated, new_token);
  EXPECT_EQ(*pseudonymizer_.Translate(kDataset, other_old), Token(kDataset, "+1 (555) 123-4567"));
  // Old and new tokens both re-identify while version 1 still decrypts.
  EXPECT_EQ(*pseudonymizer_.Reidentify(kDataset, old_token), "jane@example.com");
  EXPECT_EQ(*pseudonymizer_.Reidentify(kDataset, new_token), "jane@example.com");
  // The other dataset's primary did not move.
  EXPECT_EQ(*Pseudonymizer::TokenVersion(Token(kOtherDataset, "jane@example.com")), 1u);
}

TEST_F(PseudonymizerTest, TranslateOfACurrentTokenIsTheIdentityAfterChecking) {
  std::string token = Token(kDataset, "jane@example.com");
  uint64_t lookups = keys_.version_lookups();
  EXPECT_EQ(*pseudonymizer_.Translate(kDataset, token), token);
  EXPECT_EQ(keys_.version_lookups(), lookups) << "the primary key alone opens a current token";
  std::string sealed = Decoded(token);
  sealed[3] = static_cast<char>(sealed[3] ^ 0x40);
  EXPECT_EQ(CodeOf(pseudonymizer_.Translate(kDataset, TokenOf(1, sealed)).status()),
            ErrorCode::kPseudonymTokenMismatch);
}

TEST_F(PseudonymizerTest, MalformedTokensAreRefusedBeforeAnyKeyIsFetched) {
  std::string token = Token(kDataset, "jane@example.com");
  std::string encoded = Encoded(token);
  std::string sealed = Decoded(token);
  // 32 bytes are 43 characters; the last one carries 2 unused bits, which must be zero.
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  ASSERT_EQ(encoded.size(), 43u);
  std::string non_canonical = token;
  non_canonical.back() = alphabet[alphabet.find(non_canonical.back()) ^ 1];
  std::string same_bytes;
  ASSERT_TRUE(absl::WebSafeBase64Unescape(Encoded(non_canonical), &same_bytes));
  ASSERT_EQ(same_bytes, sealed) << "abseil decodes it: only the canonical check refuses it";

  const std::vector<std::string> malformed = {
      "",
      "cp1",
      "cp1.",
      "cp1.1",
      "cp1.1.",
      "cp1.." + encoded,
      "cp2.1." + encoded,
      "CP1.1." + encoded,
      " cp1.1." + encoded,
      "cp1.1." + encoded + "\n",
      "cp1.1." + encoded + "=",
      "cp1.1." + encoded + "==",
      "cp1.0." + encoded,
      "cp1.01." + encoded,
      "cp1.+1." + encoded,
      "cp1.-1." + encoded,
      "cp1.1a." + encoded,
      "cp1. 1." + encoded,
      "cp1.4294967296." + encoded,
      "cp1.99999999999." + encoded,
      "cp1.1.1." + encoded,
      "cp1.1." + encoded.substr(0, 10) + "+" + encoded.substr(11),
      "cp1.1." + encoded.substr(0, 10) + "/" + encoded.substr(11),
      "cp1.1." + encoded.substr(0, 10) + " " + encoded.substr(11),
      "cp1.1." + encoded.substr(2),  // 41 characters: a length base64 cannot have
      non_canonical,
      TokenOf(1, std::string(16, 'v')),                            // V alone: no identifier
      TokenOf(1, std::string(16 + kMaxIdentifierBytes + 1, 'c')),  // longer than any token
      "cp1.1." + std::string(kMaxPseudonymTokenBytes, 'A'),
  };
  uint64_t lookups = keys_.version_lookups();
  for (const std::string& bad : malformed) {
    EXPECT_EQ(CodeOf(Pseudonymizer::TokenVersion(bad).status()),
              ErrorCode::kPseudonymTokenMalformed)
        << bad;
    auto reidentified = pseudonymizer_.Reidentify(kDataset, bad);
    EXPECT_EQ(CodeOf(reidentified.status()), ErrorCode::kPseudonymTokenMalformed) << bad;
    EXPECT_EQ(CodeOf(pseudonymizer_.Translate(kDataset, bad).status()),
              ErrorCode::kPseudonymTokenMalformed)
        << bad;
    EXPECT_EQ(std::string(reidentified.status().message()).find(encoded.substr(8, 8)),
              std::string::npos)
        << "the message quotes the token: " << reidentified.status();
  }
  EXPECT_EQ(keys_.version_lookups(), lookups);
}

TEST_F(PseudonymizerTest, KeyProviderErrorsPassThrough) {
  std::string token = Token(kDataset, "jane@example.com");
  EXPECT_EQ(CodeOf(pseudonymizer_.Pseudonymize(0x9999, "jane@example.com").status()),
            ErrorCode::kNotFound);
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(0x9999, token).status()), ErrorCode::kNotFound);
  keys_.SetDisabled(kDataset, true);
  EXPECT_EQ(CodeOf(pseudonymizer_.Pseudonymize(kDataset, "jane@example.com").status()),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, token).status()),
            ErrorCode::kFailedPrecondition);
  EXPECT_EQ(CodeOf(pseudonymizer_.Translate(kDataset, token).status()),
            ErrorCode::kFailedPrecondition);
  keys_.SetDisabled(kDataset, false);
  keys_.Destroy(kDataset);
  EXPECT_EQ(CodeOf(pseudonymizer_.Reidentify(kDataset, token).status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(CodeOf(pseudonymizer_.Translate(kDataset, token).status()), ErrorCode::kKeyDestroyed);
}

TEST(MaskEmailTest, KeepsTheFirstCharacterAndTheDomain) {
  EXPECT_EQ(MaskEmail("jane@example.com"), "j***@example.com");
  EXPECT_EQ(MaskEmail("jane.doe+crm@mail.example.co.uk"), "j***@mail.example.co.uk");
  EXPECT_EQ(MaskEmail("jo@x"), "j***@x");
  // The domain is everything after the last '@'.
  EXPECT_EQ(MaskEmail("\"a@b\"@example.com"), "\"***@example.com");
  // One UTF-8 character, never half of one.
  EXPECT_EQ(MaskEmail("\xc3\xa9lodie@example.fr"), "\xc3\xa9***@example.fr");
  EXPECT_EQ(MaskEmail("\xe2\x82\xac\xe2\x82\xac@example.com"), "\xe2\x82\xac***@example.com");
}

TEST(MaskEmailTest, ShortOrOddInputsRevealNoMore) {
  EXPECT_EQ(MaskEmail(""), "***");
  EXPECT_EQ(MaskEmail("jane"), "***");          // no '@'
  EXPECT_EQ(MaskEmail("@example.com"), "***");  // no local part
  EXPECT_EQ(MaskEmail("jane@"), "***");         // no domain
  EXPECT_EQ(MaskEmail("@"), "***");
  EXPECT_EQ(MaskEmail("j@example.com"), "***@example.com");  // one character: not shown
  EXPECT_EQ(MaskEmail("\xc3\xa9@example.com"), "***@example.com");
  EXPECT_EQ(MaskEmail("\xc3@example.com"), "***@example.com");      // truncated UTF-8
  EXPECT_EQ(MaskEmail("\xff\xfe@example.com"), "***@example.com");  // not UTF-8
  EXPECT_EQ(MaskEmail("\xc0\xaf"
                      "abc@example.com"),
            "***@example.com");                                          // overlong form
  EXPECT_EQ(MaskEmail("\xed\xa0\x80x@example.com"), "***@example.com");  // surrogate
}

TEST(MaskPhoneTest, KeepsTheLastFourDigits) {
  EXPECT_EQ(MaskPhone("+1 (555) 123-4567"), "***-***-4567");
  EXPECT_EQ(MaskPhone("+44 20 7946 0958"), "***-***-0958");
  EXPECT_EQ(MaskPhone("5551234"), "***-***-1234");
  EXPECT_EQ(MaskPhone("tel:+49-30-1234567 ext"), "***-***-4567");
}

TEST(MaskPhoneTest, ShortOrOddInputsRevealNothing) {
  EXPECT_EQ(MaskPhone(""), "***");
  EXPECT_EQ(MaskPhone("call me"), "***");
  EXPECT_EQ(MaskPhone("1234"), "***");
  EXPECT_EQ(MaskPhone("12-34"), "***");
  EXPECT_EQ(MaskPhone("555-123"), "***");  // 6 digits: 4 would be most of it
  EXPECT_EQ(MaskPhone("\xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6\xd9\xa7\xd9\xa8"), "***");
}

}  // namespace
}  // namespace coffer::storage
