#include "storage/reencryption.h"

#include <algorithm>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/envelope.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

namespace {

// docs/formats.md#data-db-jobs: job key = "reencrypt/" ‖ handle; value = phase (u8: the column
// family being walked) ‖ cursor length (u16) ‖ cursor (last key done) ‖ done (u64)
// ‖ reencrypted (u64).
constexpr std::string_view kJobPrefix = "reencrypt/";

struct JobState {
  Cf phase = Cf::kRecords;
  std::string cursor;  // empty: from the start of the phase
  uint64_t done = 0;
  uint64_t reencrypted = 0;
};

std::string JobKey(uint64_t handle) {
  std::string key(kJobPrefix);
  internal::AppendU64(&key, handle);
  return key;
}

std::string EncodeState(const JobState& state) {
  std::string value;
  value.push_back(static_cast<char>(state.phase));
  internal::AppendU16(&value, static_cast<uint16_t>(state.cursor.size()));
  value.append(state.cursor);
  internal::AppendU64(&value, state.done);
  internal::AppendU64(&value, state.reencrypted);
  return value;
}

absl::StatusOr<JobState> DecodeState(std::string_view value) {
  auto corrupt = [] { return MakeError(ErrorCode::kDataLoss, "malformed re-encryption state"); };
  if (value.size() < 3) return corrupt();
  JobState state;
  state.phase = static_cast<Cf>(value[0]);
  size_t cursor_size = (static_cast<uint8_t>(value[1]) << 8) | static_cast<uint8_t>(value[2]);
  if (value.size() != 3 + cursor_size + 16) return corrupt();
  if (state.phase != Cf::kRecords && state.phase != Cf::kAttachmentPointers &&
      state.phase != Cf::kRecycleBin) {
    return corrupt();
  }
  state.cursor = std::string(value.substr(3, cursor_size));
  state.done = internal::ReadU64(value.substr(3 + cursor_size));
  state.reencrypted = internal::ReadU64(value.substr(11 + cursor_size));
  return state;
}

// The kind of entry (records or attachment pointers) a key of `cf` holds.
Cf KindOf(Cf cf, std::string_view key) {
  if (cf != Cf::kRecycleBin) return cf;
  return key.size() == internal::kBinKeySize ? static_cast<Cf>(key[internal::kHandleSize])
                                             : Cf::kRecycleBin;  // malformed: ParseBinKey fails
}

// Whether `census` has nothing on a version other than `records` / `attachments` primaries.
bool OnlyOnPrimaries(const VersionCensus& census, uint32_t records, uint32_t attachments) {
  auto only = [](const std::map<uint32_t, uint64_t>& versions, uint32_t primary) {
    return versions.empty() || (versions.size() == 1 && versions.begin()->first == primary);
  };
  return only(census.records, records) && only(census.attachments, attachments);
}

// The phase after `phase`: records, then attachment pointers, then the recycle bin.
Cf NextPhase(Cf phase) { return phase == Cf::kRecords ? Cf::kAttachmentPointers : Cf::kRecycleBin; }

// The record entry inside a value of `cf`.
absl::StatusOr<std::string_view> RecordEntryOf(Cf cf, std::string_view value) {
  if (cf == Cf::kRecords) return value;
  COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(value));
  return bin.entry;
}

absl::Status SaveState(DataDb* db, uint64_t handle, const JobState& state) {
  return FromRocks(
      db->rocks()->Put(db->write_options(), db->cf(Cf::kJobs), JobKey(handle), EncodeState(state)),
      "write");
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
          COFFER_ASSIGN_OR_RETURN(uint32_t version, internal::EntryKeyVersion(kind, entry));
          ++(kind == Cf::kRecords ? census.records : census.attachments)[version];
          return absl::OkStatus();
        }));
  }
  return census;
}

absl::Status ReencryptionJob::WriteIfUnchanged(Cf cf, std::vector<Resealed>* group,
                                               uint64_t* reencrypted) {
  if (group->empty()) return absl::OkStatus();
  // Every stripe of the group, each once, locked in address order: other writers hold one
  // stripe at a time, so this cannot deadlock. Held only for the re-reads and one write.
  std::vector<std::mutex*> stripes;
  stripes.reserve(group->size());
  for (const Resealed& item : *group) {
    stripes.push_back(&db_->StripeFor(internal::MacOf(item.stored_key)));
  }
  std::sort(stripes.begin(), stripes.end());
  stripes.erase(std::unique(stripes.begin(), stripes.end()), stripes.end());
  std::vector<std::unique_lock<std::mutex>> locks;
  locks.reserve(stripes.size());
  for (std::mutex* stripe : stripes) locks.emplace_back(*stripe);

  // The group is in key order (a subsequence of the walk): one iterator opened under the
  // stripes re-reads all of it in a single forward pass, much cheaper than a point lookup per
  // entry. No write to these keys can happen between this read and the write below: every
  // writer of them needs one of the stripes held here.
  rocksdb::WriteBatch batch;
  uint64_t written = 0;
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
      // final census catches anything it left on an old version.
      if (!it->Valid() || it->key().ToStringView() != item.key ||
          it->value().ToStringView() != item.seen) {
        continue;
      }
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

absl::StatusOr<ReencryptionProgress> ReencryptionJob::SavedProgress() const {
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(Cf::kJobs, JobKey(handle_), &value, &found));
  ReencryptionProgress progress;
  if (!found) return progress;
  COFFER_ASSIGN_OR_RETURN(JobState state, DecodeState(value));
  progress.done = state.done;
  progress.reencrypted = state.reencrypted;
  return progress;
}

absl::StatusOr<ReencryptionProgress> ReencryptionJob::Run(
    const std::atomic<bool>* cancel,
    const std::function<void(const ReencryptionProgress&)>& on_progress) {
  JobState state;
  {
    std::string value;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db_->Get(Cf::kJobs, JobKey(handle_), &value, &found));
    if (found) {
      COFFER_ASSIGN_OR_RETURN(state, DecodeState(value));
    }
  }
  ReencryptionProgress progress;
  COFFER_ASSIGN_OR_RETURN(VersionCensus census, CountKeyVersions(db_, handle_));
  for (const auto& [version, count] : census.records) progress.total += count;
  for (const auto& [version, count] : census.attachments) progress.total += count;

  const auto started = std::chrono::steady_clock::now();
  uint64_t done_this_run = 0;
  auto report = [&] {
    progress.done = state.done;
    progress.reencrypted = state.reencrypted;
    double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    progress.items_per_second = seconds > 0 ? static_cast<double>(done_this_run) / seconds : 0;
    uint64_t left = progress.total > progress.done ? progress.total - progress.done : 0;
    progress.eta = progress.items_per_second > 0
                       ? std::chrono::seconds(static_cast<int64_t>(static_cast<double>(left) /
                                                                   progress.items_per_second))
                       : std::chrono::seconds(0);
    if (on_progress) on_progress(progress);
  };

  while (true) {
    // One batch of candidate keys, read without holding any lock or view while writing.
    std::vector<std::pair<std::string, std::string>> batch;
    {
      std::string end = internal::DatasetEnd(handle_);
      rocksdb::Slice upper(end);
      rocksdb::ReadOptions read_options;
      read_options.iterate_upper_bound = &upper;
      ScopedIterator it = db_->NewIterator(state.phase, read_options);
      it->Seek(state.cursor.empty() ? internal::DatasetBegin(handle_) : state.cursor);
      for (; it->Valid() && batch.size() < options_.batch_size; it->Next()) {
        std::string_view key = it->key().ToStringView();
        if (key == state.cursor) continue;
        batch.emplace_back(std::string(key), it->value().ToString());
      }
      COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
    }

    if (batch.empty()) {
      if (state.phase != Cf::kRecycleBin) {
        state.phase = NextPhase(state.phase);
        state.cursor.clear();
        continue;
      }
      // A restore during the bin walk can bring an older entry back to the live families, and an
      // upload begun before the rotation can commit on the old version: check, and walk again
      // until nothing is left on another version.
      COFFER_ASSIGN_OR_RETURN(VersionCensus after, CountKeyVersions(db_, handle_));
      COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> records_primary,
                              keys_->PrimaryKey(handle_, KeyPurpose::kRecords, 0));
      COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> attachments_primary,
                              keys_->PrimaryKey(handle_, KeyPurpose::kAttachments, 0));
      if (!OnlyOnPrimaries(after, records_primary->version(), attachments_primary->version())) {
        state.phase = Cf::kRecords;
        state.cursor.clear();
        continue;
      }
      COFFER_RETURN_IF_ERROR(
          FromRocks(db_->rocks()->Delete(db_->write_options(), db_->cf(Cf::kJobs), JobKey(handle_)),
                    "write"));
      progress.finished = true;
      report();
      return progress;
    }

    COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                            keys_->PrimaryKey(handle_, KeyPurpose::kRecords, 0));
    std::vector<Resealed> group;
    for (const auto& [key, seen] : batch) {
      if (KindOf(state.phase, key) == Cf::kAttachmentPointers) {
        COFFER_RETURN_IF_ERROR(WriteIfUnchanged(state.phase, &group, &state.reencrypted));
        // Streams are long: re-read the entry just before copying it, and save progress after
        // each one, so a crash repeats at most one stream copy.
        std::string current;
        bool found = false;
        COFFER_RETURN_IF_ERROR(db_->Get(state.phase, key, &current, &found));
        ++state.done;
        ++done_this_run;
        if (found) {
          COFFER_ASSIGN_OR_RETURN(
              bool flipped, attachments_->ReencryptToPrimary(state.phase, key, current,
                                                             options_.before_attachment_flip));
          if (flipped) ++state.reencrypted;
        }
        state.cursor = key;
        COFFER_RETURN_IF_ERROR(SaveState(db_, handle_, state));
        continue;
      }
      ++state.done;
      ++done_this_run;
      // The crypto runs outside any lock, on the value the walk read; the write happens only
      // if that value is still there (WriteIfUnchanged).
      std::string stored_key(key);
      if (state.phase == Cf::kRecycleBin) {
        COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
        stored_key = std::move(parts.stored_key);
      }
      COFFER_ASSIGN_OR_RETURN(std::string_view entry, RecordEntryOf(state.phase, seen));
      COFFER_ASSIGN_OR_RETURN(uint32_t version, internal::EntryKeyVersion(Cf::kRecords, entry));
      if (version == primary->version()) continue;
      COFFER_ASSIGN_OR_RETURN(
          internal::OpenedEntry opened,
          internal::OpenEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key, entry));
      absl::StatusOr<std::string> resealed =
          internal::SealEntry(keys_, Cf::kRecords, KeyPurpose::kRecords, stored_key,
                              opened.written_at_us, {}, opened.id, opened.body);
      std::fill(opened.body.begin(), opened.body.end(), '\0');
      std::fill(opened.id.begin(), opened.id.end(), '\0');
      if (!resealed.ok()) return resealed.status();
      if (state.phase == Cf::kRecycleBin) {
        COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(seen));
        *resealed = internal::EncodeBinValue(bin.deleted_at_us, *resealed);
      }
      group.push_back(Resealed{key, seen, std::move(stored_key), std::move(*resealed)});
      if (group.size() >= kWriteGroup) {
        COFFER_RETURN_IF_ERROR(WriteIfUnchanged(state.phase, &group, &state.reencrypted));
      }
    }
    COFFER_RETURN_IF_ERROR(WriteIfUnchanged(state.phase, &group, &state.reencrypted));
    state.cursor = batch.back().first;
    COFFER_RETURN_IF_ERROR(SaveState(db_, handle_, state));
    report();
    if (cancel != nullptr && cancel->load()) {
      return MakeError(ErrorCode::kCancelled, "re-encryption cancelled; progress is saved");
    }
    if (options_.max_items_per_second > 0) {
      auto due = started + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(static_cast<double>(done_this_run) /
                                                             options_.max_items_per_second));
      std::this_thread::sleep_until(due);
    }
  }
}

}  // namespace coffer::storage
