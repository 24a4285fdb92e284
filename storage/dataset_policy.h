// DatasetPolicySource: the per-dataset retention rules storage enforces.
//
// The key manager owns each dataset's policies (they live in its authenticated key DB and change
// only under dual control); storage asks for them by opaque dataset handle whenever it deletes,
// purges or expires data, and never caches them across calls. kms/ implements this interface;
// tests use storage/testing/fakes.h.
//
// Contract, for every implementation:
//  - Thread-safe; cheap enough to call once per delete and once per dataset per sweep.
//  - NOT_FOUND for an unknown dataset; KEY_DESTROYED for a destroyed one.
//
// Semantics (enforced by storage, docs/formats.md#data-db):
//  - recycle_bin_period: a deleted record or attachment stays restorable this long, then the
//    bin sweep purges it (design brief: 30 days by default).
//  - max_age: when set, live items older than this (since their last write) are purged by the
//    retention sweep, bypassing the bin.
//  - min_retention: the compliance lock. Nothing younger than this (since its last write) can
//    be deleted, expired or purged, by anyone.
//  - legal_hold: blocks every purge and expiry of the dataset (deletes to the bin still work:
//    the bin keeps the data).
//  - max_records, max_stored_bytes: quotas (storage/quota_meter.h); a write beyond is refused.

#ifndef COFFER_STORAGE_DATASET_POLICY_H_
#define COFFER_STORAGE_DATASET_POLICY_H_

#include <chrono>
#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"

namespace coffer::storage {

inline constexpr std::chrono::seconds kDefaultRecycleBinPeriod = std::chrono::hours(24 * 30);

struct DatasetPolicy {
  std::chrono::seconds recycle_bin_period = kDefaultRecycleBinPeriod;
  std::optional<std::chrono::seconds> max_age;  // none: kept until deleted
  std::chrono::seconds min_retention{0};        // 0: no compliance lock
  bool legal_hold = false;
  // Quotas (storage/quota_meter.h); 0 = none.
  uint64_t max_records = 0;       // live records
  uint64_t max_stored_bytes = 0;  // all the dataset's entries' keys and values
};

class DatasetPolicySource {
 public:
  DatasetPolicySource() = default;
  DatasetPolicySource(const DatasetPolicySource&) = delete;
  DatasetPolicySource& operator=(const DatasetPolicySource&) = delete;
  virtual ~DatasetPolicySource() = default;

  // The current policy of dataset `dataset_handle`.
  virtual absl::StatusOr<DatasetPolicy> PolicyFor(uint64_t dataset_handle) = 0;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_DATASET_POLICY_H_
