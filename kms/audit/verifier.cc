#include "kms/audit/verifier.h"

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "kms/audit/internal/forward_mac.h"
#include "kms/audit/internal/segment_scan.h"
#include "kms/audit/signer.h"

namespace coffer::kms::audit {
namespace {

using ::coffer::audit::v1::AuditEntry;

// Segment first-sequence numbers found in `directory`, ascending.
absl::StatusOr<std::vector<uint64_t>> ListSegments(AuditFileSystem& fs,
                                                   const std::string& directory) {
  COFFER_ASSIGN_OR_RETURN(std::vector<std::string> names, fs.ListDirectory(directory));
  std::vector<uint64_t> segments;
  for (const std::string& name : names) {
    if (std::optional<uint64_t> first = ParseSegmentFileName(name)) segments.push_back(*first);
  }
  std::sort(segments.begin(), segments.end());
  if (segments.empty()) {
    return MakeError(ErrorCode::kNotFound, "no audit segments in " + directory);
  }
  return segments;
}

std::optional<uint64_t> EpochStartedBy(const AuditEntry& entry) {
  if (entry.kind() == v1::LOG_EPOCH && entry.has_epoch()) return entry.epoch().epoch();
  if (entry.kind() == v1::LOG_CHECKPOINT && entry.has_checkpoint()) {
    return entry.checkpoint().epoch();
  }
  return std::nullopt;
}

bool ParseEntry(std::string_view payload, AuditEntry& entry) {
  return entry.ParseFromArray(payload.data(), static_cast<int>(payload.size()));
}

class Verification {
 public:
  Verification(std::string directory, const VerifyOptions& options, CheckpointVerifier verifier)
      : directory_(std::move(directory)),
        options_(options),
        fs_(options.file_system != nullptr ? *options.file_system : PosixAuditFileSystem()),
        verifier_(std::move(verifier)),
        anchors_(options.anchors) {
    std::sort(anchors_.begin(), anchors_.end(),
              [](const CheckpointAnchor& a, const CheckpointAnchor& b) {
                return a.sequence < b.sequence;
              });
  }

  absl::StatusOr<VerifyReport> Run() {
    COFFER_ASSIGN_OR_RETURN(segments_, ListSegments(fs_, directory_));
    if (segments_.front() != 0) {
      Fail(AuditFailure::kDeletedEntry, 0,
           "the log starts at sequence " + std::to_string(segments_.front()) +
               ": earlier segments were removed");
      return report_;
    }
    for (size_t s = 0; s < segments_.size(); ++s) {
      COFFER_ASSIGN_OR_RETURN(bool go_on, VerifySegment(s));
      if (!go_on) return report_;
    }
    Finish();
    return report_;
  }

 private:
  std::string PathOf(size_t segment) const {
    return directory_ + "/" + SegmentFileName(segments_[segment]);
  }

  // Records the first failure; always returns false (stop).
  bool Fail(AuditFailure failure, uint64_t sequence, std::string detail) {
    report_.failure = failure;
    report_.failed_sequence = sequence;
    report_.failure_detail = std::move(detail);
    return false;
  }

  bool FailUnauthenticated(AuditFailure failure, uint64_t sequence, const std::string& detail) {
    report_.unauthenticated_from = trusted_through_.has_value() ? *trusted_through_ + 1 : 0;
    return Fail(failure, sequence,
                detail + "; entries from sequence " +
                    std::to_string(*report_.unauthenticated_from) +
                    " on are unauthenticated (rewritten and re-hashed)");
  }

  absl::StatusOr<bool> VerifySegment(size_t s) {
    const bool last = s + 1 == segments_.size();
    COFFER_ASSIGN_OR_RETURN(std::string bytes, fs_.ReadFile(PathOf(s)));
    absl::StatusOr<internal::SegmentScan> scan = internal::ScanSegment(bytes);
    if (!scan.ok()) {
      return Fail(AuditFailure::kMalformed, expected_,
                  SegmentFileName(segments_[s]) + ": " + std::string(scan.status().message()));
    }
    if (!scan->header.has_value()) {
      if (!last) {
        return Fail(AuditFailure::kMalformed, expected_,
                    SegmentFileName(segments_[s]) + ": truncated segment header");
      }
      report_.torn_tail_bytes += bytes.size();
      return true;
    }
    const SegmentHeader& header = *scan->header;
    if (s == 0) {
      report_.log_id = header.log_id;
      if (options_.expected_log_id.has_value() && *options_.expected_log_id != header.log_id) {
        return Fail(AuditFailure::kWrongLog, 0, "the log id is " + ToHex(header.log_id));
      }
      for (const CheckpointAnchor& anchor : anchors_) {
        if (anchor.log_id != header.log_id) {
          return Fail(AuditFailure::kWrongLog, anchor.sequence,
                      "an anchor names log " + ToHex(anchor.log_id) + ", this log is " +
                          ToHex(header.log_id));
        }
      }
    } else if (header.log_id != report_.log_id) {
      return Fail(AuditFailure::kWrongLog, expected_,
                  SegmentFileName(segments_[s]) + " belongs to log " + ToHex(header.log_id));
    }
    if (header.first_sequence != segments_[s]) {
      return Fail(AuditFailure::kMalformed, expected_,
                  SegmentFileName(segments_[s]) + ": header names first sequence " +
                      std::to_string(header.first_sequence));
    }
    if (header.first_sequence == expected_ && header.previous_hash != head_) {
      return Fail(AuditFailure::kEditedEntry, expected_,
                  SegmentFileName(segments_[s]) + ": header does not link to the previous entry");
    }
    for (size_t f = 0; f < scan->frames.size(); ++f) {
      COFFER_ASSIGN_OR_RETURN(bool go_on, VerifyFrame(scan->frames[f], s, *scan, f));
      if (!go_on) return false;
    }
    if (scan->tail == internal::SegmentTail::kTorn && last) {
      report_.torn_tail_bytes += bytes.size() - scan->valid_bytes;
      return true;
    }
    if (scan->tail != internal::SegmentTail::kClean) {
      return Fail(AuditFailure::kMalformed, expected_,
                  SegmentFileName(segments_[s]) + ": damaged frame at byte " +
                      std::to_string(scan->valid_bytes));
    }
    return true;
  }

  absl::StatusOr<bool> VerifyFrame(const internal::ScannedFrame& frame, size_t segment,
                                   const internal::SegmentScan& scan, size_t index) {
    AuditEntry entry;
    if (!ParseEntry(frame.payload, entry)) {
      return Fail(AuditFailure::kMalformed, expected_, "entry does not parse");
    }
    const uint64_t sequence = entry.sequence();
    if (sequence != expected_) {
      COFFER_ASSIGN_OR_RETURN(bool later, AppearsLater(expected_, segment, scan, index));
      if (sequence < expected_ || later) {
        return Fail(AuditFailure::kReordered, expected_,
                    "found sequence " + std::to_string(sequence) + " where " +
                        std::to_string(expected_) + " belongs");
      }
      return Fail(AuditFailure::kDeletedEntry, expected_,
                  "sequence " + std::to_string(expected_) +
                      " is missing (next present: " + std::to_string(sequence) + ")");
    }
    COFFER_ASSIGN_OR_RETURN(ChainHash hash,
                            ComputeChainHash(report_.log_id, head_, sequence, frame.payload));
    if (hash != frame.hash) {
      return Fail(AuditFailure::kEditedEntry, sequence,
                  "the entry does not match its chain hash (altered after it was written)");
    }
    COFFER_ASSIGN_OR_RETURN(bool epoch_ok, CheckEpoch(entry));
    if (!epoch_ok) return false;
    if (mac_.has_value()) {
      if (!mac_->VerifyAndEvolve(hash, frame.mac).ok()) {
        return Fail(AuditFailure::kBadMac, sequence,
                    "the entry's MAC is wrong: altered (and possibly re-hashed) after it was "
                    "written");
      }
      ++report_.macs_verified;
    }
    // Anchors first: a checkpoint that verifies must not vouch for its own entry before an
    // anchor that contradicts it is heard.
    while (next_anchor_ < anchors_.size() && anchors_[next_anchor_].sequence == sequence) {
      if (anchors_[next_anchor_].head != hash) {
        return FailUnauthenticated(AuditFailure::kAnchorMismatch, sequence,
                                   "the external anchor for this sequence names another head");
      }
      ++report_.anchors_verified;
      trusted_through_ = sequence;
      ++next_anchor_;
    }
    if (entry.kind() == v1::LOG_CHECKPOINT && !CheckCheckpoint(entry)) return false;
    head_ = hash;
    ++expected_;
    ++report_.entries;
    report_.last_sequence = sequence;
    last_kind_ = entry.kind();
    last_closing_ = entry.kind() == v1::LOG_CHECKPOINT && entry.checkpoint().closing();
    if (entry.kind() == v1::LOG_CHECKPOINT) {
      report_.key_db_generation =
          std::max(report_.key_db_generation, entry.checkpoint().key_db_generation());
    } else if (entry.kind() == v1::LOG_EPOCH) {
      report_.key_db_generation =
          std::max(report_.key_db_generation, entry.epoch().key_db_generation());
    }
    return true;
  }

  absl::StatusOr<bool> CheckEpoch(const AuditEntry& entry) {
    std::optional<uint64_t> started = EpochStartedBy(entry);
    if (entry.sequence() == 0) {
      if (entry.kind() != v1::LOG_EPOCH || started != 0u) {
        return Fail(AuditFailure::kBadEpoch, 0, "the log does not start with epoch 0");
      }
    } else if (started.has_value() && *started != epoch_ + 1) {
      return Fail(AuditFailure::kBadEpoch, entry.sequence(),
                  "epoch " + std::to_string(*started) + " follows epoch " + std::to_string(epoch_));
    }
    if (!started.has_value()) return true;
    epoch_ = *started;
    if (options_.epoch_keys) {
      COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key,
                              options_.epoch_keys({report_.log_id, epoch_}));
      COFFER_ASSIGN_OR_RETURN(internal::ForwardSecureMac mac,
                              internal::ForwardSecureMac::Create(std::move(key)));
      mac_ = std::move(mac);
    }
    return true;
  }

  bool CheckCheckpoint(const AuditEntry& entry) {
    const uint64_t sequence = entry.sequence();
    const v1::Checkpoint& checkpoint = entry.checkpoint();
    std::optional<ChainHash> signed_head = ToArray<kChainHashSize>(checkpoint.head_hash());
    if (!signed_head.has_value() || checkpoint.covered_sequence() + 1 != sequence) {
      return Fail(AuditFailure::kMalformed, sequence, "checkpoint fields malformed");
    }
    const std::string message = CheckpointMessage(report_.log_id, checkpoint.covered_sequence(),
                                                  *signed_head, entry.time_micros());
    if (!verifier_.Verify(message, checkpoint.signature()).ok()) {
      return Fail(AuditFailure::kBadSignature, sequence,
                  "the checkpoint signature does not verify with this public key");
    }
    if (*signed_head != head_) {
      return FailUnauthenticated(AuditFailure::kCheckpointMismatch, sequence,
                                 "the signed head of sequence " +
                                     std::to_string(checkpoint.covered_sequence()) +
                                     " differs from the chain");
    }
    ++report_.checkpoints_verified;
    report_.last_checkpoint = sequence;
    trusted_through_ = sequence;
    return true;
  }

  // Whether `sequence` occurs after frame `index` of `segment` (classifies a mismatch as a
  // reordering rather than a deletion).
  absl::StatusOr<bool> AppearsLater(uint64_t sequence, size_t segment,
                                    const internal::SegmentScan& scan, size_t index) {
    for (size_t f = index + 1; f < scan.frames.size(); ++f) {
      AuditEntry entry;
      if (ParseEntry(scan.frames[f].payload, entry) && entry.sequence() == sequence) return true;
    }
    for (size_t s = segment + 1; s < segments_.size(); ++s) {
      COFFER_ASSIGN_OR_RETURN(std::string bytes, fs_.ReadFile(PathOf(s)));
      absl::StatusOr<internal::SegmentScan> later = internal::ScanSegment(bytes);
      if (!later.ok()) continue;
      for (const internal::ScannedFrame& frame : later->frames) {
        AuditEntry entry;
        if (ParseEntry(frame.payload, entry) && entry.sequence() == sequence) return true;
      }
    }
    return false;
  }

  void Finish() {
    if (next_anchor_ < anchors_.size()) {
      Fail(AuditFailure::kTruncated, expected_,
           "an external anchor names sequence " + std::to_string(anchors_[next_anchor_].sequence) +
               " but the log ends before it");
      return;
    }
    if (options_.expected_min_sequence.has_value() &&
        *options_.expected_min_sequence >= expected_) {
      Fail(AuditFailure::kTruncated, expected_,
           "the log was expected to reach sequence " +
               std::to_string(*options_.expected_min_sequence) + " but ends before it");
      return;
    }
    report_.closed_cleanly = last_closing_;
    if (last_kind_ != v1::LOG_CHECKPOINT && report_.last_sequence.has_value()) {
      report_.uncovered_from =
          report_.last_checkpoint.has_value() ? *report_.last_checkpoint + 1 : 0;
      report_.warnings.push_back(
          "entries " + std::to_string(*report_.uncovered_from) + ".." +
          std::to_string(*report_.last_sequence) +
          " are not yet covered by a signed checkpoint (the daemon is running, crashed, or the "
          "tail was cut: compare with the newest external anchor)");
    }
    if (report_.torn_tail_bytes > 0) {
      report_.warnings.push_back(std::to_string(report_.torn_tail_bytes) +
                                 " bytes of a torn final write after the last entry (a crash "
                                 "during a write; the daemon removes them at its next start)");
    }
    if (!options_.epoch_keys) {
      report_.warnings.emplace_back("offline verification: MACs not checked");
    }
  }

  const std::string directory_;
  const VerifyOptions& options_;
  AuditFileSystem& fs_;
  CheckpointVerifier verifier_;
  std::vector<CheckpointAnchor> anchors_;
  size_t next_anchor_ = 0;
  std::vector<uint64_t> segments_;

  uint64_t expected_ = 0;
  ChainHash head_{};
  uint64_t epoch_ = 0;
  std::optional<internal::ForwardSecureMac> mac_;
  std::optional<uint64_t> trusted_through_;  // last sequence vouched for by a signature or anchor
  v1::EventKind last_kind_ = v1::EVENT_KIND_UNSPECIFIED;
  bool last_closing_ = false;
  VerifyReport report_;
};

// Calls `visit(entry, frame)` for every parseable frame of every segment, in order.
template <typename Visit>
absl::Status ForEachFrame(const std::string& directory, AuditFileSystem* file_system, Visit visit) {
  AuditFileSystem& fs = file_system != nullptr ? *file_system : PosixAuditFileSystem();
  COFFER_ASSIGN_OR_RETURN(std::vector<uint64_t> segments, ListSegments(fs, directory));
  for (uint64_t first : segments) {
    const std::string path = directory + "/" + SegmentFileName(first);
    COFFER_ASSIGN_OR_RETURN(std::string bytes, fs.ReadFile(path));
    absl::StatusOr<internal::SegmentScan> scan = internal::ScanSegment(bytes);
    if (!scan.ok()) return scan.status();
    for (const internal::ScannedFrame& frame : scan->frames) {
      AuditEntry entry;
      if (!ParseEntry(frame.payload, entry)) {
        return MakeError(ErrorCode::kAuditLogCorrupt,
                         path + ": unparseable entry at byte " + std::to_string(frame.offset));
      }
      visit(std::move(entry), *scan->header);
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string_view AuditFailureName(AuditFailure failure) {
  switch (failure) {
    case AuditFailure::kNone:
      return "none";
    case AuditFailure::kMalformed:
      return "malformed";
    case AuditFailure::kWrongLog:
      return "wrong log";
    case AuditFailure::kEditedEntry:
      return "edited entry";
    case AuditFailure::kDeletedEntry:
      return "deleted entry";
    case AuditFailure::kReordered:
      return "reordered";
    case AuditFailure::kBadEpoch:
      return "bad epoch";
    case AuditFailure::kBadSignature:
      return "bad checkpoint signature";
    case AuditFailure::kCheckpointMismatch:
      return "checkpoint mismatch";
    case AuditFailure::kAnchorMismatch:
      return "anchor mismatch";
    case AuditFailure::kTruncated:
      return "truncated";
    case AuditFailure::kBadMac:
      return "bad MAC";
  }
  return "unknown";
}

absl::Status VerifyReport::ToStatus() const {
  if (ok()) return absl::OkStatus();
  return MakeError(ErrorCode::kAuditTampered,
                   std::string(AuditFailureName(failure)) + " at sequence " +
                       std::to_string(failed_sequence) + ": " + failure_detail);
}

absl::StatusOr<VerifyReport> VerifyAuditLog(const std::string& directory,
                                            const VerifyOptions& options) {
  COFFER_ASSIGN_OR_RETURN(CheckpointVerifier verifier,
                          CheckpointVerifier::FromPublicKeyPem(options.public_key_pem));
  Verification verification(directory, options, std::move(verifier));
  return verification.Run();
}

absl::StatusOr<std::vector<AuditEntry>> ReadAuditEntries(const std::string& directory,
                                                         AuditFileSystem* file_system) {
  std::vector<AuditEntry> entries;
  COFFER_RETURN_IF_ERROR(
      ForEachFrame(directory, file_system, [&](AuditEntry entry, const SegmentHeader& /*header*/) {
        entries.push_back(std::move(entry));
      }));
  return entries;
}

absl::StatusOr<std::vector<CheckpointEvidence>> ExtractCheckpoints(const std::string& directory,
                                                                   AuditFileSystem* file_system) {
  std::vector<CheckpointEvidence> evidence;
  COFFER_RETURN_IF_ERROR(ForEachFrame(
      directory, file_system, [&](const AuditEntry& entry, const SegmentHeader& header) {
        if (entry.kind() != v1::LOG_CHECKPOINT) return;
        std::optional<ChainHash> head = ToArray<kChainHashSize>(entry.checkpoint().head_hash());
        if (!head.has_value()) return;
        evidence.push_back({entry.sequence(),
                            CheckpointMessage(header.log_id, entry.checkpoint().covered_sequence(),
                                              *head, entry.time_micros()),
                            entry.checkpoint().signature()});
      }));
  return evidence;
}

}  // namespace coffer::kms::audit
