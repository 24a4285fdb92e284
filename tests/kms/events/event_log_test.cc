// EventLog on a real RocksDB in a temporary directory: sequence numbers, per-subscriber
// cursors across reopen (no gap, no duplicate), independent subscribers, subscribers bound to
// their owner's uid (and format-1 cursors migrated to no owner), bad input, long-poll,
// retention, the hook cursor and the small tables.

#include "kms/events/event_log.h"

#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::kms::audit::testing::FakeClock;
using ::coffer::kms::audit::testing::TempDir;

constexpr uint32_t kOwner = 1000;
constexpr uint32_t kOther = 2000;

pb::Event Make(pb::EventKind kind, const std::string& dataset = "crm") {
  pb::Event event;
  event.set_kind(kind);
  event.set_dataset(dataset);
  return event;
}

class EventLogTest : public ::testing::Test {
 protected:
  std::unique_ptr<EventLog> Open() {
    EventLogOptions options;
    options.directory = dir_.Sub("events");
    options.clock = &clock_;
    auto log = EventLog::Open(options);
    EXPECT_TRUE(log.ok()) << log.status();
    return log.ok() ? *std::move(log) : nullptr;
  }
  std::vector<uint64_t> Sequences(const ReadResult& read) {
    std::vector<uint64_t> out;
    for (const pb::Event& e : read.events) out.push_back(e.sequence());
    return out;
  }
  ReadResult ReadAll(EventLog& log, const std::string& who,
                     std::optional<uint64_t> ack = std::nullopt) {
    auto read = log.Read(who, kOwner, ack, false, 100, std::chrono::milliseconds(0));
    EXPECT_TRUE(read.ok()) << read.status();
    return read.ok() ? *read : ReadResult{};
  }

  TempDir dir_;
  FakeClock clock_;
};

TEST_F(EventLogTest, SequencesGrowAndTimesAreFilled) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  auto first = log->Append({Make(pb::EVENT_DATASET_DISABLED), Make(pb::EVENT_KEY_ROTATED)});
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(*first, (std::vector<uint64_t>{1, 2}));
  auto second = log->Append({Make(pb::EVENT_DATASET_DESTROYED)});
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, (std::vector<uint64_t>{3}));
  ReadResult read = ReadAll(*log, "a");
  ASSERT_EQ(read.events.size(), 3u);
  EXPECT_EQ(read.events[0].time_micros(), coffer::ToUnixMicros(clock_.Now()));
  EXPECT_EQ(read.events[2].kind(), pb::EVENT_DATASET_DESTROYED);
  EXPECT_EQ(read.newest_sequence, 3u);
}

TEST_F(EventLogTest, SubscriberAcrossReopenSeesNoGapAndNoDuplicate) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_KEY_ROTATED),
                             Make(pb::EVENT_KEY_ROTATED)})
                    .ok());
    EXPECT_EQ(Sequences(ReadAll(*log, "pager")), (std::vector<uint64_t>{1, 2, 3}));
    // Processed 1 and 2 only; 3 must come again.
    auto acked = log->Read("pager", kOwner, 2, true, 100, std::chrono::milliseconds(0));
    ASSERT_TRUE(acked.ok());
    EXPECT_EQ(acked->acknowledged_through, 2u);
    EXPECT_TRUE(acked->events.empty());
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(
      log->Append({Make(pb::EVENT_DATASET_DISABLED), Make(pb::EVENT_DATASET_ENABLED)}).ok());
  ReadResult read = ReadAll(*log, "pager");
  EXPECT_EQ(Sequences(read), (std::vector<uint64_t>{3, 4, 5}));
  EXPECT_EQ(read.events[1].kind(), pb::EVENT_DATASET_DISABLED);
  // Acknowledging through 5 on the next read: nothing left, and an old ack never moves back.
  EXPECT_TRUE(Sequences(ReadAll(*log, "pager", 5)).empty());
  EXPECT_TRUE(Sequences(ReadAll(*log, "pager", 1)).empty());
  EXPECT_EQ(ReadAll(*log, "pager").acknowledged_through, 5u);
}

TEST_F(EventLogTest, SubscribersHaveIndependentCursors) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_KEY_ROTATED)}).ok());
  EXPECT_EQ(Sequences(ReadAll(*log, "one")), (std::vector<uint64_t>{1, 2}));
  ASSERT_TRUE(log->Read("one", kOwner, 2, true, 100, std::chrono::milliseconds(0)).ok());
  EXPECT_TRUE(ReadAll(*log, "one").events.empty());
  // "two" never acknowledged anything.
  EXPECT_EQ(Sequences(ReadAll(*log, "two")), (std::vector<uint64_t>{1, 2}));
  ASSERT_TRUE(log->Append({Make(pb::EVENT_DATASET_DESTROYED)}).ok());
  EXPECT_EQ(Sequences(ReadAll(*log, "one")), (std::vector<uint64_t>{3}));
  EXPECT_EQ(Sequences(ReadAll(*log, "two")), (std::vector<uint64_t>{1, 2, 3}));
}

TEST_F(EventLogTest, MaxEventsPagesInOrder) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  std::vector<pb::Event> events(7, Make(pb::EVENT_KEY_ROTATED));
  ASSERT_TRUE(log->Append(events).ok());
  std::vector<uint64_t> seen;
  std::optional<uint64_t> ack;
  for (int page = 0; page < 4; ++page) {
    auto read = log->Read("pages", kOwner, ack, false, 3, std::chrono::milliseconds(0));
    ASSERT_TRUE(read.ok());
    for (const pb::Event& e : read->events) seen.push_back(e.sequence());
    if (!read->events.empty()) ack = read->events.back().sequence();
  }
  EXPECT_EQ(seen, (std::vector<uint64_t>{1, 2, 3, 4, 5, 6, 7}));
}

TEST_F(EventLogTest, BadSubscriberAndCursorAreRefused) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED)}).ok());
  for (const std::string& name : {std::string(), std::string("Upper"), std::string("has space"),
                                  std::string("a/b"), std::string(65, 'a')}) {
    auto read = log->Read(name, kOwner, std::nullopt, false, 10, std::chrono::milliseconds(0));
    ASSERT_FALSE(read.ok()) << "'" << name << "'";
    EXPECT_EQ(ErrorCodeOf(read.status()), ErrorCode::kEventSubscriberInvalid);
  }
  EXPECT_TRUE(IsValidSubscriberName(std::string(64, 'z')));
  auto beyond = log->Read("ok", kOwner, 2, false, 10, std::chrono::milliseconds(0));
  ASSERT_FALSE(beyond.ok());
  EXPECT_EQ(ErrorCodeOf(beyond.status()), ErrorCode::kEventCursorInvalid);
  // The refused ack moved nothing.
  EXPECT_EQ(Sequences(ReadAll(*log, "ok")), (std::vector<uint64_t>{1}));
}

TEST_F(EventLogTest, ReadWaitsForTheNextEvent) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(
      log->Read("waiter", kOwner, std::nullopt, true, 10, std::chrono::milliseconds(0)).ok());
  std::thread writer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ASSERT_TRUE(log->Append({Make(pb::EVENT_CANARY_READ)}).ok());
  });
  auto read = log->Read("waiter", kOwner, std::nullopt, false, 10, std::chrono::seconds(20));
  writer.join();
  ASSERT_TRUE(read.ok());
  ASSERT_EQ(read->events.size(), 1u);
  EXPECT_EQ(read->events[0].kind(), pb::EVENT_CANARY_READ);
}

TEST_F(EventLogTest, RetentionKeepsUnacknowledgedEventsUntilMaxAge) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_KEY_ROTATED)}).ok());
  ASSERT_TRUE(log->Read("fast", kOwner, 2, true, 10, std::chrono::milliseconds(0)).ok());
  ASSERT_TRUE(log->Read("slow", kOwner, 1, true, 10, std::chrono::milliseconds(0)).ok());
  clock_.Advance(std::chrono::hours(48));
  // Retention 1 day, max age 10 days: only event 1 is past every cursor.
  auto deleted = log->Compact(std::chrono::hours(24), std::chrono::hours(240));
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 1u);
  ReadResult slow = ReadAll(*log, "slow");
  EXPECT_EQ(Sequences(slow), (std::vector<uint64_t>{2}));
  EXPECT_EQ(slow.missed, 0u);
  // Past the max age everything goes; the slow subscriber is told what it missed.
  clock_.Advance(std::chrono::hours(24 * 11));
  deleted = log->Compact(std::chrono::hours(24), std::chrono::hours(240));
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 1u);
  slow = ReadAll(*log, "slow");
  EXPECT_TRUE(slow.events.empty());
  EXPECT_EQ(slow.missed, 1u);
  // Numbers never come back after compaction, also across a reopen.
  log.reset();
  log = Open();
  ASSERT_NE(log, nullptr);
  auto next = log->Append({Make(pb::EVENT_KEY_ROTATED)});
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(next->front(), 3u);
}

TEST_F(EventLogTest, HookCursorHoldsCompactionAndPersists) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    log->set_hook_enabled(true);
    ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_KEY_ROTATED)}).ok());
    auto next = log->NextForHook(std::chrono::milliseconds(0));
    ASSERT_TRUE(next.ok());
    ASSERT_TRUE(next->has_value());
    EXPECT_EQ((*next)->sequence(), 1u);
    ASSERT_TRUE(log->AckHook(1).ok());
    clock_.Advance(std::chrono::hours(48));
    auto deleted = log->Compact(std::chrono::hours(24), std::chrono::hours(240));
    ASSERT_TRUE(deleted.ok());
    EXPECT_EQ(*deleted, 1u);  // event 2 waits for the hook
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->hook_cursor(), 1u);
  auto next = log->NextForHook(std::chrono::milliseconds(0));
  ASSERT_TRUE(next.ok());
  ASSERT_TRUE(next->has_value());
  EXPECT_EQ((*next)->sequence(), 2u);
}

TEST_F(EventLogTest, ASubscriberBelongsToTheUidThatFirstReadIt) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_CANARY_READ)}).ok());
  EXPECT_EQ(Sequences(ReadAll(*log, "soc")), (std::vector<uint64_t>{1, 2}));

  // Another uid can neither read nor acknowledge it, and its auditor is never asked.
  int audited = 0;
  AckAuditor count = [&audited](uint64_t, uint64_t) {
    ++audited;
    return absl::OkStatus();
  };
  auto read = log->Read("soc", kOther, std::nullopt, false, 10, std::chrono::milliseconds(0));
  EXPECT_EQ(ErrorCodeOf(read.status()), ErrorCode::kNotGranted);
  EXPECT_NE(read.status().message().find("belongs to uid 1000"), std::string_view::npos)
      << read.status();
  auto ack = log->Read("soc", kOther, 2, true, 10, std::chrono::milliseconds(0), count);
  EXPECT_EQ(ErrorCodeOf(ack.status()), ErrorCode::kNotGranted);
  EXPECT_EQ(audited, 0);
  // The owner still sees both events: nothing moved.
  EXPECT_EQ(Sequences(ReadAll(*log, "soc")), (std::vector<uint64_t>{1, 2}));

  // The owner's acknowledgement is audited (from, through) before it moves; a failing audit
  // refuses it and nothing moves.
  std::vector<std::pair<uint64_t, uint64_t>> seen;
  AckAuditor record = [&seen](uint64_t from, uint64_t through) {
    seen.emplace_back(from, through);
    return absl::OkStatus();
  };
  AckAuditor refuse = [](uint64_t, uint64_t) {
    return MakeError(ErrorCode::kAuditLogClosed, "audit closed");
  };
  auto refused = log->Read("soc", kOwner, 2, true, 10, std::chrono::milliseconds(0), refuse);
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kAuditLogClosed);
  EXPECT_EQ(Sequences(ReadAll(*log, "soc")), (std::vector<uint64_t>{1, 2}));
  ASSERT_TRUE(log->Read("soc", kOwner, 1, true, 10, std::chrono::milliseconds(0), record).ok());
  ASSERT_TRUE(log->Read("soc", kOwner, 2, true, 10, std::chrono::milliseconds(0), record).ok());
  EXPECT_EQ(seen, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 1}, {1, 2}}));
  EXPECT_TRUE(ReadAll(*log, "soc").events.empty());

  // The other uid's own subscriber is independent, and the binding survives a reopen.
  EXPECT_EQ(
      Sequences(*log->Read("mine", kOther, std::nullopt, false, 10, std::chrono::milliseconds(0))),
      (std::vector<uint64_t>{1, 2}));
  log.reset();
  log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(
      ErrorCodeOf(
          log->Read("soc", kOther, std::nullopt, true, 10, std::chrono::milliseconds(0)).status()),
      ErrorCode::kNotGranted);
  EXPECT_EQ(ReadAll(*log, "soc").acknowledged_through, 2u);
}

TEST_F(EventLogTest, FormatOneCursorsMigrateToNoOwnerAndStillHoldRetention) {
  {
    auto log = Open();
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append({Make(pb::EVENT_KEY_ROTATED), Make(pb::EVENT_KEY_ROTATED),
                             Make(pb::EVENT_KEY_ROTATED)})
                    .ok());
    EXPECT_EQ(log->migrated_subscribers(), 0u);  // a new log is stamped format 2
  }
  // Turn it into what an older cofferd left: bare 8-byte cursors and no format row.
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_.Sub("events"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "Ssecurity", EncodeU64(1)).ok());
    ASSERT_TRUE(db->Put(rocksdb::WriteOptions(), "Skeyctl", EncodeU64(3)).ok());
    ASSERT_TRUE(
        db->Delete(rocksdb::WriteOptions(), std::string("Rmeta\0subscriber_format", 23)).ok());
    ASSERT_TRUE(db->Close().ok());
  }
  auto log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->migrated_subscribers(), 2u);
  // Nobody owns them now: not the uid that reads first, whoever it is.
  for (uint32_t uid : {kOwner, kOther, uint32_t{0}}) {
    auto read = log->Read("security", uid, 3, true, 10, std::chrono::milliseconds(0));
    EXPECT_EQ(ErrorCodeOf(read.status()), ErrorCode::kNotGranted) << uid;
    EXPECT_NE(read.status().message().find("predates subscriber owners"), std::string_view::npos)
        << read.status();
  }
  // They still hold back retention: only event 1 (past every cursor) goes.
  clock_.Advance(std::chrono::hours(48));
  auto deleted = log->Compact(std::chrono::hours(24), std::chrono::hours(240));
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 1u);
  // A new name starts at the oldest event kept; a second open migrates nothing.
  EXPECT_EQ(Sequences(ReadAll(*log, "security-2")), (std::vector<uint64_t>{2, 3}));
  log.reset();
  log = Open();
  ASSERT_NE(log, nullptr);
  EXPECT_EQ(log->migrated_subscribers(), 0u);
}

TEST_F(EventLogTest, ANewerSubscriberFormatIsRefused) {
  ASSERT_NE(Open(), nullptr);
  {
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open(rocksdb::Options(), dir_.Sub("events"), &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    ASSERT_TRUE(
        db->Put(rocksdb::WriteOptions(), std::string("Rmeta\0subscriber_format", 23), EncodeU64(3))
            .ok());
    ASSERT_TRUE(db->Close().ok());
  }
  EventLogOptions options;
  options.directory = dir_.Sub("events");
  options.clock = &clock_;
  auto log = EventLog::Open(options);
  EXPECT_EQ(ErrorCodeOf(log.status()), ErrorCode::kDataDbError);
  EXPECT_NE(log.status().message().find("newer"), std::string_view::npos) << log.status();
}

// Values at rest (format 2): with a key, no event or row value is in the clear in the log's
// files, and everything reads back.
class SealedEventLogTest : public EventLogTest {
 protected:
  absl::StatusOr<std::unique_ptr<EventLog>> OpenWith(const crypto::SecretBytes* key) {
    EventLogOptions options;
    options.directory = dir_.Sub("events");
    options.clock = &clock_;
    options.value_key = key;
    return EventLog::Open(options);
  }
  static crypto::SecretBytes Key(uint8_t fill) {
    std::vector<uint8_t> bytes(32, fill);
    return *crypto::SecretBytes::CopyFrom(bytes);
  }
  static constexpr char kName[] = "umbrella-corp-marker-41d7";
};

TEST_F(SealedEventLogTest, NoNameOrRowValueIsInTheClearAndAllReadsBack) {
  const crypto::SecretBytes key = Key(0x5a);
  {
    auto log = OpenWith(&key);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)
                    ->Append({Make(pb::EVENT_DATASET_DISABLED, kName)},
                             {Row{"name", "h1", std::string("row-") + kName}})
                    .ok());
    ASSERT_TRUE((*log)->PutRows({Row{"canary", "k1", std::string("canary-") + kName}}).ok());
  }
  EXPECT_THAT(storage::testing::FilesContaining(dir_.Sub("events"), kName), ::testing::IsEmpty());
  auto log = OpenWith(&key);
  ASSERT_TRUE(log.ok()) << log.status();
  ReadResult read = ReadAll(**log, "reader");
  ASSERT_EQ(read.events.size(), 1u);
  EXPECT_EQ(read.events[0].dataset(), kName);
  EXPECT_EQ(*(*log)->GetRow("name", "h1"), std::string("row-") + kName);
  auto rows = (*log)->ScanTable("canary");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 1u);
  EXPECT_EQ((*rows)[0].value, std::string("canary-") + kName);
  // The log's own counters cannot be overwritten through the table interface.
  EXPECT_EQ(ErrorCodeOf((*log)->PutRows({Row{"meta", "next_sequence", "x"}})),
            ErrorCode::kInvalidArgument);
}

TEST_F(SealedEventLogTest, AClearLogIsSealedAtOpenAndItsFilesLoseTheValues) {
  {
    auto log = Open();  // no key: format 1, values in the clear
    ASSERT_NE(log, nullptr);
    ASSERT_TRUE(log->Append({Make(pb::EVENT_DATASET_DISABLED, kName)},
                            {Row{"name", "h1", std::string("row-") + kName}})
                    .ok());
  }
  // The scan sees the name where it is in the clear (it can fail).
  EXPECT_FALSE(storage::testing::FilesContaining(dir_.Sub("events"), kName).empty());
  const crypto::SecretBytes key = Key(0x5a);
  {
    auto log = OpenWith(&key);
    ASSERT_TRUE(log.ok()) << log.status();
    ReadResult read = ReadAll(**log, "reader");
    ASSERT_EQ(read.events.size(), 1u);
    EXPECT_EQ(read.events[0].dataset(), kName);
    EXPECT_EQ(*(*log)->GetRow("name", "h1"), std::string("row-") + kName);
  }
  EXPECT_THAT(storage::testing::FilesContaining(dir_.Sub("events"), kName), ::testing::IsEmpty());
}

TEST_F(SealedEventLogTest, ASealedLogNeedsItsKey) {
  const crypto::SecretBytes key = Key(0x5a);
  {
    auto log = OpenWith(&key);
    ASSERT_TRUE(log.ok()) << log.status();
    ASSERT_TRUE((*log)->Append({Make(pb::EVENT_DATASET_DISABLED, kName)}).ok());
  }
  EXPECT_EQ(ErrorCodeOf(OpenWith(nullptr).status()), ErrorCode::kFailedPrecondition);
  const crypto::SecretBytes other = Key(0x33);
  auto log = OpenWith(&other);
  ASSERT_TRUE(log.ok()) << log.status();
  auto read =
      (*log)->Read("reader", kOwner, std::nullopt, false, 100, std::chrono::milliseconds(0));
  EXPECT_EQ(ErrorCodeOf(read.status()), ErrorCode::kDataDbError);
}

TEST_F(EventLogTest, TablesRoundTrip) {
  auto log = Open();
  ASSERT_NE(log, nullptr);
  ASSERT_TRUE(
      log->PutRows({Row{"canary", "k1", "v1"}, Row{"canary", "k2", "v2"}, Row{"other", "k1", "x"}})
          .ok());
  auto rows = log->ScanTable("canary");
  ASSERT_TRUE(rows.ok());
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[1].value, "v2");
  ASSERT_TRUE(log->DeleteRow("canary", "k1").ok());
  auto gone = log->GetRow("canary", "k1");
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
  auto other = log->GetRow("other", "k1");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->value_or(""), "x");
}

}  // namespace
}  // namespace coffer::events
