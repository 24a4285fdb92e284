// Recipient key wrapping (crypto/recipient_wrap.h): RSA-OAEP-SHA256 and X25519 round trips,
// wrong keys, tampering, and key parsing. No Wycheproof RSA-OAEP or X25519 file is in
// ../shared/vectors (only AES, HKDF, HMAC), so the OAEP interop case decrypts with stock
// OpenSSL's EVP API configured independently here.

#include "crypto/recipient_wrap.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <string>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "gtest/gtest.h"

namespace coffer::crypto {
namespace {

struct Pem {
  std::string private_pem;
  std::string public_pem;
};

std::string BioText(BIO* bio) {
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  return std::string(data, static_cast<size_t>(n));
}

// A fresh key pair: "RSA" with `bits`, or "X25519", "EC" (P-256), "ED25519".
Pem Generate(const char* type, unsigned bits = 2048) {
  EVP_PKEY* key = nullptr;
  if (std::string(type) == "RSA") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<size_t>(bits));
  } else if (std::string(type) == "EC") {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  } else {
    key = EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  }
  EXPECT_NE(key, nullptr) << type;
  Pem pem;
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_PUBKEY(pub, key);
  pem.private_pem = BioText(priv);
  pem.public_pem = BioText(pub);
  BIO_free(priv);
  BIO_free(pub);
  EVP_PKEY_free(key);
  return pem;
}

SecretBytes Secret(const std::string& text) {
  return *SecretBytes::CopyFrom(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

class RecipientWrapTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new Pem(Generate("RSA", 2048));
    rsa_other_ = new Pem(Generate("RSA", 2048));
    x25519_ = new Pem(Generate("X25519"));
    x25519_other_ = new Pem(Generate("X25519"));
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete rsa_other_;
    delete x25519_;
    delete x25519_other_;
  }
  static Pem* rsa_;
  static Pem* rsa_other_;
  static Pem* x25519_;
  static Pem* x25519_other_;
};
Pem* RecipientWrapTest::rsa_ = nullptr;
Pem* RecipientWrapTest::rsa_other_ = nullptr;
Pem* RecipientWrapTest::x25519_ = nullptr;
Pem* RecipientWrapTest::x25519_other_ = nullptr;

TEST_F(RecipientWrapTest, RoundTripsForBothKeyTypes) {
  for (const Pem* pem : {rsa_, x25519_}) {
    auto pub = RecipientPublicKey::FromPem(pem->public_pem);
    ASSERT_TRUE(pub.ok()) << pub.status();
    auto priv = RecipientPrivateKey::FromPem(Secret(pem->private_pem));
    ASSERT_TRUE(priv.ok()) << priv.status();
    EXPECT_EQ(pub->fingerprint(), priv->fingerprint());
    EXPECT_EQ(pub->type(), priv->type());
    SecretBytes key = *RandomSecret(32);
    auto wrapped = pub->Wrap(key);
    ASSERT_TRUE(wrapped.ok()) << wrapped.status();
    if (pub->type() == RecipientKeyType::kX25519) {
      EXPECT_EQ(wrapped->size(), kX25519WrappedSize);
      EXPECT_EQ(pub->description(), "X25519");
    } else {
      EXPECT_EQ(wrapped->size(), 256u);
      EXPECT_EQ(pub->description(), "RSA-2048");
    }
    auto unwrapped = priv->Unwrap(*wrapped);
    ASSERT_TRUE(unwrapped.ok()) << unwrapped.status();
    EXPECT_TRUE(SecretEquals(*unwrapped, key));
    // Randomized: wrapping twice gives different bytes that both open.
    auto again = pub->Wrap(key);
    ASSERT_TRUE(again.ok());
    EXPECT_NE(*again, *wrapped);
  }
}

TEST_F(RecipientWrapTest, AnotherPrivateKeyDoesNotOpen) {
  const std::pair<const Pem*, const Pem*> pairs[] = {{rsa_, rsa_other_}, {x25519_, x25519_other_}};
  for (const auto& [right, wrong] : pairs) {
    auto pub = RecipientPublicKey::FromPem(right->public_pem);
    ASSERT_TRUE(pub.ok());
    auto other = RecipientPrivateKey::FromPem(Secret(wrong->private_pem));
    ASSERT_TRUE(other.ok());
    EXPECT_NE(pub->fingerprint(), other->fingerprint());
    auto wrapped = pub->Wrap(*RandomSecret(32));
    ASSERT_TRUE(wrapped.ok());
    auto unwrapped = other->Unwrap(*wrapped);
    ASSERT_FALSE(unwrapped.ok());
    EXPECT_EQ(ErrorCodeOf(unwrapped.status()), ErrorCode::kExportWrongRecipient);
  }
}

TEST_F(RecipientWrapTest, EveryFlippedByteOfAWrappedKeyIsRefused) {
  for (const Pem* pem : {rsa_, x25519_}) {
    auto pub = RecipientPublicKey::FromPem(pem->public_pem);
    auto priv = RecipientPrivateKey::FromPem(Secret(pem->private_pem));
    ASSERT_TRUE(pub.ok() && priv.ok());
    const std::string wrapped = *pub->Wrap(*RandomSecret(32));
    for (size_t i = 0; i < wrapped.size(); ++i) {
      std::string bad = wrapped;
      bad[i] = static_cast<char>(bad[i] ^ 0x01);
      auto unwrapped = priv->Unwrap(bad);
      EXPECT_FALSE(unwrapped.ok()) << pub->description() << " byte " << i;
    }
    EXPECT_FALSE(priv->Unwrap(wrapped.substr(0, wrapped.size() - 1)).ok());
    EXPECT_FALSE(priv->Unwrap("").ok());
  }
}

TEST_F(RecipientWrapTest, X25519LowOrderEphemeralIsRefused) {
  auto priv = RecipientPrivateKey::FromPem(Secret(x25519_->private_pem));
  ASSERT_TRUE(priv.ok());
  // The all-zero u-coordinate is a low-order point: the shared secret would be zero.
  std::string wrapped(kX25519WrappedSize, '\0');
  auto unwrapped = priv->Unwrap(wrapped);
  ASSERT_FALSE(unwrapped.ok());
  EXPECT_EQ(ErrorCodeOf(unwrapped.status()), ErrorCode::kExportWrongRecipient);
}

TEST_F(RecipientWrapTest, RsaWrapOpensWithStockOpenSslOaepSha256) {
  auto pub = RecipientPublicKey::FromPem(rsa_->public_pem);
  ASSERT_TRUE(pub.ok());
  SecretBytes key = *RandomSecret(32);
  const std::string wrapped = *pub->Wrap(key);
  BIO* bio = BIO_new_mem_buf(rsa_->private_pem.data(), static_cast<int>(rsa_->private_pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(pkey, nullptr);
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new(pkey, nullptr);
  ASSERT_EQ(EVP_PKEY_decrypt_init(ctx), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()), 1);
  ASSERT_EQ(EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()), 1);
  unsigned char out[512];
  size_t out_len = sizeof(out);
  ASSERT_EQ(
      EVP_PKEY_decrypt(ctx, out, &out_len, reinterpret_cast<const unsigned char*>(wrapped.data()),
                       wrapped.size()),
      1);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  ASSERT_EQ(out_len, 32u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(out), 32),
            std::string(reinterpret_cast<const char*>(key.data()), 32));
}

TEST_F(RecipientWrapTest, UnsuitableKeysAreRefusedWithTheRecipientKeyCode) {
  const std::string small_rsa = Generate("RSA", 1024).public_pem;
  const std::string ec = Generate("EC").public_pem;
  const std::string ed = Generate("ED25519").public_pem;
  for (const std::string& pem :
       {std::string(), std::string("not a key"), small_rsa, ec, ed, rsa_->private_pem}) {
    auto key = RecipientPublicKey::FromPem(pem);
    ASSERT_FALSE(key.ok()) << pem.substr(0, 40);
    EXPECT_EQ(ErrorCodeOf(key.status()), ErrorCode::kExportRecipientKeyInvalid);
  }
  // Private keys: the same types, and a passphrase-protected key, are refused.
  EXPECT_EQ(ErrorCodeOf(RecipientPrivateKey::FromPem(Secret(Generate("EC").private_pem)).status()),
            ErrorCode::kExportRecipientKeyInvalid);
  EXPECT_EQ(ErrorCodeOf(RecipientPrivateKey::FromPem(Secret(rsa_->public_pem)).status()),
            ErrorCode::kExportRecipientKeyInvalid);
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  BIO* bio = BIO_new(BIO_s_mem());
  const char* pass = "passphrase";
  PEM_write_bio_PKCS8PrivateKey(bio, key, EVP_aes_256_cbc(), pass, 10, nullptr, nullptr);
  const std::string encrypted = BioText(bio);
  BIO_free(bio);
  EVP_PKEY_free(key);
  EXPECT_EQ(ErrorCodeOf(RecipientPrivateKey::FromPem(Secret(encrypted)).status()),
            ErrorCode::kExportRecipientKeyInvalid);
}

TEST_F(RecipientWrapTest, OnlyThirtyTwoByteKeysAreWrapped) {
  auto pub = RecipientPublicKey::FromPem(x25519_->public_pem);
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(ErrorCodeOf(pub->Wrap(*RandomSecret(16)).status()), ErrorCode::kInvalidArgument);
}

TEST(RecipientWrapCodesTest, KeepTheirNumbersAndNames) {
  EXPECT_EQ(static_cast<int>(ErrorCode::kExportRecipientKeyInvalid), 540);
  EXPECT_EQ(static_cast<int>(ErrorCode::kExportArchiveCorrupt), 541);
  EXPECT_EQ(static_cast<int>(ErrorCode::kExportWrongRecipient), 542);
  EXPECT_EQ(ErrorCodeName(ErrorCode::kExportRecipientKeyInvalid), "EXPORT_RECIPIENT_KEY_INVALID");
  EXPECT_EQ(ErrorCodeName(ErrorCode::kExportArchiveCorrupt), "EXPORT_ARCHIVE_CORRUPT");
  EXPECT_EQ(ErrorCodeName(ErrorCode::kExportWrongRecipient), "EXPORT_WRONG_RECIPIENT");
}

}  // namespace
}  // namespace coffer::crypto
