#include <future>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "kms/audit/batching_writer.h"
#include "kms/audit/verifier.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::kms::audit {
namespace {

using ::coffer::audit::v1::AuditEntry;
using testing::AccessEvent;
using testing::KeyEvent;

size_t CountAccess(const std::string& dir) {
  auto entries = ReadAuditEntries(dir);
  EXPECT_TRUE(entries.ok());
  size_t count = 0;
  for (const AuditEntry& entry : entries.ok() ? *entries : std::vector<AuditEntry>{}) {
    if (entry.kind() == v1::ACCESS_READ) ++count;
  }
  return count;
}

// A window-0 writer on a log written through `fs`, whose syncs fail while fs.fail_sync is set.
struct WriterOnFailingFileSystem {
  void Start() {
    AuditLogOptions log_options = env.Options();
    log_options.file_system = &fs;
    auto opened = AuditLog::Open(log_options);
    ASSERT_TRUE(opened.ok()) << opened.status();
    log = *std::move(opened);
    auto started = BatchingAuditWriter::Start(log.get(), {});
    ASSERT_TRUE(started.ok()) << started.status();
    writer = *std::move(started);
  }

  // Event 0 is written; event 1's sync fails (AUDIT_NOT_DURABLE), which stops the writer; then
  // the disk works again, but the writer stays failed until the log has reopened itself.
  void FailOneSync() {
    ASSERT_TRUE(writer->Append(AccessEvent(0)).ok());
    fs.fail_sync = true;
    EXPECT_EQ(ErrorCodeOf(writer->Append(AccessEvent(1))), ErrorCode::kAuditNotDurable);
    fs.fail_sync = false;
  }

  testing::TestLogEnv env;
  testing::FailingFileSystem fs;
  std::unique_ptr<AuditLog> log;
  std::unique_ptr<BatchingAuditWriter> writer;
};

TEST(BatchingAuditWriterTest, ConcurrentAppendersAllLandInOneVerifiableChain) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/50));
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.max_queued_events = 16;  // small, so that appenders meet backpressure
  options.max_batch_events = 8;
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());

  constexpr int kThreads = 8;
  constexpr int kPerThread = 60;
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        if (!(*writer)
                 ->Append(AccessEvent(static_cast<uint64_t>(t) * 1000 + static_cast<uint64_t>(i)))
                 .ok())
          ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE((*writer)->Stop().ok());
  ASSERT_TRUE((*log)->Close().ok());

  auto entries = ReadAuditEntries(env.log_dir());
  ASSERT_TRUE(entries.ok());
  std::set<uint32_t> pids;
  for (const AuditEntry& entry : *entries) {
    if (entry.kind() == v1::ACCESS_READ) {
      EXPECT_TRUE(pids.insert(entry.actor().pid()).second);
    }
  }
  EXPECT_EQ(pids.size(), static_cast<size_t>(kThreads * kPerThread));
  VerifyOptions verify;
  verify.public_key_pem = env.public_key_pem;
  verify.anchors = env.anchors.anchors();
  verify.epoch_keys = testing::TestEpochKeys();
  auto report = VerifyAuditLog(env.log_dir(), verify);
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok()) << report->ToStatus();
}

// With a window, appenders return before the write, so a small queue fills: appenders must wait
// for space (not spin, not drop) and every event must land.
TEST(BatchingAuditWriterTest, AFullQueueBlocksAppendersUntilTheWriterFreesSpace) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options(/*checkpoint_every_entries=*/100));
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.crash_loss_window = std::chrono::milliseconds(5);
  options.max_queued_events = 4;
  options.max_batch_events = 2;
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  constexpr int kThreads = 4;
  constexpr int kPerThread = 50;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        uint64_t pid = static_cast<uint64_t>(t) * 1000 + static_cast<uint64_t>(i);
        if (!(*writer)->Append(AccessEvent(pid)).ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  ASSERT_TRUE((*writer)->Flush().ok());
  ASSERT_TRUE((*writer)->Stop().ok());
  ASSERT_TRUE((*log)->Close().ok());
  auto entries = ReadAuditEntries(env.log_dir());
  ASSERT_TRUE(entries.ok());
  std::set<uint32_t> pids;
  for (const AuditEntry& entry : *entries) {
    if (entry.kind() == v1::ACCESS_READ) {
      EXPECT_TRUE(pids.insert(entry.actor().pid()).second);
    }
  }
  EXPECT_EQ(pids.size(), static_cast<size_t>(kThreads * kPerThread));
}

TEST(BatchingAuditWriterTest, WindowZeroReturnsOnlyOnceTheEntryIsOnDisk) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  auto writer = BatchingAuditWriter::Start(log->get(), {});
  ASSERT_TRUE(writer.ok());
  for (size_t i = 1; i <= 5; ++i) {
    ASSERT_TRUE((*writer)->Append(AccessEvent(i)).ok());
    EXPECT_EQ(CountAccess(env.log_dir()), i);  // read back from the file, no flush in between
  }
  // Key operations may use a window-0 writer too: the caller still waits for durability.
  EXPECT_TRUE((*writer)->Append(KeyEvent(1)).ok());
}

// A batch request's entries: queued together, durable when AppendAll returns (window 0), in order,
// across more events than the queue holds; an invalid one queues none.
TEST(BatchingAuditWriterTest, AppendAllReturnsOnceEveryEventIsOnDisk) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.max_queued_events = 16;  // fewer than the batch: AppendAll meets its own backpressure
  options.max_batch_events = 8;
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  std::vector<AuditEvent> events;
  for (uint64_t i = 1; i <= 40; ++i) events.push_back(AccessEvent(i));
  ASSERT_TRUE((*writer)->AppendAll(events).ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 40u);  // read back from the file, no flush in between
  auto entries = ReadAuditEntries(env.log_dir());
  ASSERT_TRUE(entries.ok());
  std::vector<uint32_t> pids;
  for (const AuditEntry& entry : *entries) {
    if (entry.kind() == v1::ACCESS_READ) pids.push_back(entry.actor().pid());
  }
  for (size_t i = 1; i < pids.size(); ++i) EXPECT_LT(pids[i - 1], pids[i]);

  events.push_back(AuditEvent{});  // not valid: nothing of the call is queued
  EXPECT_EQ(ErrorCodeOf((*writer)->AppendAll(events)), ErrorCode::kInvalidArgument);
  ASSERT_TRUE((*writer)->Flush().ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 40u);
  EXPECT_TRUE((*writer)->AppendAll({}).ok());
}

TEST(BatchingAuditWriterTest, AppendAllReportsAFailureThatLostAnyOfItsEvents) {
  WriterOnFailingFileSystem w;
  ASSERT_NO_FATAL_FAILURE(w.Start());
  w.fs.fail_sync = true;
  std::vector<AuditEvent> events = {AccessEvent(1), AccessEvent(2), AccessEvent(3)};
  EXPECT_EQ(ErrorCodeOf(w.writer->AppendAll(events)), ErrorCode::kAuditNotDurable);
}

// What AppendAllThen's callback saw: its result, the thread it ran on, and the access entries
// in the file at that moment.
struct Called {
  absl::Status result;
  std::thread::id thread;
  size_t entries_on_disk = 0;
};

// AppendAllThen at window 0 (a request parked on the reactor): the call returns at once, and the
// callback runs once, on the writer thread, after the events are on disk; a callback may queue
// more events; more events than the queue holds do not wait for room.
TEST(BatchingAuditWriterTest, AppendAllThenCallsBackOnTheWriterOnceTheEventsAreOnDisk) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.max_queued_events = 2;
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  BatchingAuditWriter* w = writer->get();
  const std::string dir = env.log_dir();

  std::promise<Called> first;
  std::promise<Called> chained;
  std::vector<AuditEvent> events;
  for (uint64_t i = 1; i <= 5; ++i) events.push_back(AccessEvent(i));
  w->AppendAllThen(events, [&, w](absl::Status result) {
    first.set_value({result, std::this_thread::get_id(), CountAccess(dir)});
    w->AppendAllThen({AccessEvent(6)}, [&](absl::Status again) {
      chained.set_value({again, std::this_thread::get_id(), CountAccess(dir)});
    });
  });
  Called one = first.get_future().get();
  EXPECT_TRUE(one.result.ok()) << one.result;
  EXPECT_NE(one.thread, std::this_thread::get_id());
  EXPECT_EQ(one.entries_on_disk, 5u);
  Called two = chained.get_future().get();
  EXPECT_TRUE(two.result.ok()) << two.result;
  EXPECT_EQ(two.entries_on_disk, 6u);
}

// The callback learns what AppendAll would have returned: a failure that lost its events, an
// invalid event, a stopped writer; and with a window it runs at once, on the calling thread.
TEST(BatchingAuditWriterTest, AppendAllThenReportsWhatAppendAllWould) {
  WriterOnFailingFileSystem w;
  ASSERT_NO_FATAL_FAILURE(w.Start());
  w.fs.fail_sync = true;
  std::promise<absl::Status> lost;
  w.writer->AppendAllThen({AccessEvent(1), AccessEvent(2)},
                          [&](absl::Status result) { lost.set_value(result); });
  EXPECT_EQ(ErrorCodeOf(lost.get_future().get()), ErrorCode::kAuditNotDurable);
  w.fs.fail_sync = false;

  auto here = [](std::optional<Called>* out) {
    return [out](absl::Status result) { *out = Called{result, std::this_thread::get_id(), 0}; };
  };
  std::optional<Called> invalid;
  w.writer->AppendAllThen({AccessEvent(3), AuditEvent{}}, here(&invalid));
  ASSERT_TRUE(invalid.has_value());  // called before AppendAllThen returned
  EXPECT_EQ(ErrorCodeOf(invalid->result), ErrorCode::kInvalidArgument);
  EXPECT_EQ(invalid->thread, std::this_thread::get_id());

  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.crash_loss_window = std::chrono::hours(1);
  auto windowed = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(windowed.ok());
  std::optional<Called> queued;
  (*windowed)->AppendAllThen({AccessEvent(4)}, here(&queued));
  ASSERT_TRUE(queued.has_value());
  EXPECT_TRUE(queued->result.ok()) << queued->result;
  EXPECT_EQ(CountAccess(env.log_dir()), 0u);  // queued, within the window
  ASSERT_TRUE((*windowed)->Stop().ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 1u);
  std::optional<Called> stopped;
  (*windowed)->AppendAllThen({AccessEvent(5)}, here(&stopped));
  ASSERT_TRUE(stopped.has_value());
  EXPECT_EQ(ErrorCodeOf(stopped->result), ErrorCode::kAuditLogClosed);
}

TEST(BatchingAuditWriterTest, WindowDefersTheWriteUntilFlush) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.crash_loss_window = std::chrono::hours(1);  // nothing is due during the test
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  for (uint64_t i = 0; i < 3; ++i) ASSERT_TRUE((*writer)->Append(AccessEvent(i)).ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 0u);  // queued, within the loss window
  ASSERT_TRUE((*writer)->Flush().ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 3u);
}

TEST(BatchingAuditWriterTest, StopWritesWhatIsQueued) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.crash_loss_window = std::chrono::hours(1);
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*writer)->Append(AccessEvent(i)).ok());
  ASSERT_TRUE((*writer)->Stop().ok());
  EXPECT_EQ(CountAccess(env.log_dir()), 4u);
  EXPECT_EQ(ErrorCodeOf((*writer)->Append(AccessEvent(9))), ErrorCode::kAuditLogClosed);
}

TEST(BatchingAuditWriterTest, WindowRefusesKeyOperations) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.crash_loss_window = std::chrono::milliseconds(50);
  auto writer = BatchingAuditWriter::Start(log->get(), options);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(ErrorCodeOf((*writer)->Append(KeyEvent(0))), ErrorCode::kInvalidArgument);
}

TEST(BatchingAuditWriterTest, WriteFailureFailsEveryLaterAppend) {
  WriterOnFailingFileSystem w;
  ASSERT_NO_FATAL_FAILURE(w.Start());
  ASSERT_NO_FATAL_FAILURE(w.FailOneSync());
  EXPECT_FALSE(w.writer->Append(AccessEvent(2)).ok());
  EXPECT_FALSE(w.writer->Flush().ok());
  EXPECT_FALSE(w.writer->Stop().ok());
}

// Recovery (issue 20 item 6): after a failed write, appends fail until the log has reopened
// itself — due kAuditReopenInterval after the failure on the log's clock — and then go on without
// a new writer; the lost event never appears, later ones do, and the log verifies.
TEST(BatchingAuditWriterTest, AppendsGoOnOnceTheLogHasReopenedItself) {
  WriterOnFailingFileSystem w;
  ASSERT_NO_FATAL_FAILURE(w.Start());
  ASSERT_NO_FATAL_FAILURE(w.FailOneSync());
  EXPECT_FALSE(w.writer->Append(AccessEvent(2)).ok());  // not due yet
  w.env.clock.Advance(kAuditReopenInterval);
  ASSERT_TRUE(w.writer->Append(AccessEvent(3)).ok());
  ASSERT_TRUE(w.writer->Append(AccessEvent(4)).ok());
  EXPECT_EQ(w.log->stats().reopens, 1u);
  ASSERT_TRUE(w.writer->Stop().ok());
  ASSERT_TRUE(w.log->Close().ok());
  // 0, 3 and 4 — and 1, whose frame reached the file whole before its sync failed (kept, as
  // after a crash; its caller was told it was not durable); never 2, refused before queuing.
  absl::StatusOr<std::vector<AuditEntry>> entries = ReadAuditEntries(w.env.log_dir());
  ASSERT_TRUE(entries.ok()) << entries.status();
  std::vector<uint32_t> pids;
  for (const AuditEntry& entry : *entries) {
    if (entry.kind() == v1::ACCESS_READ) pids.push_back(entry.actor().pid());
  }
  EXPECT_EQ(pids, (std::vector<uint32_t>{0, 1, 3, 4}));
  VerifyOptions verify;
  verify.public_key_pem = w.env.public_key_pem;
  verify.epoch_keys = testing::TestEpochKeys();
  absl::StatusOr<VerifyReport> report = VerifyAuditLog(w.env.log_dir(), verify);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ToStatus().ok()) << report->ToStatus();
}

TEST(BatchingAuditWriterTest, InvalidOptionsAreRejected) {
  testing::TestLogEnv env;
  auto log = AuditLog::Open(env.Options());
  ASSERT_TRUE(log.ok());
  BatchingAuditWriterOptions options;
  options.max_queued_events = 0;
  EXPECT_FALSE(BatchingAuditWriter::Start(log->get(), options).ok());
  EXPECT_FALSE(BatchingAuditWriter::Start(nullptr, {}).ok());
}

}  // namespace
}  // namespace coffer::kms::audit
