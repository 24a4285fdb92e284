// Tests for kms/admin's otpauth helpers: RFC 4648 base32 vectors, the key URI format, and the
// RFC 6238 appendix B SHA-1 vectors computed from a secret round-tripped through base32 (HMAC
// and truncation done independently here with OpenSSL).

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <cstdint>
#include <string>

#include "crypto/status.h"
#include "gtest/gtest.h"
#include "kms/admin/otpauth.h"

namespace coffer::kms::admin {
namespace {

// RFC 4226 §5.3 truncation to 8 digits (appendix B of RFC 6238 lists 8-digit codes).
std::string Totp8(const std::string& secret, uint64_t unix_seconds) {
  uint64_t counter = unix_seconds / 30;
  unsigned char msg[8];
  for (int i = 7; i >= 0; --i) {
    msg[i] = static_cast<unsigned char>(counter & 0xff);
    counter >>= 8;
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha1(), secret.data(), static_cast<int>(secret.size()), msg, sizeof msg, mac, &mac_len);
  const int offset = mac[19] & 0x0f;
  const uint32_t bin = ((mac[offset] & 0x7fu) << 24) | (mac[offset + 1] << 16) |
                       (mac[offset + 2] << 8) | mac[offset + 3];
  std::string code = std::to_string(bin % 100000000u);
  return std::string(8 - code.size(), '0') + code;
}

TEST(Base32Test, Rfc4648Vectors) {
  EXPECT_EQ(Base32Encode(""), "");
  EXPECT_EQ(Base32Encode("f"), "MY");
  EXPECT_EQ(Base32Encode("fo"), "MZXQ");
  EXPECT_EQ(Base32Encode("foo"), "MZXW6");
  EXPECT_EQ(Base32Encode("foob"), "MZXW6YQ");
  EXPECT_EQ(Base32Encode("fooba"), "MZXW6YTB");
  EXPECT_EQ(Base32Encode("foobar"), "MZXW6YTBOI");
  for (const char* s : {"", "f", "fo", "foo", "foob", "fooba", "foobar"}) {
    auto decoded = Base32Decode(Base32Encode(s));
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(*decoded, s);
  }
  auto padded = Base32Decode("mzxw6yq=");
  ASSERT_TRUE(padded.ok());
  EXPECT_EQ(*padded, "foob");
}

TEST(Base32Test, RejectsMalformed) {
  EXPECT_EQ(ErrorCodeOf(Base32Decode("MZ1W").status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(Base32Decode("M").status()), ErrorCode::kInvalidArgument);
  EXPECT_EQ(ErrorCodeOf(Base32Decode("MZ").status()), ErrorCode::kInvalidArgument);  // stray bits
}

TEST(OtpauthTest, Rfc6238AppendixBThroughBase32) {
  const std::string secret = "12345678901234567890";
  const std::string b32 = Base32Encode(secret);
  EXPECT_EQ(b32, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
  auto decoded = Base32Decode(b32);
  ASSERT_TRUE(decoded.ok());
  ASSERT_EQ(*decoded, secret);
  EXPECT_EQ(Totp8(*decoded, 59), "94287082");
  EXPECT_EQ(Totp8(*decoded, 1111111109), "07081804");
  EXPECT_EQ(Totp8(*decoded, 1111111111), "14050471");
  EXPECT_EQ(Totp8(*decoded, 1234567890), "89005924");
  EXPECT_EQ(Totp8(*decoded, 2000000000), "69279037");
  EXPECT_EQ(Totp8(*decoded, 20000000000), "65353130");
}

TEST(OtpauthTest, UriFormatAndPercentEncoding) {
  const std::string uri = OtpauthUri("coffer", "Alice Admin", "12345678901234567890", 30);
  EXPECT_EQ(uri,
            "otpauth://totp/coffer:Alice%20Admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            "&issuer=coffer&algorithm=SHA1&digits=6&period=30");
  const std::string uri2 = OtpauthUri("my co:x", "bob@host", "f", 60);
  EXPECT_EQ(uri2,
            "otpauth://totp/my%20co%3Ax:bob%40host?secret=MY&issuer=my%20co%3Ax"
            "&algorithm=SHA1&digits=6&period=60");
}

}  // namespace
}  // namespace coffer::kms::admin
