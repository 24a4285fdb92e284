// PurgeJournal: what RecycleBin tells before it purges anything, so that a restore of an older
// backup can replay the purge and never resurrect purged data (design brief, "Restore never
// resurrects").
//
// storage/ defines the interface and kms/ implements it (kms/keys/audited_purge_journal.h appends
// RECORD_PURGE / ATTACHMENT_PURGE audit entries), so storage never depends on kms/.
//
// Contract: RecycleBin calls WillPurge for each item under the item's lock stripe, after every
// rule (legal hold, compliance lock, due date) has passed and immediately before the deletes
// are written. The journal must make the entry durable before returning OK; a failure means
// the item is not purged (fail closed) and RecycleBin returns the journal's status. After
// every successful WillPurge, RecycleBin calls PurgeWritten exactly once with the same item,
// whether or not the delete batch was then written (a journaled purge is replayed by a
// restore even if its write failed: the request stands and the admin sees the error).
// An item names only the dataset handle, the kind and the 32-byte HMACs of the id that are (or
// may be, under another live lookup version) the data DB's key — never a plaintext id or name.
//
// Thread safety: implementations must be thread-safe (sweeps and admin purges run in
// parallel). WillPurge may block (a synchronous audit append); it is called with one stripe
// held, never with a RocksDB view open.

#ifndef COFFER_STORAGE_PURGE_JOURNAL_H_
#define COFFER_STORAGE_PURGE_JOURNAL_H_

#include <array>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "crypto/hmac.h"

namespace coffer::storage {

enum class PurgedItemKind : uint8_t {
  kRecord = 1,      // a record, live or binned
  kAttachment = 2,  // an attachment's pointer and segments, live or binned
};

struct PurgedItem {
  uint64_t dataset_handle = 0;
  PurgedItemKind kind = PurgedItemKind::kRecord;
  crypto::HmacSha256Tag ref{};  // HMAC of the id or name under the lookup key (stored key's tail)
  // The same id's HMAC under the dataset's other live lookup versions, when it has several (a
  // lookup rotation not yet followed by retirement): a backup may hold the item under any of
  // them (docs/formats.md#data-db-lookup-versions). Replaying a purge must try every ref.
  std::vector<crypto::HmacSha256Tag> other_refs;
};

class PurgeJournal {
 public:
  PurgeJournal() = default;
  PurgeJournal(const PurgeJournal&) = delete;
  PurgeJournal& operator=(const PurgeJournal&) = delete;
  virtual ~PurgeJournal() = default;

  // Durably records that `item` is about to be purged. Non-OK: nothing is purged.
  virtual absl::Status WillPurge(const PurgedItem& item) = 0;

  // The deletes for `item` were written (or failed) after an OK WillPurge.
  virtual void PurgeWritten(const PurgedItem& item) = 0;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_PURGE_JOURNAL_H_
