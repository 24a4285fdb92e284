#include "crypto/recipient_wrap.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <cstring>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "crypto/hkdf.h"
#include "crypto/internal/aes_gcm.h"
#include "crypto/internal/openssl_util.h"
#include "crypto/random.h"

namespace coffer::crypto {
namespace {

using internal::RecipientPkeyPtr;

constexpr size_t kX25519KeySize = 32;
constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct PkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using PkeyCtxPtr = std::unique_ptr<EVP_PKEY_CTX, PkeyCtxFree>;

absl::Status InvalidKey(std::string_view why) {
  ERR_clear_error();
  return MakeError(ErrorCode::kExportRecipientKeyInvalid, why);
}

absl::Status WrongRecipient() {
  ERR_clear_error();
  return MakeError(ErrorCode::kExportWrongRecipient,
                   "the private key does not open the archive's export key (it was made for "
                   "another recipient, or the wrapped key was altered)");
}

// The key's type and size, or EXPORT_RECIPIENT_KEY_INVALID.
absl::Status Classify(EVP_PKEY* key, RecipientKeyType* type, size_t* bits) {
  if (EVP_PKEY_is_a(key, "RSA")) {
    *type = RecipientKeyType::kRsaOaepSha256;
    *bits = static_cast<size_t>(EVP_PKEY_get_bits(key));
    if (*bits < kMinRecipientRsaBits) {
      return InvalidKey("an RSA recipient key must have at least 2048 bits; this one has " +
                        std::to_string(*bits));
    }
    return absl::OkStatus();
  }
  if (EVP_PKEY_is_a(key, "X25519")) {
    *type = RecipientKeyType::kX25519;
    *bits = 253;
    return absl::OkStatus();
  }
  return InvalidKey(
      "a recipient key must be RSA (2048 bits or more) or X25519; this PEM holds another type "
      "(e.g. EC or Ed25519)");
}

absl::StatusOr<RecipientFingerprint> Fingerprint(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(key, &der);
  if (length <= 0) return internal::OpenSslError("i2d_PUBKEY");
  RecipientFingerprint fingerprint;
  SHA256(der, static_cast<size_t>(length), fingerprint.data());
  OPENSSL_free(der);
  return fingerprint;
}

absl::StatusOr<std::string> RawPublic(EVP_PKEY* key) {
  std::string raw(kX25519KeySize, '\0');
  size_t length = raw.size();
  if (EVP_PKEY_get_raw_public_key(key, reinterpret_cast<unsigned char*>(raw.data()), &length) !=
          1 ||
      length != kX25519KeySize) {
    return internal::OpenSslError("EVP_PKEY_get_raw_public_key");
  }
  return raw;
}

// X25519(private, peer) into a secret; refuses the all-zero result of a low-order point.
absl::StatusOr<SecretBytes> Agree(EVP_PKEY* private_key, EVP_PKEY* peer) {
  PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, private_key, nullptr));
  if (ctx == nullptr || EVP_PKEY_derive_init(ctx.get()) != 1 ||
      EVP_PKEY_derive_set_peer(ctx.get(), peer) != 1) {
    ERR_clear_error();
    return MakeError(ErrorCode::kExportWrongRecipient,
                     "X25519 key agreement failed (an invalid public value)");
  }
  COFFER_ASSIGN_OR_RETURN(SecretBytes shared, SecretBytes::Allocate(kX25519KeySize));
  size_t length = shared.size();
  if (EVP_PKEY_derive(ctx.get(), shared.data(), &length) != 1 || length != kX25519KeySize) {
    ERR_clear_error();
    return MakeError(ErrorCode::kExportWrongRecipient,
                     "X25519 key agreement failed (a low-order public value)");
  }
  uint8_t any = 0;
  for (uint8_t b : shared.span()) any |= b;
  if (any == 0) {
    return MakeError(ErrorCode::kExportWrongRecipient,
                     "X25519 key agreement gave the all-zero secret (a low-order public value)");
  }
  return shared;
}

absl::StatusOr<SecretBytes> X25519Kek(const SecretBytes& shared, std::string_view ephemeral_public,
                                      std::string_view recipient_public) {
  std::string salt(ephemeral_public);
  salt.append(recipient_public);
  return HkdfSha256(shared, salt, kX25519WrapInfo, 32);
}

absl::Status SetOaep(EVP_PKEY_CTX* ctx) {
  if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) != 1 ||
      EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) != 1 ||
      EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) != 1) {
    return internal::OpenSslError("RSA-OAEP parameters");
  }
  return absl::OkStatus();
}

}  // namespace

std::string RecipientKeyDescription(RecipientKeyType type, size_t bits) {
  switch (type) {
    case RecipientKeyType::kRsaOaepSha256:
      return "RSA-" + std::to_string(bits);
    case RecipientKeyType::kX25519:
      return "X25519";
  }
  return "unknown";
}

absl::StatusOr<RecipientPublicKey> RecipientPublicKey::FromPem(std::string_view pem) {
  if (pem.empty()) return InvalidKey("the recipient public key is empty");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return internal::OpenSslError("BIO_new_mem_buf");
  RecipientPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    return InvalidKey(
        "the recipient key is not a PEM public key (\"-----BEGIN PUBLIC KEY-----\", e.g. from "
        "`openssl pkey -pubout`)");
  }
  RecipientKeyType type;
  size_t bits = 0;
  COFFER_RETURN_IF_ERROR(Classify(key.get(), &type, &bits));
  COFFER_ASSIGN_OR_RETURN(RecipientFingerprint fingerprint, Fingerprint(key.get()));
  return RecipientPublicKey(std::move(key), type, bits, fingerprint);
}

absl::StatusOr<std::string> RecipientPublicKey::Wrap(const SecretBytes& key) const {
  if (key.size() != kRecipientWrappedKeySize) {
    return MakeError(ErrorCode::kInvalidArgument, "only a 32-byte key can be wrapped");
  }
  if (type_ == RecipientKeyType::kRsaOaepSha256) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key_.get(), nullptr));
    if (ctx == nullptr || EVP_PKEY_encrypt_init(ctx.get()) != 1) {
      return internal::OpenSslError("EVP_PKEY_encrypt_init");
    }
    COFFER_RETURN_IF_ERROR(SetOaep(ctx.get()));
    size_t length = 0;
    if (EVP_PKEY_encrypt(ctx.get(), nullptr, &length, key.data(), key.size()) != 1) {
      return internal::OpenSslError("EVP_PKEY_encrypt");
    }
    std::string wrapped(length, '\0');
    if (EVP_PKEY_encrypt(ctx.get(), reinterpret_cast<unsigned char*>(wrapped.data()), &length,
                         key.data(), key.size()) != 1) {
      return internal::OpenSslError("EVP_PKEY_encrypt");
    }
    wrapped.resize(length);
    return wrapped;
  }
  // X25519: an ephemeral key drawn from the private DRBG.
  COFFER_ASSIGN_OR_RETURN(SecretBytes ephemeral_raw, RandomSecret(kX25519KeySize));
  RecipientPkeyPtr ephemeral(
      EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, ephemeral_raw.data(), kX25519KeySize));
  if (ephemeral == nullptr) return internal::OpenSslError("EVP_PKEY_new_raw_private_key");
  COFFER_ASSIGN_OR_RETURN(std::string ephemeral_public, RawPublic(ephemeral.get()));
  COFFER_ASSIGN_OR_RETURN(std::string recipient_public, RawPublic(key_.get()));
  COFFER_ASSIGN_OR_RETURN(SecretBytes shared, Agree(ephemeral.get(), key_.get()));
  COFFER_ASSIGN_OR_RETURN(SecretBytes kek, X25519Kek(shared, ephemeral_public, recipient_public));
  COFFER_ASSIGN_OR_RETURN(internal::AesGcm256 gcm, internal::AesGcm256::Create(kek));
  std::string wrapped = ephemeral_public;
  wrapped.resize(kX25519WrappedSize);
  auto* out = reinterpret_cast<uint8_t*>(wrapped.data());
  COFFER_RETURN_IF_ERROR(RandomNonce(absl::MakeSpan(out + kX25519KeySize, kNonceSize)));
  COFFER_RETURN_IF_ERROR(gcm.Seal(
      absl::MakeConstSpan(out + kX25519KeySize, kNonceSize),
      std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), kX25519WrapAad, "",
      absl::MakeSpan(out + kX25519KeySize + kNonceSize, kRecipientWrappedKeySize + kTagSize)));
  return wrapped;
}

absl::StatusOr<RecipientPrivateKey> RecipientPrivateKey::FromPem(const SecretBytes& pem) {
  if (pem.empty()) return InvalidKey("the private key file is empty");
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return internal::OpenSslError("BIO_new_mem_buf");
  // No passphrase prompt: a protected key fails here with a clear message.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  RecipientPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
  if (key == nullptr) {
    return InvalidKey(
        "the private key is not an unencrypted PEM private key (\"-----BEGIN PRIVATE KEY-----\"; "
        "decrypt a protected one with `openssl pkey` first)");
  }
  RecipientKeyType type;
  size_t bits = 0;
  COFFER_RETURN_IF_ERROR(Classify(key.get(), &type, &bits));
  COFFER_ASSIGN_OR_RETURN(RecipientFingerprint fingerprint, Fingerprint(key.get()));
  return RecipientPrivateKey(std::move(key), type, fingerprint);
}

absl::StatusOr<SecretBytes> RecipientPrivateKey::Unwrap(std::string_view wrapped) const {
  if (type_ == RecipientKeyType::kRsaOaepSha256) {
    PkeyCtxPtr ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, key_.get(), nullptr));
    if (ctx == nullptr || EVP_PKEY_decrypt_init(ctx.get()) != 1) {
      return internal::OpenSslError("EVP_PKEY_decrypt_init");
    }
    COFFER_RETURN_IF_ERROR(SetOaep(ctx.get()));
    size_t length = 0;
    const auto* in = reinterpret_cast<const unsigned char*>(wrapped.data());
    if (EVP_PKEY_decrypt(ctx.get(), nullptr, &length, in, wrapped.size()) != 1) {
      return WrongRecipient();
    }
    COFFER_ASSIGN_OR_RETURN(SecretBytes out, SecretBytes::Allocate(length));
    if (EVP_PKEY_decrypt(ctx.get(), out.data(), &length, in, wrapped.size()) != 1 ||
        length != kRecipientWrappedKeySize) {
      return WrongRecipient();
    }
    COFFER_ASSIGN_OR_RETURN(SecretBytes key, SecretBytes::CopyFrom(out.span().first(length)));
    return key;
  }
  if (wrapped.size() != kX25519WrappedSize) return WrongRecipient();
  const std::string_view ephemeral_public = wrapped.substr(0, kX25519KeySize);
  RecipientPkeyPtr ephemeral(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_X25519, nullptr, reinterpret_cast<const unsigned char*>(ephemeral_public.data()),
      kX25519KeySize));
  if (ephemeral == nullptr) return WrongRecipient();
  COFFER_ASSIGN_OR_RETURN(std::string recipient_public, RawPublic(key_.get()));
  COFFER_ASSIGN_OR_RETURN(SecretBytes shared, Agree(key_.get(), ephemeral.get()));
  COFFER_ASSIGN_OR_RETURN(SecretBytes kek, X25519Kek(shared, ephemeral_public, recipient_public));
  COFFER_ASSIGN_OR_RETURN(internal::AesGcm256 gcm, internal::AesGcm256::Create(kek));
  COFFER_ASSIGN_OR_RETURN(SecretBytes key, SecretBytes::Allocate(kRecipientWrappedKeySize));
  const auto* in = reinterpret_cast<const uint8_t*>(wrapped.data());
  absl::Status opened =
      gcm.Open(absl::MakeConstSpan(in + kX25519KeySize, kNonceSize),
               wrapped.substr(kX25519KeySize + kNonceSize), kX25519WrapAad, "", key.mutable_span());
  if (!opened.ok()) return WrongRecipient();
  return key;
}

}  // namespace coffer::crypto
