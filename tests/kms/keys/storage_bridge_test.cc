// The key manager and the data DB wired together, as the daemon will: real SoftHSM2, real key DB,
// audit log and data DB. Retirement counts come from the store itself, and the store's retention
// rules come from the key manager's authenticated policies.

#include "kms/keys/storage_bridge.h"

#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/signer.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/deletion_receipts.h"
#include "kms/keys/hsm_adapters.h"
#include "storage/attachment_store.h"
#include "storage/dataset_erasure.h"
#include "storage/record_store.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"
#include "tests/hsm/softhsm_token.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::kms {
namespace {

using storage::KeyPurpose;
using testing::TestAdmin;
constexpr auto kDay = std::chrono::hours(24);

// The store's counter, with a hook that runs when a retirement reaches its barrier (before
// waiting for the stripe holders).
class HookedCounter final : public ProtectedDataCounter {
 public:
  explicit HookedCounter(StoreDataCounter* counter) : counter_(counter) {}
  absl::StatusOr<uint64_t> CountProtectedBy(uint64_t handle, KeyPurpose purpose,
                                            uint32_t version) override {
    return counter_->CountProtectedBy(handle, purpose, version);
  }
  void AwaitWritesUnderWay() override {
    if (on_barrier) on_barrier();
    counter_->AwaitWritesUnderWay();
  }
  absl::StatusOr<std::optional<int64_t>> NewestItemWrite(uint64_t handle) override {
    return counter_->NewestItemWrite(handle);
  }
  std::function<void()> on_barrier;

 private:
  StoreDataCounter* counter_;
};

// One pause of a thread at a chosen point: the paused thread announces it got there and waits
// to be let go.
class Pause {
 public:
  void Here() {
    reached_.set_value();
    release_.get_future().wait();
  }
  void AwaitReached() { reached_.get_future().wait(); }
  void Release() { release_.set_value(); }

 private:
  std::promise<void> reached_;
  std::promise<void> release_;
};

// The key manager as a store's key provider, pausing once at an armed point of a records write:
// after the seal (PrimaryKey for an encryption, before the stripes) or in the check under the
// stripes (AcceptsWrites, after the answer).
class PausingKeys final : public storage::KeyProvider {
 public:
  explicit PausingKeys(KeyManager* keys) : keys_(keys) {}
  Pause* after_seal = nullptr;
  Pause* in_check = nullptr;

  absl::StatusOr<std::shared_ptr<const storage::DataKey>> PrimaryKey(
      uint64_t handle, KeyPurpose purpose, uint64_t encryptions) override {
    auto key = keys_->PrimaryKey(handle, purpose, encryptions);
    if (purpose == KeyPurpose::kRecords && encryptions > 0) Take(&after_seal);
    return key;
  }
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyForVersion(uint64_t handle,
                                                                        KeyPurpose purpose,
                                                                        uint32_t version) override {
    return keys_->KeyForVersion(handle, purpose, version);
  }
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t handle, KeyPurpose purpose) override {
    return keys_->LiveVersions(handle, purpose);
  }
  absl::StatusOr<bool> AcceptsWrites(uint64_t handle, KeyPurpose purpose,
                                     uint32_t version) override {
    auto accepted = keys_->AcceptsWrites(handle, purpose, version);
    if (purpose == KeyPurpose::kRecords) Take(&in_check);
    return accepted;
  }

 private:
  static void Take(Pause** armed) {
    Pause* pause = std::exchange(*armed, nullptr);
    if (pause != nullptr) pause->Here();
  }
  KeyManager* keys_;
};

class StorageBridgeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("bridge-test");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  void SetUp() override {
    audit::AuditLogOptions audit_options = suite_.AuditOptions(dir_.Sub("audit"), &clock_);
    auto log = audit::AuditLog::Open(std::move(audit_options));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);

    auto db = storage::DataDb::Open(dir_.Sub("data"), storage::DataDbOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    counter_ = std::make_unique<StoreDataCounter>(db_.get());
    hooked_ = std::make_unique<HookedCounter>(counter_.get());
    OpenManager();
  }

  // (Re)opens the key manager and the stores over it (the same key DB: a restart).
  void OpenManager() {
    attachments_.reset();
    records_.reset();
    policies_.reset();
    manager_.reset();
    KeyManagerOptions options;
    options.key_db_directory = dir_.Sub("keydb");
    options.modules = {{"softhsm", &suite_.client->wrapping_keys()}};
    options.default_module = "softhsm";
    options.row_authenticator = &suite_.client->row_authenticator();
    options.signer = &suite_.client->signer();
    options.audit_log = log_.get();
    options.clock = &clock_;
    options.data_counter = hooked_.get();
    auto manager = KeyManager::Open(std::move(options));
    ASSERT_TRUE(manager.ok()) << manager.status();
    manager_ = *std::move(manager);
    counter_->set_key_provider(manager_.get());

    policies_ = std::make_unique<KeyManagerPolicySource>(manager_.get());
    records_ =
        std::make_unique<storage::RecordStore>(db_.get(), manager_.get(), policies_.get(), &clock_);
    attachments_ = std::make_unique<storage::AttachmentStore>(db_.get(), manager_.get(),
                                                              policies_.get(), &clock_);
  }

  void TearDown() override {
    attachments_.reset();
    records_.reset();
    policies_.reset();
    manager_.reset();
    hooked_.reset();
    counter_.reset();
    db_.reset();
    if (log_) log_->Close().IgnoreError();
  }

  // Retires `purpose` below `min_version` on another thread while the put on `writer` is paused
  // at `in_check` (past its AcceptsWrites check, holding its stripes). Once the retirement has
  // reached its barrier, runs `at_barrier` and lets the put go; returns the retirement's result
  // once both threads ended.
  absl::Status RetireWhileAWriteIsUnderWay(uint64_t handle, KeyPurpose purpose,
                                           uint32_t min_version, Pause* in_check,
                                           std::thread* writer,
                                           const std::function<void()>& at_barrier = {}) {
    Pause barrier;
    hooked_->on_barrier = [&] { barrier.Here(); };
    absl::Status retired;
    std::thread retirement(
        [&] { retired = manager_->RetireBelow(handle, purpose, min_version, TestAdmin()); });
    barrier.AwaitReached();
    if (at_barrier) at_barrier();
    barrier.Release();
    in_check->Release();
    writer->join();
    retirement.join();
    hooked_->on_barrier = nullptr;
    return retired;
  }

  uint64_t Create(std::string_view name) {
    auto handle = manager_->CreateDataset(name, std::nullopt, TestAdmin());
    EXPECT_TRUE(handle.ok()) << handle.status();
    return handle.value_or(0);
  }

  static inline testing::SuiteToken suite_;

  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::unique_ptr<audit::AuditLog> log_;
  std::unique_ptr<storage::DataDb> db_;
  std::unique_ptr<StoreDataCounter> counter_;
  std::unique_ptr<HookedCounter> hooked_;
  std::unique_ptr<KeyManager> manager_;
  std::unique_ptr<KeyManagerPolicySource> policies_;
  std::unique_ptr<storage::RecordStore> records_;
  std::unique_ptr<storage::AttachmentStore> attachments_;
};

TEST_F(StorageBridgeTest, RetirementIsRefusedUntilTheStoreHoldsNothingUnderTheVersion) {
  uint64_t handle = Create("crm/tickets");
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(
        records_->Put(handle, "t-" + std::to_string(i), "v1 body " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(records_->Delete(handle, "t-7").ok());  // binned data counts too
  auto v2 = manager_->Rotate(handle, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  ASSERT_TRUE(records_->Put(handle, "t-new", "v2 body").ok());

  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kRecords, 1), 50u);
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kRecords, *v2), 1u);
  absl::Status refused = manager_->RetireBelow(handle, KeyPurpose::kRecords, *v2, TestAdmin());
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kKeyVersionInUse) << refused;

  storage::ReencryptionJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  auto done = job.Run();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->finished);
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kRecords, 1), 0u);

  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kRecords, *v2, TestAdmin()).ok());
  EXPECT_EQ(ErrorCodeOf(manager_->KeyForVersion(handle, KeyPurpose::kRecords, 1).status()),
            ErrorCode::kKeyVersionRetired);
  for (int i = 0; i < 50; ++i) {
    if (i == 7) continue;
    auto got = records_->Get(handle, "t-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "v1 body " + std::to_string(i));
  }
  ASSERT_TRUE(records_->Restore(handle, "t-7").ok());
  EXPECT_EQ(*records_->Get(handle, "t-7"), "v1 body 7");
}

// docs/daemon.md, "Retirement and writers": a put sealed under version 1 that stalls across a
// rotation, a full re-encryption and the retirement of version 1 is sealed again under the
// primary, not written under the retired version.
TEST_F(StorageBridgeTest, APutSealedUnderAVersionRetiredBeforeItsWriteIsSealedAgain) {
  uint64_t handle = Create("crm/race-seal");
  ASSERT_TRUE(records_->Put(handle, "t-0", "old body").ok());
  PausingKeys keys(manager_.get());
  storage::RecordStore stalled(db_.get(), &keys, policies_.get(), &clock_);
  Pause after_seal;
  keys.after_seal = &after_seal;
  absl::Status put;
  std::thread writer([&] { put = stalled.Put(handle, "late", "late body"); });
  after_seal.AwaitReached();

  auto v2 = manager_->Rotate(handle, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  storage::ReencryptionJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  auto done = job.Run();
  ASSERT_TRUE(done.ok()) << done.status();
  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kRecords, *v2, TestAdmin()).ok());
  EXPECT_FALSE(*manager_->AcceptsWrites(handle, KeyPurpose::kRecords, 1));

  after_seal.Release();
  writer.join();
  ASSERT_TRUE(put.ok()) << put;
  auto got = records_->Get(handle, "late");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "late body");
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kRecords, *v2), 2u);
}

// A put that passed its check under the stripes before the retirement began holds them until it
// has written: the retirement's barrier waits for it, and its final count sees the write.
TEST_F(StorageBridgeTest, ARetirementWaitsForAWriteUnderWayAndCountsIt) {
  uint64_t handle = Create("crm/race-barrier");
  PausingKeys keys(manager_.get());
  storage::RecordStore stalled(db_.get(), &keys, policies_.get(), &clock_);
  Pause after_seal;
  Pause in_check;
  keys.after_seal = &after_seal;
  absl::Status put;
  std::thread writer([&] { put = stalled.Put(handle, "late", "late body"); });
  after_seal.AwaitReached();  // sealed under version 1
  auto v2 = manager_->Rotate(handle, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  storage::ReencryptionJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  ASSERT_TRUE(job.Run().ok());  // nothing stored yet: finished
  keys.in_check = &in_check;
  after_seal.Release();
  in_check.AwaitReached();  // version 1 still accepted; the put holds its stripes

  absl::Status retired =
      RetireWhileAWriteIsUnderWay(handle, KeyPurpose::kRecords, *v2, &in_check, &writer, [&] {
        // Writes under version 1 are turned away from here on; the one under way is let go.
        EXPECT_FALSE(*manager_->AcceptsWrites(handle, KeyPurpose::kRecords, 1));
      });
  ASSERT_TRUE(put.ok()) << put;
  EXPECT_EQ(ErrorCodeOf(retired), ErrorCode::kKeyVersionInUse) << retired;
  EXPECT_TRUE(*manager_->AcceptsWrites(handle, KeyPurpose::kRecords, 1));  // the mark is lifted
  EXPECT_EQ(*records_->Get(handle, "late"), "late body");

  ASSERT_TRUE(job.Run().ok());
  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kRecords, *v2, TestAdmin()).ok());
  EXPECT_EQ(*records_->Get(handle, "late"), "late body");
}

// The same for a lookup version: the put hashed the id under lookup version 1 and holds its
// stripes when the retirement of version 1 begins.
TEST_F(StorageBridgeTest, ALookupRetirementWaitsForAWriteUnderWayAndCountsIt) {
  uint64_t handle = Create("crm/race-lookup");
  PausingKeys keys(manager_.get());
  storage::RecordStore stalled(db_.get(), &keys, policies_.get(), &clock_);
  Pause in_check;
  keys.in_check = &in_check;
  absl::Status put;
  std::thread writer([&] { put = stalled.Put(handle, "late", "late body"); });
  in_check.AwaitReached();
  auto v2 = manager_->Rotate(handle, KeyPurpose::kLookup, RotationCause::kReindex, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  storage::ReindexJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  ASSERT_TRUE(job.Run().ok());  // nothing stored yet: finished

  absl::Status retired =
      RetireWhileAWriteIsUnderWay(handle, KeyPurpose::kLookup, *v2, &in_check, &writer);
  ASSERT_TRUE(put.ok()) << put;
  EXPECT_EQ(ErrorCodeOf(retired), ErrorCode::kKeyVersionInUse) << retired;
  EXPECT_EQ(*records_->Get(handle, "late"), "late body");

  ASSERT_TRUE(job.Run().ok());
  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kLookup, *v2, TestAdmin()).ok());
  EXPECT_EQ(*records_->Get(handle, "late"), "late body");
}

// An upload begun under attachments version 1 cannot commit once version 1 is retired: the
// commit fails and leaves nothing behind, instead of a pointer no key opens.
TEST_F(StorageBridgeTest, AnUploadBegunUnderAVersionRetiredBeforeItsCommitFails) {
  uint64_t handle = Create("crm/race-upload");
  auto upload = attachments_->BeginUpload(handle, "scan", "application/pdf");
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append("pdf bytes").ok());
  auto v2 = manager_->Rotate(handle, KeyPurpose::kAttachments, RotationCause::kManual, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  storage::ReencryptionJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  ASSERT_TRUE(job.Run().ok());
  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kAttachments, *v2, TestAdmin()).ok());

  absl::Status committed = (*upload)->Commit();
  EXPECT_EQ(ErrorCodeOf(committed), ErrorCode::kFailedPrecondition) << committed;
  EXPECT_NE(committed.message().find("upload again"), std::string_view::npos) << committed;
  EXPECT_EQ(ErrorCodeOf(attachments_->Metadata(handle, "scan").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kAttachments, 1), 0u);
}

TEST_F(StorageBridgeTest, PseudonymVersionsAndLookupWithoutKeysAreNotCountedSoNotRetired) {
  uint64_t handle = Create("crm/contacts");
  EXPECT_EQ(ErrorCodeOf(counter_->CountProtectedBy(handle, KeyPurpose::kPseudonym, 1).status()),
            ErrorCode::kFailedPrecondition);
  StoreDataCounter without_keys(db_.get());
  EXPECT_EQ(ErrorCodeOf(without_keys.CountProtectedBy(handle, KeyPurpose::kLookup, 1).status()),
            ErrorCode::kFailedPrecondition);
}

TEST_F(StorageBridgeTest, LookupRetirementIsRefusedUntilTheReindexMovedEveryItem) {
  uint64_t handle = Create("crm/lookup");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(records_->Put(handle, "c-" + std::to_string(i), "body " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(records_->Delete(handle, "c-3").ok());  // binned items count too
  {
    auto upload = attachments_->BeginUpload(handle, "photo", "image/png");
    ASSERT_TRUE(upload.ok());
    ASSERT_TRUE((*upload)->Append("png bytes").ok());
    ASSERT_TRUE((*upload)->Commit().ok());
  }
  auto v2 = manager_->Rotate(handle, KeyPurpose::kLookup, RotationCause::kReindex, TestAdmin());
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_EQ(*manager_->LiveVersions(handle, KeyPurpose::kLookup), (std::vector<uint32_t>{2, 1}));
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kLookup, 1), 21u);
  absl::Status refused = manager_->RetireBelow(handle, KeyPurpose::kLookup, 2, TestAdmin());
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kKeyVersionInUse) << refused;
  EXPECT_NE(refused.message().find("re-index"), std::string_view::npos) << refused;
  // Reads go on under version 1 meanwhile, also after a restart of the key manager.
  OpenManager();
  EXPECT_EQ(*records_->Get(handle, "c-0"), "body 0");

  storage::ReindexJob job(db_.get(), manager_.get(), attachments_.get(), handle);
  auto done = job.Run();
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_TRUE(done->finished);
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kLookup, 1), 0u);
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kLookup, 2), 21u);

  ASSERT_TRUE(manager_->RetireBelow(handle, KeyPurpose::kLookup, 2, TestAdmin()).ok());
  EXPECT_EQ(*manager_->LiveVersions(handle, KeyPurpose::kLookup), (std::vector<uint32_t>{2}));
  OpenManager();
  for (int i = 0; i < 20; ++i) {
    if (i == 3) continue;
    auto got = records_->Get(handle, "c-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "body " + std::to_string(i));
  }
  ASSERT_TRUE(records_->Restore(handle, "c-3").ok());
  EXPECT_EQ(*records_->Get(handle, "c-3"), "body 3");
  auto photo = attachments_->Metadata(handle, "photo");
  ASSERT_TRUE(photo.ok()) << photo.status();
  EXPECT_EQ(photo->size, 9u);
}

TEST_F(StorageBridgeTest, StorageEnforcesTheKeyManagersPolicies) {
  uint64_t handle = Create("crm/messages");
  auto info = manager_->DescribeDataset(handle);
  ASSERT_TRUE(info.ok());
  DatasetPolicy policy = info->policy;
  policy.bin_days = 7;
  policy.minimum_retention = std::chrono::seconds(3 * kDay);
  ASSERT_TRUE(manager_->SetPolicy(handle, policy, TestAdmin()).ok());

  auto seen = policies_->PolicyFor(handle);
  ASSERT_TRUE(seen.ok()) << seen.status();
  EXPECT_EQ(seen->recycle_bin_period, std::chrono::seconds(7 * kDay));
  EXPECT_EQ(seen->min_retention, std::chrono::seconds(3 * kDay));
  EXPECT_FALSE(seen->max_age.has_value());
  EXPECT_FALSE(seen->legal_hold);

  // The compliance lock the key manager holds is what storage obeys.
  ASSERT_TRUE(records_->Put(handle, "m-1", "hello").ok());
  EXPECT_EQ(ErrorCodeOf(records_->Delete(handle, "m-1")), ErrorCode::kComplianceLocked);
  EXPECT_EQ(ErrorCodeOf(records_->Put(handle, "m-1", "changed")), ErrorCode::kComplianceLocked);
  EXPECT_EQ(*records_->Get(handle, "m-1"), "hello");
  // Nor is the dataset destroyed while the record is locked (the data DB's newest write).
  ASSERT_TRUE(manager_->Disable(handle, TestAdmin()).ok());
  absl::Status destroy = manager_->ScheduleDestruction(handle, TestAdmin());
  EXPECT_EQ(ErrorCodeOf(destroy), ErrorCode::kComplianceLocked) << destroy;
  ASSERT_TRUE(manager_->Enable(handle, TestAdmin()).ok());
  clock_.Advance(std::chrono::seconds(3 * kDay));
  EXPECT_TRUE(records_->Delete(handle, "m-1").ok());

  ASSERT_TRUE(manager_->SetLegalHold(handle, true, TestAdmin()).ok());
  EXPECT_TRUE(policies_->PolicyFor(handle)->legal_hold);
  EXPECT_EQ(ErrorCodeOf(policies_->PolicyFor(42424242).status()), ErrorCode::kDatasetNotFound);
}

TEST_F(StorageBridgeTest, DestroyedDatasetsAreUnreadableThroughTheStore) {
  uint64_t doomed = Create("crm/account-17");
  uint64_t kept = Create("crm/account-18");
  ASSERT_TRUE(records_->Put(doomed, "c-1", "customer record").ok());
  ASSERT_TRUE(records_->Put(kept, "c-1", "other customer").ok());

  ASSERT_TRUE(manager_->Disable(doomed, TestAdmin()).ok());
  EXPECT_NE(ErrorCodeOf(records_->Get(doomed, "c-1").status()), ErrorCode::kOk);
  ASSERT_TRUE(manager_->ScheduleDestruction(doomed, TestAdmin()).ok());
  clock_.Advance(std::chrono::seconds(31 * kDay));
  auto work = manager_->RunDueWork();
  ASSERT_TRUE(work.ok()) << work.status();

  EXPECT_EQ(ErrorCodeOf(policies_->PolicyFor(doomed).status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(ErrorCodeOf(records_->Get(doomed, "c-1").status()), ErrorCode::kKeyDestroyed);
  EXPECT_EQ(*records_->Get(kept, "c-1"), "other customer");
}

// Destroys `handle` (scheduled as admin 1, approved by admin 2 under request 7) on the clock.
void DestroyApproved(KeyManager& manager, audit::testing::FakeClock& clock, uint64_t handle) {
  ASSERT_TRUE(manager.Disable(handle, TestAdmin(1)).ok());
  AdminApproval approval{TestAdmin(2), 7, 42};
  ASSERT_TRUE(manager.ScheduleDestruction(handle, TestAdmin(1), approval).ok());
  clock.Advance(std::chrono::seconds(31 * kDay));
  auto work = manager.RunDueWork();
  ASSERT_TRUE(work.ok()) << work.status();
  ASSERT_EQ(work->destroyed, std::vector<uint64_t>{handle});
}

TEST_F(StorageBridgeTest, DestructionErasesTheDataAndSignsAReceiptNamingTheApprover) {
  uint64_t doomed = Create("crm/account-17");
  uint64_t kept = Create("crm/account-18");
  const std::string salt = manager_->DescribeDataset(doomed)->name_salt;
  ASSERT_EQ(salt.size(), receipt::kNameSaltBytes);
  EXPECT_NE(manager_->DescribeDataset(kept)->name_salt, salt);
  EXPECT_FALSE(storage::NewestItemWriteMicros(*db_, doomed).value().has_value());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(records_->Put(doomed, "c-" + std::to_string(i), "customer record").ok());
  }
  const int64_t last_record_write = ToUnixMicros(clock_.Now());
  clock_.Advance(std::chrono::seconds(60));
  ASSERT_TRUE(records_->Delete(doomed, "c-4").ok());
  // What holds a destruction under a minimum retention: the newest write, a binned item's by
  // when it was written (not deleted).
  EXPECT_EQ(storage::NewestItemWriteMicros(*db_, doomed).value(), last_record_write);
  auto upload = attachments_->BeginUpload(doomed, "contract.pdf", "application/pdf");
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(std::string(300'000, 'p')).ok());
  ASSERT_TRUE((*upload)->Commit().ok());
  auto unfinished = attachments_->BeginUpload(doomed, "draft.pdf", "application/pdf");
  ASSERT_TRUE(unfinished.ok()) << unfinished.status();
  ASSERT_TRUE((*unfinished)->Append(std::string(10, 'd')).ok());
  ASSERT_TRUE(records_->Put(kept, "c-1", "other customer").ok());
  auto before = storage::CountDatasetData(*db_, doomed);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->records, 4u);
  EXPECT_EQ(before->bin_records, 1u);
  EXPECT_EQ(before->attachments, 1u);

  DestroyApproved(*manager_, clock_, doomed);
  EXPECT_EQ(manager_->DestroyedAwaitingReceipt(), std::vector<uint64_t>{doomed});
  EXPECT_EQ(ErrorCodeOf(manager_->GetDeletionReceipt(doomed).status()),
            ErrorCode::kDatasetStateForbids);
  EXPECT_EQ(ErrorCodeOf(manager_->IssueDeletionReceipt(doomed, TestAdmin()).status()),
            ErrorCode::kDatasetStateForbids);  // not before the erase
  EXPECT_EQ(ErrorCodeOf(manager_->GetDeletionReceipt(kept).status()),
            ErrorCode::kDatasetStateForbids);  // not a destroyed dataset

  DestructionCompletion done = CompleteDestructions(*manager_, *db_, TestAdmin());
  ASSERT_TRUE(done.failures.empty()) << done.failures.front().second;
  EXPECT_EQ(done.receipts_issued, std::vector<uint64_t>{doomed});
  auto after = storage::CountDatasetData(*db_, doomed);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->records + after->attachments + after->bin_records + after->bin_attachments +
                after->uploads,
            0u);
  EXPECT_EQ(*records_->Get(kept, "c-1"), "other customer");

  auto file = manager_->GetDeletionReceipt(doomed);
  ASSERT_TRUE(file.ok()) << file.status();
  auto pem = suite_.client->signer().PublicKeyPem();
  ASSERT_TRUE(pem.ok()) << pem.status();
  auto receipt = receipt::VerifyFile(*file, *pem);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->dataset_handle(), doomed);
  // Committed to under the dataset's salt, never as a bare hash a guess of the name checks.
  EXPECT_EQ(receipt->dataset_name_commitment(), receipt::NameCommitmentHex(salt, "crm/account-17"));
  EXPECT_TRUE(receipt->dataset_name_sha256().empty());
  EXPECT_EQ(file->find(receipt::Sha256Hex("crm/account-17")), std::string::npos);
  EXPECT_EQ(receipt->records_purged(), 4u);
  EXPECT_EQ(receipt->bin_records_purged(), 1u);
  EXPECT_EQ(receipt->attachments_purged(), 1u);
  EXPECT_EQ(receipt->uploads_discarded(), before->uploads);
  EXPECT_GE(receipt->uploads_discarded(), 1u);
  EXPECT_TRUE(receipt->purge_compaction_finished());
  EXPECT_EQ(receipt->destruction_requested_by().admin_id(), 1u);
  ASSERT_EQ(receipt->approvals_size(), 1);
  EXPECT_EQ(receipt->approvals(0).approver().admin_id(), 2u);
  EXPECT_EQ(receipt->approvals(0).approver().admin_name(), "admin2");
  EXPECT_EQ(receipt->approvals(0).request_id(), 7u);
  EXPECT_EQ(receipt->approvals(0).audit_sequence(), 42u);
  EXPECT_FALSE(receipt->scheduled_by_lifecycle_automation());
  ASSERT_EQ(receipt->wrapping_keys_size(), 1);
  EXPECT_EQ(receipt->wrapping_keys(0).module(), "softhsm");
  const auto& seq = receipt->audit_sequences();
  EXPECT_LT(seq.destruction_scheduled(), seq.destruction_started());
  EXPECT_LT(seq.destruction_started(), seq.destruction_completed());
  EXPECT_LT(seq.destruction_completed(), seq.erasure_started());
  EXPECT_LT(seq.erasure_started(), seq.erasure_completed());
  auto tombstone = manager_->GetTombstone(doomed);
  ASSERT_TRUE(tombstone.ok());
  EXPECT_EQ(receipt->tombstone_sha256(), receipt::Sha256Hex(tombstone->tombstone));
  EXPECT_EQ(receipt->signing_key_sha256(), receipt::Sha256Hex(*pem));
  EXPECT_EQ(manager_->FindDestroyed("crm/account-17"), std::vector<uint64_t>{doomed});
  EXPECT_TRUE(manager_->FindDestroyed("crm/account-18").empty());

  // Once only: nothing more to do, and the stored receipt is the same bytes.
  EXPECT_TRUE(CompleteDestructions(*manager_, *db_, TestAdmin()).receipts_issued.empty());
  EXPECT_EQ(*manager_->IssueDeletionReceipt(doomed, TestAdmin()), *file);
  // Another signer's key does not verify it.
  auto other = audit::SoftwareEcdsaSigner::Generate();
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(ErrorCodeOf(receipt::VerifyFile(*file, *(*other)->PublicKeyPem()).status()),
            ErrorCode::kReceiptInvalid);
}

TEST_F(StorageBridgeTest, AnEraseResumedAfterARestartReportsWhatWasThere) {
  uint64_t doomed = Create("crm/account-19");
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(records_->Put(doomed, "c-" + std::to_string(i), "customer record").ok());
  }
  DestroyApproved(*manager_, clock_, doomed);
  // The daemon counted and erased, then stopped before recording that the compaction finished.
  auto counts = storage::CountDatasetData(*db_, doomed);
  ASSERT_TRUE(counts.ok());
  ASSERT_TRUE(manager_->BeginErasure(doomed, *counts, TestAdmin()).ok());
  ASSERT_TRUE(storage::EraseDatasetData(*db_, doomed).ok());
  OpenManager();

  DestructionCompletion done = CompleteDestructions(*manager_, *db_, TestAdmin());
  ASSERT_TRUE(done.failures.empty()) << done.failures.front().second;
  auto file = manager_->GetDeletionReceipt(doomed);
  ASSERT_TRUE(file.ok()) << file.status();
  auto receipt = receipt::VerifyFile(*file, *suite_.client->signer().PublicKeyPem());
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->records_purged(), 3u);  // the first count, not the empty range
  EXPECT_TRUE(receipt->purge_compaction_finished());
}

}  // namespace
}  // namespace coffer::kms
