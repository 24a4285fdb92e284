// Offline audit tools: the verifier behind `keyctl audit verify`, plus readers for auditors.
//
// VerifyAuditLog needs only the directory and the checkpoint public key (PEM). It walks every
// segment in order and checks framing, sequence continuity, the hash chain, epoch numbering,
// every checkpoint's signature and that its signed head is the chain's head, and the external
// anchors the caller supplies (parsed from the journal with ParseAnchorLine). It stops at the
// first failure and reports its kind and sequence number:
//   edited entry            -> kEditedEntry at that entry
//   deleted entry           -> kDeletedEntry at the missing sequence number
//   reordered entries       -> kReordered at the first sequence number out of place
//   tail rewritten and rehashed (chain consistent, but not what was signed)
//                           -> kCheckpointMismatch at the first checkpoint (or kAnchorMismatch at
//                              the first anchor) it contradicts; `unauthenticated_from` says from
//                              which sequence on nothing can be trusted
//   tail truncated, last checkpoint included
//                           -> kTruncated at the last sequence present + 1, when an anchor or
//                              expected_min_sequence names a sequence beyond the end
// With an EpochKeyProvider (online verification, inside the daemon or with HSM access) it also
// checks every entry's forward-secure MAC, which pins an edit to its own entry even when the
// attacker re-hashed the chain (kBadMac).
//
// Not a failure but a warning: entries after the last signed checkpoint (`uncovered_from`) are
// protected only by the hash chain until the next checkpoint; a torn final frame (a crash during
// a write) is reported in `torn_tail_bytes`. What offline verification cannot see: a tail cut
// off after the last anchor the caller supplied, or a history re-signed by someone holding the
// token's key — only anchors held outside the host catch those (docs/audit.md).
//
// Thread-safe (no shared state). Returns a non-OK status only when it cannot run at all
// (unreadable directory, bad public key, provider failure); tampering is reported in the
// VerifyReport, whose ToStatus() is AUDIT_TAMPERED.

#ifndef COFFER_KMS_AUDIT_VERIFIER_H_
#define COFFER_KMS_AUDIT_VERIFIER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit.pb.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/file_system.h"

namespace coffer::kms::audit {

enum class AuditFailure {
  kNone,
  kMalformed,           // a header, frame or entry that does not parse
  kWrongLog,            // a segment or anchor belonging to another log
  kEditedEntry,         // an entry does not match its chain hash
  kDeletedEntry,        // a sequence number is missing
  kReordered,           // entries out of order or repeated
  kBadEpoch,            // MAC epoch numbering broken
  kBadSignature,        // a checkpoint signature does not verify with the public key
  kCheckpointMismatch,  // a validly signed checkpoint disagrees with the chain
  kAnchorMismatch,      // an external anchor disagrees with the chain
  kTruncated,           // an anchored or expected sequence is beyond the end of the log
  kBadMac,              // (online) an entry's forward-secure MAC is wrong
};

std::string_view AuditFailureName(AuditFailure failure);

struct VerifyOptions {
  std::string public_key_pem;  // the checkpoint key (SubjectPublicKeyInfo PEM, P-256)
  std::vector<CheckpointAnchor> anchors;
  std::optional<uint64_t> expected_min_sequence;  // the log is known to have reached this
  std::optional<LogId> expected_log_id;
  EpochKeyProvider epoch_keys;             // set: online verification, MACs checked too
  AuditFileSystem* file_system = nullptr;  // default: PosixAuditFileSystem()
};

struct VerifyReport {
  AuditFailure failure = AuditFailure::kNone;
  uint64_t failed_sequence = 0;
  std::string failure_detail;
  // On a checkpoint or anchor mismatch: entries from this sequence on are unauthenticated.
  std::optional<uint64_t> unauthenticated_from;

  LogId log_id{};
  uint64_t entries = 0;
  std::optional<uint64_t> last_sequence;
  std::optional<uint64_t> last_checkpoint;  // sequence of the last checkpoint that verified
  // Warning: entries from here to last_sequence are not yet covered by a signed checkpoint.
  std::optional<uint64_t> uncovered_from;
  bool closed_cleanly = false;  // the log ends with a closing checkpoint
  uint64_t torn_tail_bytes = 0;
  uint64_t checkpoints_verified = 0;
  uint64_t anchors_verified = 0;
  uint64_t macs_verified = 0;
  // The newest key-DB generation the log records (segment format 2: epochs and checkpoints;
  // docs/audit.md, "Key DB generation"); 0 when none. cofferd refuses a key DB older than this.
  uint64_t key_db_generation = 0;
  std::vector<std::string> warnings;

  bool ok() const { return failure == AuditFailure::kNone; }
  // OK, or AUDIT_TAMPERED "<kind> at sequence <n>: <detail>".
  absl::Status ToStatus() const;
};

absl::StatusOr<VerifyReport> VerifyAuditLog(const std::string& directory,
                                            const VerifyOptions& options);

// Every entry in file order, without any check (for display; verify first).
absl::StatusOr<std::vector<::coffer::audit::v1::AuditEntry>> ReadAuditEntries(
    const std::string& directory, AuditFileSystem* file_system = nullptr);

// The exact bytes each checkpoint signs and its DER signature, for stock tools:
//   openssl dgst -sha256 -verify audit-pub.pem -signature cp.sig cp.msg
struct CheckpointEvidence {
  uint64_t sequence = 0;  // of the checkpoint entry
  std::string message;    // kCheckpointMessageSize bytes
  std::string signature;  // DER
};
absl::StatusOr<std::vector<CheckpointEvidence>> ExtractCheckpoints(
    const std::string& directory, AuditFileSystem* file_system = nullptr);

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_VERIFIER_H_
