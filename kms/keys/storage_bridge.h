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
#include "storage/key_provider.h"

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
// recycle bin) still sealed under a version, from storage's version census; and, once
// set_key_provider has been called, the items still stored under a lookup version, from
// storage's lookup census (storage/reindex.h: every entry is opened, since the lookup version is
// not in the stored key). Without a key provider, and always for pseudonym versions (storage
// does not record which pseudonym version made a token), it answers FAILED_PRECONDITION and the
// key manager refuses the retirement.
class StoreDataCounter final : public ProtectedDataCounter {
 public:
  explicit StoreDataCounter(storage::DataDb* db) : db_(db) {}

  // The key provider the lookup census opens entries with (the KeyManager, which is opened with
  // this counter: hence a setter). Call once, before the daemon serves.
  void set_key_provider(storage::KeyProvider* keys) { keys_ = keys; }

  absl::StatusOr<uint64_t> CountProtectedBy(uint64_t dataset_handle, storage::KeyPurpose purpose,
                                            uint32_t version) override;
  // Every data DB writer holds its ids' lock stripes from its AcceptsWrites check to its write.
  void AwaitWritesUnderWay() override { db_->AwaitStripeHolders(); }
  absl::StatusOr<std::optional<int64_t>> NewestItemWrite(uint64_t dataset_handle) override;

 private:
  storage::DataDb* db_;
  storage::KeyProvider* keys_ = nullptr;
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_STORAGE_BRIDGE_H_
