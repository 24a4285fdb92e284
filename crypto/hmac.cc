#include "crypto/hmac.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <string>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"

namespace coffer::crypto {
namespace {

// Fetched once per process and kept alive: fetching is the expensive part of a one-shot HMAC.
const EVP_MAC* FetchedHmac() {
  static EVP_MAC* const hmac = EVP_MAC_fetch(nullptr, OSSL_MAC_NAME_HMAC, nullptr);
  return hmac;
}

absl::StatusOr<HmacSha256Tag> FinalizeInto(EVP_MAC_CTX* ctx) {
  HmacSha256Tag tag;
  size_t written = 0;
  if (EVP_MAC_final(ctx, tag.data(), &written, tag.size()) != 1 || written != tag.size()) {
    return internal::OpenSslError("EVP_MAC_final");
  }
  return tag;
}

}  // namespace

absl::StatusOr<HmacSha256> HmacSha256::Create(const SecretBytes& key) {
  if (key.size() < kHmacSha256MinKeySize) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        "HMAC-SHA256 keys must be at least 16 bytes, got " + std::to_string(key.size()));
  }
  const EVP_MAC* hmac = FetchedHmac();
  if (hmac == nullptr) return internal::OpenSslError("EVP_MAC_fetch(HMAC)");
  // EVP_MAC_CTX_new takes a non-const EVP_MAC (it bumps the reference count).
  internal::EvpMacCtxPtr ctx(EVP_MAC_CTX_new(const_cast<EVP_MAC*>(hmac)));
  if (ctx == nullptr) return internal::OpenSslError("EVP_MAC_CTX_new");
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  if (EVP_MAC_init(ctx.get(), key.data(), key.size(), params) != 1) {
    return internal::OpenSslError("EVP_MAC_init");
  }
  return HmacSha256(std::move(ctx));
}

absl::StatusOr<internal::EvpMacCtxPtr> HmacSha256::DuplicateKeyed() const {
  internal::EvpMacCtxPtr ctx(EVP_MAC_CTX_dup(keyed_.get()));
  if (ctx == nullptr) return internal::OpenSslError("EVP_MAC_CTX_dup");
  return ctx;
}

absl::StatusOr<HmacSha256Tag> HmacSha256::Compute(std::string_view data) const {
  COFFER_ASSIGN_OR_RETURN(internal::EvpMacCtxPtr ctx, DuplicateKeyed());
  if (EVP_MAC_update(ctx.get(), reinterpret_cast<const unsigned char*>(data.data()), data.size()) !=
      1) {
    return internal::OpenSslError("EVP_MAC_update");
  }
  return FinalizeInto(ctx.get());
}

absl::Status HmacSha256::Verify(std::string_view data, std::string_view tag) const {
  COFFER_ASSIGN_OR_RETURN(HmacSha256Tag expected, Compute(data));
  std::string_view expected_view(reinterpret_cast<const char*>(expected.data()), expected.size());
  if (!ConstantTimeEquals(expected_view, tag)) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "HMAC-SHA256 tag mismatch");
  }
  return absl::OkStatus();
}

absl::StatusOr<IncrementalHmacSha256> HmacSha256::StartIncremental() const {
  COFFER_ASSIGN_OR_RETURN(internal::EvpMacCtxPtr ctx, DuplicateKeyed());
  return IncrementalHmacSha256(std::move(ctx));
}

absl::Status IncrementalHmacSha256::Update(std::string_view data) {
  if (ctx_ == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "HMAC Update called after Finalize");
  }
  if (EVP_MAC_update(ctx_.get(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    return internal::OpenSslError("EVP_MAC_update");
  }
  return absl::OkStatus();
}

absl::StatusOr<HmacSha256Tag> IncrementalHmacSha256::Finalize() {
  if (ctx_ == nullptr) {
    return MakeError(ErrorCode::kFailedPrecondition, "HMAC Finalize called twice");
  }
  internal::EvpMacCtxPtr ctx = std::move(ctx_);
  return FinalizeInto(ctx.get());
}

}  // namespace coffer::crypto
