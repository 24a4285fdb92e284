// SignedRowStore on a real RocksDB with a software row authenticator: rows moved to another key
// or column family are refused, errors name the column family but never the key or the
// contents, batches are all-or-nothing, and a failed tag computation leaves a batch unchanged.
// (The byte-exact format is pinned by signed_rows_golden_test.cc.)

#include "kms/keys/signed_row_store.h"

#include <memory>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/keys/key_db.pb.h"
#include "rocksdb/db.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/fixed_row_authenticator.h"

namespace coffer::kms {
namespace {

namespace pb = ::coffer::kms::v1;
using ::coffer::kms::audit::testing::TempDir;
using ::coffer::kms::testing::FixedRowAuthenticator;

constexpr size_t kFirst = 0;
constexpr size_t kSecond = 1;
constexpr char kDatasetName[] = "row-contents-name";

class FailingRowAuthenticator final : public hsm::RowAuthenticator {
 public:
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view) override {
    return MakeError(ErrorCode::kHsmDeviceError, "token unavailable");
  }
};

class SignedRowStoreTest : public ::testing::Test {
 protected:
  std::unique_ptr<SignedRowStore> Open(hsm::RowAuthenticator& authenticator) {
    SignedRowStore::Options options;
    options.directory = dir_.Sub("rows");
    options.column_families = {"first", "second"};
    options.format = {.store_name = "test store",
                      .tag_domain = "coffer-test-row-v1",
                      .tag_binds_column_family = true};
    options.authenticator = &authenticator;
    auto store = SignedRowStore::Open(std::move(options));
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? *std::move(store) : nullptr;
  }

  // Copies the raw value at (from_family, from_key) to (to_family, to_key), bypassing the store.
  void CopyRaw(const std::string& from_family, const std::string& from_key,
               const std::string& to_family, const std::string& to_key) {
    std::vector<rocksdb::ColumnFamilyDescriptor> families = {
        {rocksdb::kDefaultColumnFamilyName, {}}, {"first", {}}, {"second", {}}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    ASSERT_TRUE(rocksdb::DB::Open({}, dir_.Sub("rows"), families, &handles, &raw).ok());
    std::unique_ptr<rocksdb::DB> db(raw);
    auto handle = [&](const std::string& name) {
      return name == "first" ? handles[1] : handles[2];
    };
    std::string value;
    ASSERT_TRUE(db->Get({}, handle(from_family), from_key, &value).ok());
    ASSERT_TRUE(db->Put({}, handle(to_family), to_key, value).ok());
    for (rocksdb::ColumnFamilyHandle* h : handles)
      ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  }

  TempDir dir_;
  FixedRowAuthenticator authenticator_;
};

pb::DatasetRow Row(uint64_t handle) {
  pb::DatasetRow row;
  row.set_handle(handle);
  row.set_name(kDatasetName);
  return row;
}

TEST_F(SignedRowStoreTest, RowsReadBackAcrossReopen) {
  {
    auto store = Open(authenticator_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put(kFirst, "a", Row(1)).ok());
    ASSERT_TRUE(store->Put(kSecond, "a", Row(2)).ok());
  }
  auto store = Open(authenticator_);
  ASSERT_NE(store, nullptr);
  pb::DatasetRow row;
  ASSERT_EQ(store->Get(kFirst, "a", row).value_or(false), true);
  EXPECT_EQ(row.handle(), 1u);
  ASSERT_EQ(store->Get(kSecond, "a", row).value_or(false), true);
  EXPECT_EQ(row.handle(), 2u);
  EXPECT_EQ(store->Get(kFirst, "absent", row).value_or(true), false);
  ASSERT_TRUE(store->Delete(kFirst, "a").ok());
  EXPECT_EQ(store->Get(kFirst, "a", row).value_or(true), false);
}

TEST_F(SignedRowStoreTest, RowMovedToAnotherKeyOrFamilyIsRefused) {
  {
    auto store = Open(authenticator_);
    ASSERT_NE(store, nullptr);
    ASSERT_TRUE(store->Put(kFirst, "secret-looking-key", Row(1)).ok());
  }
  CopyRaw("first", "secret-looking-key", "first", "other-key");
  CopyRaw("first", "secret-looking-key", "second", "secret-looking-key");
  auto store = Open(authenticator_);
  ASSERT_NE(store, nullptr);
  pb::DatasetRow row;
  ASSERT_EQ(store->Get(kFirst, "secret-looking-key", row).value_or(false), true);
  auto moved = store->Get(kFirst, "other-key", row);
  EXPECT_EQ(ErrorCodeOf(moved.status()), ErrorCode::kKeyDbRowCorrupt);
  auto crossed = store->Get(kSecond, "secret-looking-key", row);
  ASSERT_EQ(ErrorCodeOf(crossed.status()), ErrorCode::kKeyDbRowCorrupt);
  const std::string message(crossed.status().message());
  EXPECT_NE(message.find("test store"), std::string::npos) << message;
  EXPECT_NE(message.find("second"), std::string::npos) << message;
  EXPECT_EQ(message.find("secret-looking-key"), std::string::npos) << message;
  EXPECT_EQ(message.find(kDatasetName), std::string::npos) << message;
  // Scan stops at the moved row.
  absl::Status scanned =
      store->Scan(kSecond, "", [](std::string_view, std::string_view) { return absl::OkStatus(); });
  EXPECT_EQ(ErrorCodeOf(scanned), ErrorCode::kKeyDbRowCorrupt);
}

TEST_F(SignedRowStoreTest, BatchIsAppliedWhole) {
  auto store = Open(authenticator_);
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(store->Put(kFirst, "old", Row(1)).ok());
  SignedRowStore::Batch batch(*store);
  ASSERT_TRUE(batch.Put(kFirst, "p/1", Row(2)).ok());
  ASSERT_TRUE(batch.Put(kFirst, "p/2", Row(3)).ok());
  batch.Delete(kFirst, "old");
  EXPECT_EQ(batch.count(), 3u);
  pb::DatasetRow row;
  EXPECT_EQ(store->Get(kFirst, "p/1", row).value_or(true), false);  // nothing before Write
  ASSERT_TRUE(store->Write(batch).ok());
  std::vector<std::string> keys;
  ASSERT_TRUE(store
                  ->Scan(kFirst, "p/",
                         [&keys](std::string_view key, std::string_view) {
                           keys.emplace_back(key);
                           return absl::OkStatus();
                         })
                  .ok());
  EXPECT_EQ(keys, (std::vector<std::string>{"p/1", "p/2"}));
  EXPECT_EQ(store->Get(kFirst, "old", row).value_or(true), false);
}

TEST_F(SignedRowStoreTest, FailedTagLeavesBatchUnchanged) {
  FailingRowAuthenticator failing;
  auto store = Open(failing);
  ASSERT_NE(store, nullptr);
  SignedRowStore::Batch batch(*store);
  EXPECT_EQ(ErrorCodeOf(batch.Put(kFirst, "a", Row(1))), ErrorCode::kHsmDeviceError);
  EXPECT_EQ(batch.count(), 0u);
  EXPECT_EQ(ErrorCodeOf(store->Put(kFirst, "a", Row(1))), ErrorCode::kHsmDeviceError);
}

TEST_F(SignedRowStoreTest, OpenNeedsAnAuthenticator) {
  SignedRowStore::Options options;
  options.directory = dir_.Sub("rows");
  options.column_families = {"first"};
  EXPECT_EQ(ErrorCodeOf(SignedRowStore::Open(std::move(options)).status()),
            ErrorCode::kInvalidArgument);
}

}  // namespace
}  // namespace coffer::kms
