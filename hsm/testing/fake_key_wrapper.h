// FakeKeyWrapper: an in-memory KeyWrapper for fast tests of the layers above (kms, storage).
//
// Keeps each DWK as 32 random bytes (crypto/random.h) in SecretBytes and wraps with OpenSSL's
// RFC 3394 AES key wrap, so blobs look exactly like DatasetWrappingKeys' and every contract case —
// destroyed keys, corrupt blobs, duplicates, listing — behaves the same (both run
// tests/hsm/key_wrapper_contract_test.cc). It protects nothing: keys live in this process.
// Built only into the coffer_hsm_testing library, which tests and benchmarks link; never wire
// it into the daemon.
//
// Thread-safe (one mutex). Owns its keys; they are wiped when destroyed or with the fake.

#ifndef COFFER_HSM_TESTING_FAKE_KEY_WRAPPER_H_
#define COFFER_HSM_TESTING_FAKE_KEY_WRAPPER_H_

#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "hsm/key_wrapper.h"

namespace coffer::hsm {

class FakeKeyWrapper final : public KeyWrapper {
 public:
  FakeKeyWrapper() = default;

  absl::Status CreateWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<WrappedKey> Wrap(WrappingKeyId id, const crypto::SecretBytes& dek) override;
  absl::StatusOr<crypto::SecretBytes> Unwrap(const WrappedKey& blob) override;
  absl::Status DestroyWrappingKey(WrappingKeyId id) override;
  absl::StatusOr<std::vector<WrappingKeyId>> ListWrappingKeys() override;

 private:
  std::mutex mu_;
  std::map<WrappingKeyId, crypto::SecretBytes> keys_;  // guarded by mu_
  std::set<WrappingKeyId> destroyed_;                  // guarded by mu_
};

}  // namespace coffer::hsm

#endif  // COFFER_HSM_TESTING_FAKE_KEY_WRAPPER_H_
