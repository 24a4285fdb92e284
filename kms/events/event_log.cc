#include "kms/events/event_log.h"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"
#include "storage/rocks_status.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;

constexpr char kEventPrefix = 'E';
constexpr char kSubscriberPrefix = 'S';
constexpr char kRowPrefix = 'R';
constexpr std::string_view kMetaTable = "meta";
constexpr std::string_view kNextSequenceKey = "next_sequence";
constexpr std::string_view kHookCursorKey = "hook_cursor";
constexpr std::string_view kSubscriberFormatKey = "subscriber_format";
constexpr std::string_view kValueFormatKey = "value_format";
constexpr uint64_t kValuesInTheClear = 1;
constexpr uint64_t kValuesSealed = 2;
constexpr uint32_t kValueKeyVersion = 1;
constexpr char kSubscriberVersion = 0x02;
constexpr size_t kSubscriberSize = 1 + 8 + 4;

absl::Status FromRocks(const rocksdb::Status& status, std::string_view what) {
  return storage::FromRocks(status, ErrorCode::kDataDbError,
                            absl::StrCat("event log: ", std::string(what)));
}

std::string EventKey(uint64_t sequence) {
  std::string key(1, kEventPrefix);
  key += EncodeU64(sequence);
  return key;
}
std::string SubscriberKey(std::string_view name) {
  std::string key;
  key.reserve(1 + name.size());
  key.push_back(kSubscriberPrefix);
  key.append(name.data(), name.size());
  return key;
}
std::string RowKey(std::string_view table, std::string_view key) {
  std::string out(1, kRowPrefix);
  out += table;
  out += '\0';
  out += key;
  return out;
}

rocksdb::WriteOptions Synced() {
  rocksdb::WriteOptions options;
  options.sync = true;
  return options;
}

}  // namespace

std::string EncodeSubscriber(const SubscriberRow& row) {
  std::string out(1, kSubscriberVersion);
  out += EncodeU64(row.cursor);
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<char>((row.owner >> shift) & 0xff));
  }
  return out;
}

std::optional<SubscriberRow> DecodeSubscriber(std::string_view bytes) {
  if (bytes.size() != kSubscriberSize || bytes[0] != kSubscriberVersion) return std::nullopt;
  SubscriberRow row;
  row.cursor = *DecodeU64(bytes.substr(1, 8));
  row.owner = 0;
  for (char c : bytes.substr(9)) row.owner = (row.owner << 8) | static_cast<uint8_t>(c);
  return row;
}

bool IsValidSubscriberName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

absl::StatusOr<std::unique_ptr<EventLog>> EventLog::Open(EventLogOptions options) {
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "EventLogOptions.clock is null");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.directory, ec);
  if (ec) {
    return MakeError(ErrorCode::kDataDbError,
                     "event log: cannot create directory " + options.directory);
  }
  ::chmod(options.directory.c_str(), 0700);
  rocksdb::Options db_options;
  db_options.create_if_missing = true;
  db_options.paranoid_checks = true;
  db_options.max_open_files = 64;
  db_options.keep_log_file_num = 2;
  rocksdb::DB* db = nullptr;
  COFFER_RETURN_IF_ERROR(FromRocks(rocksdb::DB::Open(db_options, options.directory, &db), "open"));
  std::unique_ptr<EventLog> log(new EventLog(std::move(options), db));
  if (log->options_.value_key != nullptr) {
    COFFER_ASSIGN_OR_RETURN(crypto::RecordAead sealer,
                            crypto::RecordAead::Create(*log->options_.value_key, kValueKeyVersion));
    log->sealer_.emplace(std::move(sealer));
    log->options_.value_key = nullptr;  // the caller's: not kept
  }
  COFFER_RETURN_IF_ERROR(log->SealValues());
  COFFER_RETURN_IF_ERROR(log->Load());
  return log;
}

EventLog::EventLog(EventLogOptions options, rocksdb::DB* db)
    : options_(std::move(options)), clock_(options_.clock), db_(db) {}

EventLog::~EventLog() {
  Shutdown();
  if (db_) db_->Close().PermitUncheckedError();
}

// The internal counters (next sequence, hook cursor, formats) stay in the clear: they are
// numbers, and reading them must not depend on the key.
bool EventLog::IsInternalRow(std::string_view rocks_key) {
  for (std::string_view key :
       {kNextSequenceKey, kHookCursorKey, kSubscriberFormatKey, kValueFormatKey}) {
    if (rocks_key == RowKey(kMetaTable, key)) return true;
  }
  return false;
}

absl::StatusOr<std::string> EventLog::SealValue(std::string_view rocks_key,
                                                std::string_view value) const {
  if (!sealer_) return std::string(value);
  return sealer_->Seal(value, rocks_key);
}

absl::StatusOr<std::string> EventLog::OpenValue(std::string_view rocks_key,
                                                std::string_view stored) const {
  if (!sealer_) return std::string(stored);
  absl::StatusOr<std::string> opened = sealer_->Open(stored, rocks_key);
  if (!opened.ok()) {
    return MakeError(ErrorCode::kDataDbError,
                     "event log: a stored value does not open under the event log's key");
  }
  return opened;
}

// Values format 2 (docs/events.md, "At rest"): every event and every table row but the internal
// counters is sealed under the value key, bound to its RocksDB key. A format-1 log (values in
// the clear) is sealed here in one synced batch together with the format row — a crash leaves
// either format whole — then compacted so the clear values leave the files. Without a key, a
// sealed log is refused and a clear one stays clear (unit tests of the layer).
absl::Status EventLog::SealValues() {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), RowKey(kMetaTable, kValueFormatKey), &value);
  uint64_t format = kValuesInTheClear;
  if (s.ok()) {
    std::optional<uint64_t> stored = DecodeU64(value);
    if (!stored || *stored < kValuesInTheClear || *stored > kValuesSealed) {
      return MakeError(ErrorCode::kUnsupportedFormat,
                       "event log: value format is not one this build reads (1 or 2)");
    }
    format = *stored;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading the value format");
  }
  if (!sealer_) {
    if (format == kValuesSealed) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "event log: its values are sealed and no key was given");
    }
    return absl::OkStatus();
  }
  if (format == kValuesSealed) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  size_t sealed = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string_view key(it->key().data(), it->key().size());
    if (key.empty() || (key[0] != kEventPrefix && key[0] != kRowPrefix) || IsInternalRow(key)) {
      continue;
    }
    COFFER_ASSIGN_OR_RETURN(
        std::string stored,
        SealValue(key, std::string_view(it->value().data(), it->value().size())));
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(it->key(), stored), "staging a sealed value"));
    ++sealed;
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning values"));
  it.reset();
  COFFER_RETURN_IF_ERROR(FromRocks(
      batch.Put(RowKey(kMetaTable, kValueFormatKey), EncodeU64(kValuesSealed)), "staging a row"));
  COFFER_RETURN_IF_ERROR(FromRocks(db_->Write(Synced(), &batch), "sealing values"));
  if (sealed == 0) return absl::OkStatus();
  rocksdb::CompactRangeOptions compact;
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
  return FromRocks(db_->CompactRange(compact, nullptr, nullptr), "compacting sealed values");
}

absl::Status EventLog::Load() {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), RowKey(kMetaTable, kNextSequenceKey), &value);
  if (s.ok()) {
    std::optional<uint64_t> next = DecodeU64(value);
    if (!next || *next == 0) {
      return MakeError(ErrorCode::kDataDbError, "event log: next sequence row is damaged");
    }
    next_sequence_ = *next;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading the next sequence");
  }
  s = db_->Get(rocksdb::ReadOptions(), RowKey(kMetaTable, kHookCursorKey), &value);
  if (s.ok()) {
    hook_cursor_ = DecodeU64(value).value_or(0);
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading the hook cursor");
  }
  return MigrateSubscribers();
}

absl::Status EventLog::MigrateSubscribers() {
  std::string value;
  rocksdb::Status s =
      db_->Get(rocksdb::ReadOptions(), RowKey(kMetaTable, kSubscriberFormatKey), &value);
  uint64_t format = 1;
  if (s.ok()) {
    std::optional<uint64_t> stored = DecodeU64(value);
    if (!stored) return MakeError(ErrorCode::kDataDbError, "event log: format row is damaged");
    format = *stored;
  } else if (!s.IsNotFound()) {
    return FromRocks(s, "reading the subscriber format");
  }
  if (format == kSubscriberFormat) return absl::OkStatus();
  if (format > kSubscriberFormat) {
    return MakeError(ErrorCode::kDataDbError,
                     absl::StrCat("event log: subscriber format ", format,
                                  " is newer than this cofferd understands (", kSubscriberFormat,
                                  "): run a newer cofferd"));
  }
  // Format 1: every subscriber is a bare 8-byte cursor. One batch rewrites them all and stamps
  // the format, so a crash leaves format 1 whole and the next Open starts over.
  rocksdb::WriteBatch batch;
  uint64_t migrated = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  const std::string prefix(1, kSubscriberPrefix);
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    std::optional<uint64_t> cursor =
        DecodeU64(std::string_view(it->value().data(), it->value().size()));
    if (!cursor) {
      return MakeError(ErrorCode::kDataDbError,
                       "event log: a format-1 subscriber cursor is damaged");
    }
    COFFER_RETURN_IF_ERROR(FromRocks(
        batch.Put(it->key(), EncodeSubscriber(SubscriberRow{*cursor, kNoSubscriberOwner})),
        "staging a subscriber"));
    ++migrated;
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning subscribers"));
  COFFER_RETURN_IF_ERROR(
      FromRocks(batch.Put(RowKey(kMetaTable, kSubscriberFormatKey), EncodeU64(kSubscriberFormat)),
                "staging the subscriber format"));
  COFFER_RETURN_IF_ERROR(FromRocks(db_->Write(Synced(), &batch), "migrating subscribers"));
  migrated_subscribers_ = migrated;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> EventLog::Append(std::vector<pb::Event> events,
                                                       const std::vector<Row>& rows) {
  std::vector<uint64_t> sequences;
  {
    std::lock_guard<std::mutex> lock(mu_);
    rocksdb::WriteBatch batch;
    uint64_t next = next_sequence_;
    const int64_t now = coffer::ToUnixMicros(clock_->Now());
    for (pb::Event& event : events) {
      event.set_sequence(next);
      if (event.time_micros() == 0) event.set_time_micros(now);
      std::string bytes;
      if (!event.SerializeToString(&bytes)) {
        return MakeError(ErrorCode::kInternal, "event log: an event does not serialize");
      }
      const std::string key = EventKey(next);
      COFFER_ASSIGN_OR_RETURN(std::string stored, SealValue(key, bytes));
      COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(key, stored), "staging an event"));
      sequences.push_back(next++);
    }
    COFFER_RETURN_IF_ERROR(StageRows(batch, rows));
    COFFER_RETURN_IF_ERROR(FromRocks(
        batch.Put(RowKey(kMetaTable, kNextSequenceKey), EncodeU64(next)), "staging a row"));
    COFFER_RETURN_IF_ERROR(FromRocks(db_->Write(Synced(), &batch), "append"));
    next_sequence_ = next;
  }
  if (!events.empty()) appended_.notify_all();
  return sequences;
}

absl::StatusOr<uint64_t> EventLog::OldestSequenceLocked() const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  it->Seek(std::string(1, kEventPrefix));
  if (it->Valid() && !it->key().empty() && it->key()[0] == kEventPrefix) {
    return DecodeU64(std::string_view(it->key().data() + 1, it->key().size() - 1)).value_or(0);
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning events"));
  return next_sequence_;  // empty: the next one will be the oldest
}

absl::StatusOr<std::vector<pb::Event>> EventLog::ScanEventsLocked(uint64_t after,
                                                                  size_t max) const {
  std::vector<pb::Event> out;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(EventKey(after + 1)); it->Valid() && out.size() < max; it->Next()) {
    if (it->key().empty() || it->key()[0] != kEventPrefix) break;
    COFFER_ASSIGN_OR_RETURN(std::string bytes,
                            OpenValue(std::string_view(it->key().data(), it->key().size()),
                                      std::string_view(it->value().data(), it->value().size())));
    pb::Event event;
    if (!event.ParseFromString(bytes)) {
      return MakeError(ErrorCode::kDataDbError, "event log: a stored event does not parse");
    }
    out.push_back(std::move(event));
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning events"));
  return out;
}

absl::StatusOr<ReadResult> EventLog::Read(std::string_view subscriber, uint32_t caller,
                                          std::optional<uint64_t> ack_through, bool ack_only,
                                          size_t max_events, std::chrono::milliseconds wait,
                                          const AckAuditor& audit_ack) {
  if (!IsValidSubscriberName(subscriber)) {
    return MakeError(ErrorCode::kEventSubscriberInvalid,
                     "a subscriber name is 1-64 characters of [a-z0-9._-]");
  }
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  // The subscriber: stored, or (a new name) the caller's, just before the oldest event kept.
  SubscriberRow row;
  bool known = false;
  {
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), SubscriberKey(subscriber), &value);
    if (s.ok()) {
      std::optional<SubscriberRow> stored = DecodeSubscriber(value);
      if (!stored) return MakeError(ErrorCode::kDataDbError, "event log: a subscriber is damaged");
      row = *stored;
      known = true;
    } else if (!s.IsNotFound()) {
      return FromRocks(s, "reading a subscriber");
    } else {
      COFFER_ASSIGN_OR_RETURN(uint64_t oldest, OldestSequenceLocked());
      row.cursor = oldest - 1;
      row.owner = caller;
    }
  }
  if (row.owner == kNoSubscriberOwner) {
    return MakeError(ErrorCode::kNotGranted,
                     absl::StrCat("subscriber ", std::string(subscriber),
                                  " predates subscriber owners and belongs to nobody: it can no "
                                  "longer be read or acknowledged; use a new subscriber name (it "
                                  "starts at the oldest event kept)"));
  }
  if (row.owner != caller) {
    return MakeError(
        ErrorCode::kNotGranted,
        absl::StrCat("subscriber ", std::string(subscriber), " belongs to uid ", row.owner,
                     ": only its owner reads or acknowledges it; use a subscriber "
                     "name of your own"));
  }
  uint64_t& cursor = row.cursor;
  const uint64_t newest = next_sequence_ - 1;
  bool changed = !known;
  if (ack_through.has_value()) {
    if (*ack_through > newest) {
      return MakeError(
          ErrorCode::kEventCursorInvalid,
          absl::StrCat("ack_through ", *ack_through, " is beyond the newest event (", newest, ")"));
    }
    const uint64_t through = std::max(cursor, *ack_through);
    if (audit_ack) COFFER_RETURN_IF_ERROR(audit_ack(cursor, through));
    if (through > cursor) {
      cursor = through;
      changed = true;
    }
  }
  if (changed) {
    COFFER_RETURN_IF_ERROR(FromRocks(
        db_->Put(Synced(), SubscriberKey(subscriber), EncodeSubscriber(row)), "saving a cursor"));
  }
  ReadResult result;
  result.acknowledged_through = cursor;
  if (ack_only) {
    result.newest_sequence = newest;
    return result;
  }
  // Wait (without the mutex) for an event after the cursor.
  while (!shutdown_ && next_sequence_ - 1 <= cursor &&
         std::chrono::steady_clock::now() < deadline) {
    appended_.wait_until(lock, deadline);
  }
  result.newest_sequence = next_sequence_ - 1;
  COFFER_ASSIGN_OR_RETURN(uint64_t oldest, OldestSequenceLocked());
  if (oldest > cursor + 1) result.missed = oldest - (cursor + 1);
  COFFER_ASSIGN_OR_RETURN(result.events, ScanEventsLocked(cursor, max_events));
  return result;
}

absl::StatusOr<std::optional<pb::Event>> EventLog::NextForHook(std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  std::unique_lock<std::mutex> lock(mu_);
  while (!shutdown_ && next_sequence_ - 1 <= hook_cursor_ &&
         std::chrono::steady_clock::now() < deadline) {
    appended_.wait_until(lock, deadline);
  }
  COFFER_ASSIGN_OR_RETURN(std::vector<pb::Event> events, ScanEventsLocked(hook_cursor_, 1));
  if (events.empty()) return std::optional<pb::Event>();
  return std::optional<pb::Event>(std::move(events.front()));
}

absl::Status EventLog::AckHook(uint64_t sequence) {
  std::lock_guard<std::mutex> lock(mu_);
  if (sequence <= hook_cursor_) return absl::OkStatus();
  COFFER_RETURN_IF_ERROR(
      FromRocks(db_->Put(Synced(), RowKey(kMetaTable, kHookCursorKey), EncodeU64(sequence)),
                "saving the hook cursor"));
  hook_cursor_ = sequence;
  return absl::OkStatus();
}

uint64_t EventLog::hook_cursor() const {
  std::lock_guard<std::mutex> lock(mu_);
  return hook_cursor_;
}

void EventLog::set_hook_enabled(bool enabled) {
  std::lock_guard<std::mutex> lock(mu_);
  hook_enabled_ = enabled;
}

absl::StatusOr<std::optional<std::string>> EventLog::GetRow(std::string_view table,
                                                            std::string_view key) {
  std::string value;
  const std::string rocks_key = RowKey(table, key);
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), rocks_key, &value);
  if (s.IsNotFound()) return std::optional<std::string>();
  COFFER_RETURN_IF_ERROR(FromRocks(s, "reading a row"));
  COFFER_ASSIGN_OR_RETURN(std::string opened, OpenValue(rocks_key, value));
  return std::optional<std::string>(std::move(opened));
}

absl::Status EventLog::StageRows(rocksdb::WriteBatch& batch, const std::vector<Row>& rows) const {
  for (const Row& row : rows) {
    const std::string rocks_key = RowKey(row.table, row.key);
    if (IsInternalRow(rocks_key)) {
      return MakeError(ErrorCode::kInvalidArgument, "event log: that row is the log's own");
    }
    COFFER_ASSIGN_OR_RETURN(std::string stored, SealValue(rocks_key, row.value));
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(rocks_key, stored), "staging a row"));
  }
  return absl::OkStatus();
}

absl::Status EventLog::PutRows(const std::vector<Row>& rows) {
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(StageRows(batch, rows));
  return FromRocks(db_->Write(Synced(), &batch), "writing rows");
}

absl::Status EventLog::DeleteRow(std::string_view table, std::string_view key) {
  return FromRocks(db_->Delete(Synced(), RowKey(table, key)), "deleting a row");
}

absl::StatusOr<std::vector<Row>> EventLog::ScanTable(std::string_view table) {
  std::vector<Row> out;
  const std::string prefix = RowKey(table, "");
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
    COFFER_ASSIGN_OR_RETURN(std::string value,
                            OpenValue(std::string_view(it->key().data(), it->key().size()),
                                      std::string_view(it->value().data(), it->value().size())));
    out.push_back(
        Row{std::string(table), it->key().ToString().substr(prefix.size()), std::move(value)});
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning a table"));
  return out;
}

absl::StatusOr<uint64_t> EventLog::Compact(std::chrono::seconds retention,
                                           std::chrono::seconds max_age) {
  std::lock_guard<std::mutex> lock(mu_);
  // Everyone is past `acked`: the lowest subscriber cursor, and the hook's when there is a hook.
  uint64_t acked = next_sequence_ - 1;
  {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
    const std::string prefix(1, kSubscriberPrefix);
    for (it->Seek(prefix); it->Valid() && it->key().starts_with(prefix); it->Next()) {
      std::optional<SubscriberRow> row = DecodeSubscriber(it->value().ToString());
      acked = std::min(acked, row ? row->cursor : 0);  // a damaged row holds everything
    }
    COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning cursors"));
  }
  if (hook_enabled_) acked = std::min(acked, hook_cursor_);
  const int64_t now = coffer::ToUnixMicros(clock_->Now());
  const int64_t retention_limit =
      now - std::chrono::duration_cast<std::chrono::microseconds>(retention).count();
  const int64_t age_limit =
      now - std::chrono::duration_cast<std::chrono::microseconds>(max_age).count();
  rocksdb::WriteBatch batch;
  uint64_t deleted = 0;
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  // Oldest first; stop at the first event that must stay (later ones are newer).
  for (it->Seek(std::string(1, kEventPrefix)); it->Valid(); it->Next()) {
    if (it->key().empty() || it->key()[0] != kEventPrefix) break;
    absl::StatusOr<std::string> bytes =
        OpenValue(std::string_view(it->key().data(), it->key().size()),
                  std::string_view(it->value().data(), it->value().size()));
    pb::Event event;
    if (!bytes.ok() || !event.ParseFromString(*bytes)) break;
    const bool expired = event.time_micros() < age_limit;
    const bool done = event.sequence() <= acked && event.time_micros() < retention_limit;
    if (!expired && !done) break;
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(it->key()), "staging a deletion"));
    ++deleted;
  }
  COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "scanning events"));
  if (deleted > 0) COFFER_RETURN_IF_ERROR(FromRocks(db_->Write(Synced(), &batch), "compaction"));
  return deleted;
}

uint64_t EventLog::newest_sequence() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_sequence_ - 1;
}

void EventLog::Shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    shutdown_ = true;
  }
  appended_.notify_all();
}

std::string EncodeU64(uint64_t value) {
  std::string out(8, '\0');
  for (int i = 7; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(value & 0xff);
    value >>= 8;
  }
  return out;
}

std::optional<uint64_t> DecodeU64(std::string_view bytes) {
  if (bytes.size() != 8) return std::nullopt;
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

}  // namespace coffer::events
