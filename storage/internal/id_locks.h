// Locking one id for a write when it may be stored under several lookup versions
// (docs/formats.md#data-db-lookup-versions).
//
// An id's stored key is handle ‖ HMAC(lookup key, id) under the lookup version that was primary
// when it was written; after a lookup rotation, until the re-index job has moved it, it may sit
// under an older live version. A write of the id (put, delete, restore, purge, attachment
// commit) therefore hashes it under every live version and holds the stripe of every resulting
// stored key, so that it serializes with any other writer of the id whichever version that
// writer found it under — including the re-index job, which holds the old and the new stored
// key's stripes while it moves an entry.
//
// Thread safety: as DataDb and KeyProvider. Failures: the key provider's codes; ID_TOO_LONG /
// INVALID_ARGUMENT for a bad id; `prepare`'s error; UNAVAILABLE if the live lookup versions keep
// changing (a rotation or retirement between every hash and lock, 16 times over).

#ifndef COFFER_STORAGE_INTERNAL_ID_LOCKS_H_
#define COFFER_STORAGE_INTERNAL_ID_LOCKS_H_

#include <cstdint>
#include <functional>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/data_db.h"
#include "storage/internal/envelope.h"
#include "storage/key_provider.h"

namespace coffer::storage::internal {

struct LockedId {
  IdStoredKeys keys;          // primary first
  DataDb::StripeLocks locks;  // the stripes of every key in `keys`
};

// Hashes `id` under every live lookup version, runs `prepare` (if set: work that depends on the
// stored keys and must not run under a stripe, such as sealing an entry whose associated data
// binds the primary stored key), then locks the stripes and checks that the live versions did
// not change meanwhile; when they did, it starts over.
absl::StatusOr<LockedId> LockId(
    DataDb* db, KeyProvider* keys, uint64_t handle, std::string_view id,
    const std::function<absl::Status(const IdStoredKeys&)>& prepare = {});

}  // namespace coffer::storage::internal

#endif  // COFFER_STORAGE_INTERNAL_ID_LOCKS_H_
