#include "storage/testing/fakes.h"

#include <algorithm>

#include "crypto/base/status.h"
#include "crypto/hkdf.h"
#include "crypto/random.h"

namespace coffer::storage::testing {

constexpr KeyPurpose kPurposes[] = {KeyPurpose::kRecords, KeyPurpose::kAttachments,
                                    KeyPurpose::kLookup, KeyPurpose::kPseudonym};

absl::Status FakeKeyProvider::AddVersion(uint64_t handle, Dataset* dataset,
                                         KeyPurpose purpose) const {
  std::vector<Version>& versions = dataset->versions[purpose];
  crypto::SecretBytes bytes;
  if (seed_.has_value()) {
    std::string seed;
    for (int shift = 56; shift >= 0; shift -= 8) seed.push_back(static_cast<char>(*seed_ >> shift));
    COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes ikm,
                            crypto::SecretBytes::CopyFrom(absl::MakeConstSpan(
                                reinterpret_cast<const uint8_t*>(seed.data()), seed.size())));
    std::string info = "coffer fake key " + std::to_string(handle) + "/" +
                       std::to_string(static_cast<int>(purpose)) + "/" +
                       std::to_string(versions.size() + 1);
    COFFER_ASSIGN_OR_RETURN(bytes, crypto::HkdfSha256(ikm, "", info, 32));
  } else {
    COFFER_ASSIGN_OR_RETURN(bytes, crypto::RandomSecret(32));
  }
  COFFER_ASSIGN_OR_RETURN(
      std::shared_ptr<const DataKey> key,
      DataKey::Create(purpose, static_cast<uint32_t>(versions.size() + 1), std::move(bytes)));
  versions.push_back(Version{std::move(key), 0});
  return absl::OkStatus();
}

absl::Status FakeKeyProvider::CreateDataset(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  if (datasets_.count(handle) != 0) return MakeError(ErrorCode::kAlreadyExists, "dataset exists");
  Dataset dataset;
  for (KeyPurpose purpose : kPurposes) {
    COFFER_RETURN_IF_ERROR(AddVersion(handle, &dataset, purpose));
  }
  datasets_.emplace(handle, std::move(dataset));
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> FakeKeyProvider::Rotate(uint64_t handle, KeyPurpose purpose) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(Dataset * dataset, Usable(handle));
  COFFER_RETURN_IF_ERROR(AddVersion(handle, dataset, purpose));
  return static_cast<uint32_t>(dataset->versions[purpose].size());
}

void FakeKeyProvider::SetDisabled(uint64_t handle, bool disabled) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(handle);
  if (it != datasets_.end()) it->second.disabled = disabled;
}

void FakeKeyProvider::Destroy(uint64_t handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(handle);
  if (it == datasets_.end()) return;
  it->second.destroyed = true;
  it->second.versions.clear();  // the last holder's release wipes the key bytes
}

uint64_t FakeKeyProvider::Encryptions(uint64_t handle, KeyPurpose purpose, uint32_t version) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(handle);
  if (it == datasets_.end()) return 0;
  auto versions = it->second.versions.find(purpose);
  if (versions == it->second.versions.end() || version == 0 || version > versions->second.size()) {
    return 0;
  }
  return versions->second[version - 1].encryptions;
}

uint64_t FakeKeyProvider::version_lookups() const {
  std::lock_guard<std::mutex> lock(mu_);
  return version_lookups_;
}

absl::StatusOr<FakeKeyProvider::Dataset*> FakeKeyProvider::Usable(uint64_t handle) {
  auto it = datasets_.find(handle);
  if (it == datasets_.end()) return MakeError(ErrorCode::kNotFound, "unknown dataset");
  if (it->second.destroyed) {
    return MakeError(ErrorCode::kKeyDestroyed, "the dataset's keys were destroyed");
  }
  if (it->second.disabled) {
    return MakeError(ErrorCode::kFailedPrecondition, "the dataset is DISABLED");
  }
  return &it->second;
}

absl::StatusOr<std::shared_ptr<const DataKey>> FakeKeyProvider::PrimaryKey(uint64_t dataset_handle,
                                                                           KeyPurpose purpose,
                                                                           uint64_t encryptions) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(Dataset * dataset, Usable(dataset_handle));
  std::vector<Version>& versions = dataset->versions[purpose];
  versions.back().encryptions += encryptions;
  return versions.back().key;
}

absl::StatusOr<std::shared_ptr<const DataKey>> FakeKeyProvider::KeyForVersion(
    uint64_t dataset_handle, KeyPurpose purpose, uint32_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  ++version_lookups_;
  COFFER_ASSIGN_OR_RETURN(Dataset * dataset, Usable(dataset_handle));
  std::vector<Version>& versions = dataset->versions[purpose];
  if (version == 0 || version > versions.size()) {
    return MakeError(ErrorCode::kKeyVersionNotFound, "no such key version");
  }
  if (version < dataset->min_version[purpose]) {
    return MakeError(ErrorCode::kKeyVersionRetired, "key version retired");
  }
  return versions[version - 1].key;
}

absl::StatusOr<std::vector<uint32_t>> FakeKeyProvider::LiveVersions(uint64_t dataset_handle,
                                                                    KeyPurpose purpose) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(Dataset * dataset, Usable(dataset_handle));
  const auto primary = static_cast<uint32_t>(dataset->versions[purpose].size());
  const uint32_t min = std::max<uint32_t>(1, dataset->min_version[purpose]);
  std::vector<uint32_t> live;
  for (uint32_t v = primary; v >= min && v > 0; --v) live.push_back(v);
  return live;
}

absl::StatusOr<bool> FakeKeyProvider::AcceptsWrites(uint64_t dataset_handle, KeyPurpose purpose,
                                                    uint32_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_ASSIGN_OR_RETURN(Dataset * dataset, Usable(dataset_handle));
  return version >= std::max<uint32_t>(1, dataset->min_version[purpose]) &&
         version <= dataset->versions[purpose].size();
}

void FakeKeyProvider::RetireBelow(uint64_t handle, KeyPurpose purpose, uint32_t min_version) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = datasets_.find(handle);
  if (it != datasets_.end()) it->second.min_version[purpose] = min_version;
}

void FakeDatasetPolicies::Set(uint64_t handle, const DatasetPolicy& policy) {
  std::lock_guard<std::mutex> lock(mu_);
  policies_[handle] = policy;
}

absl::StatusOr<DatasetPolicy> FakeDatasetPolicies::PolicyFor(uint64_t dataset_handle) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = policies_.find(dataset_handle);
  if (it == policies_.end()) return MakeError(ErrorCode::kNotFound, "unknown dataset");
  return it->second;
}

std::chrono::system_clock::time_point FakeClock::Now() const {
  std::lock_guard<std::mutex> lock(mu_);
  return now_;
}

void FakeClock::Advance(std::chrono::system_clock::duration by) {
  std::lock_guard<std::mutex> lock(mu_);
  now_ += by;
}

}  // namespace coffer::storage::testing
