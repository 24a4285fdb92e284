// In-memory state of one dataset: an immutable snapshot of its verified key-DB rows, swapped
// atomically on every change, plus the per-version usage counters the hot path bumps.
//
// A snapshot is never modified once published; writers copy it, change the copy, write the
// key DB and publish the copy. UsageCounter objects are shared between successive snapshots of
// the same version. Thread-safe as described per member.

#ifndef COFFER_KMS_KEYS_INTERNAL_DATASET_STATE_H_
#define COFFER_KMS_KEYS_INTERNAL_DATASET_STATE_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "hsm/key_wrapper.h"
#include "kms/keys/key_db.pb.h"
#include "storage/data_key.h"

namespace coffer::kms::internal {

namespace v1 = ::coffer::kms::v1;

// Encryptions counted against one version. Invariant: used <= reserved, and `reserved` is in the
// key DB (KeyVersionRow.reserved_until) before any use below it is handed out.
struct UsageCounter {
  std::atomic<uint64_t> used{0};
  std::atomic<uint64_t> reserved{0};
};

struct VersionSnapshot {
  v1::KeyVersionRow row;
  hsm::WrappedKey wrapped;
  std::shared_ptr<UsageCounter> usage;
};

inline constexpr size_t kPurposeSlots = 5;  // indexed by storage::KeyPurpose (1..4)

struct DatasetSnapshot {
  v1::DatasetRow row;
  // versions[purpose][v - 1] is version v.
  std::array<std::vector<VersionSnapshot>, kPurposeSlots> versions;
  // In memory only, while a retirement runs: writes under versions below writes_from[purpose]
  // are turned away (KeyManager::AcceptsWrites), so that the retirement's final count, taken
  // after a barrier over the data DB's stripes, sees every write that got past the check.
  std::array<uint32_t, kPurposeSlots> writes_from{};

  const v1::PurposeState* Purpose(storage::KeyPurpose purpose) const {
    for (const auto& state : row.purposes()) {
      if (state.purpose() == static_cast<v1::Purpose>(purpose)) return &state;
    }
    return nullptr;
  }
  v1::PurposeState* MutablePurpose(storage::KeyPurpose purpose) {
    for (auto& state : *row.mutable_purposes()) {
      if (state.purpose() == static_cast<v1::Purpose>(purpose)) return &state;
    }
    return nullptr;
  }
  const VersionSnapshot* Version(storage::KeyPurpose purpose, uint32_t version) const {
    const auto& list = versions[static_cast<size_t>(purpose)];
    if (version == 0 || version > list.size()) return nullptr;
    return &list[version - 1];
  }
};

struct DatasetEntry {
  explicit DatasetEntry(uint64_t h) : handle(h) {}
  const uint64_t handle;
  std::atomic<std::shared_ptr<const DatasetSnapshot>> snapshot;
  // Serialises writes of this dataset's version rows (usage reservations against admin
  // changes). Never held across an operation on another dataset.
  std::mutex mu;
};

}  // namespace coffer::kms::internal

#endif  // COFFER_KMS_KEYS_INTERNAL_DATASET_STATE_H_
