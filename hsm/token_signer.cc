#include "hsm/token_signer.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <mutex>

#include "crypto/base/status.h"
#include "hsm/internal/attributes.h"
#include "hsm/internal/ck_error.h"
#include "hsm/internal/key_operations.h"
#include "hsm/internal/labels.h"

namespace coffer::hsm {
namespace {

using internal::AttributeList;
using internal::CkError;
using internal::ObjectId;
using internal::ObjectKind;

// DER of the OID prime256v1 / secp256r1 (1.2.840.10045.3.1.7), the CKA_EC_PARAMS value.
constexpr unsigned char kP256Params[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                         0xce, 0x3d, 0x03, 0x01, 0x07};
// Converts the token's raw r||s (64 bytes for P-256) to a DER ECDSA-Sig-Value.
absl::StatusOr<std::string> RawEcdsaToDer(std::string_view raw) {
  if (raw.size() != 64) {
    return MakeError(ErrorCode::kHsmDeviceError,
                     "the token returned a " + std::to_string(raw.size()) +
                         "-byte ECDSA signature; P-256 signatures are 64 bytes (r||s)");
  }
  const auto* bytes = reinterpret_cast<const unsigned char*>(raw.data());
  BIGNUM* r = BN_bin2bn(bytes, 32, nullptr);
  BIGNUM* s = BN_bin2bn(bytes + 32, 32, nullptr);
  ECDSA_SIG* sig = ECDSA_SIG_new();
  if (r == nullptr || s == nullptr || sig == nullptr || ECDSA_SIG_set0(sig, r, s) != 1) {
    BN_free(r);
    BN_free(s);
    ECDSA_SIG_free(sig);
    return MakeError(ErrorCode::kCryptoLibraryError, "ECDSA_SIG_set0 failed");
  }
  unsigned char* der = nullptr;
  int der_len = i2d_ECDSA_SIG(sig, &der);
  ECDSA_SIG_free(sig);
  if (der_len <= 0) return MakeError(ErrorCode::kCryptoLibraryError, "i2d_ECDSA_SIG failed");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(der_len));
  OPENSSL_free(der);
  return out;
}

// CKA_EC_POINT is a DER OCTET STRING holding the uncompressed point (some modules omit the
// wrapper); returns a PEM SubjectPublicKeyInfo.
absl::StatusOr<std::string> EcPointToPem(std::string_view ec_point) {
  std::string point(ec_point);
  if (point.size() == 67 && static_cast<uint8_t>(point[0]) == 0x04 &&
      static_cast<uint8_t>(point[1]) == 65) {
    point = point.substr(2);
  }
  if (point.size() != 65 || static_cast<uint8_t>(point[0]) != 0x04) {
    return MakeError(ErrorCode::kHsmDeviceError,
                     "the token's CKA_EC_POINT is not an uncompressed P-256 point");
  }
  OSSL_PARAM_BLD* builder = OSSL_PARAM_BLD_new();
  OSSL_PARAM* params = nullptr;
  EVP_PKEY_CTX* ctx = nullptr;
  EVP_PKEY* pkey = nullptr;
  BIO* bio = nullptr;
  std::string pem;
  bool ok =
      builder != nullptr &&
      OSSL_PARAM_BLD_push_utf8_string(builder, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
      OSSL_PARAM_BLD_push_octet_string(builder, OSSL_PKEY_PARAM_PUB_KEY, point.data(),
                                       point.size()) == 1 &&
      (params = OSSL_PARAM_BLD_to_param(builder)) != nullptr &&
      (ctx = EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr)) != nullptr &&
      EVP_PKEY_fromdata_init(ctx) == 1 &&
      EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) == 1 &&
      (bio = BIO_new(BIO_s_mem())) != nullptr && PEM_write_bio_PUBKEY(bio, pkey) == 1;
  if (ok) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    pem.assign(data, static_cast<size_t>(len));
  }
  BIO_free(bio);
  EVP_PKEY_free(pkey);
  EVP_PKEY_CTX_free(ctx);
  OSSL_PARAM_free(params);
  OSSL_PARAM_BLD_free(builder);
  if (!ok) {
    return MakeError(ErrorCode::kCryptoLibraryError,
                     "OpenSSL could not encode the token's public key as PEM");
  }
  return pem;
}

}  // namespace

void TokenSigner::Rebuild(const std::vector<TokenObject>& objects) {
  std::optional<CK_OBJECT_HANDLE> private_key;
  std::optional<CK_OBJECT_HANDLE> public_key;
  for (const TokenObject& object : objects) {
    if (object.id.kind != ObjectKind::kSigningKey) continue;
    if (object.object_class == CKO_PRIVATE_KEY && !private_key) private_key = object.handle;
    if (object.object_class == CKO_PUBLIC_KEY && !public_key) public_key = object.handle;
  }
  std::unique_lock<std::shared_mutex> lock(map_mu_);
  private_key_ = private_key;
  public_key_ = public_key;
}

// Lock order: the Token's object-changes lock, its connection lock (inside Run), then map_mu_.
absl::Status TokenSigner::EnsureKeyPair() {
  {
    std::shared_lock<std::shared_mutex> map_lock(map_mu_);
    if (private_key_ && public_key_) return absl::OkStatus();
  }
  std::unique_lock<std::mutex> changes = token_.LockObjectChanges();
  return token_.Run(/*idempotent=*/false, [&](CK_SESSION_HANDLE session) -> absl::Status {
    {
      std::shared_lock<std::shared_mutex> map_lock(map_mu_);
      if (private_key_ && public_key_) return absl::OkStatus();
    }
    return GenerateKeyPair(session);
  });
}

absl::Status TokenSigner::GenerateKeyPair(CK_SESSION_HANDLE session) {
  ObjectId object{ObjectKind::kSigningKey};
  std::string label = internal::ObjectLabel(object);
  std::string id = internal::EncodeObjectId(object);
  AttributeList public_template;
  public_template.Ulong(CKA_CLASS, CKO_PUBLIC_KEY)
      .Ulong(CKA_KEY_TYPE, CKK_EC)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, false)
      .Bool(CKA_VERIFY, true)
      .Bool(CKA_ENCRYPT, false)
      .Bool(CKA_WRAP, false)
      .Bytes(CKA_EC_PARAMS,
             std::string_view(reinterpret_cast<const char*>(kP256Params), sizeof(kP256Params)))
      .Bytes(CKA_LABEL, label)
      .Bytes(CKA_ID, id);
  AttributeList private_template;
  private_template.Ulong(CKA_CLASS, CKO_PRIVATE_KEY)
      .Ulong(CKA_KEY_TYPE, CKK_EC)
      .Bool(CKA_TOKEN, true)
      .Bool(CKA_PRIVATE, true)
      .Bool(CKA_SENSITIVE, true)
      .Bool(CKA_EXTRACTABLE, false)
      .Bool(CKA_SIGN, true)
      .Bool(CKA_DECRYPT, false)
      .Bool(CKA_UNWRAP, false)
      .Bool(CKA_DERIVE, false)
      .Bytes(CKA_LABEL, label)
      .Bytes(CKA_ID, id);
  CK_MECHANISM mechanism = {CKM_EC_KEY_PAIR_GEN, nullptr, 0};
  CK_OBJECT_HANDLE public_key = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE private_key = CK_INVALID_HANDLE;
  CK_RV rv = token_.functions()->C_GenerateKeyPair(
      session, &mechanism, public_template.data(), public_template.size(), private_template.data(),
      private_template.size(), &public_key, &private_key);
  if (rv != CKR_OK) {
    return CkError("C_GenerateKeyPair", rv, "creating the audit signing key (ECDSA P-256)");
  }
  std::unique_lock<std::shared_mutex> map_lock(map_mu_);
  public_key_ = public_key;
  private_key_ = private_key;
  return absl::OkStatus();
}

absl::StatusOr<std::string> TokenSigner::Sign(std::string_view message) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  if (EVP_Digest(message.data(), message.size(), digest, nullptr, EVP_sha256(), nullptr) != 1) {
    return MakeError(ErrorCode::kCryptoLibraryError, "SHA-256 failed");
  }
  COFFER_RETURN_IF_ERROR(EnsureKeyPair());
  std::string raw;
  COFFER_RETURN_IF_ERROR(
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
        {
          std::shared_lock<std::shared_mutex> map_lock(map_mu_);
          if (!private_key_) return MakeError(ErrorCode::kHsmKeyNotFound, "no signing key");
          key = *private_key_;
        }
        COFFER_ASSIGN_OR_RETURN(
            raw, internal::SignWithKey(
                     token_.functions(), session, CKM_ECDSA, key,
                     std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)), 64));
        return absl::OkStatus();
      }));
  return RawEcdsaToDer(raw);
}

absl::StatusOr<std::string> TokenSigner::PublicKeyPem() {
  COFFER_RETURN_IF_ERROR(EnsureKeyPair());
  std::string ec_point;
  COFFER_RETURN_IF_ERROR(
      token_.Run(/*idempotent=*/true, [&](CK_SESSION_HANDLE session) -> absl::Status {
        CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
        {
          std::shared_lock<std::shared_mutex> map_lock(map_mu_);
          if (!public_key_) return MakeError(ErrorCode::kHsmKeyNotFound, "no public key");
          key = *public_key_;
        }
        char point[128];
        CK_ATTRIBUTE attribute = {CKA_EC_POINT, point, sizeof(point)};
        CK_RV rv = token_.functions()->C_GetAttributeValue(session, key, &attribute, 1);
        if (rv != CKR_OK) {
          return CkError("C_GetAttributeValue(CKA_EC_POINT)", rv, "exporting the audit public key");
        }
        ec_point.assign(point, attribute.ulValueLen);
        return absl::OkStatus();
      }));
  return EcPointToPem(ec_point);
}

}  // namespace coffer::hsm
