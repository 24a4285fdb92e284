// Owner types for OpenSSL handles and the conversion of OpenSSL failures into coffer errors.
//
// One std::unique_ptr alias per OpenSSL handle type (BoringSSL's bssl::UniquePtr pattern), so
// that no code path can leak a context or forget to wipe one: the *_free functions of contexts
// that hold keys (EVP_CIPHER_CTX, EVP_MAC_CTX, EVP_KDF_CTX) cleanse the key material they hold.
//
// Internal to crypto/. Thread-compatible: the aliases add no synchronisation of their own.

#ifndef COFFER_CRYPTO_INTERNAL_OPENSSL_UTIL_H_
#define COFFER_CRYPTO_INTERNAL_OPENSSL_UTIL_H_

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <memory>
#include <string_view>

#include "absl/status/status.h"

namespace coffer::crypto::internal {

template <typename T, void (*Free)(T*)>
struct OpenSslDeleter {
  void operator()(T* handle) const { Free(handle); }
};

using EvpCipherPtr = std::unique_ptr<EVP_CIPHER, OpenSslDeleter<EVP_CIPHER, EVP_CIPHER_free>>;
using EvpCipherCtxPtr =
    std::unique_ptr<EVP_CIPHER_CTX, OpenSslDeleter<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>>;
using EvpMacPtr = std::unique_ptr<EVP_MAC, OpenSslDeleter<EVP_MAC, EVP_MAC_free>>;
using EvpMacCtxPtr = std::unique_ptr<EVP_MAC_CTX, OpenSslDeleter<EVP_MAC_CTX, EVP_MAC_CTX_free>>;
using EvpKdfPtr = std::unique_ptr<EVP_KDF, OpenSslDeleter<EVP_KDF, EVP_KDF_free>>;
using EvpKdfCtxPtr = std::unique_ptr<EVP_KDF_CTX, OpenSslDeleter<EVP_KDF_CTX, EVP_KDF_CTX_free>>;

// Returns CRYPTO_LIBRARY_ERROR naming `operation` and OpenSSL's first queued reason (reasons
// are library texts such as "invalid key length", never data), and clears this thread's
// OpenSSL error queue so that a later failure is not blamed on this one.
absl::Status OpenSslError(std::string_view operation);

}  // namespace coffer::crypto::internal

#endif  // COFFER_CRYPTO_INTERNAL_OPENSSL_UTIL_H_
