// In-memory fakes of storage's injected dependencies, for tests and benchmarks only (never
// linked into the daemon): a KeyProvider with rotation, disabled and destroyed datasets; a
// DatasetPolicySource; a Clock that moves only when told.
//
// Thread safety: every method may be called concurrently (one mutex per fake).
// Ownership: keys are created here and handed out as shared_ptr<const DataKey>, as the real key
// manager does. Failures mirror the KeyProvider contract (storage/key_provider.h): NOT_FOUND for
// an unknown dataset, KEY_VERSION_NOT_FOUND for an unknown version, KEY_DESTROYED after Destroy,
// FAILED_PRECONDITION while disabled (reads and writes alike: DISABLED means locked).

#ifndef COFFER_STORAGE_TESTING_FAKES_H_
#define COFFER_STORAGE_TESTING_FAKES_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "storage/dataset_policy.h"
#include "storage/key_provider.h"

namespace coffer::storage::testing {

class FakeKeyProvider final : public KeyProvider {
 public:
  // Random keys (different in every process).
  FakeKeyProvider() = default;
  // Keys derived from `seed` (HKDF over the seed, handle, purpose and version), so another
  // process with the same seed — a crash-test child, a restored backup — reads the same data.
  explicit FakeKeyProvider(uint64_t seed) : seed_(seed) {}

  // Creates dataset `handle` with version 1 of every purpose as its primary.
  absl::Status CreateDataset(uint64_t handle);
  // Adds a new version of `purpose` and makes it primary; returns its number.
  absl::StatusOr<uint32_t> Rotate(uint64_t handle, KeyPurpose purpose);
  void SetDisabled(uint64_t handle, bool disabled);
  // Forgets every key of the dataset: later calls fail with KEY_DESTROYED.
  void Destroy(uint64_t handle);
  // Encryptions counted against a version so far.
  uint64_t Encryptions(uint64_t handle, KeyPurpose purpose, uint32_t version) const;
  // Calls to KeyForVersion so far (every one, whatever the result).
  uint64_t version_lookups() const;

  absl::StatusOr<std::shared_ptr<const DataKey>> PrimaryKey(uint64_t dataset_handle,
                                                            KeyPurpose purpose,
                                                            uint64_t encryptions) override;
  absl::StatusOr<std::shared_ptr<const DataKey>> KeyForVersion(uint64_t dataset_handle,
                                                               KeyPurpose purpose,
                                                               uint32_t version) override;
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t dataset_handle,
                                                     KeyPurpose purpose) override;
  // Live (the fake retires at once: RetireBelow); without LiveVersions' list, for the benchmarks.
  absl::StatusOr<bool> AcceptsWrites(uint64_t dataset_handle, KeyPurpose purpose,
                                     uint32_t version) override;
  // Retires every version of `purpose` below `min_version`: KeyForVersion refuses them
  // (KEY_VERSION_RETIRED) and LiveVersions leaves them out.
  void RetireBelow(uint64_t handle, KeyPurpose purpose, uint32_t min_version);

 private:
  struct Version {
    std::shared_ptr<const DataKey> key;
    uint64_t encryptions = 0;
  };
  struct Dataset {
    bool disabled = false;
    bool destroyed = false;
    std::map<KeyPurpose, std::vector<Version>> versions;  // version n at index n - 1
    std::map<KeyPurpose, uint32_t> min_version;           // absent: 1
  };
  absl::StatusOr<Dataset*> Usable(uint64_t handle);  // requires mu_
  absl::Status AddVersion(uint64_t handle, Dataset* dataset, KeyPurpose purpose) const;

  std::optional<uint64_t> seed_;
  mutable std::mutex mu_;
  std::map<uint64_t, Dataset> datasets_;
  uint64_t version_lookups_ = 0;
};

class FakeDatasetPolicies final : public DatasetPolicySource {
 public:
  void Set(uint64_t handle, const DatasetPolicy& policy);
  absl::StatusOr<DatasetPolicy> PolicyFor(uint64_t dataset_handle) override;

 private:
  std::mutex mu_;
  std::map<uint64_t, DatasetPolicy> policies_;
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::chrono::system_clock::time_point start =
                         std::chrono::system_clock::time_point(std::chrono::hours(24 * 365 * 50)))
      : now_(start) {}
  std::chrono::system_clock::time_point Now() const override;
  void Advance(std::chrono::system_clock::duration by);

 private:
  mutable std::mutex mu_;
  std::chrono::system_clock::time_point now_;
};

}  // namespace coffer::storage::testing

#endif  // COFFER_STORAGE_TESTING_FAKES_H_
