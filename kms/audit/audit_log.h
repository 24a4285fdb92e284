// AuditLog: the key manager's tamper-evident, append-only audit log (docs/audit.md).
//
// Each entry is an AuditEntry protobuf in a frame with
//  - a public hash chain: h_i = SHA-256(domain | log id | h_{i-1} | i | payload), stored with the
//    entry, so that any edit, deletion or reordering breaks the chain at that entry;
//  - a forward-secure MAC: HMAC-SHA256(K_i, h_i), where K evolves after every entry and the old
//    key is wiped. K_0 of each epoch comes from the EpochKeyProvider (the daemon derives it in the
//    HSM, so only the HSM can recompute it). A new epoch starts at every open and every checkpoint;
//  - signed checkpoints: every `checkpoint_every_entries` entries, every `checkpoint_interval`
//    (checked on append and by CheckpointIfDue) and at Close, a LOG_CHECKPOINT entry signs
//    (sequence, head hash, time) with the CheckpointSigner (the token's ECDSA P-256 key), and its
//    (sequence, hash) goes to the AnchorSink (syslog/journal) once durable.
//
// Durability and failing closed: Append and AppendBatch return OK only after the entries are
// written and fdatasync()ed. If a write or sync fails, they return AUDIT_NOT_DURABLE and the log
// refuses every later append with AUDIT_LOG_CLOSED until it is reopened (no holes, no reordering
// behind a failure); the caller must not perform or acknowledge the operation. Recovery: the
// log reopens itself — exactly as Open would after a crash, in a new epoch — on the first
// append, Checkpoint or CheckpointIfDue at least kAuditReopenInterval (on the log's clock)
// after its last attempt; while reopening fails (the disk still full), they return
// AUDIT_NOT_DURABLE. So service resumes without a restart once the cause is gone. A signer or
// epoch-key failure writes nothing: the checkpoint is skipped, counted, and retried.
//
// Tail truncation: a log cut at a frame boundary or missing its newest segments is a shorter
// well-formed log; only an anchor kept off the machine shows it was longer. Given
// `minimum_anchor`, Open refuses such a log rather than signing over it (docs/audit.md, "Tail
// truncation and rollback").
//
// Open and recovery: Open resumes the chain. A torn final write (a frame cut short, or zero
// fill, in the last segment) is truncated away and reported in the new LOG_EPOCH entry. Damage
// anywhere else, or a MAC mismatch in the entries since the last checkpoint, fails Open with
// AUDIT_LOG_CORRUPT: the log refuses to sign over entries it cannot authenticate. The epoch's K is
// never stored: Open recomputes it from the provider and walks at most one epoch.
//
// Thread safety: all methods may be called from any thread; one internal mutex serialises
// appends (entries from concurrent callers get consecutive sequence numbers). Ownership: the log
// does not own the signer, anchor sink, clock or file system; they must outlive it.

#ifndef COFFER_KMS_AUDIT_AUDIT_LOG_H_
#define COFFER_KMS_AUDIT_AUDIT_LOG_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/secret_bytes.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/file_system.h"
#include "kms/audit/internal/forward_mac.h"
#include "kms/audit/signer.h"

namespace coffer::kms::audit {

struct EpochKeyRequest {
  LogId log_id{};
  uint64_t epoch = 0;
};

// Returns K_0 (32 bytes) for an epoch of a log. Must return the same key for the same request
// every time: the log recomputes old epochs' keys at open and an online verifier recomputes all.
using EpochKeyProvider = std::function<absl::StatusOr<crypto::SecretBytes>(const EpochKeyRequest&)>;

struct AuditLogOptions {
  std::string directory;  // created (0700) if missing and create_if_missing
  bool create_if_missing = true;
  uint64_t checkpoint_every_entries = 1000;      // at least 1
  std::chrono::seconds checkpoint_interval{60};  // 0 = by count and at close only
  uint64_t max_segment_bytes = 16 << 20;         // a new segment starts after this size
  CheckpointSigner* signer = nullptr;            // required
  EpochKeyProvider epoch_keys;                   // required
  AnchorSink* anchor_sink = nullptr;             // optional
  const Clock* clock = nullptr;                  // required
  AuditFileSystem* file_system = nullptr;        // default: PosixAuditFileSystem()
  // The newest anchor known to have left the machine (kms/audit/anchor_check.h): Open refuses,
  // with AUDIT_TAMPERED, a log that is another log, ends before it (a tail cut at a frame
  // boundary, newest segments deleted or rolled back), holds no segment at all, or holds another
  // entry at the anchored sequence. Unset: no such check (nothing to compare with).
  std::optional<CheckpointAnchor> minimum_anchor;
  // The key DB's current generation (kms::KeyManager::key_db_generation; 0 = none yet), read for
  // every checkpoint and recorded in it (docs/audit.md, "Key DB generation"). It must return only
  // generations already durable in the key DB, and must not call back into the log (it runs
  // under the log's mutex). The log never records a value lower than one it recorded before:
  // a checkpoint records max(recorded, this). Unset: checkpoints carry what was recorded before.
  // kms/audit knows nothing of the key DB (layering): the daemon wires this.
  std::function<uint64_t()> key_db_generation;
};

// How long a failed log waits between attempts to reopen itself.
inline constexpr std::chrono::seconds kAuditReopenInterval{1};

struct AuditLogStats {
  uint64_t next_sequence = 0;
  uint64_t epoch = 0;
  uint64_t entries_since_checkpoint = 0;
  uint64_t checkpoints_written = 0;
  uint64_t checkpoint_failures = 0;  // signer or epoch-key failures (checkpoint skipped)
  uint64_t anchor_failures = 0;      // anchors the sink could not deliver
  uint64_t torn_bytes_dropped_at_open = 0;
  int64_t last_checkpoint_micros = 0;  // the newest checkpoint committed since open; 0 = none
  // A write failed (a full disk, an I/O error): appends are refused until the log reopens itself,
  // which the next append or checkpoint tries, at most once per kAuditReopenInterval of the log's
  // clock (AuditLog, "Recovery").
  bool failed = false;
  uint64_t reopens = 0;          // times the log reopened itself after a failed write
  uint64_t reopen_failures = 0;  // attempts that failed (the disk still full, say)
  bool closed = false;
};

class AuditLog {
 public:
  // Opens (or creates) the log in options.directory, recovers a torn tail, starts a new epoch
  // with a LOG_EPOCH entry, and signs any entries left uncovered by the previous run.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(AuditLogOptions options);

  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;
  // Closes if still open; the result is lost, so call Close() to see it.
  ~AuditLog();

  // Appends `event` and returns its sequence number once durable. INVALID_ARGUMENT for an
  // invalid event (nothing written); AUDIT_NOT_DURABLE / AUDIT_LOG_CLOSED as above.
  absl::StatusOr<uint64_t> Append(const AuditEvent& event);

  // Appends `events` in order with one write and one sync (group commit); returns the sequence
  // number of the last. All are validated first; on failure none is acknowledged.
  absl::StatusOr<uint64_t> AppendBatch(std::span<const AuditEvent> events);

  // Writes a checkpoint now (FAILED_PRECONDITION if the signer or provider failed).
  absl::Status Checkpoint();

  // Writes a checkpoint if entries were added since the last one and the interval has passed.
  absl::Status CheckpointIfDue();

  // OK when the log takes appends: a failed log is reopened first when an attempt is due
  // (Recovery, above); its error otherwise. For writers that stopped at a failure
  // (BatchingAuditWriter) to learn when to go on.
  absl::Status Recover();

  // Writes a closing checkpoint, syncs and closes. Later appends return AUDIT_LOG_CLOSED.
  absl::Status Close();

  AuditLogStats stats() const;
  const LogId& log_id() const { return log_id_; }

  // The newest key-DB generation this log has recorded (in the entries read at open, or in a
  // checkpoint since); nullopt when none was ever recorded (a log of format 1 only, or one that
  // never saw a key DB). A key DB older than this was rolled back (kms::KeyManagerOptions::
  // minimum_key_db_generation).
  std::optional<uint64_t> recorded_key_db_generation() const;
  // max(recorded_key_db_generation, options.key_db_generation()): the lowest generation a key DB
  // that is to succeed the current one must start above (a restore: kms/keys/full_backup.h).
  uint64_t newest_key_db_generation() const;

 private:
  explicit AuditLog(AuditLogOptions options);

  absl::Status Initialize();
  absl::Status CreateNewLog();
  absl::Status ResumeLog(std::vector<uint64_t> segments);
  // ResumeLog's steps (audit_log.cc). LoadNewestEpoch reads `segments` from the newest back to
  // the newest epoch's start into `loaded` (oldest first), removing a newest segment whose
  // creation a crash cut short; `loaded` stays empty when that left no segment.
  // CheckLoadedChain checks sequence numbers and the hash chain (setting log_id_ and
  // recorded_key_db_generation_); ReauthenticateNewestEpoch checks the newest epoch's MACs and
  // returns the entries checked; ContinueLoadedLog repairs a torn tail and starts the new epoch.
  struct LoadedSegment;
  struct LoadedChain;
  absl::Status LoadNewestEpoch(std::vector<uint64_t>& segments, std::vector<LoadedSegment>& loaded,
                               uint64_t& torn_bytes);
  absl::StatusOr<LoadedChain> CheckLoadedChain(const std::vector<LoadedSegment>& loaded);
  absl::StatusOr<uint64_t> ReauthenticateNewestEpoch(const std::vector<LoadedSegment>& loaded,
                                                     const LoadedChain& chain) const;
  absl::Status ContinueLoadedLog(const LoadedSegment& newest, const LoadedChain& chain,
                                 uint64_t torn_bytes, uint64_t unchecked_since_checkpoint);
  absl::StatusOr<crypto::SecretBytes> EpochKey(uint64_t epoch) const;

  absl::Status CheckWritableLocked() const;
  // CheckWritableLocked, after reopening a failed log when an attempt is due (Recovery).
  absl::Status WritableLocked();
  bool CheckpointDueLocked(std::chrono::system_clock::time_point now) const;
  // Encodes an entry into pending_; advances sequence, head and MAC key.
  absl::Status EncodeLocked(v1::AuditEntry& entry, std::chrono::system_clock::time_point now);
  absl::Status EncodeEventLocked(const AuditEvent& event,
                                 std::chrono::system_clock::time_point now);
  absl::Status EncodeEpochLocked(v1::Epoch::Reason reason, uint64_t torn_bytes,
                                 std::chrono::system_clock::time_point now);
  // Encodes a checkpoint if the signer and provider succeed; an error means nothing was encoded.
  absl::Status EncodeCheckpointLocked(bool closing, std::chrono::system_clock::time_point now);
  // Writes and syncs pending_ (rotating the segment first if it is full); publishes anchors.
  absl::Status CommitLocked();
  absl::Status RotateSegmentLocked();
  absl::Status FailLocked(const absl::Status& cause);
  absl::Status CheckpointLocked(bool closing);

  std::string SegmentPath(uint64_t first_sequence) const;

  AuditLogOptions options_;
  const Clock* clock_;
  AuditFileSystem* fs_;

  mutable std::mutex mu_;
  LogId log_id_{};
  std::unique_ptr<AuditFile> file_;  // the last segment, open for appending
  uint64_t segment_bytes_ = 0;
  uint64_t next_sequence_ = 0;
  ChainHash head_{};  // chain hash of entry next_sequence_ - 1 (zeros before the first)
  uint64_t epoch_ = 0;
  std::optional<internal::ForwardSecureMac> mac_;
  std::string pending_;                  // encoded frames not yet written
  uint64_t pending_first_sequence_ = 0;  // sequence of the first frame in pending_
  ChainHash pending_previous_hash_{};    // chain hash before the first frame in pending_
  std::vector<CheckpointAnchor> pending_anchors_;
  std::chrono::system_clock::time_point last_checkpoint_time_;
  // The newest segment was written by an older format version: the next commit starts a new
  // segment, so no segment mixes versions.
  bool rotate_before_next_commit_ = false;
  uint64_t recorded_key_db_generation_ = 0;  // 0 = none recorded
  std::optional<std::chrono::system_clock::time_point> last_reopen_attempt_;
  AuditLogStats stats_;
};

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_AUDIT_LOG_H_
