#include "crypto/hkdf.h"

#include <openssl/core_names.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/internal/openssl_util.h"

namespace coffer::crypto {
namespace {

// Fetched once per process and kept alive, as fetching dominates a small derivation.
const EVP_KDF* FetchedHkdf() {
  static EVP_KDF* const hkdf = EVP_KDF_fetch(nullptr, OSSL_KDF_NAME_HKDF, nullptr);
  return hkdf;
}

// Runs OpenSSL's HKDF in `mode` (EVP_KDF_HKDF_MODE_*) with `key` as the IKM (or the PRK for
// expand-only) and writes `length` bytes into a fresh secret.
absl::StatusOr<SecretBytes> Derive(int mode, const SecretBytes& key, std::string_view salt,
                                   std::string_view info, size_t length) {
  if (key.empty()) {
    return MakeError(ErrorCode::kInvalidArgument, "HKDF needs non-empty input key material");
  }
  if (length == 0 || length > kHkdfSha256MaxOutputSize) {
    return MakeError(ErrorCode::kInvalidArgument, "HKDF-SHA256 output length must be 1.." +
                                                      std::to_string(kHkdfSha256MaxOutputSize) +
                                                      " bytes, got " + std::to_string(length));
  }
  const EVP_KDF* hkdf = FetchedHkdf();
  if (hkdf == nullptr) return internal::OpenSslError("EVP_KDF_fetch(HKDF)");
  // EVP_KDF_CTX_new takes a non-const EVP_KDF (it bumps the reference count).
  internal::EvpKdfCtxPtr ctx(EVP_KDF_CTX_new(const_cast<EVP_KDF*>(hkdf)));
  if (ctx == nullptr) return internal::OpenSslError("EVP_KDF_CTX_new");

  char digest[] = "SHA256";
  std::vector<OSSL_PARAM> params;
  params.push_back(OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode));
  params.push_back(OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0));
  // OpenSSL only reads these buffers; OSSL_PARAM has no const-pointer constructor.
  params.push_back(OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY,
                                                     const_cast<uint8_t*>(key.data()), key.size()));
  // Absent salt and info are RFC 5869's defaults; OpenSSL rejects zero-length octet params.
  if (!salt.empty()) {
    params.push_back(OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()));
  }
  if (!info.empty()) {
    params.push_back(OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size()));
  }
  params.push_back(OSSL_PARAM_construct_end());

  COFFER_ASSIGN_OR_RETURN(SecretBytes out, SecretBytes::Allocate(length));
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params.data()) != 1) {
    return internal::OpenSslError("EVP_KDF_derive(HKDF)");  // `out` is wiped as it is freed
  }
  return out;
}

}  // namespace

absl::StatusOr<SecretBytes> HkdfSha256(const SecretBytes& ikm, std::string_view salt,
                                       std::string_view info, size_t length) {
  return Derive(EVP_KDF_HKDF_MODE_EXTRACT_AND_EXPAND, ikm, salt, info, length);
}

absl::StatusOr<SecretBytes> HkdfSha256Extract(const SecretBytes& ikm, std::string_view salt) {
  return Derive(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, ikm, salt, {}, kHkdfSha256PrkSize);
}

absl::StatusOr<SecretBytes> HkdfSha256Expand(const SecretBytes& prk, std::string_view info,
                                             size_t length) {
  return Derive(EVP_KDF_HKDF_MODE_EXPAND_ONLY, prk, {}, info, length);
}

}  // namespace coffer::crypto
