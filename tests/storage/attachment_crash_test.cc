// SIGKILL in the middle of an upload or a replace: the old version must stay intact, nothing
// partial may become visible, and one cleanup pass must bring the segment count back.
//
// The child is this binary re-executed (fork + exec) in child mode, so it starts with a clean
// RocksDB thread pool; parent and child derive the same keys from one seed.

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "storage/attachment_store.h"
#include "tests/storage/storage_test_util.h"

namespace coffer::storage {
namespace {

using internal::Cf;
using testing::kDatasetA;
using testing::PatternBytes;

constexpr uint64_t kSeed = 0xC0FFEE;
constexpr uint64_t kSegment = 1024;
constexpr uint64_t kOldSize = 7 * kSegment + 5;  // 8 segments

struct Env {
  explicit Env(const std::string& path) : keys(kSeed) {
    EXPECT_TRUE(keys.CreateDataset(kDatasetA).ok());
    policies.Set(kDatasetA, DatasetPolicy{});
    DataDbOptions options;
    options.memtable_budget_bytes = 8 << 20;
    auto opened = DataDb::Open(path, options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    db = std::move(*opened);
    store = std::make_unique<AttachmentStore>(db.get(), &keys, &policies, &clock,
                                              static_cast<uint32_t>(kSegment));
  }
  testing::FakeKeyProvider keys;
  testing::FakeDatasetPolicies policies;
  testing::FakeClock clock;
  std::unique_ptr<DataDb> db;
  std::unique_ptr<AttachmentStore> store;
};

// Child mode: starts uploading `name`, reports readiness on `ready_fd` after some segments are
// written, and keeps writing until it is killed.
[[noreturn]] void RunChild(const std::string& dir, const std::string& name, int ready_fd) {
  Env env(dir);
  auto upload = env.store->BeginUpload(kDatasetA, name, "text/plain");
  if (!upload.ok()) std::_Exit(2);
  for (uint64_t i = 0;; ++i) {
    if (!(*upload)->Append(PatternBytes(99, i * kSegment, kSegment)).ok()) std::_Exit(3);
    if (i == 20) {
      char byte = 'r';
      if (write(ready_fd, &byte, 1) != 1) std::_Exit(4);
    }
    if (i > 100000) pause();  // killed long before
  }
}

std::string g_self;

// Runs a child uploading `name` into `dir` and SIGKILLs it mid-upload.
void KillMidUpload(const std::string& dir, const std::string& name) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    close(fds[0]);
    std::string fd = std::to_string(fds[1]);
    execl(g_self.c_str(), g_self.c_str(), "--crash-child", dir.c_str(), name.c_str(), fd.c_str(),
          static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  close(fds[1]);
  char byte = 0;
  ASSERT_EQ(read(fds[0], &byte, 1), 1) << "the child died before it was ready";
  close(fds[0]);
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

absl::Status UploadOld(AttachmentStore* store) {
  COFFER_ASSIGN_OR_RETURN(auto upload, store->BeginUpload(kDatasetA, "doc", "application/pdf"));
  COFFER_RETURN_IF_ERROR(upload->Append(PatternBytes(1, 0, kOldSize)));
  return upload->Commit();
}

void ExpectOldIntact(AttachmentStore* store) {
  auto reader = store->Open(kDatasetA, "doc");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().content_type, "application/pdf");
  std::string out;
  ASSERT_TRUE((*reader)->Read(0, kOldSize, &out).ok());
  EXPECT_EQ(out, PatternBytes(1, 0, kOldSize));
}

class AttachmentCrashTest : public ::testing::TestWithParam<const char*> {};

TEST_P(AttachmentCrashTest, SigkillLeavesTheOldVersionAndCleanupRemovesTheRest) {
  testing::TempDir dir;
  std::string path = dir.Sub("data");
  size_t baseline = 0;
  {
    Env env(path);
    ASSERT_TRUE(UploadOld(env.store.get()).ok());
    baseline = testing::CountKeys(env.db.get(), Cf::kAttachmentSegments);
    ASSERT_EQ(baseline, 8u);
  }
  const std::string name = GetParam();  // "doc" replaces; "new" creates
  KillMidUpload(path, name);

  Env env(path);
  ExpectOldIntact(env.store.get());
  if (name != "doc") {
    EXPECT_EQ(ErrorCodeOf(env.store->Open(kDatasetA, name).status()),
              ErrorCode::kAttachmentNotFound);
  }
  EXPECT_EQ(testing::CountKeys(env.db.get(), Cf::kUploads), 1u);
  // At least the 20 segments written before the child reported ready.
  EXPECT_GE(testing::CountKeys(env.db.get(), Cf::kAttachmentSegments), baseline + 20);

  auto removed = env.store->CleanupOrphanedUploads();
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 1u);
  EXPECT_EQ(testing::CountKeys(env.db.get(), Cf::kAttachmentSegments), baseline);
  EXPECT_EQ(testing::CountKeys(env.db.get(), Cf::kUploads), 0u);
  ExpectOldIntact(env.store.get());
  EXPECT_EQ(*env.store->CleanupOrphanedUploads(), 0u);
}

INSTANTIATE_TEST_SUITE_P(MidUploadAndMidReplace, AttachmentCrashTest,
                         ::testing::Values("new", "doc"));

}  // namespace
}  // namespace coffer::storage

int main(int argc, char** argv) {
  if (argc == 5 && std::strcmp(argv[1], "--crash-child") == 0) {
    coffer::storage::RunChild(argv[2], argv[3],
                              static_cast<int>(std::strtol(argv[4], nullptr, 10)));
  }
  coffer::storage::g_self = coffer::storage::testing::SelfExecutablePath();
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
