// The key DB's generation (kms/keys/key_db.h; docs/key-manager.md, "Key DB generation"), on a
// real RocksDB with a software row authenticator: every write carries the next generation in
// its own batch, the value survives a reopen, a failed write never hands its value out again,
// and concurrent writers get distinct, contiguous generations.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/keys/key_db.h"
#include "kms/keys/key_db.pb.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/fixed_row_authenticator.h"

namespace coffer::kms {
namespace {

using ::coffer::kms::audit::testing::TempDir;
using ::coffer::kms::testing::FixedRowAuthenticator;

// Fails every tag while `fail` is set.
class SwitchableRowAuthenticator final : public hsm::RowAuthenticator {
 public:
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) override {
    if (fail) return MakeError(ErrorCode::kHsmDeviceError, "token unavailable");
    return fixed_.HmacRowKey(data);
  }
  std::atomic<bool> fail{false};

 private:
  FixedRowAuthenticator fixed_;
};

class KeyDbGenerationTest : public ::testing::Test {
 protected:
  std::unique_ptr<KeyDb> Open() {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &authenticator_);
    EXPECT_TRUE(db.ok()) << db.status();
    return db.ok() ? *std::move(db) : nullptr;
  }

  // One dataset-row write (any row will do).
  absl::Status WriteOne(KeyDb& db, uint64_t handle) {
    KeyDb::Batch batch(db);
    v1::DatasetRow row;
    row.set_handle(handle);
    COFFER_RETURN_IF_ERROR(batch.Put(KeyDbTable::kDatasets, DatasetRowKey(handle), row));
    return db.Write(batch);
  }

  // The generation row as stored (verified), or 0 when absent.
  uint64_t StoredGeneration(KeyDb& db) {
    v1::KeyDbGenerationRow row;
    auto found = db.Get(KeyDbTable::kMeta, kKeyDbGenerationKey, row);
    EXPECT_TRUE(found.ok()) << found.status();
    return found.ok() && *found ? row.generation() : 0;
  }

  TempDir dir_;
  SwitchableRowAuthenticator authenticator_;
};

TEST_F(KeyDbGenerationTest, EveryWriteAdvancesTheGenerationAndItSurvivesAReopen) {
  {
    std::unique_ptr<KeyDb> db = Open();
    ASSERT_NE(db, nullptr);
    EXPECT_EQ(db->generation(), 0u);  // new, never written: no row
    EXPECT_EQ(StoredGeneration(*db), 0u);
    for (uint64_t i = 1; i <= 3; ++i) {
      ASSERT_TRUE(WriteOne(*db, i).ok());
      EXPECT_EQ(db->generation(), i);
      EXPECT_EQ(StoredGeneration(*db), i);
    }
    // A batch that only deletes still counts: every change moves the generation.
    KeyDb::Batch batch(*db);
    batch.Delete(KeyDbTable::kDatasets, DatasetRowKey(1));
    ASSERT_TRUE(db->Write(batch).ok());
    EXPECT_EQ(db->generation(), 4u);
  }
  std::unique_ptr<KeyDb> db = Open();
  ASSERT_NE(db, nullptr);
  EXPECT_EQ(db->generation(), 4u);
  ASSERT_TRUE(WriteOne(*db, 9).ok());
  EXPECT_EQ(db->generation(), 5u);
}

TEST_F(KeyDbGenerationTest, TheGenerationIsInTheSameBatchAsTheRows) {
  std::unique_ptr<KeyDb> db = Open();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(WriteOne(*db, 1).ok());
  // A row whose tag fails makes Put fail and Write is never called: neither the row nor a new
  // generation reaches the disk.
  authenticator_.fail = true;
  KeyDb::Batch batch(*db);
  v1::DatasetRow row;
  row.set_handle(2);
  EXPECT_FALSE(batch.Put(KeyDbTable::kDatasets, DatasetRowKey(2), row).ok());
  authenticator_.fail = false;
  EXPECT_EQ(db->generation(), 1u);
  EXPECT_EQ(StoredGeneration(*db), 1u);

  // The generation row's own tag failing fails the whole write: the rows do not land either.
  KeyDb::Batch rows_only(*db);
  ASSERT_TRUE(rows_only.Put(KeyDbTable::kDatasets, DatasetRowKey(3), row).ok());
  authenticator_.fail = true;
  EXPECT_EQ(ErrorCodeOf(db->Write(rows_only)), ErrorCode::kHsmDeviceError);
  authenticator_.fail = false;
  v1::DatasetRow read;
  auto found = db->Get(KeyDbTable::kDatasets, DatasetRowKey(3), read);
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(*found) << "a row was written without its generation";
  EXPECT_EQ(db->generation(), 1u);

  // The failed write's generation (2) is never handed out again.
  ASSERT_TRUE(WriteOne(*db, 4).ok());
  EXPECT_EQ(db->generation(), 3u);
  EXPECT_EQ(StoredGeneration(*db), 3u);
}

TEST_F(KeyDbGenerationTest, AdvanceGenerationJumpsButNeverGoesBack) {
  std::unique_ptr<KeyDb> db = Open();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(WriteOne(*db, 1).ok());
  auto advanced = db->AdvanceGeneration(1000);
  ASSERT_TRUE(advanced.ok()) << advanced.status();
  EXPECT_EQ(*advanced, 1000u);
  EXPECT_EQ(StoredGeneration(*db), 1000u);
  advanced = db->AdvanceGeneration(5);  // lower: the next one instead
  ASSERT_TRUE(advanced.ok());
  EXPECT_EQ(*advanced, 1001u);
  ASSERT_TRUE(WriteOne(*db, 2).ok());
  EXPECT_EQ(db->generation(), 1002u);
}

TEST_F(KeyDbGenerationTest, ConcurrentWritersGetDistinctContiguousGenerations) {
  std::unique_ptr<KeyDb> db = Open();
  ASSERT_NE(db, nullptr);
  constexpr int kThreads = 8;
  constexpr int kWrites = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        if (!WriteOne(*db, static_cast<uint64_t>(t * 1000 + i)).ok()) ++failures;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(db->generation(), static_cast<uint64_t>(kThreads * kWrites));
  EXPECT_EQ(StoredGeneration(*db), static_cast<uint64_t>(kThreads * kWrites));
}

TEST_F(KeyDbGenerationTest, AnOlderCopyOfTheDirectoryHasAnOlderGeneration) {
  std::unique_ptr<KeyDb> db = Open();
  ASSERT_NE(db, nullptr);
  ASSERT_TRUE(WriteOne(*db, 1).ok());
  ASSERT_TRUE(WriteOne(*db, 2).ok());
  ASSERT_TRUE(db->CreateCheckpoint(dir_.Sub("copy")).ok());
  ASSERT_TRUE(WriteOne(*db, 3).ok());
  auto copy = KeyDb::Open(dir_.Sub("copy"), &authenticator_);
  ASSERT_TRUE(copy.ok()) << copy.status();
  EXPECT_EQ((*copy)->generation(), 2u);
  EXPECT_EQ(db->generation(), 3u);
}

}  // namespace
}  // namespace coffer::kms
