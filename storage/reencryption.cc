#include "storage/reencryption.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/envelope.h"
#include "storage/internal/job_walk.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

namespace {

// docs/formats.md#data-db-jobs: job key = "reencrypt/" ‖ handle; the value is a WalkState whose
// `changed` counts the entries re-sealed.
constexpr std::string_view kJobPrefix = "reencrypt/";
constexpr std::string_view kJobLabel = "re-encryption";

// The kind of entry (records or attachment pointers) a key of `cf` holds.
Cf KindOf(Cf cf, std::string_view key) {
  if (cf != Cf::kRecycleBin) return cf;
  return key.size() == internal::kBinKeySize ? static_cast<Cf>(key[internal::kHandleSize])
                                             : Cf::kRecycleBin;  // malformed: ParseBinKey fails
}

// Whether `census` has nothing on a version other than `records` / `attachments` primaries
// but the damaged entries the last pass met there (`damaged`, counted the same way).
bool OnlyOnPrimaries(const VersionCensus& census, const VersionCensus& damaged, uint32_t records,
                     uint32_t attachments) {
  auto only = [](const std::map<uint32_t, uint64_t>& versions,
                 const std::map<uint32_t, uint64_t>& skipped, uint32_t primary) {
    for (const auto& [version, count] : versions) {
      if (version == primary) continue;
      auto it = skipped.find(version);
      if (it == skipped.end() || count > it->second) return false;
    }
    return true;
  };
  return only(census.records, damaged.records, records) &&
         only(census.attachments, damaged.attachments, attachments);
}

// The record entry inside a value of `cf`.
absl::StatusOr<std::string_view> RecordEntryOf(Cf cf, std::string_view value) {
  if (cf == Cf::kRecords) return value;
  COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(value));
  return bin.entry;
}

template <typename Visit>
absl::Status ForEachInDataset(DataDb* db, Cf cf, uint64_t handle, const rocksdb::Snapshot* snapshot,
                              Visit visit) {
  std::string end = internal::DatasetEnd(handle);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  read_options.snapshot = snapshot;
  ScopedIterator it = db->NewIterator(cf, read_options);
  for (it->Seek(internal::DatasetBegin(handle)); it->Valid(); it->Next()) {
    COFFER_RETURN_IF_ERROR(visit(it->key().ToStringView(), it->value().ToStringView()));
  }
  return FromRocks(it->status(), "iterate");
}

}  // namespace

absl::StatusOr<VersionCensus> CountKeyVersions(DataDb* db, uint64_t handle) {
  // One snapshot for the three walks. With an iterator per column family taken one after the
  // other, an entry restored from the bin into the live families between the live walk and the
  // bin walk was counted in neither, and a census that missed it could finish re-encryption or
  // clear a version for retirement while that entry still needed it. Moves between the families
  // are single WriteBatches, so at one snapshot every entry is in exactly one place.
  std::unique_ptr<ScopedSnapshot> snapshot = db->NewSnapshot();
  VersionCensus census;
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    COFFER_RETURN_IF_ERROR(ForEachInDataset(
        db, cf, handle, snapshot->get(),
        [&](std::string_view key, std::string_view value) -> absl::Status {
          Cf kind = cf;
          std::string_view entry = value;
          if (cf == Cf::kRecycleBin) {
            COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
            kind = parts.cf;
            COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(value));
            entry = bin.entry;
          }
          absl::StatusOr<uint32_t> version = internal::EntryKeyVersion(kind, entry);
          if (!version.ok()) {
            if (!IsItemDamage(version.status())) return version.status();
            ++census.unreadable;
            return absl::OkStatus();
          }
          ++(kind == Cf::kRecords ? census.records : census.attachments)[*version];
          return absl::OkStatus();
        }));
  }
  return census;
}

absl::Status ReencryptionJob::WriteIfUnchanged(Cf cf, std::vector<Resealed>* group,
                                               uint64_t* reencrypted) {
  if (group->empty()) return absl::OkStatus();
  // Held only for the re-reads and one write; every other writer of these ids needs one of them.
  std::vector<std::string_view> macs;
  macs.reserve(group->size());
  for (const Resealed& item : *group) macs.push_back(internal::MacOf(item.stored_key));
  DataDb::StripeLocks locks = db_->LockStripes(macs);

  // The group is in key order (a subsequence of the walk): one iterator opened under the
  // stripes re-reads all of it in a single forward pass, much cheaper than a point lookup per
  // entry. No write to these keys can happen between this read and the write below: every
  // writer of them needs one of the stripes held here.
  rocksdb::WriteBatch batch;
  uint64_t written = 0;
  internal::GroupVersions versions(keys_, handle_);
  {
    std::string end = group->back().key;
    end.push_back('\0');  // just after the last key of the group
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper;
    ScopedIterator it = db_->NewIterator(cf, read_options);
    it->Seek(group->front().key);
    for (const Resealed& item : *group) {
      while (it->Valid() && it->key().ToStringView() < item.key) it->Next();
      // Changed meanwhile (a client write, delete or restore): the client's value stays; the
      // final census catches anything it left on an old version. Sealed under a version a
      // retirement is turning away (a rotation since the seal): a later pass seals it again.
      if (!it->Valid() || it->key().ToStringView() != item.key ||
          it->value().ToStringView() != item.seen) {
        continue;
      }
      COFFER_ASSIGN_OR_RETURN(bool accepted, versions.Accepts(KeyPurpose::kRecords, item.version));
      if (!accepted) continue;
      COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db_->cf(cf), item.key, item.resealed), "batch"));
      ++written;
    }
    COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  }
  if (written > 0) COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  *reencrypted += written;
  group->clear();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> ReencryptionJob::Unfinished(DataDb* db) {
  return internal::SavedWalkHandles(db, kJobPrefix);
}

absl::StatusOr<ReencryptionProgress> ReencryptionJob::SavedProgress() const {
  COFFER_ASSIGN_OR_RETURN(internal::WalkState state,
                          internal::SavedWalk(db_, kJobPrefix, kJobLabel, handle_).Load());
  ReencryptionProgress progress;
  progress.done = state.done;
  progress.reencrypted = state.changed;
  return progress;
}

struct ReencryptionJob::RunState {
  internal::WalkState state;
  internal::WalkPace pace;
  ReencryptionProgress progress;
  // Damaged entries: every one this run met (reported), and those of the current pass by the
  // version they name (the final census may find them, and only them, off the primary).
  DamagedItems damaged;
  VersionCensus damaged_this_pass;

  void SkipDamaged(std::string_view key, Cf kind, std::string_view entry,
                   const absl::Status& status) {
    damaged.Add(internal::CfName(state.phase), key, status);
    absl::StatusOr<uint32_t> version = internal::EntryKeyVersion(kind, entry);
    if (version.ok()) {
      ++(kind == Cf::kRecords ? damaged_this_pass.records
                              : damaged_this_pass.attachments)[*version];
    }
  }
  void Report(const std::function<void(const ReencryptionProgress&)>& on_progress) {
    pace.Fill(state, &progress);
    progress.reencrypted = state.changed;
    progress.damaged = damaged.count();
    progress.damaged_items = damaged.listed();
    if (on_progress) on_progress(progress);
  }
};

absl::StatusOr<bool> ReencryptionJob::EndOfPhase(RunState& run, const internal::SavedWalk& saved) {
  if (internal::AdvancePhase(&run.state)) return false;
  // A restore during the bin walk can bring an older entry back to the live families, and an
  // upload begun before the rotation can commit on the old version: check, and walk again until
  // nothing is left on another version.
  COFFER_ASSIGN_OR_RETURN(VersionCensus after, CountKeyVersions(db_, handle_));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> records_primary,
                          keys_->PrimaryKey(handle_, KeyPurpose::kRecords, 0));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> attachments_primary,
                          keys_->PrimaryKey(handle_, KeyPurpose::kAttachments, 0));
  if (!OnlyOnPrimaries(after, run.damaged_this_pass, records_primary->version(),
                       attachments_primary->version())) {
    run.state.phase = Cf::kRecords;
    run.state.cursor.clear();
    run.damaged_this_pass = {};
    return false;
  }
  COFFER_RETURN_IF_ERROR(saved.Clear());
  return true;
}

absl::Status ReencryptionJob::ReencryptAttachment(RunState& run, const std::string& key,
                                                  const internal::SavedWalk& saved) {
  // Streams are long: re-read the entry just before copying it, and save progress after each
  // one, so a crash repeats at most one stream copy.
  internal::WalkState& state = run.state;
  std::string current;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(state.phase, key, &current, &found));
  ++state.done;
  run.pace.CountOne();
  if (found) {
    absl::StatusOr<bool> flipped = attachments_->ReencryptToPrimary(
        state.phase, key, current, options_.before_attachment_flip);
    if (!flipped.ok()) {
      if (!IsItemDamage(flipped.status())) return flipped.status();
      absl::StatusOr<std::string_view> pointer = state.phase == Cf::kRecycleBin
                                                     ? RecordEntryOf(state.phase, current)
                                                     : absl::StatusOr<std::string_view>(current);
      run.SkipDamaged(key, Cf::kAttachmentPointers, pointer.value_or(""), flipped.status());
    } else if (*flipped) {
      ++state.changed;
    }
  }
  state.cursor = key;
  return saved.Save(state);
}

absl::Status ReencryptionJob::ResealRecord(RunState& run, const std::string& key,
                                           const std::string& seen, uint32_t primary,
                                           std::vector<Resealed>* group) {
  ++run.state.done;
  run.pace.CountOne();
  const Cf phase = run.state.phase;
  // The crypto runs outside any lock, on the value the walk read; the write happens only if
  // that value is still there (WriteIfUnchanged).
  std::string stored_key(key);
  if (phase == Cf::kRecycleBin) {
    COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
    stored_key = std::move(parts.stored_key);
  }
  COFFER_ASSIGN_OR_RETURN(std::string_view entry, RecordEntryOf(phase, seen));
  absl::StatusOr<uint32_t> version = internal::EntryKeyVersion(Cf::kRecords, entry);
  if (!version.ok()) {
    if (!IsItemDamage(version.status())) return version.status();
    run.SkipDamaged(key, Cf::kRecords, entry, version.status());
    return absl::OkStatus();
  }
  if (*version == primary) return absl::OkStatus();
  absl::StatusOr<internal::OpenedEntry> opened_or =
      internal::OpenEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key, entry);
  if (!opened_or.ok()) {
    if (!IsItemDamage(opened_or.status())) return opened_or.status();
    run.SkipDamaged(key, Cf::kRecords, entry, opened_or.status());
    return absl::OkStatus();
  }
  internal::OpenedEntry& opened = *opened_or;
  absl::StatusOr<std::string> resealed =
      internal::SealEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key,
                          opened.written_at_us, {}, opened.id, opened.body);
  std::fill(opened.body.begin(), opened.body.end(), '\0');
  std::fill(opened.id.begin(), opened.id.end(), '\0');
  if (!resealed.ok()) return resealed.status();
  COFFER_ASSIGN_OR_RETURN(uint32_t resealed_version,
                          internal::EntryKeyVersion(Cf::kRecords, *resealed));
  if (phase == Cf::kRecycleBin) {
    COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(seen));
    *resealed = internal::EncodeBinValue(bin.deleted_at_us, *resealed);
  }
  group->push_back(
      Resealed{key, seen, std::move(stored_key), std::move(*resealed), resealed_version});
  if (group->size() >= kWriteGroup) {
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(phase, group, &run.state.changed));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReencryptionProgress> ReencryptionJob::Run(
    const std::atomic<bool>* cancel,
    const std::function<void(const ReencryptionProgress&)>& on_progress) {
  const internal::SavedWalk saved(db_, kJobPrefix, kJobLabel, handle_);
  RunState run;
  COFFER_ASSIGN_OR_RETURN(run.state, saved.Load());
  COFFER_ASSIGN_OR_RETURN(VersionCensus census, CountKeyVersions(db_, handle_));
  for (const auto& [version, count] : census.records) run.progress.total += count;
  for (const auto& [version, count] : census.attachments) run.progress.total += count;

  while (true) {
    // One batch of candidate keys, read without holding any lock or view while writing.
    std::vector<std::pair<std::string, std::string>> batch;
    COFFER_RETURN_IF_ERROR(
        internal::ReadWalkBatch(db_, handle_, run.state, options_.batch_size, &batch));
    if (batch.empty()) {
      COFFER_ASSIGN_OR_RETURN(bool finished, EndOfPhase(run, saved));
      if (!finished) continue;
      run.progress.finished = true;
      run.Report(on_progress);
      return run.progress;
    }

    COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                            keys_->PrimaryKey(handle_, KeyPurpose::kRecords, 0));
    std::vector<Resealed> group;
    for (const auto& [key, seen] : batch) {
      if (KindOf(run.state.phase, key) == Cf::kAttachmentPointers) {
        COFFER_RETURN_IF_ERROR(WriteIfUnchanged(run.state.phase, &group, &run.state.changed));
        COFFER_RETURN_IF_ERROR(ReencryptAttachment(run, key, saved));
        continue;
      }
      COFFER_RETURN_IF_ERROR(ResealRecord(run, key, seen, primary->version(), &group));
    }
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(run.state.phase, &group, &run.state.changed));
    run.state.cursor = batch.back().first;
    COFFER_RETURN_IF_ERROR(saved.Save(run.state));
    run.Report(on_progress);
    const bool cancelled = cancel != nullptr && cancel->load();
    if (cancelled || !run.pace.Throttle(options_.max_items_per_second, cancel)) {
      return MakeError(ErrorCode::kCancelled, "re-encryption cancelled; progress is saved");
    }
  }
}

}  // namespace coffer::storage
