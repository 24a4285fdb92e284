#include "kms/keys/storage_bridge.h"

#include <string>

#include "crypto/base/status.h"
#include "storage/dataset_erasure.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"

namespace coffer::kms {

absl::StatusOr<storage::DatasetPolicy> KeyManagerPolicySource::PolicyFor(uint64_t dataset_handle) {
  COFFER_ASSIGN_OR_RETURN(DatasetStorageView view, manager_->StorageView(dataset_handle));
  if (view.state == DatasetState::kDestroying || view.state == DatasetState::kDestroyed) {
    return MakeError(ErrorCode::kKeyDestroyed,
                     "dataset " + std::to_string(dataset_handle) + " was destroyed");
  }
  storage::DatasetPolicy policy;
  policy.recycle_bin_period = std::chrono::hours(24) * view.bin_days;
  if (view.retention_max_age.count() > 0) policy.max_age = view.retention_max_age;
  policy.min_retention = view.minimum_retention;
  policy.legal_hold = view.legal_hold;
  policy.max_records = view.max_records;
  policy.max_stored_bytes = view.max_stored_bytes;
  return policy;
}

absl::StatusOr<std::optional<int64_t>> StoreDataCounter::NewestItemWrite(uint64_t dataset_handle) {
  return storage::NewestItemWriteMicros(*db_, dataset_handle);
}

absl::StatusOr<uint64_t> StoreDataCounter::CountProtectedBy(uint64_t dataset_handle,
                                                            storage::KeyPurpose purpose,
                                                            uint32_t version) {
  if (purpose == storage::KeyPurpose::kLookup && keys_ != nullptr) {
    COFFER_ASSIGN_OR_RETURN(auto census, storage::CountLookupVersions(db_, keys_, dataset_handle));
    auto it = census.find(version);
    return it == census.end() ? 0 : it->second;
  }
  if (purpose != storage::KeyPurpose::kRecords && purpose != storage::KeyPurpose::kAttachments) {
    return MakeError(ErrorCode::kFailedPrecondition,
                     std::string("the data DB does not count items per ") +
                         std::string(storage::KeyPurposeName(purpose)) +
                         " version; such versions change only by re-index or re-key");
  }
  COFFER_ASSIGN_OR_RETURN(storage::VersionCensus census,
                          storage::CountKeyVersions(db_, dataset_handle));
  const auto& counts =
      purpose == storage::KeyPurpose::kRecords ? census.records : census.attachments;
  auto it = counts.find(version);
  return it == counts.end() ? 0 : it->second;
}

}  // namespace coffer::kms
