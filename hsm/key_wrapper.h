// KeyWrapper: the interface the key manager uses to keep data keys (DEKs) under dataset
// wrapping keys (DWKs) that never leave the HSM.
//
// A DWK is named by WrappingKeyId{dataset handle, version}: the dataset's opaque numeric handle,
// never its name. Wrap() turns a 32-byte DEK into a WrappedKey — a small self-describing blob
// (format, mechanism, dataset handle, DWK version, RFC 3394 output; layout in docs/hsm.md) that
// the key manager stores in its key DB. Unwrap() takes the blob back to the DEK, in SecretBytes.
// Destroying every version of a dataset's DWK crypto-shreds the dataset.
//
// Implementations: DatasetWrappingKeys (hsm/dataset_wrapping_keys.h, PKCS#11, the real one) and
// FakeKeyWrapper (hsm/testing/fake_key_wrapper.h, in memory, for fast tests of the layers above,
// in the test-only coffer_hsm_testing library). Both pass the same contract tests
// (tests/hsm/key_wrapper_contract_test.cc).
//
// Contract, for every implementation:
//  - Thread-safe: any method may be called from many threads at once.
//  - CreateWrappingKey on an existing id: ALREADY_EXISTS.
//  - Wrap with an id that has no key: HSM_KEY_NOT_FOUND, or KEY_DESTROYED if this process
//    destroyed it. A DEK that is not kDekBytes long: INVALID_ARGUMENT.
//  - Unwrap of a blob whose DWK is gone: KEY_DESTROYED (a blob is proof its key once existed).
//    A blob that fails RFC 3394's integrity check, or that names another DWK than the one that
//    wrapped it: WRAPPED_KEY_CORRUPT. A blob that does not parse: UNSUPPORTED_FORMAT.
//  - DestroyWrappingKey of an absent id: HSM_KEY_NOT_FOUND.
//  - ListWrappingKeys returns every DWK, sorted by (dataset handle, version).
//  - Never logs or returns key material except the DEK that Unwrap returns.

#ifndef COFFER_HSM_KEY_WRAPPER_H_
#define COFFER_HSM_KEY_WRAPPER_H_

#include <compare>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"

namespace coffer::hsm {

// DEKs are AES-256 keys.
inline constexpr size_t kDekBytes = 32;

// Mechanism numbers recorded in blobs are PKCS#11 CKM_* values.
inline constexpr uint32_t kMechanismAesKeyWrap = 0x2109;  // CKM_AES_KEY_WRAP, RFC 3394

struct WrappingKeyId {
  uint64_t dataset_handle = 0;
  uint32_t version = 0;

  auto operator<=>(const WrappingKeyId&) const = default;
  // "dataset handle 12 version 3", for messages.
  std::string ToString() const;
};

// A wrapped DEK. Serialize()/Parse() give the stored form (docs/hsm.md, "Wrapped key blob").
struct WrappedKey {
  // Blob layout version 1: format(1) | mechanism(4, BE) | dataset handle(8, BE) |
  // DWK version(4, BE) | wrapped length(2, BE) | wrapped bytes.
  static constexpr uint8_t kFormatV1 = 1;
  static constexpr size_t kHeaderBytes = 1 + 4 + 8 + 4 + 2;
  static constexpr size_t kMaxWrappedBytes = 1024;

  uint32_t mechanism = kMechanismAesKeyWrap;
  WrappingKeyId key;
  std::string wrapped;  // the mechanism's output (RFC 3394: DEK length + 8 bytes)

  std::string Serialize() const;
  // UNSUPPORTED_FORMAT for an unknown format byte or mechanism; INVALID_ARGUMENT for a blob
  // that is truncated, too long or whose wrapped length is not a multiple of 8 of at least 24.
  static absl::StatusOr<WrappedKey> Parse(std::string_view blob);

  bool operator==(const WrappedKey&) const = default;
};

class KeyWrapper {
 public:
  KeyWrapper() = default;
  KeyWrapper(const KeyWrapper&) = delete;
  KeyWrapper& operator=(const KeyWrapper&) = delete;
  virtual ~KeyWrapper() = default;

  // Creates the DWK `id` (AES-256, generated inside the token; usable only to wrap and unwrap).
  virtual absl::Status CreateWrappingKey(WrappingKeyId id) = 0;

  // Wraps `dek` (kDekBytes) under DWK `id` with CKM_AES_KEY_WRAP.
  virtual absl::StatusOr<WrappedKey> Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) = 0;

  // Unwraps `blob` under the DWK it names. The DEK is returned in the secure heap.
  virtual absl::StatusOr<crypto::SecretBytes> Unwrap(const WrappedKey& blob) = 0;

  // Destroys DWK `id`. Every blob it wrapped becomes useless, everywhere, for good.
  virtual absl::Status DestroyWrappingKey(WrappingKeyId id) = 0;

  // Every DWK present, for reconciliation with the key DB at start-up.
  virtual absl::StatusOr<std::vector<WrappingKeyId>> ListWrappingKeys() = 0;
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_KEY_WRAPPER_H_
