#include "storage/internal/id_locks.h"

#include <utility>

#include "crypto/base/status.h"

namespace coffer::storage::internal {

absl::StatusOr<LockedId> LockId(DataDb* db, KeyProvider* keys, uint64_t handle, std::string_view id,
                                const std::function<absl::Status(const IdStoredKeys&)>& prepare) {
  constexpr int kAttempts = 16;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    LockedId locked;
    COFFER_ASSIGN_OR_RETURN(locked.keys, StoredKeysFor(keys, handle, id));
    if (prepare) COFFER_RETURN_IF_ERROR(prepare(locked.keys));
    locked.locks = db->LockStripes(locked.keys.Macs());
    COFFER_ASSIGN_OR_RETURN(bool still_live, locked.keys.StillLive(keys, handle));
    if (still_live) return locked;
  }
  return MakeError(ErrorCode::kUnavailable, "the dataset's lookup keys keep changing; retry");
}

}  // namespace coffer::storage::internal
