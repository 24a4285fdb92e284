#include "storage/reindex.h"

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

// docs/formats.md#data-db-jobs: job key = "reindex/" ‖ handle; the value is a WalkState whose
// `changed` counts the entries moved — the re-encryption state's layout under its own prefix.
constexpr std::string_view kJobPrefix = "reindex/";
constexpr std::string_view kJobLabel = "re-index";

KeyPurpose PurposeOf(Cf kind) {
  return kind == Cf::kRecords ? KeyPurpose::kRecords : KeyPurpose::kAttachments;
}

// One entry of a walked column family: its kind (records or attachment pointers), stored key,
// the entry bytes inside the value, and the deletion time for a bin entry.
struct Located {
  Cf kind = Cf::kRecords;
  std::string stored_key;
  std::string_view entry;
  int64_t deleted_at_us = 0;
};
absl::StatusOr<Located> Locate(Cf cf, std::string_view key, std::string_view value) {
  Located located;
  if (cf != Cf::kRecycleBin) {
    located.kind = cf;
    located.stored_key = std::string(key);
    located.entry = value;
    return located;
  }
  COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
  COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(value));
  located.kind = parts.cf;
  located.stored_key = std::move(parts.stored_key);
  located.entry = bin.entry;
  located.deleted_at_us = bin.deleted_at_us;
  return located;
}

// The entry's opened contents; the id and body are wiped when it goes.
struct WipedEntry {
  internal::OpenedEntry opened;
  ~WipedEntry() {
    std::fill(opened.id.begin(), opened.id.end(), '\0');
    std::fill(opened.body.begin(), opened.body.end(), '\0');
  }
};

}  // namespace

absl::StatusOr<std::map<uint32_t, uint64_t>> CountLookupVersions(DataDb* db, KeyProvider* keys,
                                                                 uint64_t handle,
                                                                 DamagedItems* damaged) {
  // One snapshot for the three walks, as CountKeyVersions: a move between the bin and the live
  // families is one WriteBatch, so every entry is counted exactly once.
  std::unique_ptr<ScopedSnapshot> snapshot = db->NewSnapshot();
  std::map<uint32_t, uint64_t> census;
  const std::string end = internal::DatasetEnd(handle);
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    rocksdb::Slice upper(end);
    rocksdb::ReadOptions read_options;
    read_options.iterate_upper_bound = &upper;
    read_options.snapshot = snapshot->get();
    ScopedIterator it = db->NewIterator(cf, read_options);
    for (it->Seek(internal::DatasetBegin(handle)); it->Valid(); it->Next()) {
      COFFER_ASSIGN_OR_RETURN(Located located,
                              Locate(cf, it->key().ToStringView(), it->value().ToStringView()));
      WipedEntry wiped;
      absl::StatusOr<internal::OpenedEntry> opened = internal::OpenEntry(
          keys, located.kind, PurposeOf(located.kind), located.stored_key, located.entry);
      if (!opened.ok()) {
        if (damaged == nullptr || !IsItemDamage(opened.status())) return opened.status();
        damaged->Add(internal::CfName(cf), it->key().ToStringView(), opened.status());
        continue;
      }
      wiped.opened = *std::move(opened);
      ++census[wiped.opened.lookup_version];
    }
    COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  }
  return census;
}

absl::Status ReindexJob::WriteIfUnchanged(Cf cf, std::vector<Moved>* group, uint64_t* moved) {
  if (group->empty()) return absl::OkStatus();
  if (options_.before_record_write) options_.before_record_write();
  std::vector<std::string_view> macs;
  macs.reserve(2 * group->size());
  for (const Moved& item : *group) {
    macs.push_back(internal::MacOf(item.old_stored_key));
    macs.push_back(internal::MacOf(item.new_stored_key));
  }
  // Held only for the re-reads and one write; every other writer of these ids needs one of them.
  DataDb::StripeLocks locks = db_->LockStripes(macs);
  internal::GroupVersions versions(keys_, handle_);
  rocksdb::WriteBatch batch;
  uint64_t written = 0;
  for (const Moved& item : *group) {
    std::string current;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db_->Get(cf, item.key, &current, &found));
    // Changed meanwhile (a client write, delete or restore): the client's value stays; the
    // final census catches anything it left under an old version. Under a version a retirement
    // is turning away (a rotation since the seal): a later pass moves it again.
    if (!found || current != item.seen) continue;
    COFFER_ASSIGN_OR_RETURN(bool accepted,
                            versions.Accepts(KeyPurpose::kRecords, item.records_version));
    if (accepted) {
      COFFER_ASSIGN_OR_RETURN(accepted, versions.Accepts(KeyPurpose::kLookup, item.lookup_version));
    }
    if (!accepted) continue;
    std::string later;
    bool taken = false;
    COFFER_RETURN_IF_ERROR(db_->Get(cf, item.new_key, &later, &taken));
    if (!taken) {
      COFFER_RETURN_IF_ERROR(
          FromRocks(batch.Put(db_->cf(cf), item.new_key, item.resealed), "batch"));
    }
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(cf), item.key), "batch"));
    ++written;
  }
  if (written > 0) COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  *moved += written;
  for (Moved& item : *group) std::fill(item.resealed.begin(), item.resealed.end(), '\0');
  group->clear();
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> ReindexJob::Unfinished(DataDb* db) {
  return internal::SavedWalkHandles(db, kJobPrefix);
}

absl::StatusOr<ReindexProgress> ReindexJob::SavedProgress() const {
  COFFER_ASSIGN_OR_RETURN(internal::WalkState state,
                          internal::SavedWalk(db_, kJobPrefix, kJobLabel, handle_).Load());
  ReindexProgress progress;
  progress.done = state.done;
  progress.moved = state.changed;
  return progress;
}

struct ReindexJob::RunState {
  internal::WalkState state;
  internal::WalkPace pace;
  ReindexProgress progress;
  DamagedItems damaged;  // every damaged entry this run met, reported with the progress

  void Report(const std::function<void(const ReindexProgress&)>& on_progress) {
    pace.Fill(state, &progress);
    progress.moved = state.changed;
    progress.damaged = damaged.count();
    progress.damaged_items = damaged.listed();
    if (on_progress) on_progress(progress);
  }
};

absl::StatusOr<bool> ReindexJob::EndOfPhase(RunState& run, const internal::SavedWalk& saved) {
  if (internal::AdvancePhase(&run.state)) return false;
  // A restore during the bin walk can bring an old-version entry back to the live families, an
  // upload begun before the rotation can commit under the old version, and a second rotation
  // can make the version this walk moved to an old one: check, and walk again until nothing is
  // left under another version.
  COFFER_ASSIGN_OR_RETURN(auto after, CountLookupVersions(db_, keys_, handle_, &run.damaged));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                          keys_->PrimaryKey(handle_, KeyPurpose::kLookup, 0));
  const bool only_primary =
      after.empty() || (after.size() == 1 && after.begin()->first == primary->version());
  if (!only_primary) {
    run.state.phase = Cf::kRecords;
    run.state.cursor.clear();
    return false;
  }
  COFFER_RETURN_IF_ERROR(saved.Clear());
  return true;
}

absl::Status ReindexJob::MoveEntry(RunState& run, const DataKey& lookup, const std::string& key,
                                   const std::string& seen, std::vector<Moved>* group,
                                   const internal::SavedWalk& saved) {
  internal::WalkState& state = run.state;
  ++state.done;
  run.pace.CountOne();
  COFFER_ASSIGN_OR_RETURN(Located located, Locate(state.phase, key, seen));
  WipedEntry wiped;
  internal::OpenedEntry& opened = wiped.opened;
  absl::StatusOr<internal::OpenedEntry> opened_or = internal::OpenEntry(
      keys_, located.kind, PurposeOf(located.kind), located.stored_key, located.entry);
  if (!opened_or.ok()) {
    if (!IsItemDamage(opened_or.status())) return opened_or.status();
    run.damaged.Add(internal::CfName(state.phase), key, opened_or.status());
    return absl::OkStatus();
  }
  opened = *std::move(opened_or);
  if (opened.lookup_version == lookup.version()) return absl::OkStatus();
  COFFER_ASSIGN_OR_RETURN(std::string new_stored_key,
                          internal::StoredKeyWith(lookup, handle_, opened.id));
  if (located.kind == Cf::kAttachmentPointers) {
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(state.phase, group, &state.changed));
    // Streams are long: re-read the entry just before copying it, and save progress after each
    // one, so a crash repeats at most one stream copy.
    std::string current;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db_->Get(state.phase, key, &current, &found));
    if (found) {
      COFFER_ASSIGN_OR_RETURN(bool gone, attachments_->MoveToStoredKey(
                                             state.phase, key, current, new_stored_key,
                                             lookup.version(), options_.before_attachment_flip));
      if (gone) ++state.changed;
    }
    state.cursor = key;
    return saved.Save(state);
  }
  // The crypto runs outside any lock, on the value the walk read; the write happens only if that
  // value is still there (WriteIfUnchanged).
  COFFER_ASSIGN_OR_RETURN(
      std::string resealed,
      internal::SealEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, new_stored_key,
                          opened.written_at_us, {}, opened.id, opened.body));
  std::string new_key = new_stored_key;
  COFFER_ASSIGN_OR_RETURN(uint32_t records_version,
                          internal::EntryKeyVersion(Cf::kRecords, resealed));
  if (state.phase == Cf::kRecycleBin) {
    resealed = internal::EncodeBinValue(located.deleted_at_us, resealed);
    new_key = internal::BinKey(Cf::kRecords, new_stored_key);
  }
  group->push_back(Moved{key, seen, std::move(new_key), std::move(resealed),
                         std::move(located.stored_key), std::move(new_stored_key), records_version,
                         lookup.version()});
  if (group->size() >= kWriteGroup) {
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(state.phase, group, &state.changed));
  }
  return absl::OkStatus();
}

absl::StatusOr<ReindexProgress> ReindexJob::Run(
    const std::atomic<bool>* cancel,
    const std::function<void(const ReindexProgress&)>& on_progress) {
  const internal::SavedWalk saved(db_, kJobPrefix, kJobLabel, handle_);
  RunState run;
  COFFER_ASSIGN_OR_RETURN(run.state, saved.Load());
  COFFER_ASSIGN_OR_RETURN(auto census, CountLookupVersions(db_, keys_, handle_, &run.damaged));
  for (const auto& [version, count] : census) run.progress.total += count;

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

    COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> lookup,
                            keys_->PrimaryKey(handle_, KeyPurpose::kLookup, 0));
    std::vector<Moved> group;
    for (const auto& [key, seen] : batch) {
      COFFER_RETURN_IF_ERROR(MoveEntry(run, *lookup, key, seen, &group, saved));
    }
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(run.state.phase, &group, &run.state.changed));
    run.state.cursor = batch.back().first;
    COFFER_RETURN_IF_ERROR(saved.Save(run.state));
    run.Report(on_progress);
    const bool cancelled = cancel != nullptr && cancel->load();
    if (cancelled || !run.pace.Throttle(options_.max_items_per_second, cancel)) {
      return MakeError(ErrorCode::kCancelled, "re-index cancelled; progress is saved");
    }
  }
}

}  // namespace coffer::storage
