#include "kms/audit/audit_log.h"

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "kms/audit/anchor_check.h"
#include "kms/audit/internal/segment_scan.h"

namespace coffer::kms::audit {
namespace {

constexpr uint64_t kMinSegmentBytes = 4096;

absl::Status Corrupt(const std::string& message) {
  return MakeError(ErrorCode::kAuditLogCorrupt, message);
}

void FillActor(const AuditActor& actor, v1::Actor* out) {
  out->set_uid(actor.uid);
  out->set_pid(actor.pid);
  out->set_admin_id(actor.admin_id);
  out->set_admin_name(actor.admin_name);
  out->set_socket(actor.socket);
}

// LOG_EPOCH and LOG_CHECKPOINT entries start a MAC epoch; returns its number.
std::optional<uint64_t> EpochStartedBy(const v1::AuditEntry& entry) {
  if (entry.kind() == v1::LOG_EPOCH && entry.has_epoch()) return entry.epoch().epoch();
  if (entry.kind() == v1::LOG_CHECKPOINT && entry.has_checkpoint()) {
    return entry.checkpoint().epoch();
  }
  return std::nullopt;
}

// The key-DB generation an entry records (format 2), 0 when none.
uint64_t KeyDbGenerationIn(const v1::AuditEntry& entry) {
  if (entry.kind() == v1::LOG_EPOCH && entry.has_epoch()) return entry.epoch().key_db_generation();
  if (entry.kind() == v1::LOG_CHECKPOINT && entry.has_checkpoint()) {
    return entry.checkpoint().key_db_generation();
  }
  return 0;
}

}  // namespace

// One segment read at open, with its frames parsed.
struct AuditLog::LoadedSegment {
  uint64_t first_sequence = 0;
  std::string path;
  std::string bytes;
  internal::SegmentScan scan;
  std::vector<v1::AuditEntry> entries;  // parallel to scan.frames
};

// Where the hash chain over the loaded segments ends, and where its newest epoch starts.
struct AuditLog::LoadedChain {
  ChainHash head{};
  uint64_t next_sequence = 0;
  uint64_t epoch = 0;
  size_t epoch_segment = 0;  // index into the loaded segments
  size_t epoch_frame = 0;
  const v1::AuditEntry* last_entry = nullptr;
};

AuditLog::AuditLog(AuditLogOptions options)
    : options_(std::move(options)),
      clock_(options_.clock),
      fs_(options_.file_system != nullptr ? options_.file_system : &PosixAuditFileSystem()) {}

AuditLog::~AuditLog() { Close().IgnoreError(); }

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(AuditLogOptions options) {
  if (options.directory.empty() || options.signer == nullptr || !options.epoch_keys ||
      options.clock == nullptr || options.checkpoint_every_entries == 0 ||
      options.max_segment_bytes < kMinSegmentBytes || options.checkpoint_interval.count() < 0) {
    return MakeError(
        ErrorCode::kInvalidArgument,
        "audit log options need a directory, a signer, an epoch-key provider, a clock, "
        "checkpoint_every_entries >= 1 and max_segment_bytes >= 4096");
  }
  std::unique_ptr<AuditLog> log(new AuditLog(std::move(options)));
  std::lock_guard<std::mutex> lock(log->mu_);
  absl::Status initialized = log->Initialize();
  if (!initialized.ok()) {
    log->stats_.closed = true;  // nothing to close: the destructor must not write
    return initialized;
  }
  return log;
}

std::string AuditLog::SegmentPath(uint64_t first_sequence) const {
  return options_.directory + "/" + SegmentFileName(first_sequence);
}

absl::StatusOr<crypto::SecretBytes> AuditLog::EpochKey(uint64_t epoch) const {
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key, options_.epoch_keys({log_id_, epoch}));
  if (key.size() != internal::kEpochKeySize) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the audit epoch-key provider must return 32 "
                     "bytes");
  }
  return key;
}

absl::Status AuditLog::Initialize() {
  if (options_.create_if_missing) COFFER_RETURN_IF_ERROR(fs_->CreateDirectory(options_.directory));
  COFFER_ASSIGN_OR_RETURN(std::vector<std::string> names, fs_->ListDirectory(options_.directory));
  std::vector<uint64_t> segments;
  for (const std::string& name : names) {
    if (std::optional<uint64_t> first = ParseSegmentFileName(name)) segments.push_back(*first);
  }
  std::sort(segments.begin(), segments.end());
  if (segments.empty()) {
    if (options_.minimum_anchor.has_value()) {
      return CheckLogReachesAnchor(LogEnd{options_.minimum_anchor->log_id, std::nullopt},
                                   *options_.minimum_anchor);
    }
    return CreateNewLog();
  }
  return ResumeLog(std::move(segments));
}

absl::Status AuditLog::CreateNewLog() {
  COFFER_RETURN_IF_ERROR(crypto::RandomBytes(absl::MakeSpan(log_id_.data(), log_id_.size())));
  const std::string path = SegmentPath(0);
  COFFER_ASSIGN_OR_RETURN(file_, fs_->CreateFile(path));
  const std::string header = EncodeSegmentHeader({log_id_, 0, ChainHash{}});
  COFFER_RETURN_IF_ERROR(file_->Append(header));
  COFFER_RETURN_IF_ERROR(file_->Sync());
  COFFER_RETURN_IF_ERROR(fs_->SyncDirectory(options_.directory));
  segment_bytes_ = header.size();
  const auto now = clock_->Now();
  last_checkpoint_time_ = now;
  COFFER_RETURN_IF_ERROR(
      EncodeEpochLocked(v1::Epoch::LOG_CREATED, stats_.torn_bytes_dropped_at_open, now));
  return CommitLocked();
}

absl::Status AuditLog::ResumeLog(std::vector<uint64_t> segments) {
  std::vector<LoadedSegment> loaded;
  uint64_t torn_bytes = 0;
  COFFER_RETURN_IF_ERROR(LoadNewestEpoch(segments, loaded, torn_bytes));
  if (loaded.empty()) {
    // Every segment was one whose creation a crash cut short, now removed.
    if (options_.minimum_anchor.has_value()) {
      return CheckLogReachesAnchor(LogEnd{options_.minimum_anchor->log_id, std::nullopt},
                                   *options_.minimum_anchor);
    }
    stats_.torn_bytes_dropped_at_open = torn_bytes;
    return CreateNewLog();
  }
  COFFER_ASSIGN_OR_RETURN(LoadedChain chain, CheckLoadedChain(loaded));
  if (options_.minimum_anchor.has_value()) {
    const uint64_t expected = chain.next_sequence;
    COFFER_RETURN_IF_ERROR(CheckLogReachesAnchor(
        LogEnd{log_id_, expected == 0 ? std::nullopt : std::optional<uint64_t>(expected - 1)},
        *options_.minimum_anchor));
  }
  COFFER_ASSIGN_OR_RETURN(uint64_t unchecked_since_checkpoint,
                          ReauthenticateNewestEpoch(loaded, chain));
  return ContinueLoadedLog(loaded.back(), chain, torn_bytes, unchecked_since_checkpoint);
}

absl::Status AuditLog::LoadNewestEpoch(std::vector<uint64_t>& segments,
                                       std::vector<LoadedSegment>& loaded, uint64_t& torn_bytes) {
  // Load segments from the newest back to the one where the newest MAC epoch starts: the entries
  // from there on are re-authenticated before this run signs anything over them.
  bool found_epoch_start = false;
  while (!segments.empty() && !found_epoch_start) {
    LoadedSegment segment;
    segment.first_sequence = segments.back();
    segment.path = SegmentPath(segment.first_sequence);
    COFFER_ASSIGN_OR_RETURN(segment.bytes, fs_->ReadFile(segment.path));
    absl::StatusOr<internal::SegmentScan> scan = internal::ScanSegment(segment.bytes);
    if (!scan.ok()) return Corrupt(segment.path + ": " + std::string(scan.status().message()));
    segment.scan = *std::move(scan);
    const bool newest = loaded.empty();
    if (!segment.scan.header.has_value()) {
      if (!newest) return Corrupt(segment.path + ": segment header missing");
      // A segment whose creation a crash cut short: it holds no entry.
      torn_bytes += segment.bytes.size();
      COFFER_RETURN_IF_ERROR(fs_->RemoveFile(segment.path));
      COFFER_RETURN_IF_ERROR(fs_->SyncDirectory(options_.directory));
      segments.pop_back();
      if (segments.empty()) return absl::OkStatus();  // nothing loaded: ResumeLog starts anew
      continue;
    }
    if (segment.scan.tail == internal::SegmentTail::kDamaged ||
        (!newest && segment.scan.tail != internal::SegmentTail::kClean)) {
      return Corrupt(segment.path + ": damaged frame at byte " +
                     std::to_string(segment.scan.valid_bytes));
    }
    if (segment.scan.header->first_sequence != segment.first_sequence) {
      return Corrupt(segment.path + ": header names another first sequence");
    }
    for (const internal::ScannedFrame& frame : segment.scan.frames) {
      v1::AuditEntry entry;
      if (!entry.ParseFromArray(frame.payload.data(), static_cast<int>(frame.payload.size()))) {
        return Corrupt(segment.path + ": unparseable entry at byte " +
                       std::to_string(frame.offset));
      }
      found_epoch_start = found_epoch_start || EpochStartedBy(entry).has_value();
      segment.entries.push_back(std::move(entry));
    }
    segments.pop_back();
    loaded.insert(loaded.begin(), std::move(segment));
  }
  if (!found_epoch_start) return Corrupt("no epoch start found in the audit log");
  return absl::OkStatus();
}

absl::StatusOr<AuditLog::LoadedChain> AuditLog::CheckLoadedChain(
    const std::vector<LoadedSegment>& loaded) {
  // Check sequence numbers and the hash chain over the loaded segments; find the newest epoch.
  const SegmentHeader& first_header = *loaded.front().scan.header;
  log_id_ = first_header.log_id;
  LoadedChain chain;
  ChainHash& head = chain.head;
  uint64_t& expected = chain.next_sequence;
  head = first_header.previous_hash;
  expected = first_header.first_sequence;
  for (size_t s = 0; s < loaded.size(); ++s) {
    const LoadedSegment& segment = loaded[s];
    const SegmentHeader& header = *segment.scan.header;
    if (header.log_id != log_id_ || header.first_sequence != expected ||
        header.previous_hash != head) {
      return Corrupt(segment.path + ": segment header does not continue the chain");
    }
    for (size_t f = 0; f < segment.entries.size(); ++f) {
      const v1::AuditEntry& entry = segment.entries[f];
      const internal::ScannedFrame& frame = segment.scan.frames[f];
      if (entry.sequence() != expected) {
        return Corrupt("audit entry " + std::to_string(expected) + " is missing or out of order");
      }
      COFFER_ASSIGN_OR_RETURN(ChainHash hash,
                              ComputeChainHash(log_id_, head, expected, frame.payload));
      if (hash != frame.hash) {
        return Corrupt("audit entry " + std::to_string(expected) + " does not match its hash");
      }
      if (options_.minimum_anchor.has_value() && options_.minimum_anchor->sequence == expected &&
          options_.minimum_anchor->head != hash) {
        return MakeError(ErrorCode::kAuditTampered,
                         "audit entry " + std::to_string(expected) +
                             " is not the entry the newest anchor names: the log was rewritten "
                             "(run `keyctl audit verify --offline --anchors`)");
      }
      if (std::optional<uint64_t> started = EpochStartedBy(entry)) {
        chain.epoch = *started;
        chain.epoch_segment = s;
        chain.epoch_frame = f;
      }
      // The loaded entries reach back to the newest epoch's first entry, which carries the
      // newest generation recorded before it (EncodeEpochLocked, EncodeCheckpointLocked):
      // the maximum here is the newest the whole log recorded.
      recorded_key_db_generation_ = std::max(recorded_key_db_generation_, KeyDbGenerationIn(entry));
      head = hash;
      ++expected;
      chain.last_entry = &entry;
    }
  }
  return chain;
}

absl::StatusOr<uint64_t> AuditLog::ReauthenticateNewestEpoch(
    const std::vector<LoadedSegment>& loaded, const LoadedChain& chain) const {
  // Re-authenticate the newest epoch with its MAC key.
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key, EpochKey(chain.epoch));
  COFFER_ASSIGN_OR_RETURN(internal::ForwardSecureMac mac,
                          internal::ForwardSecureMac::Create(std::move(key)));
  uint64_t unchecked_since_checkpoint = 0;
  for (size_t s = chain.epoch_segment; s < loaded.size(); ++s) {
    const LoadedSegment& segment = loaded[s];
    for (size_t f = (s == chain.epoch_segment ? chain.epoch_frame : 0); f < segment.entries.size();
         ++f) {
      const internal::ScannedFrame& frame = segment.scan.frames[f];
      if (!mac.VerifyAndEvolve(frame.hash, frame.mac).ok()) {
        return Corrupt("audit entry " + std::to_string(segment.entries[f].sequence()) +
                       " fails its MAC: altered while the daemon was down; run `keyctl audit "
                       "verify` before reopening");
      }
      ++unchecked_since_checkpoint;
    }
  }
  return unchecked_since_checkpoint;
}

absl::Status AuditLog::ContinueLoadedLog(const LoadedSegment& newest, const LoadedChain& chain,
                                         uint64_t torn_bytes, uint64_t unchecked_since_checkpoint) {
  // Everything checks: now repair a torn tail and continue.
  if (newest.scan.tail == internal::SegmentTail::kTorn) {
    torn_bytes += newest.bytes.size() - newest.scan.valid_bytes;
    COFFER_RETURN_IF_ERROR(fs_->Truncate(newest.path, newest.scan.valid_bytes));
  }
  stats_.torn_bytes_dropped_at_open = torn_bytes;
  // A newest segment of an older format version gets no entry of this one: the first commit
  // starts a new segment. One holding no entry at all (a crash right after creating it) is
  // removed first, since the new segment takes its name.
  rotate_before_next_commit_ = newest.scan.header->format_version != kFormatVersion;
  if (rotate_before_next_commit_ && newest.scan.frames.empty()) {
    COFFER_RETURN_IF_ERROR(fs_->RemoveFile(newest.path));
    COFFER_RETURN_IF_ERROR(fs_->SyncDirectory(options_.directory));
  } else {
    COFFER_ASSIGN_OR_RETURN(file_, fs_->OpenForAppend(newest.path));
  }
  segment_bytes_ = newest.scan.valid_bytes;
  next_sequence_ = chain.next_sequence;
  head_ = chain.head;
  epoch_ = chain.epoch;
  const v1::AuditEntry* last_entry = chain.last_entry;
  const bool clean = last_entry != nullptr && last_entry->kind() == v1::LOG_CHECKPOINT &&
                     last_entry->checkpoint().closing();
  const auto now = clock_->Now();
  last_checkpoint_time_ = now;
  COFFER_RETURN_IF_ERROR(EncodeEpochLocked(
      clean ? v1::Epoch::REOPENED_AFTER_CLEAN_CLOSE : v1::Epoch::REOPENED_AFTER_CRASH, torn_bytes,
      now));
  COFFER_RETURN_IF_ERROR(CommitLocked());
  // Entries the crashed run left unsigned were just re-authenticated: sign them now. A signer
  // failure only postpones this to the next due checkpoint.
  if (!clean && unchecked_since_checkpoint > 1) {
    absl::Status checkpoint = CheckpointLocked(/*closing=*/false);
    if (stats_.failed) return checkpoint;
  }
  return absl::OkStatus();
}

absl::Status AuditLog::CheckWritableLocked() const {
  if (stats_.closed) return MakeError(ErrorCode::kAuditLogClosed, "the audit log is closed");
  if (stats_.failed) {
    return MakeError(ErrorCode::kAuditLogClosed,
                     "the audit log failed closed after a write error; reopen it");
  }
  return absl::OkStatus();
}

// Recovery: a failed log reopens itself as a restart would open it (Initialize): the torn tail
// of the failed write dropped, the newest epoch re-authenticated, a new epoch begun
// (REOPENED_AFTER_CRASH, the dropped bytes counted), entries left unsigned signed. The failed
// write's entries were never acknowledged as durable; those of its frames that did reach the
// disk whole stay, as after a crash.
absl::Status AuditLog::WritableLocked() {
  if (stats_.closed || !stats_.failed) return CheckWritableLocked();
  const auto now = clock_->Now();
  if (last_reopen_attempt_.has_value() && now >= *last_reopen_attempt_ &&
      now - *last_reopen_attempt_ < kAuditReopenInterval) {
    return CheckWritableLocked();
  }
  last_reopen_attempt_ = now;
  file_.reset();
  mac_.reset();
  pending_.clear();
  pending_anchors_.clear();
  rotate_before_next_commit_ = false;
  stats_.failed = false;
  absl::Status reopened = Initialize();
  if (!reopened.ok() || stats_.failed) {
    stats_.failed = true;
    file_.reset();
    mac_.reset();
    pending_.clear();
    pending_anchors_.clear();
    ++stats_.reopen_failures;
    return MakeError(ErrorCode::kAuditNotDurable,
                     "the audit log failed after a write error and cannot reopen yet (" +
                         std::string(reopened.message()) + ")");
  }
  ++stats_.reopens;
  return absl::OkStatus();
}

bool AuditLog::CheckpointDueLocked(std::chrono::system_clock::time_point now) const {
  if (stats_.entries_since_checkpoint == 0) return false;
  if (stats_.entries_since_checkpoint >= options_.checkpoint_every_entries) return true;
  return options_.checkpoint_interval.count() > 0 &&
         now - last_checkpoint_time_ >= options_.checkpoint_interval;
}

absl::Status AuditLog::EncodeLocked(v1::AuditEntry& entry,
                                    std::chrono::system_clock::time_point now) {
  entry.set_sequence(next_sequence_);
  entry.set_time_micros(ToUnixMicros(now));
  std::string payload;
  if (!entry.SerializeToString(&payload) || payload.size() > kMaxPayloadSize) {
    return MakeError(ErrorCode::kInternal, "audit entry could not be serialised within 16 KiB");
  }
  COFFER_ASSIGN_OR_RETURN(ChainHash hash,
                          ComputeChainHash(log_id_, head_, next_sequence_, payload));
  COFFER_ASSIGN_OR_RETURN(MacTag mac, mac_->MacAndEvolve(hash));
  if (pending_.empty()) {
    pending_first_sequence_ = next_sequence_;
    pending_previous_hash_ = head_;
  }
  pending_ += EncodeFrame(payload, hash, mac);
  head_ = hash;
  ++next_sequence_;
  ++stats_.entries_since_checkpoint;
  return absl::OkStatus();
}

absl::Status AuditLog::EncodeEventLocked(const AuditEvent& event,
                                         std::chrono::system_clock::time_point now) {
  v1::AuditEntry entry;
  entry.set_kind(event.kind);
  FillActor(event.actor, entry.mutable_actor());
  if (event.approver.has_value()) FillActor(*event.approver, entry.mutable_approver());
  entry.set_dataset_handle(event.dataset_handle);
  entry.set_purpose(event.purpose);
  entry.set_key_version(event.key_version);
  entry.set_result_code(static_cast<int32_t>(event.result));
  entry.set_stage(event.stage);
  entry.set_detail(std::string(event.detail.view()));
  if (event.record_ref.has_value())
    entry.set_record_ref(std::string(AsStringView(*event.record_ref)));
  entry.set_record_count(event.record_count);
  if (event.policy_change.has_value()) {
    v1::PolicyChange* policy = entry.mutable_policy();
    policy->set_policy(std::string(event.policy_change->policy.view()));
    policy->set_old_value(event.policy_change->old_value);
    policy->set_new_value(event.policy_change->new_value);
  }
  return EncodeLocked(entry, now);
}

absl::Status AuditLog::EncodeEpochLocked(v1::Epoch::Reason reason, uint64_t torn_bytes,
                                         std::chrono::system_clock::time_point now) {
  const uint64_t epoch = next_sequence_ == 0 ? 0 : epoch_ + 1;
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes key, EpochKey(epoch));
  COFFER_ASSIGN_OR_RETURN(internal::ForwardSecureMac mac,
                          internal::ForwardSecureMac::Create(std::move(key)));
  mac_ = std::move(mac);
  epoch_ = epoch;
  v1::AuditEntry entry;
  entry.set_kind(v1::LOG_EPOCH);
  entry.mutable_epoch()->set_epoch(epoch);
  entry.mutable_epoch()->set_reason(reason);
  entry.mutable_epoch()->set_torn_bytes_dropped(torn_bytes);
  entry.mutable_epoch()->set_key_db_generation(recorded_key_db_generation_);
  return EncodeLocked(entry, now);
}

absl::Status AuditLog::EncodeCheckpointLocked(bool closing,
                                              std::chrono::system_clock::time_point now) {
  const uint64_t epoch = epoch_ + 1;
  const uint64_t covered = next_sequence_ - 1;  // the log always holds its first LOG_EPOCH entry
  const int64_t micros = ToUnixMicros(now);
  absl::StatusOr<crypto::SecretBytes> key = EpochKey(epoch);
  absl::StatusOr<std::string> signature =
      key.ok() ? options_.signer->Sign(CheckpointMessage(log_id_, covered, head_, micros))
               : absl::StatusOr<std::string>(key.status());
  absl::StatusOr<internal::ForwardSecureMac> mac =
      signature.ok() ? internal::ForwardSecureMac::Create(*std::move(key))
                     : absl::StatusOr<internal::ForwardSecureMac>(signature.status());
  if (!mac.ok()) {
    ++stats_.checkpoint_failures;
    return MakeError(ErrorCode::kFailedPrecondition,
                     "audit checkpoint skipped: " + std::string(mac.status().message()));
  }
  mac_ = *std::move(mac);  // K of the old epoch is wiped here
  epoch_ = epoch;
  v1::AuditEntry entry;
  entry.set_kind(v1::LOG_CHECKPOINT);
  v1::Checkpoint* checkpoint = entry.mutable_checkpoint();
  checkpoint->set_epoch(epoch);
  checkpoint->set_covered_sequence(covered);
  checkpoint->set_head_hash(std::string(AsStringView(head_)));
  checkpoint->set_signature(*signature);
  checkpoint->set_closing(closing);
  // Never lower than recorded before: a daemon that refuses to start on a rolled-back key DB
  // still closes its log, and that closing checkpoint must not lower the bar for the next start.
  const uint64_t generation =
      std::max(recorded_key_db_generation_,
               options_.key_db_generation ? options_.key_db_generation() : uint64_t{0});
  checkpoint->set_key_db_generation(generation);
  absl::Status encoded = EncodeLocked(entry, now);
  if (!encoded.ok()) return FailLocked(encoded);
  recorded_key_db_generation_ = generation;
  pending_anchors_.push_back({log_id_, next_sequence_ - 1, head_, micros});
  stats_.entries_since_checkpoint = 0;
  last_checkpoint_time_ = now;
  return absl::OkStatus();
}

absl::Status AuditLog::RotateSegmentLocked() {
  const std::string path = SegmentPath(pending_first_sequence_);
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<AuditFile> file, fs_->CreateFile(path));
  const std::string header =
      EncodeSegmentHeader({log_id_, pending_first_sequence_, pending_previous_hash_});
  COFFER_RETURN_IF_ERROR(file->Append(header));
  COFFER_RETURN_IF_ERROR(file->Sync());
  COFFER_RETURN_IF_ERROR(fs_->SyncDirectory(options_.directory));
  file_ = std::move(file);
  segment_bytes_ = header.size();
  return absl::OkStatus();
}

absl::Status AuditLog::CommitLocked() {
  if (pending_.empty()) return absl::OkStatus();
  if (segment_bytes_ >= options_.max_segment_bytes || rotate_before_next_commit_) {
    absl::Status rotated = RotateSegmentLocked();
    if (!rotated.ok()) return FailLocked(rotated);
    rotate_before_next_commit_ = false;
  }
  absl::Status written = file_->Append(pending_);
  if (written.ok()) written = file_->Sync();
  if (!written.ok()) return FailLocked(written);
  segment_bytes_ += pending_.size();
  pending_.clear();
  for (const CheckpointAnchor& anchor : pending_anchors_) {
    ++stats_.checkpoints_written;
    stats_.last_checkpoint_micros = anchor.time_micros;
    if (options_.anchor_sink != nullptr && !options_.anchor_sink->Publish(anchor).ok()) {
      ++stats_.anchor_failures;
    }
  }
  pending_anchors_.clear();
  return absl::OkStatus();
}

absl::Status AuditLog::FailLocked(const absl::Status& cause) {
  stats_.failed = true;
  last_reopen_attempt_ = clock_->Now();  // the first reopen is due kAuditReopenInterval later
  pending_.clear();
  pending_anchors_.clear();
  file_.reset();
  mac_.reset();
  return MakeError(ErrorCode::kAuditNotDurable, "audit entry not durable (" +
                                                    std::string(cause.message()) +
                                                    "); the log refuses appends until reopened");
}

absl::StatusOr<uint64_t> AuditLog::Append(const AuditEvent& event) {
  return AppendBatch(std::span<const AuditEvent>(&event, 1));
}

absl::StatusOr<uint64_t> AuditLog::AppendBatch(std::span<const AuditEvent> events) {
  if (events.empty()) return MakeError(ErrorCode::kInvalidArgument, "empty audit batch");
  for (const AuditEvent& event : events) COFFER_RETURN_IF_ERROR(ValidateAuditEvent(event));
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_RETURN_IF_ERROR(WritableLocked());
  for (const AuditEvent& event : events) {
    const auto now = clock_->Now();
    if (CheckpointDueLocked(now)) {
      absl::Status checkpoint = EncodeCheckpointLocked(/*closing=*/false, now);
      if (stats_.failed) return checkpoint;  // otherwise skipped and counted; retried later
    }
    absl::Status encoded = EncodeEventLocked(event, now);
    if (!encoded.ok()) return FailLocked(encoded);
  }
  const uint64_t last = next_sequence_ - 1;
  const auto now = clock_->Now();
  if (stats_.entries_since_checkpoint >= options_.checkpoint_every_entries) {
    absl::Status checkpoint = EncodeCheckpointLocked(/*closing=*/false, now);
    if (stats_.failed) return checkpoint;
  }
  COFFER_RETURN_IF_ERROR(CommitLocked());
  return last;
}

absl::Status AuditLog::CheckpointLocked(bool closing) {
  COFFER_RETURN_IF_ERROR(EncodeCheckpointLocked(closing, clock_->Now()));
  return CommitLocked();
}

absl::Status AuditLog::Checkpoint() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_RETURN_IF_ERROR(WritableLocked());
  return CheckpointLocked(/*closing=*/false);
}

absl::Status AuditLog::Recover() {
  std::lock_guard<std::mutex> lock(mu_);
  return WritableLocked();
}

absl::Status AuditLog::CheckpointIfDue() {
  std::lock_guard<std::mutex> lock(mu_);
  COFFER_RETURN_IF_ERROR(WritableLocked());
  if (!CheckpointDueLocked(clock_->Now())) return absl::OkStatus();
  return CheckpointLocked(/*closing=*/false);
}

absl::Status AuditLog::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  if (stats_.closed) return absl::OkStatus();
  absl::Status result = CheckWritableLocked();
  if (result.ok()) result = CheckpointLocked(/*closing=*/true);
  stats_.closed = true;
  file_.reset();
  mac_.reset();
  return result;
}

std::optional<uint64_t> AuditLog::recorded_key_db_generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (recorded_key_db_generation_ == 0) return std::nullopt;
  return recorded_key_db_generation_;
}

uint64_t AuditLog::newest_key_db_generation() const {
  std::lock_guard<std::mutex> lock(mu_);
  return std::max(recorded_key_db_generation_,
                  options_.key_db_generation ? options_.key_db_generation() : uint64_t{0});
}

AuditLogStats AuditLog::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  AuditLogStats stats = stats_;
  stats.next_sequence = next_sequence_;
  stats.epoch = epoch_;
  return stats;
}

}  // namespace coffer::kms::audit
