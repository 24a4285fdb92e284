// The re-encryption job SIGKILLed for real, twice, while 8 writers overwrite and delete 1,000
// hot ids: every id must end in its last acknowledged state and, once the job is resumed to
// completion, nothing may be left on an old key version.
//
// RocksDB allows one process per DB, so the writers and the job run together in a child: this
// binary re-executed (fork + exec) in child mode. Each writer reports on a pipe an intent before
// every operation and an acknowledgement after it returned OK (one message per write(), atomic
// below PIPE_BUF). The parent kills the child after the job saved some progress, drains the
// pipe, and for each id accepts exactly the last acknowledged state — or, if the child died with
// an operation on that id in flight, that operation's result. Parent and children derive the
// same keys from one seed.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "storage/record_store.h"
#include "storage/reencryption.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using testing::kDatasetA;
using testing::PatternBytes;

constexpr uint64_t kSeed = 0x5EED;
constexpr int kWriters = 8;
constexpr int kHotIds = 1000;
constexpr int kColdIds = 4000;
constexpr int kAttachments = 6;
constexpr uint64_t kAttachmentSize = 40 * 1024 + 3;  // 41 segments of 1 KiB
constexpr uint32_t kSegment = 1024;

enum class Kind : uint8_t { kIntentPut = 1, kIntentDelete, kAck, kJobProgress };

struct Message {
  uint32_t id = 0;
  Kind kind = Kind::kAck;
  uint8_t padding[3] = {};
  uint64_t value = 0;  // the put's value number
};
static_assert(sizeof(Message) == 16);

std::string HotId(uint32_t i) { return "hot-" + std::to_string(i); }
std::string ValueOf(uint64_t number) { return "v" + std::to_string(number); }

struct Env {
  // `rotated`: versions 2 of records and attachments are primary (every process after setup).
  Env(const std::string& path, bool rotated) : keys(kSeed) {
    EXPECT_TRUE(keys.CreateDataset(kDatasetA).ok());
    if (rotated) {
      EXPECT_EQ(keys.Rotate(kDatasetA, KeyPurpose::kRecords).value(), 2u);
      EXPECT_EQ(keys.Rotate(kDatasetA, KeyPurpose::kAttachments).value(), 2u);
    }
    policies.Set(kDatasetA, DatasetPolicy{});
    DataDbOptions options;
    options.memtable_budget_bytes = 8 << 20;
    auto opened = DataDb::Open(path, options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    db = std::move(*opened);
    records = std::make_unique<RecordStore>(db.get(), &keys, &policies, &clock);
    attachments = std::make_unique<AttachmentStore>(db.get(), &keys, &policies, &clock, kSegment);
  }
  ~Env() {
    records.reset();
    attachments.reset();
  }
  testing::FakeKeyProvider keys;
  testing::FakeDatasetPolicies policies;
  testing::FakeClock clock;
  std::unique_ptr<DataDb> db;
  std::unique_ptr<RecordStore> records;
  std::unique_ptr<AttachmentStore> attachments;
};

ReencryptionOptions JobOptions(double rate) {
  ReencryptionOptions options;
  options.batch_size = 100;
  options.max_items_per_second = rate;
  return options;
}

void Send(int fd, const Message& message) {
  if (write(fd, &message, sizeof(message)) != static_cast<ssize_t>(sizeof(message))) {
    std::_Exit(4);
  }
}

// Child mode: cleans up orphaned uploads (as the daemon does at start), then runs the writers
// and a rate-limited re-encryption job until it is killed.
[[noreturn]] void RunChild(const std::string& dir, uint64_t generation, int fd) {
  Env env(dir, /*rotated=*/true);
  if (!env.attachments->CleanupOrphanedUploads().ok()) std::_Exit(2);
  std::vector<std::thread> writers;
  writers.reserve(kWriters);
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&env, w, generation, fd] {
      std::mt19937_64 random(generation * 100 + static_cast<uint64_t>(w));
      for (uint64_t op = 0;; ++op) {
        // Writer w owns the ids i with i % kWriters == w.
        auto i = static_cast<uint32_t>((random() % (kHotIds / kWriters)) * kWriters + w);
        uint64_t number = (generation << 48) | (static_cast<uint64_t>(w) << 40) | op;
        Message message;
        message.id = i;
        message.value = number;
        if (random() % 4 == 0) {
          message.kind = Kind::kIntentDelete;
          Send(fd, message);
          absl::Status deleted = env.records->Delete(kDatasetA, HotId(i));
          if (!deleted.ok() && ErrorCodeOf(deleted) != ErrorCode::kRecordNotFound) std::_Exit(5);
        } else {
          message.kind = Kind::kIntentPut;
          Send(fd, message);
          if (!env.records->Put(kDatasetA, HotId(i), ValueOf(number)).ok()) std::_Exit(6);
        }
        message.kind = Kind::kAck;
        Send(fd, message);
      }
    });
  }
  // Slow enough that the job is still running when the parent kills the child.
  ReencryptionJob job(env.db.get(), &env.keys, env.attachments.get(), kDatasetA,
                      JobOptions(/*rate=*/1500));
  auto result = job.Run(nullptr, [fd](const ReencryptionProgress& progress) {
    Message message;
    message.kind = Kind::kJobProgress;
    message.value = progress.done;
    Send(fd, message);
  });
  std::_Exit(result.ok() ? 7 : 8);  // either way the parent sees no SIGKILL and fails
}

std::string g_self;

// What the parent knows about one hot id.
struct IdState {
  std::optional<std::string> acknowledged;  // nullopt: absent
  bool in_flight = false;
  std::optional<std::string> in_flight_result;
};

// Runs a child of `generation`, SIGKILLs it once the job reported `progress_reports` batches and
// the writers acknowledged at least `min_acks` operations, and applies every message to `ids`.
void RunAndKillChild(const std::string& dir, uint64_t generation, int progress_reports,
                     int min_acks, std::vector<IdState>* ids) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    std::string fd = std::to_string(fds[1]);
    std::string gen = std::to_string(generation);
    execl(g_self.c_str(), g_self.c_str(), "--reencrypt-child", dir.c_str(), gen.c_str(), fd.c_str(),
          static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  close(fds[1]);
  int reports = 0;
  int acks = 0;
  bool killed = false;
  Message message;
  while (true) {
    size_t got = 0;
    while (got < sizeof(message)) {
      ssize_t n = read(fds[0], reinterpret_cast<char*>(&message) + got, sizeof(message) - got);
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    if (got == 0) break;  // EOF: the child is gone
    ASSERT_EQ(got, sizeof(message));
    if (message.kind == Kind::kJobProgress) {
      ++reports;
    } else {
      ASSERT_LT(message.id, static_cast<uint32_t>(kHotIds));
      IdState& id = (*ids)[message.id];
      if (message.kind == Kind::kAck) {
        ASSERT_TRUE(id.in_flight);
        id.acknowledged = id.in_flight_result;
        id.in_flight = false;
        ++acks;
      } else {
        ASSERT_FALSE(id.in_flight) << "one writer per id, one operation at a time";
        id.in_flight = true;
        id.in_flight_result = message.kind == Kind::kIntentPut
                                  ? std::optional<std::string>(ValueOf(message.value))
                                  : std::nullopt;
      }
    }
    if (!killed && reports >= progress_reports && acks >= min_acks) {
      ASSERT_EQ(kill(pid, SIGKILL), 0);
      killed = true;
    }
  }
  close(fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(killed) << "the child ended before it was killed, status " << status;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;
}

// Every hot id is in its last acknowledged state, or in the result of the operation the child
// was killed in.
void ExpectAcknowledgedStates(RecordStore* records, std::vector<IdState>* ids) {
  for (uint32_t i = 0; i < kHotIds; ++i) {
    IdState& id = (*ids)[i];
    auto got = records->Get(kDatasetA, HotId(i));
    std::optional<std::string> actual;
    if (got.ok()) {
      actual = *got;
    } else {
      ASSERT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound) << i << ": " << got.status();
    }
    if (id.in_flight && actual == id.in_flight_result) {
      id.acknowledged = actual;  // it reached the WAL: that is now the state to keep
    } else {
      EXPECT_EQ(actual, id.acknowledged) << "hot id " << i;
    }
    id.in_flight = false;
  }
}

absl::Status UploadAttachment(AttachmentStore* store, int i) {
  COFFER_ASSIGN_OR_RETURN(auto upload,
                          store->BeginUpload(kDatasetA, "att-" + std::to_string(i), "text/plain"));
  COFFER_RETURN_IF_ERROR(upload->Append(PatternBytes(i, 0, kAttachmentSize)));
  return upload->Commit();
}

TEST(ReencryptionCrashTest, KilledTwiceWhileWritersRunThenResumedToCompletion) {
  testing::TempDir dir;
  const std::string path = dir.Sub("data");
  std::vector<IdState> ids(kHotIds);
  {
    Env env(path, /*rotated=*/false);
    for (uint32_t i = 0; i < kHotIds; ++i) {
      ASSERT_TRUE(env.records->Put(kDatasetA, HotId(i), "initial").ok());
      ids[i].acknowledged = "initial";
    }
    for (int i = 0; i < kColdIds; ++i) {
      ASSERT_TRUE(env.records->Put(kDatasetA, "cold-" + std::to_string(i), "cold").ok());
    }
    for (int i = 0; i < kAttachments; ++i) {
      ASSERT_TRUE(UploadAttachment(env.attachments.get(), i).ok());
    }
    ASSERT_TRUE(env.attachments->Delete(kDatasetA, "att-0").ok());
    ASSERT_TRUE(env.records->Delete(kDatasetA, "cold-0").ok());
  }

  uint64_t done_before = 0;
  for (uint64_t generation = 1; generation <= 2; ++generation) {
    RunAndKillChild(path, generation, /*progress_reports=*/3, /*min_acks=*/2000, &ids);
    if (HasFatalFailure()) return;
    Env env(path, /*rotated=*/true);
    ExpectAcknowledgedStates(env.records.get(), &ids);
    ReencryptionJob job(env.db.get(), &env.keys, env.attachments.get(), kDatasetA);
    auto saved = job.SavedProgress();
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_GT(saved->done, done_before) << "generation " << generation << " saved no progress";
    done_before = saved->done;
    auto census = CountKeyVersions(env.db.get(), kDatasetA);
    ASSERT_TRUE(census.ok());
    EXPECT_GT(census->records.count(1), 0u) << "the job finished before it was killed";
  }

  Env env(path, /*rotated=*/true);
  ASSERT_TRUE(env.attachments->CleanupOrphanedUploads().ok());
  ReencryptionJob job(env.db.get(), &env.keys, env.attachments.get(), kDatasetA, JobOptions(0));
  auto result = job.Run();
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_TRUE(result->finished);
  auto census = CountKeyVersions(env.db.get(), kDatasetA);
  ASSERT_TRUE(census.ok());
  EXPECT_EQ(census->records.count(1), 0u) << "records left on version 1";
  EXPECT_EQ(census->attachments, (std::map<uint32_t, uint64_t>{{2, kAttachments}}));
  EXPECT_EQ(testing::CountKeys(env.db.get(), internal::Cf::kUploads), 0u);
  EXPECT_EQ(testing::CountKeys(env.db.get(), internal::Cf::kAttachmentSegments),
            static_cast<size_t>(kAttachments) * 41);
  ExpectAcknowledgedStates(env.records.get(), &ids);
  EXPECT_EQ(env.records->Get(kDatasetA, "cold-1234").value(), "cold");
  ASSERT_TRUE(env.records->Restore(kDatasetA, "cold-0").ok());
  EXPECT_EQ(env.records->Get(kDatasetA, "cold-0").value(), "cold");
  ASSERT_TRUE(env.attachments->Restore(kDatasetA, "att-0").ok());
  for (int i = 0; i < kAttachments; ++i) {
    auto reader = env.attachments->Open(kDatasetA, "att-" + std::to_string(i));
    ASSERT_TRUE(reader.ok()) << reader.status();
    EXPECT_EQ((*reader)->info().key_version, 2u);
    std::string out;
    ASSERT_TRUE((*reader)->Read(0, kAttachmentSize, &out).ok());
    EXPECT_TRUE(out == PatternBytes(i, 0, kAttachmentSize)) << i;
  }
}

}  // namespace
}  // namespace coffer::storage

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--reencrypt-child") == 0) {
    coffer::storage::RunChild(argv[2], std::strtoull(argv[3], nullptr, 10),
                              static_cast<int>(std::strtol(argv[4], nullptr, 10)));
  }
  coffer::storage::g_self = coffer::storage::testing::SelfExecutablePath();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
