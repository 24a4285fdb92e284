// KeyProvider: what the storage layer needs from whoever owns keys.
//
// storage/ never sees the HSM or the key DB. It asks this interface for data keys by
// (dataset handle, purpose, version); kms/ implements it over the HSM, the key DB and the key
// cache, and a fake serves storage's fast unit tests. Dataset handles are opaque numbers that
// the key manager assigns; dataset names never reach storage.
//
// Contract, for every implementation:
//  - Thread-safe; the hot path (a cached key) makes no HSM call and takes no lock shared by all
//    datasets.
//  - PrimaryKey returns the version that protects new data and counts `encryptions` against that
//    version's budget (usage-based rotation rotates before a version reaches its limit). A
//    DataKey obtained from PrimaryKey may be used for exactly the encryptions it was counted for.
//  - KeyForVersion returns any version that still decrypts, whether primary or not.
//  - LiveVersions lists the versions of a purpose that still decrypt (not retired): the primary
//    first, then older ones, newest first. Storage uses it for the lookup purpose: an id is
//    stored under HMAC(lookup key, id) of the lookup version that was primary when it was
//    written (or re-indexed), so a lookup by id tries every live lookup version
//    (docs/formats.md#data-db-lookup-versions). It reveals no key material; the keys come from
//    KeyForVersion, which enforces the dataset's state.
//  - AcceptsWrites says whether data may still be stored under a version: it is live and no
//    retirement of it is under way. Storage asks it under the written id's lock stripes, just
//    before a write, for the version the write sealed under; a retirement first turns writes
//    under its versions away, then waits for every stripe holder (a barrier), and only then
//    counts what the versions protect. So a write either lands before that count (which then
//    refuses the retirement) or is turned away and sealed again under the primary; no write
//    lands under a version that was just retired (docs/key-manager.md, "Retirement and
//    writers").
//  - Errors (stable codes, docs/errors.md): NOT_FOUND for an unknown dataset;
//    KEY_VERSION_NOT_FOUND for an unknown version (storage treats it as the item's damage:
//    storage/damaged_item.h);
//    KEY_DESTROYED when the dataset's wrapping keys were destroyed; FAILED_PRECONDITION (with a
//    message naming the state) when the dataset's state forbids the use, e.g. writes to a
//    DISABLED dataset; the key manager's own codes for retired versions.
//  - A returned DataKey stays usable while the caller holds it, even if the cache evicts it;
//    its key material is wiped when the last holder lets go.

#ifndef COFFER_STORAGE_KEY_PROVIDER_H_
#define COFFER_STORAGE_KEY_PROVIDER_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "storage/data_key.h"

namespace coffer::storage {

class KeyProvider {
 public:
  KeyProvider() = default;
  KeyProvider(const KeyProvider&) = delete;
  KeyProvider& operator=(const KeyProvider&) = delete;
  virtual ~KeyProvider() = default;

  // The primary (current) key of `purpose` in dataset `dataset_handle`, counting `encryptions`
  // uses against its budget (1 per record seal or per attachment stream; 0 for lookups).
  virtual absl::StatusOr<std::shared_ptr<const DataKey>> PrimaryKey(uint64_t dataset_handle,
                                                                    KeyPurpose purpose,
                                                                    uint64_t encryptions) = 0;

  // The key of exactly `version`, to open data sealed under it.
  virtual absl::StatusOr<std::shared_ptr<const DataKey>> KeyForVersion(uint64_t dataset_handle,
                                                                       KeyPurpose purpose,
                                                                       uint32_t version) = 0;

  // The live (not retired) versions of `purpose`, the primary first, then older versions from
  // the newest down. Never empty for a known dataset.
  virtual absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t dataset_handle,
                                                             KeyPurpose purpose) = 0;

  // Whether data may still be written under `version` of `purpose` (see the contract above).
  // This default, for providers that never retire while writes run, answers whether the version
  // is live.
  virtual absl::StatusOr<bool> AcceptsWrites(uint64_t dataset_handle, KeyPurpose purpose,
                                             uint32_t version) {
    absl::StatusOr<std::vector<uint32_t>> live = LiveVersions(dataset_handle, purpose);
    if (!live.ok()) return live.status();
    return std::find(live->begin(), live->end(), version) != live->end();
  }
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_KEY_PROVIDER_H_
