// EventLog: cofferd's persisted notification log (docs/events.md) — lifecycle events with a
// sequence number that only grows, per-subscriber cursors, the hook's delivery cursor, and a few
// small daemon-side tables (canary registry, markers) beside them.
//
// Storage: its own RocksDB directory (<state>/events by default). RocksDB rather than an
// append-only file because every change here is a small atomic multi-key update — an event
// together with the audit cursor it was derived from, a cursor move, a compaction — which a
// WriteBatch makes atomic and crash-safe (WAL, block checksums) for free, and the daemon already
// ships and tunes RocksDB. Every write is synced (WriteOptions.sync): an event acknowledged here
// survives power loss, so a subscriber never sees a gap.
//
// Keys (one column family): 'E' seq u64 BE -> coffer.v1.Event; 'S' name -> subscriber (below);
// 'R' table NUL key -> bytes (Row*). The next sequence number is itself a row, written in every
// append batch, so compaction never makes a number come back.
//
// At rest (value format 2, the meta row "value_format"): events and table rows are sealed under
// EventLogOptions::value_key, each bound to its RocksDB key; the log's own counters stay clear.
// Keys are not sealed: a table row's key must not carry a secret (the canary registry's keys
// carry the canary's id — a decoy's, not a customer's).
//
// Subscribers (format 2, the meta row "subscriber_format"): 'S' name -> 0x02, cursor u64 BE,
// owner uid u32 BE (13 bytes). A subscriber belongs to the uid that first read it: only that
// uid reads or acknowledges it (NOT_GRANTED otherwise), so one admin cannot acknowledge — and
// so silence — another's subscriber. Format 1 (before owners) stored the bare 8-byte cursor;
// Open migrates such rows in one synced batch (with the format row, so a crash leaves either
// format 1 or format 2 whole, and the next Open redoes it) to owner kNoSubscriberOwner: who
// created them is not known, so nobody may read or move them any more (they still hold back
// retention, so no event they had not acknowledged is lost before max_age); their users pick a
// new name, which starts at the oldest event kept. A format newer than 2 is refused.
//
// Cursors: a subscriber's cursor is the sequence it acknowledged through. A new subscriber starts
// just before the oldest event kept. Retention (Compact): an event is deleted when every
// subscriber and the hook cursor are past it and it is older than `retention`, or whatever the
// cursors when it is older than `max_age`; a subscriber whose unread events were deleted that
// way is told how many it missed.
//
// Thread safety: all methods from any thread. One mutex serialises writers (sequence numbers
// and cursors); readers waiting for new events (Read with a wait, WaitForEventAfter) wait on a
// condition variable that Append signals, never holding the mutex across the wait.
// Failures: RocksDB errors become DATA_DB_ERROR-class statuses naming the step; nothing is
// half-applied (each call is one batch).

#ifndef COFFER_KMS_EVENTS_EVENT_LOG_H_
#define COFFER_KMS_EVENTS_EVENT_LOG_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/events.pb.h"
#include "crypto/base/clock.h"
#include "crypto/record_aead.h"
#include "crypto/secret_bytes.h"

namespace rocksdb {
class DB;
class WriteBatch;
}  // namespace rocksdb

namespace coffer::events {

// A row of a small daemon-side table stored beside the events (e.g. table "canary").
struct Row {
  std::string table;
  std::string key;
  std::string value;
};

struct EventLogOptions {
  std::string directory;                 // created (0700) if missing
  const coffer::Clock* clock = nullptr;  // required: event times and retention
  // The key (32 bytes) that seals every stored value: events (which name datasets and canaries)
  // and table rows (dataset names, canary entries), each bound to its RocksDB key (AES-256-GCM,
  // record-v1 framing; docs/events.md, "At rest"). cofferd derives it in the token; Open keys
  // its own copy, so the caller's may go. Null: values in the clear (unit tests of this layer
  // only); a sealed log then refuses to open.
  const crypto::SecretBytes* value_key = nullptr;
};

struct ReadResult {
  std::vector<coffer::v1::Event> events;
  uint64_t acknowledged_through = 0;
  uint64_t newest_sequence = 0;
  uint64_t missed = 0;
};

// Subscriber names: 1-64 characters of [a-z0-9._-].
bool IsValidSubscriberName(std::string_view name);

// The owner of subscribers migrated from format 1 (no uid has it: nobody reads or moves them).
inline constexpr uint32_t kNoSubscriberOwner = 0xFFFFFFFF;
inline constexpr uint64_t kSubscriberFormat = 2;

// A subscriber as stored (format 2).
struct SubscriberRow {
  uint64_t cursor = 0;
  uint32_t owner = kNoSubscriberOwner;
};
std::string EncodeSubscriber(const SubscriberRow& row);
// nullopt unless a well-formed format-2 value.
std::optional<SubscriberRow> DecodeSubscriber(std::string_view bytes);

// Called by Read under the log's lock when the owner acknowledges (ack_through set), before the
// cursor moves from `from` to `through` (equal when the acknowledgement moves nothing). An
// error refuses the acknowledgement: nothing moves and Read returns it.
using AckAuditor = std::function<absl::Status(uint64_t from, uint64_t through)>;

// 8-byte big-endian integers, as the event DB's keys and counters store them (the event log's,
// the event source's and the canary registry's rows). Decode: nullopt unless exactly 8 bytes.
std::string EncodeU64(uint64_t value);
std::optional<uint64_t> DecodeU64(std::string_view bytes);

class EventLog {
 public:
  static absl::StatusOr<std::unique_ptr<EventLog>> Open(EventLogOptions options);
  EventLog(const EventLog&) = delete;
  EventLog& operator=(const EventLog&) = delete;
  ~EventLog();

  // Appends `events` (each gets the next sequence number; a time_micros of 0 becomes now) and
  // writes `rows` in the same synced batch. Returns the sequence numbers given, in order.
  absl::StatusOr<std::vector<uint64_t>> Append(std::vector<coffer::v1::Event> events,
                                               const std::vector<Row>& rows = {});

  // A read of subscriber `subscriber` by uid `caller` (a new name becomes the caller's): first
  // moves its cursor to `ack_through` (never back; beyond the newest event is
  // EVENT_CURSOR_INVALID) once `audit_ack` accepted it, then (unless `ack_only`) returns up to
  // `max_events` events after the cursor, waiting up to `wait` for the first when none is
  // pending. EVENT_SUBSCRIBER_INVALID for a bad name; NOT_GRANTED, nothing read or moved, when
  // the subscriber belongs to another uid or to none (migrated from format 1).
  absl::StatusOr<ReadResult> Read(std::string_view subscriber, uint32_t caller,
                                  std::optional<uint64_t> ack_through, bool ack_only,
                                  size_t max_events, std::chrono::milliseconds wait,
                                  const AckAuditor& audit_ack = {});

  // How many format-1 subscribers Open migrated (0 when none were found).
  uint64_t migrated_subscribers() const { return migrated_subscribers_; }

  // The hook's cursor (persisted): the first event after it, waiting up to `wait`; nullopt if none.
  absl::StatusOr<std::optional<coffer::v1::Event>> NextForHook(std::chrono::milliseconds wait);
  absl::Status AckHook(uint64_t sequence);
  uint64_t hook_cursor() const;
  // Whether compaction waits for the hook cursor (set when a hook is configured).
  void set_hook_enabled(bool enabled);

  // Small tables.
  absl::StatusOr<std::optional<std::string>> GetRow(std::string_view table, std::string_view key);
  absl::Status PutRows(const std::vector<Row>& rows);
  absl::Status DeleteRow(std::string_view table, std::string_view key);
  absl::StatusOr<std::vector<Row>> ScanTable(std::string_view table);

  // Deletes events as described above; returns how many.
  absl::StatusOr<uint64_t> Compact(std::chrono::seconds retention, std::chrono::seconds max_age);

  uint64_t newest_sequence() const;
  // Wakes every waiter (shutdown); later waits return at once.
  void Shutdown();

 private:
  EventLog(EventLogOptions options, rocksdb::DB* db);
  absl::Status Load();
  // Seals a format-1 log's values (see EventLogOptions::value_key), or checks the format.
  absl::Status SealValues();
  static bool IsInternalRow(std::string_view rocks_key);
  absl::StatusOr<std::string> SealValue(std::string_view rocks_key, std::string_view value) const;
  absl::StatusOr<std::string> OpenValue(std::string_view rocks_key, std::string_view stored) const;
  absl::Status StageRows(rocksdb::WriteBatch& batch, const std::vector<Row>& rows) const;
  // Stamps a new log with kSubscriberFormat, or migrates format-1 subscribers (see above).
  absl::Status MigrateSubscribers();
  absl::StatusOr<uint64_t> OldestSequenceLocked() const;
  absl::StatusOr<std::vector<coffer::v1::Event>> ScanEventsLocked(uint64_t after, size_t max) const;

  EventLogOptions options_;
  const coffer::Clock* clock_;
  std::unique_ptr<rocksdb::DB> db_;
  std::optional<crypto::RecordAead> sealer_;  // set by Open when a value key was given

  mutable std::mutex mu_;
  std::condition_variable appended_;
  uint64_t next_sequence_ = 1;
  uint64_t hook_cursor_ = 0;
  bool hook_enabled_ = false;
  bool shutdown_ = false;
  uint64_t migrated_subscribers_ = 0;
};

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_EVENT_LOG_H_
