// The two small interfaces that connect the key manager and the data DB, in both directions.
//
// storage/ defines DatasetPolicySource (retention rules it enforces) and kms/ defines
// ProtectedDataCounter (how much data a key version still protects, so that a version is never
// retired while data needs it). Neither layer may include the other's internals, so these
// adapters live here, in the layer that sees both.
//
// Thread safety: both adapters are as thread-safe as what they wrap (KeyManager and DataDb are).
// Ownership: the wrapped objects must outlive the adapters.

#ifndef COFFER_KMS_KEYS_STORAGE_BRIDGE_H_
#define COFFER_KMS_KEYS_STORAGE_BRIDGE_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/key_manager_types.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"

namespace coffer::kms {

// storage::DatasetPolicySource over the key manager's authenticated policies. A destroyed (or
// destroying) dataset answers KEY_DESTROYED, as the interface asks; an unknown one NOT_FOUND.
class KeyManagerPolicySource final : public storage::DatasetPolicySource {
 public:
  explicit KeyManagerPolicySource(const KeyManager* manager) : manager_(manager) {}

  absl::StatusOr<storage::DatasetPolicy> PolicyFor(uint64_t dataset_handle) override;

 private:
  const KeyManager* manager_;
};

// ProtectedDataCounter over the data DB: counts the records or attachments (live and in the
// recycle bin) still sealed under a version, from storage's version census. Storage does not
// record which lookup or pseudonym version produced an item, so for those purposes it answers
// FAILED_PRECONDITION and the key manager refuses the retirement: they change only by re-index
// or re-key.
class StoreDataCounter final : public ProtectedDataCounter {
 public:
  explicit StoreDataCounter(storage::DataDb* db) : db_(db) {}

  absl::StatusOr<uint64_t> CountProtectedBy(uint64_t dataset_handle, storage::KeyPurpose purpose,
                                            uint32_t version) override;

 private:
  storage::DataDb* db_;
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_STORAGE_BRIDGE_H_
