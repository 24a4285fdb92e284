// AuditPurgeJournal: storage::PurgeJournal over the audit log. Every purge the recycle bin is
// about to make becomes a RECORD_PURGE or ATTACHMENT_PURGE entry (dataset handle and the
// 32-byte record ref; docs/audit.md) — one per ref when the dataset has several live lookup
// versions (PurgedItem::other_refs) — appended synchronously before the deletes; a failed
// append refuses the purge. A restore replays these entries (kms/keys/full_backup.h). The
// sweeps' entries name the journal's actor (the daemon); an admin's purge goes through
// ForRequest, whose entries name the admin who asked and the admin who approved.
//
// It also gives a full backup its replay boundary: QuiescentSequence waits until no purge is
// between its journal entry and its deletes, holds new ones off, and reads the log's next
// sequence B. Every purge journaled below B has then written its deletes (so the data-DB
// backup that follows sees them); every later one has a sequence >= B and is replayed.
//
// Thread safety: all methods may be called from any thread. Ownership: the log must outlive
// the journal. Failures: the log's (AUDIT_NOT_DURABLE, AUDIT_LOG_CLOSED).

#ifndef COFFER_KMS_KEYS_AUDITED_PURGE_JOURNAL_H_
#define COFFER_KMS_KEYS_AUDITED_PURGE_JOURNAL_H_

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "storage/purge_journal.h"

namespace coffer::kms {

class AuditPurgeJournal final : public storage::PurgeJournal {
 public:
  // Entries name `actor` (the daemon's internal actor for sweeps; the admin for a purge made
  // on an admin's request through a journal made for it).
  AuditPurgeJournal(audit::AuditLog* log, audit::AuditActor actor)
      : log_(log), actor_(std::move(actor)) {}

  absl::Status WillPurge(const storage::PurgedItem& item) override;
  void PurgeWritten(const storage::PurgedItem& item) override;

  // A journal for one admin purge, to pass to RecycleBin::PurgeRecord / PurgeAttachment /
  // EmptyBin: its entries name `actor` and, when set, `approver`; it shares this journal's
  // in-flight count (QuiescentSequence waits for it too). Must not outlive this journal.
  std::unique_ptr<storage::PurgeJournal> ForRequest(audit::AuditActor actor,
                                                    std::optional<audit::AuditActor> approver);

  // The audit sequence from which a backup taken now must replay purges (see above).
  uint64_t QuiescentSequence();

 private:
  class Attributed;
  absl::Status Journal(const storage::PurgedItem& item, const audit::AuditActor& actor,
                       const std::optional<audit::AuditActor>& approver);

  audit::AuditLog* log_;
  audit::AuditActor actor_;
  std::mutex mu_;
  std::condition_variable cv_;
  int in_flight_ = 0;     // guarded by mu_: purges between WillPurge and PurgeWritten
  bool holding_ = false;  // guarded by mu_: QuiescentSequence is reading the boundary
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_AUDITED_PURGE_JOURNAL_H_
