#include "storage/internal/job_walk.h"

#include <algorithm>
#include <thread>

#include "crypto/base/status.h"

namespace coffer::storage::internal {

namespace {

std::string EncodeState(const WalkState& state) {
  std::string value;
  value.push_back(static_cast<char>(state.phase));
  AppendU16(&value, static_cast<uint16_t>(state.cursor.size()));
  value.append(state.cursor);
  AppendU64(&value, state.done);
  AppendU64(&value, state.changed);
  return value;
}

absl::StatusOr<WalkState> DecodeState(std::string_view value, std::string_view label) {
  auto corrupt = [label] {
    return MakeError(ErrorCode::kDataLoss, "malformed " + std::string(label) + " state");
  };
  if (value.size() < 3) return corrupt();
  WalkState state;
  state.phase = static_cast<Cf>(value[0]);
  size_t cursor_size = (static_cast<uint8_t>(value[1]) << 8) | static_cast<uint8_t>(value[2]);
  if (value.size() != 3 + cursor_size + 16) return corrupt();
  if (state.phase != Cf::kRecords && state.phase != Cf::kAttachmentPointers &&
      state.phase != Cf::kRecycleBin) {
    return corrupt();
  }
  state.cursor = std::string(value.substr(3, cursor_size));
  state.done = ReadU64(value.substr(3 + cursor_size));
  state.changed = ReadU64(value.substr(11 + cursor_size));
  return state;
}

}  // namespace

SavedWalk::SavedWalk(DataDb* db, std::string_view prefix, std::string_view label, uint64_t handle)
    : db_(db), key_(prefix), label_(label) {
  AppendU64(&key_, handle);
}

absl::StatusOr<WalkState> SavedWalk::Load() const {
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(Cf::kJobs, key_, &value, &found));
  if (!found) return WalkState{};
  return DecodeState(value, label_);
}

absl::Status SavedWalk::Save(const WalkState& state) const {
  return FromRocks(
      db_->rocks()->Put(db_->write_options(), db_->cf(Cf::kJobs), key_, EncodeState(state)),
      "write");
}

absl::Status SavedWalk::Clear() const {
  return FromRocks(db_->rocks()->Delete(db_->write_options(), db_->cf(Cf::kJobs), key_), "write");
}

absl::StatusOr<std::vector<uint64_t>> SavedWalkHandles(DataDb* db, std::string_view prefix) {
  std::vector<uint64_t> handles;
  ScopedIterator it = db->NewIterator(Cf::kJobs);
  for (it->Seek(prefix); it->Valid(); it->Next()) {
    std::string_view key = it->key().ToStringView();
    if (key.substr(0, prefix.size()) != prefix) break;
    if (key.size() != prefix.size() + kHandleSize) {
      return MakeError(ErrorCode::kDataLoss, "malformed job key in the data DB");
    }
    handles.push_back(ReadU64(key.substr(prefix.size())));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  return handles;
}

bool AdvancePhase(WalkState* state) {
  if (state->phase == Cf::kRecords) {
    state->phase = Cf::kAttachmentPointers;
  } else if (state->phase == Cf::kAttachmentPointers) {
    state->phase = Cf::kRecycleBin;
  } else {
    return false;  // the recycle bin was the last phase
  }
  state->cursor.clear();
  return true;
}

absl::Status ReadWalkBatch(DataDb* db, uint64_t handle, const WalkState& state, size_t max,
                           std::vector<std::pair<std::string, std::string>>* batch) {
  batch->clear();
  std::string end = DatasetEnd(handle);
  rocksdb::Slice upper(end);
  rocksdb::ReadOptions read_options;
  read_options.iterate_upper_bound = &upper;
  ScopedIterator it = db->NewIterator(state.phase, read_options);
  it->Seek(state.cursor.empty() ? DatasetBegin(handle) : state.cursor);
  for (; it->Valid() && batch->size() < max; it->Next()) {
    std::string_view key = it->key().ToStringView();
    if (key == state.cursor) continue;
    batch->emplace_back(std::string(key), it->value().ToString());
  }
  return FromRocks(it->status(), "iterate");
}

absl::StatusOr<bool> GroupVersions::Accepts(KeyPurpose purpose, uint32_t version) {
  for (const auto& [p, v, accepted] : answers_) {
    if (p == purpose && v == version) return accepted;
  }
  COFFER_ASSIGN_OR_RETURN(bool accepted, keys_->AcceptsWrites(handle_, purpose, version));
  answers_.emplace_back(purpose, version, accepted);
  return accepted;
}

void WalkPace::Fill(const WalkState& state, JobProgress* progress) const {
  progress->done = state.done;
  double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
  progress->items_per_second = seconds > 0 ? static_cast<double>(done_this_run_) / seconds : 0;
  uint64_t left = progress->total > progress->done ? progress->total - progress->done : 0;
  progress->eta = progress->items_per_second > 0
                      ? std::chrono::seconds(static_cast<int64_t>(static_cast<double>(left) /
                                                                  progress->items_per_second))
                      : std::chrono::seconds(0);
}

bool WalkPace::Throttle(double max_items_per_second, const std::atomic<bool>* cancel) const {
  if (max_items_per_second <= 0) return true;
  const auto due = started_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(
                                      static_cast<double>(done_this_run_) / max_items_per_second));
  // In slices, so that a stop (SIGTERM) does not wait out a long pause of a slow job.
  constexpr auto kSlice = std::chrono::milliseconds(50);
  while (std::chrono::steady_clock::now() < due) {
    if (cancel != nullptr && cancel->load()) return false;
    std::this_thread::sleep_until(std::min(due, std::chrono::steady_clock::now() + kSlice));
  }
  return cancel == nullptr || !cancel->load();
}

}  // namespace coffer::storage::internal
