#include "crypto/hmac.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
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

// Keys `ctx` for HMAC-SHA256 with `key`; returns EVP_MAC_init's result.
int KeyContext(EVP_MAC_CTX* ctx, const uint8_t* key, size_t key_size) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_init(ctx, key, key_size, params);
}

// Whether EVP_MAC_init with no key restarts an HMAC under the key its context holds. It does
// from OpenSSL 3.0.3 on (HMAC_Init_ex(ctx, NULL, 0, NULL, NULL) copies the keyed inner state
// back: openssl/openssl#17811, fixed by #18100); in 3.0.0-3.0.2 it succeeds and does nothing,
// so a reused context would silently MAC the previous input's final state along with the next.
// Found out once per process by computing, not from the version number, so another provider
// is judged by what it does: a context keyed with a public all-zero key MACs a fixed input,
// is re-initialised, and must give the same tag again. When it does not, nothing is reused.
bool KeylessReinitRestarts() {
  static const bool restarts = [] {
    const EVP_MAC* hmac = FetchedHmac();
    if (hmac == nullptr) return false;
    internal::EvpMacCtxPtr ctx(EVP_MAC_CTX_new(const_cast<EVP_MAC*>(hmac)));
    static constexpr uint8_t kProbeKey[kHmacSha256MinKeySize] = {};  // public; guards nothing
    static constexpr uint8_t kProbeInput[] = {'p', 'r', 'o', 'b', 'e'};
    auto tag_of_input = [&ctx]() -> absl::StatusOr<HmacSha256Tag> {
      if (EVP_MAC_update(ctx.get(), kProbeInput, sizeof(kProbeInput)) != 1) {
        return internal::OpenSslError("EVP_MAC_update");
      }
      return FinalizeInto(ctx.get());
    };
    if (ctx == nullptr || KeyContext(ctx.get(), kProbeKey, sizeof(kProbeKey)) != 1) {
      ERR_clear_error();
      return false;
    }
    absl::StatusOr<HmacSha256Tag> first = tag_of_input();
    if (!first.ok() || EVP_MAC_init(ctx.get(), nullptr, 0, nullptr) != 1) {
      ERR_clear_error();
      return false;
    }
    absl::StatusOr<HmacSha256Tag> again = tag_of_input();
    return again.ok() && *again == *first;
  }();
  return restarts;
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
  if (KeyContext(ctx.get(), key.data(), key.size()) != 1) {
    return internal::OpenSslError("EVP_MAC_init");
  }
  return HmacSha256(std::move(ctx));
}

absl::StatusOr<internal::EvpMacCtxPtr> HmacSha256::DuplicateKeyed() const {
  internal::EvpMacCtxPtr ctx(EVP_MAC_CTX_dup(keyed_.get()));
  if (ctx == nullptr) return internal::OpenSslError("EVP_MAC_CTX_dup");
  return ctx;
}

absl::StatusOr<HmacSha256::Lease> HmacSha256::StartCall() const {
  const bool reusable = KeylessReinitRestarts();
  EVP_MAC_CTX* pooled = reusable ? pool_->Take() : nullptr;
  if (pooled == nullptr) {
    COFFER_ASSIGN_OR_RETURN(internal::EvpMacCtxPtr copy, DuplicateKeyed());
    Pool::Adopt();
    Lease fresh(pool_.get(), copy.release());  // as keyed: no input yet
    if (!reusable) fresh.Discard();            // an OpenSSL that cannot restart it: freed after
    return fresh;
  }
  Lease lease(pool_.get(), pooled);
  // No key: OpenSSL restarts the computation under the key the context already holds.
  if (EVP_MAC_init(pooled, nullptr, 0, nullptr) != 1) {
    lease.Discard();
    return internal::OpenSslError("EVP_MAC_init(re-initialise)");
  }
  return lease;
}

absl::StatusOr<HmacSha256Tag> HmacSha256::Compute(std::string_view data) const {
  COFFER_ASSIGN_OR_RETURN(Lease lease, StartCall());
  if (EVP_MAC_update(lease.get(), reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1) {
    lease.Discard();
    return internal::OpenSslError("EVP_MAC_update");
  }
  absl::StatusOr<HmacSha256Tag> tag = FinalizeInto(lease.get());
  if (!tag.ok()) lease.Discard();
  return tag;
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
