// Completing destructions: for every DESTROYED dataset that has no deletion receipt yet, count
// its entries in the data DB, erase them (range deletions, then storage's physical purge:
// flush, wait for older readers, forced bottommost compaction), and have the key manager sign
// and store the receipt (docs/key-manager.md, "Deletion receipt").
//
// Each step is recorded in the dataset's row before the next begins (counts, then "compaction
// finished", then the receipt), so a crash anywhere resumes without recounting: the daemon calls
// CompleteDestructions at start-up and after every tick of its rotation clock, which is also
// what destroys datasets whose waiting period has passed. A full-backup restore replays
// destructions into the restored key DB; the restored daemon then completes them the same way.
//
// Thread safety: one call at a time (the daemon's job runner serialises its ticks). Failures:
// the first dataset's error; the others are still attempted.

#ifndef COFFER_KMS_KEYS_DELETION_RECEIPTS_H_
#define COFFER_KMS_KEYS_DELETION_RECEIPTS_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kms/audit/audit_event.h"
#include "kms/keys/key_manager.h"
#include "storage/data_db.h"

namespace coffer::kms {

struct DestructionCompletion {
  std::vector<uint64_t> receipts_issued;                    // dataset handles
  std::vector<std::pair<uint64_t, absl::Status>> failures;  // retried on the next call
};

// Completes every DESTROYED dataset that awaits its receipt, as `actor` (the daemon's internal
// actor in cofferd).
DestructionCompletion CompleteDestructions(KeyManager& keys, storage::DataDb& data,
                                           const audit::AuditActor& actor);

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_DELETION_RECEIPTS_H_
