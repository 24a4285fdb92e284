#include "kms/audit/signer.h"

#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include <array>

#include "crypto/base/status.h"

namespace coffer::kms::audit {
namespace {

struct BioDeleter {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

absl::Status OpenSslFailure(std::string_view operation) {
  ERR_clear_error();
  return MakeError(ErrorCode::kCryptoLibraryError, std::string(operation) + " failed");
}

// INVALID_ARGUMENT unless `key` is an EC key on P-256.
absl::Status CheckP256(EVP_PKEY* key) {
  std::array<char, 64> group{};
  size_t length = 0;
  if (EVP_PKEY_is_a(key, "EC") != 1 ||
      EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group.data(), group.size(),
                                     &length) != 1 ||
      std::string_view(group.data(), length) != "prime256v1") {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "the checkpoint key must be ECDSA P-256");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SoftwareEcdsaSigner>> SoftwareEcdsaSigner::Generate() {
  EvpPkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (key == nullptr) return OpenSslFailure("EVP_PKEY_Q_keygen(P-256)");
  return std::unique_ptr<SoftwareEcdsaSigner>(new SoftwareEcdsaSigner(std::move(key)));
}

absl::StatusOr<std::unique_ptr<SoftwareEcdsaSigner>> SoftwareEcdsaSigner::FromPrivateKeyPem(
    const crypto::SecretBytes& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return OpenSslFailure("BIO_new_mem_buf");
  EvpPkeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "not a PEM private key");
  }
  COFFER_RETURN_IF_ERROR(CheckP256(key.get()));
  return std::unique_ptr<SoftwareEcdsaSigner>(new SoftwareEcdsaSigner(std::move(key)));
}

absl::StatusOr<std::string> SoftwareEcdsaSigner::Sign(std::string_view message) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  size_t length = 0;
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1 ||
      EVP_DigestSign(ctx.get(), nullptr, &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return OpenSslFailure("EVP_DigestSign");
  }
  std::string signature(length, '\0');
  if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1) {
    return OpenSslFailure("EVP_DigestSign");
  }
  signature.resize(length);
  return signature;
}

absl::StatusOr<std::string> SoftwareEcdsaSigner::PublicKeyPem() {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_PUBKEY(bio.get(), key_.get()) != 1) {
    return OpenSslFailure("PEM_write_bio_PUBKEY");
  }
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);  // NOLINT(google-runtime-int)
  if (size <= 0 || data == nullptr) return OpenSslFailure("BIO_get_mem_data");
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<CheckpointVerifier> CheckpointVerifier::FromPublicKeyPem(std::string_view pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (bio == nullptr) return OpenSslFailure("BIO_new_mem_buf");
  EvpPkeyPtr key(PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr) {
    ERR_clear_error();
    return MakeError(ErrorCode::kInvalidArgument, "not a PEM public key");
  }
  COFFER_RETURN_IF_ERROR(CheckP256(key.get()));
  return CheckpointVerifier(std::move(key));
}

absl::Status CheckpointVerifier::Verify(std::string_view message,
                                        std::string_view der_signature) const {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  if (ctx == nullptr ||
      EVP_DigestVerifyInit(ctx.get(), nullptr, EVP_sha256(), nullptr, key_.get()) != 1) {
    return OpenSslFailure("EVP_DigestVerifyInit");
  }
  const int verified = EVP_DigestVerify(
      ctx.get(), reinterpret_cast<const unsigned char*>(der_signature.data()), der_signature.size(),
      reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();  // a malformed DER signature queues a decoding error
  if (verified != 1) {
    return MakeError(ErrorCode::kAuditTampered, "checkpoint signature does not verify");
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit
