#include "hsm/testing/fake_key_wrapper.h"

#include <openssl/evp.h>

#include <memory>

#include "crypto/base/status.h"
#include "crypto/random.h"

namespace coffer::hsm {
namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

// RFC 3394 with the default IV, as CKM_AES_KEY_WRAP without parameters. Returns false when the
// integrity check fails (unwrap) or OpenSSL refuses.
bool AesKeyWrap(bool wrap, const crypto::SecretBytes& kek, const uint8_t* in, size_t in_len,
                uint8_t* out, size_t* out_len) {
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx) return false;
  EVP_CIPHER_CTX_set_flags(ctx.get(), EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
  int len = 0;
  int final_len = 0;
  bool ok = EVP_CipherInit_ex(ctx.get(), EVP_aes_256_wrap(), nullptr, kek.data(), nullptr,
                              wrap ? 1 : 0) == 1 &&
            EVP_CipherUpdate(ctx.get(), out, &len, in, static_cast<int>(in_len)) == 1 &&
            EVP_CipherFinal_ex(ctx.get(), out + len, &final_len) == 1;
  if (ok) *out_len = static_cast<size_t>(len) + static_cast<size_t>(final_len);
  return ok;
}

}  // namespace

absl::Status FakeKeyWrapper::CreateWrappingKey(WrappingKeyId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (keys_.contains(id)) {
    return MakeError(ErrorCode::kAlreadyExists,
                     "a wrapping key for " + id.ToString() + " already exists in the token");
  }
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key, crypto::RandomSecret(32));
  keys_.emplace(id, std::move(key));
  destroyed_.erase(id);
  return absl::OkStatus();
}

absl::StatusOr<WrappedKey> FakeKeyWrapper::Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) {
  if (dek.size() != kDekBytes) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "a data key to wrap must be 32 bytes, got " + std::to_string(dek.size()));
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = keys_.find(id);
  if (it == keys_.end()) {
    if (destroyed_.contains(id)) {
      return MakeError(ErrorCode::kKeyDestroyed,
                       "the wrapping key for " + id.ToString() + " was destroyed");
    }
    return MakeError(ErrorCode::kHsmKeyNotFound, "no wrapping key for " + id.ToString());
  }
  WrappedKey out;
  out.mechanism = kMechanismAesKeyWrap;
  out.key = id;
  out.wrapped.resize(kDekBytes + 8);
  size_t len = 0;
  if (!AesKeyWrap(true, it->second, dek.data(), dek.size(),
                  reinterpret_cast<uint8_t*>(out.wrapped.data()), &len) ||
      len != out.wrapped.size()) {
    return MakeError(ErrorCode::kCryptoLibraryError, "AES key wrap failed");
  }
  return out;
}

absl::StatusOr<crypto::SecretBytes> FakeKeyWrapper::Unwrap(const WrappedKey& blob) {
  if (blob.mechanism != kMechanismAesKeyWrap) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "wrapped key names mechanism " + std::to_string(blob.mechanism));
  }
  if (blob.wrapped.size() != kDekBytes + 8) {
    return MakeError(ErrorCode::kWrappedKeyCorrupt,
                     "wrapped key for " + blob.key.ToString() + " is not 40 bytes");
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = keys_.find(blob.key);
  if (it == keys_.end()) {
    return MakeError(ErrorCode::kKeyDestroyed,
                     "the wrapping key for " + blob.key.ToString() + " is not in the token");
  }
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes dek, crypto::SecretBytes::Allocate(kDekBytes + 8));
  size_t len = 0;
  if (!AesKeyWrap(false, it->second, reinterpret_cast<const uint8_t*>(blob.wrapped.data()),
                  blob.wrapped.size(), dek.data(), &len) ||
      len != kDekBytes) {
    return MakeError(ErrorCode::kWrappedKeyCorrupt,
                     "the wrapped key for " + blob.key.ToString() +
                         " failed its integrity check (tampered or wrapped by another key)");
  }
  return crypto::SecretBytes::CopyFrom(absl::MakeConstSpan(dek.data(), kDekBytes));
}

absl::Status FakeKeyWrapper::DestroyWrappingKey(WrappingKeyId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (keys_.erase(id) == 0) {
    return MakeError(ErrorCode::kHsmKeyNotFound,
                     "no wrapping key for " + id.ToString() + " in the token to destroy");
  }
  destroyed_.insert(id);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<WrappingKeyId>> FakeKeyWrapper::ListWrappingKeys() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<WrappingKeyId> ids;
  ids.reserve(keys_.size());
  for (const auto& [id, key] : keys_) ids.push_back(id);
  return ids;
}

}  // namespace coffer::hsm
