// FullBackups: full backups of one coffer instance — data DB, key DB and audit log — and their
// restore into a new directory (docs/key-manager.md, "Full backups").
//
// Create copies, in this order (design brief): the data DB (storage::DataDbBackups, whose
// metadata holds the audit sequence B read just before), then the key DB (a RocksDB checkpoint
// through KeyManager::CheckpointKeyDb), then the audit log's files. Keys are copied after the
// data, so every key a backed-up ciphertext needs is in the key copy. One MANIFEST per backup
// lists the data backup id, B, the audit log id, and every key-DB and audit file with its size
// and SHA-256; it is written last (a backup without one is incomplete and ignored). Backups
// hold only ciphertext, the audit log and the key DB sealed under a key only the token can
// derive (manifest version 2; version-1 backups, whose key DB is in the clear, still verify and
// restore) — never the token.
//
// RestoreInto writes a backup into a new directory it creates itself (`data/`, `keys/`, `audit/`
// — the log as of the backup, kept as evidence) and, before it returns, makes it safe to serve.
// The target must not exist (RESTORE_TARGET_NOT_EMPTY for any existing path: an empty directory,
// a file, a symlink, dangling or not); its parent must be a real directory (not a symlink) owned
// by root or this uid and not writable by group or others unless sticky (INVALID_ARGUMENT;
// internal::OwnedDirectory). The target (0700) and every directory (0700) and file (0600) in it
// are created relative to the target's descriptor with O_EXCL|O_NOFOLLOW; files RocksDB creates
// are tightened to 0600 before the marker goes. The restore never changes the token: the
// restored key DB is opened as a restored copy (KeyManagerOptions::restored_copy) on modules
// that refuse to create or destroy a DWK, so intents the backup captured are resolved in key-DB
// rows only (kms/keys/recovery.cc says what happens to each kind) and a replayed destruction
// whose DWKs the token still holds is left DESTROYING (RestoreReport::destructions_deferred).
// A restore drill into a scratch directory is the same call. Steps:
//  1. verifies every part, and the current (live) audit log offline with the checkpoint public
//     key; the live log must be the backup's log and reach B (REPLAY_SOURCE_STALE otherwise),
//     and reach and match the newest anchor kept off the machine when the request has one
//     (AUDIT_TAMPERED otherwise: a cut or rolled-back log would let purged records back);
//  2. replays every RECORD_PURGE / ATTACHMENT_PURGE entry with sequence >= B into the restored
//     data DB (storage::RecycleBin::ReplayPurges), then the client deletes and restores with
//     sequence >= B (ReplayBinMoves: what was deleted since waits in the bin again) and counts
//     the items written since (their newer values are lost: RestoreReport says how many), and
//     every DATASET_DESTROY the live log holds
//     (KeyManager::ReplayDestruction; destruction is irreversible, so the whole log is
//     replayed, which also covers a destruction racing the backup; DWKs are never destroyed
//     here — the live daemon destroyed them, or destroys them under its own intent);
//  3. rotates records and attachments of every ACTIVE dataset (restored usage counters may be
//     stale), so no write uses a restored primary;
//  4. sets the restored key DB's generation kRestoredKeyDbGenerationStep above the newest the
//     live log recorded (or the live key DB reached): a backup's key DB is older than the log
//     says, and cofferd refuses a key DB older than its log (KEY_DB_ROLLED_BACK), so a restored
//     directory starts from a fresh baseline and can be served beside the live log.
// A RESTORE_IN_PROGRESS marker in the target is written first and removed last;
// CheckRestoreComplete refuses a directory that still has it. The restore is audited
// (FULL_RESTORE, REQUESTED and COMPLETED) in the log the caller's key-manager options name —
// normally the live log, which continues; if the live log is lost, open `audit/` of the
// restored directory as the log (nothing newer can be replayed then).
//
// Progress (crypto/base/progress.h), phases in this order — Create: "data" (bytes copied, of an
// estimate: storage/backup.h), "keys" (bytes of the key-DB checkpoint hashed), "audit" (bytes of
// audit files copied); Verify: "data", "keys", "audit" (bytes checked); RestoreInto: "verify"
// (bytes: every part of the backup, then the live log), "data", "keys", "audit" (bytes
// restored), "replay" (journal entries: purges, then destructions), "rotate" (ACTIVE datasets).
// Byte phases report once at least a MiB more is done (checked after each file or copy chunk),
// item phases after each item; each phase that completes ends on a report with done == total.
// Reports are made while this object's lock is held, on the caller's thread or a RocksDB backup
// thread: they must not call back.
//
// PruneExpired deletes full backups at least max_age old (default 30 days), always keeping the
// newest, with their data backups and copies. A retired key version's wrapped key stays in the
// key DB for good (the key manager deletes version rows only when it destroys a dataset, which
// shreds every backup of it anyway), so any backup's ciphertexts find their keys in its own
// key copy and, after a restore, in the restored key DB.
//
// Thread safety: every method may be called from any thread; they are serialized internally.
// Ownership: borrows the Clock; Create and RestoreInto borrow their arguments for the call.
// Failures (stable codes): BACKUP_NOT_FOUND, BACKUP_CORRUPT (a part fails verification or the
// manifest does not parse), RESTORE_TARGET_NOT_EMPTY, REPLAY_SOURCE_STALE, RESTORE_INCOMPLETE,
// AUDIT_TAMPERED (the live log fails verification), IO_ERROR, and the key manager's, storage's
// and the audit log's own codes from the replay. Messages name paths and ids, never data.

#ifndef COFFER_KMS_KEYS_FULL_BACKUP_H_
#define COFFER_KMS_KEYS_FULL_BACKUP_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/base/progress.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/key_manager.h"
#include "storage/backup.h"
#include "storage/data_db.h"

namespace coffer::kms {

// How far above the live log's newest key-DB generation a restored key DB starts
// (docs/key-manager.md, "Key DB generation").
inline constexpr uint64_t kRestoredKeyDbGenerationStep = uint64_t{1} << 32;

// Sub-directories of a restored directory.
inline constexpr char kRestoredDataDir[] = "data";
inline constexpr char kRestoredKeyDbDir[] = "keys";
inline constexpr char kRestoredAuditDir[] = "audit";
inline constexpr char kRestoreMarker[] = "RESTORE_IN_PROGRESS";

struct FullBackupOptions {
  std::string directory;  // the backup root; never inside a data, key-DB, audit or token path
  std::chrono::seconds max_age = storage::kDefaultBackupMaxAge;
  bool sync = true;              // fsync copies (off only in tests)
  const Clock* clock = nullptr;  // required
  // The token's HMAC service key (required): each backup's copy of the key DB is sealed under a
  // key derived from it inside the token (docs/key-manager.md, "Full backups"), and verify and
  // restore open it with the same token (or a copy of its directory).
  hsm::RowAuthenticator* token = nullptr;
};

// What a full backup copies from the running instance.
struct FullBackupSources {
  storage::DataDb* data_db = nullptr;
  KeyManager* key_manager = nullptr;
  audit::AuditLog* audit_log = nullptr;  // the log the key manager writes
  std::string audit_directory;           // that log's directory
  // The journal the recycle bin writes purges through; without one (no purges possible) B is
  // read directly.
  AuditPurgeJournal* purge_journal = nullptr;
};

struct FullBackupInfo {
  uint32_t id = 0;
  TimePoint created;
  uint64_t audit_sequence = 0;  // B: entries from here on are newer than the backup
  audit::LogId audit_log_id{};
  uint64_t size_bytes = 0;  // data backup plus key-DB and audit copies
};

struct RestoreRequest {
  std::string target_directory;      // must not exist: the restore creates it (mode 0700)
  std::string live_audit_directory;  // the current log, replayed from
  std::string audit_public_key_pem;  // verifies it (the token's checkpoint key)
  // The newest anchor kept off the machine (kms/audit/anchor_check.h); the live log must reach
  // and match it. Unset: not checked.
  std::optional<audit::CheckpointAnchor> minimum_anchor;
  // How to open the restored key DB: modules, row authenticator, signer, the audit log that
  // records the restore and the replay, clock. key_db_directory is set by RestoreInto.
  KeyManagerOptions key_manager;
  audit::AuditActor actor;
};

struct RestoreReport {
  uint64_t audit_sequence = 0;  // the backup's B
  size_t purges_replayed = 0;   // journal entries replayed
  size_t items_purged = 0;      // of those, items the backup still held
  // Client deletes and restores after the backup, replayed (ItemMove entries, audit_event.h):
  // an item deleted since is in the bin again (bin time = the delete's), not back live.
  size_t binned_again = 0;       // deletes replayed
  size_t restored_from_bin = 0;  // restores from the bin replayed
  size_t moves_not_found = 0;    // moves whose item the backup did not hold (purged, newer)
  size_t moves_without_ref = 0;  // deletes and restores logged without a ref (older cofferd)
  // Items written after the backup (distinct refs of ACCESS_WRITE entries): their newer values
  // are in no log. Overwritten: the backup holds an older value (served, or binned, as of the
  // backup); new: the backup has nothing of them.
  size_t records_overwritten = 0;
  size_t records_written_new = 0;
  size_t attachments_overwritten = 0;
  size_t attachments_written_new = 0;
  size_t writes_without_ref = 0;  // writes logged without a ref (older cofferd)
  // Grant changes made at run time after the backup (completed grant_add / grant_remove
  // entries). NOT replayed: stored grants are key-DB rows, so the restored copy has the grants
  // of the backup — a grant removed since is back, one added since is gone. The admins redo
  // them (keyctl grant, under dual control as always); the restore says how many there were.
  size_t grants_added_since = 0;
  size_t grants_removed_since = 0;
  std::vector<uint64_t> datasets_destroyed;  // DESTROYED in the restored key DB by the replay
  // Left DESTROYING: the token still holds a DWK of theirs, which only the live daemon destroys.
  std::vector<uint64_t> destructions_deferred;
  size_t intents_resolved = 0;  // intents the backup captured, resolved in rows (recovery.cc)
  std::vector<std::pair<uint64_t, storage::KeyPurpose>> rotated;
  // The restored key DB's generation: above everything the live log recorded (step 4 below).
  uint64_t key_db_generation = 0;
};

class FullBackups {
 public:
  static absl::StatusOr<std::unique_ptr<FullBackups>> Open(const FullBackupOptions& options);
  FullBackups(const FullBackups&) = delete;
  FullBackups& operator=(const FullBackups&) = delete;
  ~FullBackups();

  // Makes a full backup (audited as FULL_BACKUP). A failure leaves no manifest, so no backup.
  absl::StatusOr<FullBackupInfo> Create(const FullBackupSources& sources,
                                        const audit::AuditActor& actor,
                                        const coffer::ProgressFn& progress = {});
  // Complete backups, oldest first.
  absl::StatusOr<std::vector<FullBackupInfo>> List();
  // OK when the manifest parses and every part checks: the data backup's checksums, and every
  // key-DB and audit file present with its size and SHA-256.
  absl::Status Verify(uint32_t id, const coffer::ProgressFn& progress = {});
  // See the contract above.
  absl::StatusOr<RestoreReport> RestoreInto(uint32_t id, RestoreRequest request,
                                            const coffer::ProgressFn& progress = {});
  // Deletes every backup created at least max_age before now, except the newest; returns ids.
  absl::StatusOr<std::vector<uint32_t>> PruneExpired();

  // OK when RestoreInto could create `target_directory` now (the rules above): nothing is
  // created. RESTORE_TARGET_NOT_EMPTY when the path exists; INVALID_ARGUMENT naming what is wrong
  // with the path or its parent otherwise.
  static absl::Status CheckRestoreTarget(const std::string& target_directory);
  // OK unless `directory` holds an unfinished restore (RESTORE_INCOMPLETE).
  static absl::Status CheckRestoreComplete(const std::string& directory);

  // Writes the key-DB copy of full backup `id` under backup root `backup_root`, opened with
  // `token` when sealed, into `target` (created as RestoreInto creates its target): the key DB
  // exactly as the backup took it — no replay, no generation step, so cofferd refuses it as
  // rolled back. For inspection and tests; RestoreInto is the way to serve a backup. Reads only
  // the backup's own directory (no BackupEngine). BACKUP_NOT_FOUND, BACKUP_CORRUPT (a file that
  // fails its checksum or does not open), or the target's errors.
  static absl::Status ExtractKeyDb(const std::string& backup_root, uint32_t id,
                                   hsm::RowAuthenticator& token, const std::string& target);
  // FAILED_PRECONDITION when `key_db_directory` holds a backup's sealed key-DB files (*.sealed:
  // someone copied a backup's keys/ into place), with what to do instead; OK otherwise (also
  // when the directory does not exist). cofferd checks it before opening its key DB.
  static absl::Status CheckNotASealedCopy(const std::string& key_db_directory);

 private:
  FullBackups(FullBackupOptions options, const Clock* clock,
              std::unique_ptr<storage::DataDbBackups> data);
  std::string BackupPath(uint32_t id) const;
  absl::StatusOr<FullBackupInfo> CreateLocked(const FullBackupSources& sources, uint32_t* data_id,
                                              const coffer::ProgressFn& progress);
  absl::StatusOr<std::vector<FullBackupInfo>> ListLocked();
  absl::Status VerifyLocked(uint32_t id, const coffer::ProgressFn& progress);

  FullBackupOptions options_;
  const Clock* clock_;
  std::mutex mu_;
  std::unique_ptr<storage::DataDbBackups> data_;  // guarded by mu_
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_FULL_BACKUP_H_
