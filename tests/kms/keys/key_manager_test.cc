// KeyManager against real SoftHSM2 (one token per suite) and real RocksDB / audit log (per test).

#include "kms/keys/key_manager.h"

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "crypto/constant_time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hsm/testing/fake_key_wrapper.h"
#include "kms/audit/verifier.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/tombstone.h"
#include "rocksdb/db.h"
#include "tests/hsm/softhsm_token.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"
#include "tests/storage/storage_test_util.h"
#include "tests/testing/progress_log.h"

namespace coffer::kms {
namespace {

using storage::KeyPurpose;
using testing::MapDataCounter;
using testing::OpenRecord;
using testing::SealRecord;
using testing::TestAdmin;
constexpr auto kDay = std::chrono::hours(24);

#define ASSERT_OK(expr) ASSERT_TRUE((expr).ok()) << (expr).status()
#define ASSERT_OK_S(expr)       \
  do {                          \
    absl::Status s_ = (expr);   \
    ASSERT_TRUE(s_.ok()) << s_; \
  } while (0)

MATCHER_P(HasCode, code, "") { return ErrorCodeOf(arg) == code; }

class KeyManagerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("kms-test");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  void SetUp() override { OpenAudit(nullptr); }
  void TearDown() override {
    manager_.reset();
    if (log_) log_->Close().IgnoreError();
  }

  void OpenAudit(audit::AuditFileSystem* fs) {
    audit::AuditLogOptions options = suite_.AuditOptions(dir_.Sub("audit"), &clock_);
    options.file_system = fs;
    auto log = audit::AuditLog::Open(std::move(options));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
  }

  KeyManagerOptions Options() {
    KeyManagerOptions options;
    options.key_db_directory = dir_.Sub("keydb");
    options.modules = {{"softhsm", &suite_.client->wrapping_keys()}, {"other", &other_module_}};
    options.default_module = "softhsm";
    options.row_authenticator = &suite_.client->row_authenticator();
    options.signer = &suite_.client->signer();
    options.audit_log = log_.get();
    options.clock = &clock_;
    options.data_counter = &counter_;
    options.usage_reservation_block = 8;
    options.default_policy.destruction_wait = std::chrono::seconds(30 * kDay);
    return options;
  }

  absl::Status Open(KeyManagerOptions options) {
    manager_.reset();
    auto manager = KeyManager::Open(std::move(options));
    if (!manager.ok()) return manager.status();
    manager_ = *std::move(manager);
    return absl::OkStatus();
  }
  void OpenDefault() { ASSERT_OK_S(Open(Options())); }

  uint64_t Create(std::string_view name, std::optional<DatasetPolicy> policy = std::nullopt) {
    auto handle = manager_->CreateDataset(name, policy, TestAdmin());
    EXPECT_TRUE(handle.ok()) << handle.status();
    return handle.value_or(0);
  }

  uint32_t Primary(uint64_t handle, KeyPurpose purpose) {
    auto info = manager_->DescribeDataset(handle);
    EXPECT_TRUE(info.ok());
    for (const auto& p : info->purposes) {
      if (p.purpose == purpose) return p.primary_version;
    }
    return 0;
  }

  std::vector<hsm::WrappingKeyId> TokenKeysOf(uint64_t handle) {
    std::vector<hsm::WrappingKeyId> out;
    auto all = suite_.client->wrapping_keys().ListWrappingKeys();
    EXPECT_TRUE(all.ok());
    for (const auto& id : *all) {
      if (id.dataset_handle == handle) out.push_back(id);
    }
    return out;
  }

  size_t CountAudit(audit::v1::EventKind kind,
                    audit::v1::Stage stage = audit::v1::STAGE_COMPLETED) {
    auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
    EXPECT_TRUE(entries.ok());
    size_t n = 0;
    for (const auto& e : *entries) n += e.kind() == kind && e.stage() == stage;
    return n;
  }

  // The format a format row of the key DB's meta table records (`key`: "policy_format",
  // "grants_format"; FormatRow: its message), nullopt without the row. The manager is closed.
  template <typename FormatRow>
  std::optional<uint32_t> ReadFormatRow(const std::string& key) {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return std::nullopt;
    FormatRow format;
    auto found = (*db)->Get(KeyDbTable::kMeta, key, format);
    EXPECT_TRUE(found.ok()) << found.status();
    if (!found.ok() || !*found) return std::nullopt;
    return format.format();
  }
  // Writes that row with `format`, or deletes it (nullopt, as a key DB from before the row).
  template <typename FormatRow>
  void WriteFormatRow(const std::string& key, std::optional<uint32_t> format) {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    KeyDb::Batch batch(**db);
    if (format.has_value()) {
      FormatRow row;
      row.set_format(*format);
      ASSERT_OK_S(batch.Put(KeyDbTable::kMeta, key, row));
    } else {
      batch.Delete(KeyDbTable::kMeta, key);
    }
    ASSERT_OK_S((*db)->Write(batch));
  }

  static inline testing::SuiteToken suite_;

  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  hsm::FakeKeyWrapper other_module_;
  MapDataCounter counter_;
  std::unique_ptr<audit::AuditLog> log_;
  std::unique_ptr<KeyManager> manager_;
};

// The daemon's wiring: the audit log signs with the token's ECDSA key and takes its epoch keys
// from the token's HMAC key. An auditor verifies it with the exported public key alone; the
// daemon (holding the token) also checks every MAC; a wrong key of either kind is caught.
TEST_F(KeyManagerTest, AuditLogOnTheHsmVerifiesOfflineWithThePublicKeyAndOnlineWithTheToken) {
  OpenDefault();
  const uint64_t handle = Create("crm-eu");
  ASSERT_OK_S(manager_->EmergencyRotate(handle, TestAdmin()));
  ASSERT_OK_S(manager_->Disable(handle, TestAdmin()));
  manager_.reset();
  ASSERT_OK_S(log_->Close());
  const audit::LogId log_id = log_->log_id();
  log_.reset();

  auto public_key = suite_.client->signer().PublicKeyPem();
  ASSERT_OK(public_key);
  audit::VerifyOptions offline;
  offline.public_key_pem = *public_key;
  auto report = audit::VerifyAuditLog(dir_.Sub("audit"), offline);
  ASSERT_OK(report);
  EXPECT_TRUE(report->ok()) << report->ToStatus();
  EXPECT_TRUE(report->closed_cleanly);
  EXPECT_GE(report->checkpoints_verified, 1u);
  EXPECT_EQ(report->macs_verified, 0u);
  EXPECT_GE(report->entries, 4u);  // epoch, create, rotate, disable, closing checkpoint

  audit::VerifyOptions online = offline;
  online.epoch_keys = HsmEpochKeyProvider(suite_.client->row_authenticator());
  report = audit::VerifyAuditLog(dir_.Sub("audit"), online);
  ASSERT_OK(report);
  EXPECT_TRUE(report->ok()) << report->ToStatus();
  EXPECT_EQ(report->macs_verified, report->entries);

  online.epoch_keys = audit::testing::TestEpochKeys();  // not the token's key
  report = audit::VerifyAuditLog(dir_.Sub("audit"), online);
  ASSERT_OK(report);
  EXPECT_EQ(report->failure, audit::AuditFailure::kBadMac);

  auto other_signer = audit::SoftwareEcdsaSigner::Generate();
  ASSERT_OK(other_signer);
  auto other_key = (*other_signer)->PublicKeyPem();
  ASSERT_OK(other_key);
  offline.public_key_pem = *other_key;
  report = audit::VerifyAuditLog(dir_.Sub("audit"), offline);
  ASSERT_OK(report);
  EXPECT_EQ(report->failure, audit::AuditFailure::kBadSignature);

  // K_0 is exactly the documented derivation, stable, and distinct per epoch and per log.
  audit::EpochKeyProvider provider = HsmEpochKeyProvider(suite_.client->row_authenticator());
  auto k1 = provider({log_id, 1});
  auto k1_again = provider({log_id, 1});
  auto k2 = provider({log_id, 2});
  audit::LogId other_log = log_id;
  other_log[0] ^= 1;
  auto k1_other_log = provider({other_log, 1});
  auto expected = suite_.client->row_authenticator().HmacRowKey(audit::EpochKeyMessage(log_id, 1));
  ASSERT_OK(k1);
  ASSERT_OK(k1_again);
  ASSERT_OK(k2);
  ASSERT_OK(k1_other_log);
  ASSERT_OK(expected);
  auto bytes = [](const crypto::SecretBytes& key) {
    return std::string_view(reinterpret_cast<const char*>(key.data()), key.size());
  };
  EXPECT_EQ(k1->size(), 32u);
  EXPECT_TRUE(crypto::ConstantTimeEquals(bytes(*k1), bytes(*k1_again)));
  EXPECT_TRUE(crypto::ConstantTimeEquals(bytes(*k1), audit::AsStringView(*expected)));
  EXPECT_FALSE(crypto::ConstantTimeEquals(bytes(*k1), bytes(*k2)));
  EXPECT_FALSE(crypto::ConstantTimeEquals(bytes(*k1), bytes(*k1_other_log)));
}

TEST_F(KeyManagerTest, CreateListDescribeAndBadInput) {
  OpenDefault();
  uint64_t crm = Create("crm/customers-eu_1.v2");
  ASSERT_NE(crm, 0u);
  auto info = manager_->DescribeDataset(crm);
  ASSERT_OK(info);
  EXPECT_EQ(info->name, "crm/customers-eu_1.v2");
  EXPECT_EQ(info->state, DatasetState::kActive);
  ASSERT_EQ(info->purposes.size(), 4u);
  for (const PurposeInfo& p : info->purposes) {
    ASSERT_EQ(p.versions.size(), 1u);
    EXPECT_EQ(p.primary_version, 1u);
    EXPECT_TRUE(p.versions[0].primary);
    EXPECT_EQ(p.versions[0].state, KeyVersionState::kPrimary);
    EXPECT_EQ(p.versions[0].created, clock_.Now());
  }
  EXPECT_EQ(info->policy.records_rotation, kDefaultRotationPeriod);
  EXPECT_EQ(TokenKeysOf(crm).size(), 1u);
  EXPECT_EQ(*manager_->FindDataset("crm/customers-eu_1.v2"), crm);

  EXPECT_THAT(manager_->CreateDataset("crm/customers-eu_1.v2", std::nullopt, TestAdmin()).status(),
              HasCode(ErrorCode::kDatasetExists));
  for (const std::string& bad : {std::string(""), std::string("CRM"), std::string("a b"),
                                 std::string("name\n"), std::string(129, 'a'), std::string("é")}) {
    EXPECT_THAT(manager_->CreateDataset(bad, std::nullopt, TestAdmin()).status(),
                HasCode(ErrorCode::kDatasetNameInvalid))
        << bad;
  }
  EXPECT_TRUE(manager_->CreateDataset(std::string(128, 'a'), std::nullopt, TestAdmin()).ok());
  EXPECT_THAT(manager_->DescribeDataset(crm + 1).status(), HasCode(ErrorCode::kDatasetNotFound));
  EXPECT_THAT(
      manager_->Rotate(crm + 1, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()).status(),
      HasCode(ErrorCode::kDatasetNotFound));
  EXPECT_THAT(manager_->PrimaryKey(crm + 1, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kDatasetNotFound));
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 7).status(),
              HasCode(ErrorCode::kKeyVersionNotFound));
  EXPECT_EQ(manager_->ListDatasets().size(), 2u);
  // Refusals are audited; creation was audited requested + completed.
  EXPECT_EQ(CountAudit(audit::v1::REQUEST_REFUSED), 8u);  // 1 duplicate, 6 names, 1 rotate
  EXPECT_EQ(CountAudit(audit::v1::DATASET_CREATE), 2u);
  EXPECT_EQ(CountAudit(audit::v1::DATASET_CREATE, audit::v1::STAGE_REQUESTED), 2u);
}

// Dataset names at rest (names-v2, kms/keys/internal/dataset_names.h): the key DB's files hold
// neither the name nor an unkeyed hash of it; the name survives a restart and destruction removes
// its lookup row.
TEST_F(KeyManagerTest, TheKeyDbNeverHoldsADatasetNameInPlaintext) {
  const std::string name = "acme-industries-gmbh-7c1f";
  OpenDefault();
  const uint64_t handle = Create(name);
  ASSERT_NE(handle, 0u);
  ASSERT_OK(manager_->Rotate(handle, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  manager_.reset();
  EXPECT_THAT(storage::testing::FilesContaining(dir_.Sub("keydb"), name), ::testing::IsEmpty());
  // The scan sees a name where one is in the clear (it can fail).
  {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    KeyDb::Batch batch(**db);
    v1::NameRow row;
    row.set_handle(handle + 1);
    ASSERT_OK_S(batch.Put(KeyDbTable::kMeta, "probe-" + name, row));
    ASSERT_OK_S((*db)->Write(batch));
  }
  EXPECT_EQ(storage::testing::FilesContaining(dir_.Sub("keydb"), name).size(), 1u);
  {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    KeyDb::Batch batch(**db);
    batch.Delete(KeyDbTable::kMeta, "probe-" + name);
    ASSERT_OK_S((*db)->Write(batch));
  }

  OpenDefault();
  EXPECT_EQ(*manager_->FindDataset(name), handle);
  EXPECT_EQ(manager_->DescribeDataset(handle)->name, name);
  EXPECT_THAT(manager_->CreateDataset(name, std::nullopt, TestAdmin()).status(),
              HasCode(ErrorCode::kDatasetExists));
}

// A sealed name is bound to its handle: the row of one dataset carrying another's sealed name
// (re-tagged by someone holding the row key, the strongest case) does not open.
TEST_F(KeyManagerTest, ASealedNameMovedToAnotherDatasetIsRefused) {
  OpenDefault();
  const uint64_t a = Create("dataset-a");
  const uint64_t b = Create("dataset-b");
  manager_.reset();
  {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    v1::DatasetRow row_a;
    v1::DatasetRow row_b;
    ASSERT_OK((*db)->Get(KeyDbTable::kDatasets, DatasetRowKey(a), row_a));
    ASSERT_OK((*db)->Get(KeyDbTable::kDatasets, DatasetRowKey(b), row_b));
    EXPECT_TRUE(row_a.name().empty());
    EXPECT_FALSE(row_a.sealed_name().empty());
    row_b.set_sealed_name(row_a.sealed_name());
    KeyDb::Batch batch(**db);
    ASSERT_OK_S(batch.Put(KeyDbTable::kDatasets, DatasetRowKey(b), row_b));
    ASSERT_OK_S((*db)->Write(batch));
  }
  EXPECT_THAT(Open(Options()), HasCode(ErrorCode::kKeyDbRowCorrupt));
}

// A key DB written before names-v2 (names in plaintext in the dataset rows, the name column keyed
// by the name, a CREATING intent carrying one) migrates at open: one batch, then a compaction, and
// the names are gone from its files.
TEST_F(KeyManagerTest, ANamesV1KeyDbMigratesAndItsFilesLoseTheNames) {
  const std::string name = "globex-corporation-91d2";
  OpenDefault();
  const uint64_t handle = Create(name);
  const uint64_t other = Create("another-customer-5e0a");
  manager_.reset();
  {
    // Turn the rows back into names-v1, as an earlier build wrote them.
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    KeyDb::Batch batch(**db);
    for (auto [h, n] : {std::pair<uint64_t, std::string>{handle, name},
                        std::pair<uint64_t, std::string>{other, "another-customer-5e0a"}}) {
      v1::DatasetRow row;
      ASSERT_OK((*db)->Get(KeyDbTable::kDatasets, DatasetRowKey(h), row));
      row.clear_sealed_name();
      row.set_name(n);
      ASSERT_OK_S(batch.Put(KeyDbTable::kDatasets, DatasetRowKey(h), row));
      v1::NameRow name_row;
      name_row.set_handle(h);
      ASSERT_OK_S(batch.Put(KeyDbTable::kNames, n, name_row));
    }
    std::vector<std::string> lookup_keys;
    ASSERT_OK_S((*db)->Scan(KeyDbTable::kNames, "",
                            [&](std::string_view key, std::string_view) -> absl::Status {
                              if (key.size() == 32) lookup_keys.emplace_back(key);
                              return absl::OkStatus();
                            }));
    ASSERT_EQ(lookup_keys.size(), 2u);
    for (const std::string& key : lookup_keys) batch.Delete(KeyDbTable::kNames, key);
    batch.Delete(KeyDbTable::kMeta, "names_format");
    ASSERT_OK_S((*db)->Write(batch));
    ASSERT_OK_S((*db)->CompactAll());
  }
  EXPECT_FALSE(storage::testing::FilesContaining(dir_.Sub("keydb"), name).empty());

  OpenDefault();
  EXPECT_EQ(*manager_->FindDataset(name), handle);
  EXPECT_EQ(*manager_->FindDataset("another-customer-5e0a"), other);
  // Names-v1 datasets had no name salt (their receipts will commit to the name): one is drawn.
  const std::string salt = manager_->DescribeDataset(handle)->name_salt;
  EXPECT_EQ(salt.size(), 32u);
  EXPECT_NE(manager_->DescribeDataset(other)->name_salt, salt);
  EXPECT_THAT(manager_->CreateDataset(name, std::nullopt, TestAdmin()).status(),
              HasCode(ErrorCode::kDatasetExists));
  manager_.reset();
  EXPECT_THAT(storage::testing::FilesContaining(dir_.Sub("keydb"), name), ::testing::IsEmpty());
  {
    auto db = KeyDb::Open(dir_.Sub("keydb"), &suite_.client->row_authenticator());
    ASSERT_OK(db);
    v1::NamesFormatRow format;
    ASSERT_TRUE(*(*db)->Get(KeyDbTable::kMeta, "names_format", format));
    EXPECT_EQ(format.format(), 2u);
  }
  // Opened again, already names-v2: the same salt.
  OpenDefault();
  EXPECT_EQ(manager_->ListDatasets().size(), 2u);
  EXPECT_EQ(manager_->DescribeDataset(handle)->name_salt, salt);
}

// Policy format 2 (v1::PolicyFormatRow): a key DB without the row (format 1, as earlier builds
// wrote it) opens unchanged and gets format 2; a dataset's reencrypt_versions_back (a format 2
// field) survives a reopen, including "none of its own"; a key DB of a newer format is refused.
TEST_F(KeyManagerTest, PolicyFormat2MigratesOnOpenAndANewerFormatIsRefused) {
  OpenDefault();
  const uint64_t own = Create("crm-own");
  const uint64_t plain = Create("crm-plain");
  DatasetPolicy policy = manager_->DescribeDataset(own)->policy;
  policy.reencrypt_versions_back = 0;  // never: a value of its own, not "absent"
  ASSERT_OK_S(manager_->SetPolicy(own, policy, TestAdmin()));
  manager_.reset();
  auto read_format = [&] { return ReadFormatRow<v1::PolicyFormatRow>("policy_format"); };
  auto write_format = [&](std::optional<uint32_t> format) {
    WriteFormatRow<v1::PolicyFormatRow>("policy_format", format);
  };
  EXPECT_EQ(read_format(), std::optional<uint32_t>(2));

  write_format(std::nullopt);  // as a format 1 key DB
  OpenDefault();
  EXPECT_EQ(manager_->DescribeDataset(own)->policy.reencrypt_versions_back,
            std::optional<uint32_t>(0));
  EXPECT_EQ(manager_->DescribeDataset(plain)->policy.reencrypt_versions_back, std::nullopt);
  manager_.reset();
  EXPECT_EQ(read_format(), std::optional<uint32_t>(2));

  write_format(3);
  EXPECT_THAT(Open(Options()), HasCode(ErrorCode::kUnsupportedFormat));
}

TEST_F(KeyManagerTest, DataSealedUnderV1OpensAfterRotationsAndRestart) {
  OpenDefault();
  uint64_t crm = Create("crm");
  auto v1_key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(v1_key);
  EXPECT_EQ((*v1_key)->version(), 1u);
  std::string sealed_v1 = SealRecord(**v1_key, "alice@example.com");
  EXPECT_EQ(*manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()), 2u);
  auto v2_key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(v2_key);
  EXPECT_EQ((*v2_key)->version(), 2u);
  std::string sealed_v2 = SealRecord(**v2_key, "bob@example.com");
  EXPECT_EQ(*manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()), 3u);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 3u);
  // Restart: everything comes back from the key DB and the token.
  OpenDefault();
  auto again_v1 = manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(again_v1);
  EXPECT_EQ(*OpenRecord(**again_v1, sealed_v1), "alice@example.com");
  auto again_v2 = manager_->KeyForVersion(crm, KeyPurpose::kRecords, 2);
  ASSERT_OK(again_v2);
  EXPECT_EQ(*OpenRecord(**again_v2, sealed_v2), "bob@example.com");
  EXPECT_FALSE(OpenRecord(**again_v2, sealed_v1).ok());
  auto info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].versions[0].state, KeyVersionState::kDecryptOnly);
  EXPECT_EQ(info->purposes[0].versions[2].state, KeyVersionState::kPrimary);
  EXPECT_EQ(CountAudit(audit::v1::KEY_ROTATE), 2u);
  EXPECT_GE(CountAudit(audit::v1::KEY_UNWRAP), 4u);
}

TEST_F(KeyManagerTest, LookupAndPseudonymRotateOnlyByReindexAndRekey) {
  OpenDefault();
  uint64_t crm = Create("crm");
  EXPECT_THAT(
      manager_->Rotate(crm, KeyPurpose::kLookup, RotationCause::kManual, TestAdmin()).status(),
      HasCode(ErrorCode::kFailedPrecondition));
  EXPECT_THAT(manager_->Rotate(crm, KeyPurpose::kPseudonym, RotationCause::kScheduled, TestAdmin())
                  .status(),
              HasCode(ErrorCode::kFailedPrecondition));
  EXPECT_THAT(
      manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kRekey, TestAdmin()).status(),
      HasCode(ErrorCode::kFailedPrecondition));
  EXPECT_EQ(*manager_->Rotate(crm, KeyPurpose::kLookup, RotationCause::kReindex, TestAdmin()), 2u);
  EXPECT_EQ(*manager_->Rotate(crm, KeyPurpose::kPseudonym, RotationCause::kRekey, TestAdmin()), 2u);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 1u);
}

TEST_F(KeyManagerTest, SchedulerRotatesEachDatasetExactlyOnceAfter90Days) {
  OpenDefault();
  uint64_t a = Create("a");
  uint64_t b = Create("b");
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(89 * kDay));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->rotated.empty());
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(kDay));
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_EQ(report->rotated.size(), 4u);  // records and attachments of both
  for (uint64_t h : {a, b}) {
    EXPECT_EQ(Primary(h, KeyPurpose::kRecords), 2u);
    EXPECT_EQ(Primary(h, KeyPurpose::kAttachments), 2u);
    EXPECT_EQ(Primary(h, KeyPurpose::kLookup), 1u);
    EXPECT_EQ(Primary(h, KeyPurpose::kPseudonym), 1u);
  }
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->rotated.empty());
  EXPECT_EQ(Primary(a, KeyPurpose::kRecords), 2u);
}

TEST_F(KeyManagerTest, TwoHundredDaysOfDowntimeGiveOneCatchUpRotation) {
  OpenDefault();
  uint64_t crm = Create("crm");
  manager_.reset();  // the daemon is down
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(200 * kDay));
  OpenDefault();
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_EQ(report->rotated.size(), 2u);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 2u);
  EXPECT_EQ(Primary(crm, KeyPurpose::kAttachments), 2u);
  report = manager_->RunDueWork();
  EXPECT_TRUE(report->rotated.empty());
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 2u);
}

TEST_F(KeyManagerTest, PerDatasetPeriodOfSeconds) {
  OpenDefault();
  DatasetPolicy fast;
  fast.records_rotation = std::chrono::seconds(5);
  uint64_t demo = Create("demo", fast);
  uint64_t slow = Create("slow");
  clock_.Advance(std::chrono::seconds(5));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->rotated.size(), 1u);
  EXPECT_EQ(report->rotated[0].first, demo);
  EXPECT_EQ(Primary(demo, KeyPurpose::kRecords), 2u);
  EXPECT_EQ(Primary(demo, KeyPurpose::kAttachments), 1u);
  EXPECT_EQ(Primary(slow, KeyPurpose::kRecords), 1u);
}

TEST_F(KeyManagerTest, UsageBasedRotationTriggersAtItsCount) {
  OpenDefault();
  DatasetPolicy policy;
  policy.usage_limit = 20;
  uint64_t crm = Create("crm", policy);
  for (int i = 0; i < 20; ++i) {
    auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
    ASSERT_OK(key);
    ASSERT_EQ((*key)->version(), 1u) << i;
  }
  auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  EXPECT_EQ((*key)->version(), 2u);
  auto info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].versions[0].usage_count, 20u);
  EXPECT_EQ(info->purposes[0].versions[1].usage_count, 1u);
  // A restart counts the whole reserved block (8) as used.
  OpenDefault();
  info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].versions[1].usage_count, 8u);
  // The scheduler rotates once 90% of the limit is used.
  for (int i = 0; i < 10; ++i) ASSERT_OK(manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1));
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 2u);
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_EQ(report->rotated.size(), 1u);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 3u);
}

TEST_F(KeyManagerTest, ClockMovedBackwardsStopsRotationAndIsAudited) {
  OpenDefault();
  DatasetPolicy policy;
  policy.records_rotation = kDay;
  policy.attachments_rotation = std::chrono::seconds(1000 * kDay);
  uint64_t crm = Create("crm", policy);
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(10 * kDay));
  ASSERT_OK(manager_->RunDueWork());  // high-water mark = day 10; one rotation
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 2u);
  clock_.Advance(-std::chrono::duration_cast<std::chrono::microseconds>(5 * kDay));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->clock_went_backwards);
  EXPECT_TRUE(report->rotated.empty());
  // Also detected at start-up, from the persisted mark.
  OpenDefault();
  EXPECT_TRUE(manager_->recovery_report().clock_went_backwards);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 2u);
  auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
  ASSERT_OK(entries);
  size_t backwards = 0;
  for (const auto& e : *entries) {
    if (e.kind() != audit::v1::CLOCK_WENT_BACKWARDS) continue;
    ++backwards;
    EXPECT_EQ(e.stage(), audit::v1::STAGE_COMPLETED);
    EXPECT_EQ(e.result_code(), static_cast<int>(ErrorCode::kClockWentBackwards));
  }
  EXPECT_EQ(backwards, 2u);  // one at the tick, one at start-up
  EXPECT_EQ(CountAudit(audit::v1::REQUEST_REFUSED), 0u);
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(7 * kDay));
  report = manager_->RunDueWork();
  EXPECT_FALSE(report->clock_went_backwards);
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 3u);
}

TEST_F(KeyManagerTest, RetireRefusedWhileDataRemainsThenRetires) {
  OpenDefault();
  uint64_t crm = Create("crm");
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  counter_.Set(crm, KeyPurpose::kRecords, 1, 5);
  EXPECT_THAT(manager_->RetireBelow(crm, KeyPurpose::kRecords, 3, TestAdmin()),
              HasCode(ErrorCode::kKeyVersionInUse));
  auto info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].min_decrypt_version, 1u);
  EXPECT_EQ(info->purposes[0].versions[0].state, KeyVersionState::kDecryptOnly);
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1));
  EXPECT_THAT(manager_->RetireBelow(crm, KeyPurpose::kRecords, 4, TestAdmin()),
              HasCode(ErrorCode::kInvalidArgument));
  counter_.Set(crm, KeyPurpose::kRecords, 1, 0);
  ASSERT_OK_S(manager_->RetireBelow(crm, KeyPurpose::kRecords, 2, TestAdmin()));
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kKeyVersionRetired));
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 2));
  OpenDefault();  // persisted
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kKeyVersionRetired));
  EXPECT_EQ(manager_->DescribeDataset(crm)->purposes[0].min_decrypt_version, 2u);
}

// Pseudonym tokens live in the CRM, so no counter can prove an old version unused: it retires
// only on the operator's word that the translate run is done, never by RetireBelow (even with a
// counter that reports nothing) and never by the scheduler, however much time passes.
TEST_F(KeyManagerTest, PseudonymVersionsRetireOnlyOnTheOperatorsTranslateConfirmation) {
  OpenDefault();
  uint64_t crm = Create("crm");
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kPseudonym, RotationCause::kRekey, TestAdmin()));
  counter_.Set(crm, KeyPurpose::kPseudonym, 1, 0);
  EXPECT_THAT(manager_->RetireBelow(crm, KeyPurpose::kPseudonym, 2, TestAdmin()),
              HasCode(ErrorCode::kPseudonymTranslateUnconfirmed));
  const size_t refusals = CountAudit(audit::v1::REQUEST_REFUSED);
  EXPECT_GE(refusals, 1u);
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(400 * kDay));
  ASSERT_TRUE(manager_->RunDueWork().ok());
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kPseudonym, 1));  // old tokens still open

  // The confirmation is for pseudonym keys only, and the bounds still apply.
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  EXPECT_THAT(manager_->RetirePseudonymAfterTranslate(crm, 3, TestAdmin()),
              HasCode(ErrorCode::kInvalidArgument));
  ASSERT_OK_S(manager_->RetirePseudonymAfterTranslate(crm, 2, TestAdmin()));
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kPseudonym, 1).status(),
              HasCode(ErrorCode::kKeyVersionRetired));
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kPseudonym, 2));
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1));  // other purposes untouched
  auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
  ASSERT_TRUE(entries.ok());
  size_t confirmed = 0;
  for (const auto& e : *entries) {
    if (e.kind() != audit::v1::KEY_RETIRE || e.stage() != audit::v1::STAGE_COMPLETED) continue;
    EXPECT_EQ(e.purpose(), audit::v1::PURPOSE_PSEUDONYM);
    EXPECT_EQ(e.detail(), "retire pseudonym versions: the operator confirmed the translate run");
    ++confirmed;
  }
  EXPECT_EQ(confirmed, 1u);
  OpenDefault();  // persisted
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kPseudonym, 1).status(),
              HasCode(ErrorCode::kKeyVersionRetired));
}

TEST_F(KeyManagerTest, EmergencyRotationCompromisesThenRetiresAfterReencryption) {
  OpenDefault();
  uint64_t crm = Create("crm");
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  ASSERT_OK_S(manager_->EmergencyRotate(crm, TestAdmin()));
  auto info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].primary_version, 3u);
  EXPECT_EQ(info->purposes[1].primary_version, 2u);
  EXPECT_EQ(info->purposes[0].versions[0].state, KeyVersionState::kCompromised);
  EXPECT_EQ(info->purposes[0].versions[1].state, KeyVersionState::kCompromised);
  EXPECT_EQ(info->purposes[1].versions[0].state, KeyVersionState::kCompromised);
  // Lookup too (its re-index is the follow-up's); pseudonym rotated but its old version kept
  // for the CRM's stored tokens.
  EXPECT_EQ(info->purposes[2].primary_version, 2u);
  EXPECT_EQ(info->purposes[2].versions[0].state, KeyVersionState::kCompromised);
  EXPECT_EQ(info->purposes[3].primary_version, 2u);
  EXPECT_NE(info->purposes[3].versions[0].state, KeyVersionState::kCompromised);
  // Re-encryption still running: data remains under records v2.
  counter_.Set(crm, KeyPurpose::kRecords, 2, 3);
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->purposes[0].min_decrypt_version, 2u);  // v1 had nothing left
  EXPECT_EQ(info->purposes[1].min_decrypt_version, 2u);
  EXPECT_EQ(info->purposes[2].min_decrypt_version, 2u);  // no item under lookup v1
  EXPECT_EQ(info->purposes[3].min_decrypt_version, 1u);  // pseudonym v1 stays
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 2));
  counter_.Set(crm, KeyPurpose::kRecords, 2, 0);  // re-encryption finished
  ASSERT_OK(manager_->RunDueWork());
  EXPECT_EQ(manager_->DescribeDataset(crm)->purposes[0].min_decrypt_version, 3u);
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 2).status(),
              HasCode(ErrorCode::kKeyVersionRetired));
}

TEST_F(KeyManagerTest, LifecycleDisableDestroyTombstone) {
  OpenDefault();
  uint64_t crm = Create("crm");
  auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  std::string sealed = SealRecord(**key, "carol");
  EXPECT_GT(manager_->cache_stats().entries, 0u);
  EXPECT_THAT(manager_->ScheduleDestruction(crm, TestAdmin()),
              HasCode(ErrorCode::kDatasetStateForbids));
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  EXPECT_EQ(manager_->cache_stats().entries, 0u);  // wiped at once
  EXPECT_THAT(manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kDatasetStateForbids));
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kDatasetStateForbids));
  ASSERT_OK_S(manager_->Enable(crm, TestAdmin()));
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1));
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  ASSERT_OK_S(manager_->ScheduleDestruction(crm, TestAdmin(2)));
  EXPECT_THAT(manager_->Enable(crm, TestAdmin()), HasCode(ErrorCode::kDatasetStateForbids));
  ASSERT_OK_S(manager_->CancelDestruction(crm, TestAdmin()));
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kDisabled);
  ASSERT_OK_S(manager_->ScheduleDestruction(crm, TestAdmin(2)));
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(29 * kDay));
  ASSERT_TRUE(manager_->RunDueWork()->destroyed.empty());
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kPendingDestruction);
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(kDay));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->destroyed.size(), 1u);

  EXPECT_TRUE(TokenKeysOf(crm).empty());
  for (KeyPurpose purpose : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup,
                             KeyPurpose::kPseudonym}) {
    EXPECT_THAT(manager_->KeyForVersion(crm, purpose, 1).status(),
                HasCode(ErrorCode::kKeyDestroyed));
    EXPECT_THAT(manager_->PrimaryKey(crm, purpose, 1).status(), HasCode(ErrorCode::kKeyDestroyed));
  }
  EXPECT_THAT(manager_->CancelDestruction(crm, TestAdmin()),
              HasCode(ErrorCode::kDestructionStarted));
  EXPECT_THAT(manager_->Enable(crm, TestAdmin()), HasCode(ErrorCode::kKeyDestroyed));
  EXPECT_THAT(
      manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()).status(),
      HasCode(ErrorCode::kDatasetStateForbids));
  EXPECT_THAT(manager_->Rewrap(crm, "", true, TestAdmin()), HasCode(ErrorCode::kKeyDestroyed));

  // The tombstone verifies with the public key alone and says who asked.
  auto tombstone = manager_->GetTombstone(crm);
  ASSERT_OK(tombstone);
  auto pem = suite_.client->signer().PublicKeyPem();
  ASSERT_OK(pem);
  auto content = VerifyTombstone(*tombstone, *pem);
  ASSERT_OK(content);
  EXPECT_EQ(content->dataset_handle(), crm);
  EXPECT_EQ(content->actor_admin_id(), 2u);
  EXPECT_EQ(content->destroyed_wrapping_keys_size(), 1);
  EXPECT_EQ(content->key_versions_destroyed(), 4u);
  SignedTombstone forged = *tombstone;
  forged.tombstone[forged.tombstone.size() - 1] ^= 1;
  EXPECT_THAT(VerifyTombstone(forged, *pem).status(), HasCode(ErrorCode::kTombstoneInvalid));

  // After a restart: still destroyed, the name is free again, nothing left of the keys.
  OpenDefault();
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kKeyDestroyed));
  ASSERT_OK(manager_->GetTombstone(crm));
  EXPECT_NE(Create("crm"), crm);
}

TEST_F(KeyManagerTest, LegalHoldBlocksDestruction) {
  OpenDefault();
  uint64_t crm = Create("crm");
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  ASSERT_OK_S(manager_->SetLegalHold(crm, true, TestAdmin()));
  EXPECT_THAT(manager_->ScheduleDestruction(crm, TestAdmin()),
              HasCode(ErrorCode::kLegalHoldActive));
  ASSERT_OK_S(manager_->SetLegalHold(crm, false, TestAdmin()));
  ASSERT_OK_S(manager_->ScheduleDestruction(crm, TestAdmin()));
  ASSERT_OK_S(manager_->SetLegalHold(crm, true, TestAdmin()));  // a hold arrives while pending
  clock_.Advance(std::chrono::duration_cast<std::chrono::microseconds>(31 * kDay));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->destroyed.empty());
  ASSERT_EQ(report->failures.size(), 1u);
  EXPECT_THAT(report->failures[0].second, HasCode(ErrorCode::kLegalHoldActive));
  EXPECT_EQ(TokenKeysOf(crm).size(), 1u);
  EXPECT_TRUE(manager_->StorageView(crm)->legal_hold);
  ASSERT_OK_S(manager_->SetLegalHold(crm, false, TestAdmin()));
  EXPECT_EQ(manager_->RunDueWork()->destroyed.size(), 1u);
}

// Lifecycle automation: DISABLED for auto_destroy_after_disabled -> PENDING_DESTRUCTION (by the
// internal actor, audited), then the usual waiting period, then destroyed.
TEST_F(KeyManagerTest, AutoDestroyAfterDisabledSchedulesThenDestroys) {
  OpenDefault();
  DatasetPolicy policy;
  policy.auto_destroy_after_disabled = std::chrono::seconds(5);
  policy.destruction_wait = std::chrono::seconds(3);
  uint64_t crm = Create("crm", policy);
  uint64_t other = Create("other");  // default policy: never automated
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  ASSERT_OK_S(manager_->Disable(other, TestAdmin()));
  auto automated = [&] {
    auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
    EXPECT_TRUE(entries.ok());
    size_t n = 0;
    for (const auto& e : *entries) {
      n += e.kind() == audit::v1::DESTRUCTION_SCHEDULE && e.stage() == audit::v1::STAGE_COMPLETED &&
           e.detail() == "lifecycle automation";
    }
    return n;
  };
  clock_.Advance(std::chrono::seconds(4));
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->auto_scheduled.empty());
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kDisabled);
  clock_.Advance(std::chrono::seconds(2));  // +6 s
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->auto_scheduled.size(), 1u);
  EXPECT_EQ(report->auto_scheduled[0], crm);
  EXPECT_TRUE(report->destroyed.empty());
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kPendingDestruction);
  EXPECT_EQ(manager_->DescribeDataset(other)->state, DatasetState::kDisabled);
  EXPECT_EQ(automated(), 1u);
  clock_.Advance(std::chrono::seconds(2));  // waiting period not over
  ASSERT_TRUE(manager_->RunDueWork()->destroyed.empty());
  clock_.Advance(std::chrono::seconds(1));
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->destroyed.size(), 1u);
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kDestroyed);
  EXPECT_EQ(manager_->DescribeDataset(other)->state, DatasetState::kDisabled);
}

TEST_F(KeyManagerTest, AutoDestroyWaitsForLegalHoldAndRestartsOnEnable) {
  OpenDefault();
  DatasetPolicy policy;
  policy.auto_destroy_after_disabled = std::chrono::seconds(5);
  uint64_t held = Create("held", policy);
  uint64_t flip = Create("flip", policy);
  ASSERT_OK_S(manager_->Disable(held, TestAdmin()));
  ASSERT_OK_S(manager_->SetLegalHold(held, true, TestAdmin()));
  ASSERT_OK_S(manager_->Disable(flip, TestAdmin()));
  clock_.Advance(std::chrono::seconds(4));
  ASSERT_OK_S(manager_->Enable(flip, TestAdmin()));  // before the deadline: resets
  ASSERT_OK_S(manager_->Disable(flip, TestAdmin()));
  clock_.Advance(std::chrono::seconds(3));  // held: 7 s; flip: 3 s since its last change
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->auto_scheduled.empty());
  EXPECT_EQ(manager_->DescribeDataset(held)->state, DatasetState::kDisabled);
  EXPECT_EQ(manager_->DescribeDataset(flip)->state, DatasetState::kDisabled);
  clock_.Advance(std::chrono::seconds(2));
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->auto_scheduled.size(), 1u);
  EXPECT_EQ(report->auto_scheduled[0], flip);
  EXPECT_EQ(manager_->DescribeDataset(held)->state, DatasetState::kDisabled);
  ASSERT_OK_S(manager_->SetLegalHold(held, false, TestAdmin()));
  report = manager_->RunDueWork();
  ASSERT_OK(report);
  ASSERT_EQ(report->auto_scheduled.size(), 1u);
  EXPECT_EQ(report->auto_scheduled[0], held);
  EXPECT_EQ(manager_->DescribeDataset(held)->state, DatasetState::kPendingDestruction);
}

TEST_F(KeyManagerTest, AutoDestroyPolicyIsPersistedValidatedAndClockGuarded) {
  OpenDefault();
  DatasetPolicy bad;
  bad.auto_destroy_after_disabled = std::chrono::seconds(-1);
  EXPECT_THAT(manager_->CreateDataset("bad", bad, TestAdmin()).status(),
              HasCode(ErrorCode::kInvalidArgument));
  uint64_t crm = Create("crm");
  DatasetPolicy policy = manager_->DescribeDataset(crm)->policy;
  EXPECT_EQ(policy.auto_destroy_after_disabled, std::chrono::seconds(0));
  EXPECT_THAT(manager_->SetPolicy(crm, bad, TestAdmin()), HasCode(ErrorCode::kInvalidArgument));
  policy.auto_destroy_after_disabled = std::chrono::seconds(10);
  ASSERT_OK_S(manager_->SetPolicy(crm, policy, TestAdmin()));
  OpenDefault();
  EXPECT_EQ(manager_->DescribeDataset(crm)->policy.auto_destroy_after_disabled,
            std::chrono::seconds(10));
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  clock_.Advance(std::chrono::seconds(5));
  ASSERT_OK(manager_->RunDueWork());  // high-water mark
  clock_.Advance(std::chrono::seconds(20));
  clock_.Advance(-std::chrono::seconds(30));  // behind the high-water mark
  auto report = manager_->RunDueWork();
  ASSERT_OK(report);
  EXPECT_TRUE(report->clock_went_backwards);
  EXPECT_TRUE(report->auto_scheduled.empty());
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kDisabled);
}

TEST_F(KeyManagerTest, PolicyChangesArePersistedAndAudited) {
  OpenDefault();
  uint64_t crm = Create("crm");
  DatasetPolicy policy = manager_->DescribeDataset(crm)->policy;
  policy.bin_days = 7;
  policy.retention_max_age = std::chrono::seconds(3600);
  ASSERT_OK_S(manager_->SetPolicy(crm, policy, TestAdmin()));
  policy.legal_hold = true;
  EXPECT_THAT(manager_->SetPolicy(crm, policy, TestAdmin()), HasCode(ErrorCode::kInvalidArgument));
  OpenDefault();
  auto view = manager_->StorageView(crm);
  EXPECT_EQ(view->bin_days, 7u);
  EXPECT_EQ(view->retention_max_age, std::chrono::seconds(3600));
  EXPECT_EQ(CountAudit(audit::v1::POLICY_CHANGE), 2u);
}

// Flips one byte of the value of the first row of `family` directly in RocksDB.
void EditRow(const std::string& db_dir, const std::string& family, bool flip, bool remove) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {{rocksdb::kDefaultColumnFamilyName, {}},
                                                           {"datasets", {}},
                                                           {"names", {}},
                                                           {"key_versions", {}},
                                                           {"intents", {}},
                                                           {"meta", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open({}, db_dir, families, &handles, &db).ok());
  rocksdb::ColumnFamilyHandle* handle = nullptr;
  for (auto* h : handles) {
    if (h->GetName() == family) handle = h;
  }
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, handle));
  it->SeekToFirst();
  ASSERT_TRUE(it->Valid());
  std::string key = it->key().ToString();
  std::string value = it->value().ToString();
  it.reset();
  if (remove) {
    ASSERT_TRUE(db->Delete({}, handle, key).ok());
  } else if (flip) {
    value[value.size() / 3] ^= 0x01;
    ASSERT_TRUE(db->Put({}, handle, key, value).ok());
  } else {  // move the row under another key
    key[key.size() - 1] ^= 0x01;
    ASSERT_TRUE(db->Put({}, handle, key, value).ok());
  }
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  delete db;
}

TEST_F(KeyManagerTest, KeyDbRowEditedOnDiskIsDetected) {
  struct Case {
    const char* family;
    bool flip;
    bool remove;
  };
  for (Case c : {Case{"datasets", true, false}, Case{"key_versions", true, false},
                 Case{"key_versions", false, false}, Case{"key_versions", false, true},
                 Case{"names", true, false}}) {
    SCOPED_TRACE(std::string(c.family) + (c.flip ? " flip" : c.remove ? " delete" : " move"));
    audit::testing::TempDir dir;
    KeyManagerOptions options = Options();
    options.key_db_directory = dir.Sub("keydb");
    ASSERT_OK_S(Open(options));
    uint64_t crm = Create("crm");
    ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
    manager_.reset();
    EditRow(options.key_db_directory, c.family, c.flip, c.remove);
    absl::Status opened = Open(options);
    EXPECT_THAT(opened, HasCode(ErrorCode::kKeyDbRowCorrupt));
    EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss);
  }
}

// Deletes the meta row "generation" directly in RocksDB: a key DB as written before generations.
void DeleteGenerationRow(const std::string& db_dir) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {{rocksdb::kDefaultColumnFamilyName, {}},
                                                           {"datasets", {}},
                                                           {"names", {}},
                                                           {"key_versions", {}},
                                                           {"intents", {}},
                                                           {"meta", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open({}, db_dir, families, &handles, &db).ok());
  ASSERT_TRUE(db->Delete({}, handles.back(), std::string(kKeyDbGenerationKey)).ok());
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  delete db;
}

uint64_t GenerationOnDisk(const std::string& db_dir, hsm::RowAuthenticator& rows) {
  auto db = KeyDb::Open(db_dir, &rows);
  EXPECT_TRUE(db.ok()) << db.status();
  return db.ok() ? (*db)->generation() : 0;
}

// docs/key-manager.md, "Key DB generation": an older copy of the key DB put back in place (a
// policy change, a disable, a rotation undone) is refused when the audit log recorded a newer
// generation, before recovery or anything else writes to it.
TEST_F(KeyManagerTest, AKeyDbOlderThanTheLogSaysIsRefusedBeforeAnythingIsWritten) {
  OpenDefault();
  const std::string name = "customer-acme-7f3";
  uint64_t crm = Create(name);
  ASSERT_OK_S(manager_->CheckpointKeyDb(dir_.Sub("old-keydb")));
  const uint64_t old_generation = manager_->key_db_generation();
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  ASSERT_OK_S(manager_->Disable(crm, TestAdmin()));
  const uint64_t current = manager_->key_db_generation();
  EXPECT_GE(current, old_generation + 2);  // one batch each
  manager_.reset();
  EXPECT_EQ(GenerationOnDisk(dir_.Sub("keydb"), suite_.client->row_authenticator()), current);

  KeyManagerOptions options = Options();
  options.key_db_directory = dir_.Sub("old-keydb");
  options.minimum_key_db_generation = current;
  absl::Status refused = Open(options);
  EXPECT_THAT(refused, HasCode(ErrorCode::kKeyDbRolledBack));
  EXPECT_EQ(refused.code(), absl::StatusCode::kDataLoss);
  const std::string message(refused.message());
  EXPECT_NE(message.find("generation " + std::to_string(old_generation)), std::string::npos)
      << message;
  EXPECT_NE(message.find(std::to_string(current)), std::string::npos) << message;
  EXPECT_EQ(message.find(name), std::string::npos) << "the message names a dataset: " << message;
  EXPECT_EQ(GenerationOnDisk(dir_.Sub("old-keydb"), suite_.client->row_authenticator()),
            old_generation)
      << "the refused open wrote to the old copy";

  // The current key DB opens at the same bar (equal is fine), and so does the old copy without
  // one (a log that never recorded a generation).
  options.key_db_directory = dir_.Sub("keydb");
  ASSERT_OK_S(Open(options));
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kDisabled);
  manager_.reset();
  options.key_db_directory = dir_.Sub("old-keydb");
  options.minimum_key_db_generation.reset();
  ASSERT_OK_S(Open(options));
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kActive);
}

TEST_F(KeyManagerTest, AKeyDbWithoutAGenerationRowStartsAtOneAndIsOlderThanAnyRecorded) {
  OpenDefault();
  Create("customer-bolt-11");
  manager_.reset();
  DeleteGenerationRow(dir_.Sub("keydb"));
  hsm::RowAuthenticator& rows = suite_.client->row_authenticator();
  ASSERT_EQ(GenerationOnDisk(dir_.Sub("keydb"), rows), 0u);

  // Older than any generation a log recorded: such a log was written after the upgrade.
  KeyManagerOptions options = Options();
  options.minimum_key_db_generation = 1;
  EXPECT_THAT(Open(options), HasCode(ErrorCode::kKeyDbRolledBack));
  EXPECT_EQ(GenerationOnDisk(dir_.Sub("keydb"), rows), 0u);

  // With a log that recorded none (format 1): migrated to generation 1 in a batch of its own.
  OpenDefault();
  EXPECT_EQ(manager_->key_db_generation(), 1u);
  ASSERT_EQ(manager_->ListDatasets().size(), 1u);
  manager_.reset();
  EXPECT_EQ(GenerationOnDisk(dir_.Sub("keydb"), rows), 1u);
  options.minimum_key_db_generation = 1;
  ASSERT_OK_S(Open(options));
  EXPECT_EQ(manager_->key_db_generation(), 1u);  // opening an up-to-date DB writes nothing
}

TEST_F(KeyManagerTest, EightThreadsEncryptingDuringRotationsLoseNothing) {
  OpenDefault();
  uint64_t crm = Create("crm");
  constexpr int kThreads = 8;
  constexpr int kPerThread = 150;
  std::vector<std::vector<std::pair<uint32_t, std::string>>> sealed(kThreads);
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
        if (!key.ok()) {
          ++failures;
          continue;
        }
        std::string plain = std::to_string(t) + ":" + std::to_string(i);
        sealed[t].emplace_back((*key)->version(), SealRecord(**key, plain));
      }
    });
  }
  int rotations = 0;
  std::thread rotator([&] {
    for (int r = 0; r < 10; ++r) {
      if (manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()).ok()) {
        ++rotations;
      }
    }
    done = true;
  });
  for (auto& thread : threads) thread.join();
  rotator.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(rotations, 10);
  OpenDefault();  // read everything back after a restart
  uint64_t opened = 0;
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(sealed[t].size(), static_cast<size_t>(kPerThread));
    for (int i = 0; i < kPerThread; ++i) {
      auto key = manager_->KeyForVersion(crm, KeyPurpose::kRecords, sealed[t][i].first);
      ASSERT_OK(key);
      auto plain = OpenRecord(**key, sealed[t][i].second);
      ASSERT_OK(plain);
      EXPECT_EQ(*plain, std::to_string(t) + ":" + std::to_string(i));
      ++opened;
    }
  }
  EXPECT_EQ(opened, uint64_t{kThreads} * kPerThread);
  // Usage is never under-counted: the persisted reservations cover every encryption.
  std::map<uint32_t, uint64_t> used;
  for (const auto& list : sealed) {
    for (const auto& [version, ciphertext] : list) ++used[version];
  }
  uint64_t counted = 0;
  auto info = manager_->DescribeDataset(crm);
  ASSERT_OK(info);
  for (const auto& v : info->purposes[0].versions) {
    counted += v.usage_count;
    EXPECT_GE(v.usage_count, used[v.version]) << "version " << v.version;
  }
  EXPECT_GE(counted, uint64_t{kThreads} * kPerThread);
}

TEST_F(KeyManagerTest, CacheNeverExceedsItsBounds) {
  KeyManagerOptions options = Options();
  options.cache.max_entries = 4;
  options.cache.shards = 2;
  ASSERT_OK_S(Open(options));
  std::vector<uint64_t> handles;
  for (std::string name : {"d0", "d1", "d2", "d3"}) handles.push_back(Create(name));
  for (int round = 0; round < 2; ++round) {
    for (uint64_t h : handles) {
      for (KeyPurpose p : {KeyPurpose::kRecords, KeyPurpose::kAttachments, KeyPurpose::kLookup}) {
        ASSERT_OK(manager_->KeyForVersion(h, p, 1));
        KeyCacheStats stats = manager_->cache_stats();
        EXPECT_LE(stats.entries, 4u);
        EXPECT_LE(stats.bytes, options.cache.max_bytes);
      }
    }
  }
  EXPECT_GT(manager_->cache_stats().evictions, 0u);
}

TEST_F(KeyManagerTest, CacheHitMakesNoUnwrap) {
  OpenDefault();
  uint64_t crm = Create("crm");
  ASSERT_OK(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1));
  size_t unwraps = CountAudit(audit::v1::KEY_UNWRAP);
  for (int i = 0; i < 20; ++i) ASSERT_OK(manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1));
  EXPECT_EQ(CountAudit(audit::v1::KEY_UNWRAP), unwraps);
}

TEST_F(KeyManagerTest, RewrapToNewVersionAndMigrateToAnotherModule) {
  OpenDefault();
  uint64_t crm = Create("crm");
  auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  std::string sealed = SealRecord(**key, "dave");
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kAttachments, RotationCause::kManual, TestAdmin()));
  ASSERT_OK_S(manager_->Rewrap(crm, "", /*destroy_old=*/true, TestAdmin()));
  auto info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->current_wrapping_key, (WrappingKeyRef{"softhsm", 2}));
  for (const auto& p : info->purposes) {
    for (const auto& v : p.versions) EXPECT_EQ(v.wrapping_key, (WrappingKeyRef{"softhsm", 2}));
  }
  auto ids = TokenKeysOf(crm);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0].version, 2u);
  OpenDefault();  // force unwraps under the new DWK
  key = manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  EXPECT_EQ(*OpenRecord(**key, sealed), "dave");

  // Migration to another PKCS#11 module (here a second KeyWrapper), keeping the old DWK.
  ASSERT_OK_S(manager_->Rewrap(crm, "other", /*destroy_old=*/false, TestAdmin()));
  info = manager_->DescribeDataset(crm);
  EXPECT_EQ(info->current_wrapping_key, (WrappingKeyRef{"other", 3}));
  EXPECT_EQ(info->live_wrapping_keys.size(), 2u);
  OpenDefault();
  key = manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  EXPECT_EQ(*OpenRecord(**key, sealed), "dave");
  EXPECT_EQ(*manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()), 2u);
  EXPECT_EQ(manager_->DescribeDataset(crm)->purposes[0].versions[1].wrapping_key.module, "other");
  EXPECT_THAT(manager_->Rewrap(crm, "nope", false, TestAdmin()),
              HasCode(ErrorCode::kInvalidArgument));
}

// Progress: one phase "rewrap", a report per DEK version moved (crypto/base/progress.h).
TEST_F(KeyManagerTest, RewrapReportsEveryKeyVersionItMoves) {
  OpenDefault();
  const uint64_t crm = Create("crm");
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()));
  ASSERT_OK(manager_->Rotate(crm, KeyPurpose::kAttachments, RotationCause::kManual, TestAdmin()));
  auto info = manager_->DescribeDataset(crm);
  ASSERT_OK(info);
  uint64_t versions = 0;
  for (const auto& purpose : info->purposes) versions += purpose.versions.size();
  ASSERT_GE(versions, 5u);

  ::coffer::testing::ProgressLog log;
  ASSERT_OK_S(manager_->Rewrap(crm, "", /*destroy_old=*/true, TestAdmin(), log.Function()));
  EXPECT_TRUE(log.KeepsTheContract());
  EXPECT_EQ(log.Phases(), std::vector<std::string>{"rewrap"});
  const std::vector<coffer::Progress> reports = log.Of("rewrap");
  ASSERT_EQ(reports.size(), versions + 1);
  for (size_t i = 0; i < reports.size(); ++i) {
    EXPECT_EQ(reports[i].done, i);
    EXPECT_EQ(reports[i].total, versions);
  }

  // An empty function: the migration happens, nothing is reported.
  ASSERT_OK_S(
      manager_->Rewrap(crm, "other", /*destroy_old=*/false, TestAdmin(), coffer::ProgressFn()));
  EXPECT_EQ(manager_->DescribeDataset(crm)->current_wrapping_key, (WrappingKeyRef{"other", 3}));
}

// Migration to a genuinely second PKCS#11 token. hsm::Module calls C_Initialize on its dlopen
// handle, and dlopen of the same file returns the same, already initialised instance
// (CKR_CRYPTOKI_ALREADY_INITIALIZED), so the second client loads a copy of the SoftHSM2 library:
// another file is another instance with its own state, which reads SOFTHSM2_CONF (by then the
// second token's, set by SoftHsmToken::Create) at its own C_Initialize.
TEST_F(KeyManagerTest, MigratesToASecondPkcs11Token) {
  auto second_token = hsm::testing::SoftHsmToken::Create("kms-second");
  ASSERT_OK(second_token);
  const std::string module_copy = dir_.Sub("libsofthsm2-second.so");
  std::filesystem::copy_file(std::string(hsm::kDefaultModulePath), module_copy);
  hsm::HsmOptions second_options = (*second_token)->Options();
  second_options.module_path = module_copy;
  auto second = hsm::HsmClient::Open(second_options);
  ASSERT_OK(second);
  auto options = [&] {
    KeyManagerOptions o = Options();
    o.modules = {{"softhsm", &suite_.client->wrapping_keys()},
                 {"second", &(*second)->wrapping_keys()}};
    return o;
  };
  ASSERT_OK_S(Open(options()));
  const uint64_t crm = Create("crm");
  auto key = manager_->PrimaryKey(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  const std::string sealed = SealRecord(**key, "erin");

  ASSERT_OK_S(manager_->Rewrap(crm, "second", /*destroy_old=*/true, TestAdmin()));
  EXPECT_EQ(manager_->DescribeDataset(crm)->current_wrapping_key, (WrappingKeyRef{"second", 2}));
  EXPECT_TRUE(TokenKeysOf(crm).empty());  // the first token no longer holds any DWK of it
  auto on_second = (*second)->wrapping_keys().ListWrappingKeys();
  ASSERT_OK(on_second);
  EXPECT_THAT(*on_second, ::testing::Contains(hsm::WrappingKeyId{crm, 2}));

  ASSERT_OK_S(Open(options()));  // a fresh cache: the DEK is unwrapped by the second token
  key = manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1);
  ASSERT_OK(key);
  EXPECT_EQ(*OpenRecord(**key, sealed), "erin");
  manager_.reset();
  ASSERT_OK_S((*second)->Close());
}

TEST_F(KeyManagerTest, MissingWrappingKeyIsReportedNotFixed) {
  OpenDefault();
  uint64_t crm = Create("crm");
  uint64_t other = Create("other");
  manager_.reset();
  ASSERT_TRUE(suite_.client->wrapping_keys().DestroyWrappingKey({crm, 1}).ok());
  OpenDefault();
  const auto& report = manager_->recovery_report();
  ASSERT_EQ(report.missing_wrapping_keys.size(), 1u);
  EXPECT_EQ(report.missing_wrapping_keys[0].second.dataset_handle, crm);
  EXPECT_TRUE(manager_->DescribeDataset(crm)->wrapping_key_missing);
  EXPECT_THAT(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).status(),
              HasCode(ErrorCode::kWrappingKeyMissing));
  ASSERT_OK(manager_->KeyForVersion(other, KeyPurpose::kRecords, 1));
  EXPECT_TRUE(TokenKeysOf(crm).empty());  // not silently re-created
}

TEST_F(KeyManagerTest, KeyOperationsFailClosedWhenAuditCannotBeMadeDurable) {
  log_->Close().IgnoreError();
  audit::testing::FailingFileSystem fs;
  OpenAudit(&fs);
  OpenDefault();
  uint64_t crm = Create("crm");
  fs.fail_sync = true;
  EXPECT_THAT(
      manager_->Rotate(crm, KeyPurpose::kRecords, RotationCause::kManual, TestAdmin()).status(),
      HasCode(ErrorCode::kAuditNotDurable));
  EXPECT_THAT(manager_->Disable(crm, TestAdmin()), HasCode(ErrorCode::kAuditLogClosed));
  EXPECT_FALSE(manager_->CreateDataset("new", std::nullopt, TestAdmin()).ok());
  // Nothing happened: not in memory, not after a restart.
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 1u);
  EXPECT_EQ(manager_->DescribeDataset(crm)->state, DatasetState::kActive);
  // A cache miss cannot hand out a key without its KEY_UNWRAP entry.
  EXPECT_FALSE(manager_->KeyForVersion(crm, KeyPurpose::kRecords, 1).ok());
  manager_.reset();
  log_.reset();
  fs.fail_sync = false;
  OpenAudit(nullptr);
  OpenDefault();
  EXPECT_EQ(Primary(crm, KeyPurpose::kRecords), 1u);
  EXPECT_EQ(manager_->ListDatasets().size(), 1u);
}

// ---- Grants at run time (key_manager.h, "Grants at run time") ----

v1::GrantRow UidGrant(uint32_t uid, uint64_t handle, std::vector<uint32_t> rights) {
  v1::GrantRow row;
  row.set_uid(uid);
  row.set_dataset_handle(handle);
  for (uint32_t right : rights) row.add_rights(right);
  return row;
}

// Stored grants round-trip through the key DB, keep their ids across a reopen, and an id is never
// handed out twice (an approval naming a removed grant cannot remove a later one).
TEST_F(KeyManagerTest, StoredGrantsRoundTripAndIdsAreNeverReused) {
  OpenDefault();
  const uint64_t crm = Create("crm");
  auto added = manager_->AddGrant(UidGrant(1001, crm, {1, 2}));
  ASSERT_OK(added);
  EXPECT_EQ(added->id(), 1u);
  EXPECT_GT(added->created_micros(), 0);
  v1::GrantRow every;
  every.set_user("crm-backend");
  every.set_every_dataset(true);
  every.add_rights(4);
  every.mutable_requested_by()->set_uid(0);
  every.mutable_approval()->set_request_id(9);
  auto second = manager_->AddGrant(every);
  ASSERT_OK(second);
  EXPECT_EQ(second->id(), 2u);
  // The same principal, dataset and rights again (rights in another order) is refused.
  EXPECT_THAT(manager_->AddGrant(UidGrant(1001, crm, {2, 1})).status(),
              HasCode(ErrorCode::kAlreadyExists));
  // Other rights for the same principal and dataset are another grant.
  ASSERT_OK(manager_->AddGrant(UidGrant(1001, crm, {3})));

  auto removed = manager_->RemoveGrant(3);
  ASSERT_OK(removed);
  EXPECT_EQ(removed->rights_size(), 1);
  EXPECT_THAT(manager_->RemoveGrant(3).status(), HasCode(ErrorCode::kNotFound));

  OpenDefault();  // a restart
  auto rows = manager_->StoredGrants();
  ASSERT_OK(rows);
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].id(), 1u);
  EXPECT_EQ((*rows)[0].uid(), 1001u);
  EXPECT_EQ((*rows)[0].dataset_handle(), crm);
  EXPECT_EQ((*rows)[1].id(), 2u);
  EXPECT_EQ((*rows)[1].user(), "crm-backend");
  EXPECT_TRUE((*rows)[1].every_dataset());
  EXPECT_EQ((*rows)[1].approval().request_id(), 9u);
  // Removing the newest does not free its id either.
  ASSERT_OK(manager_->RemoveGrant(2));
  auto next = manager_->AddGrant(UidGrant(1002, crm, {1}));
  ASSERT_OK(next);
  EXPECT_EQ(next->id(), 4u);
}

// Edits the first grant row ("grant/" ‖ id in the meta family) directly in RocksDB: flips a byte
// of its value, or moves it under another id.
void EditGrantRow(const std::string& db_dir, bool flip) {
  std::vector<rocksdb::ColumnFamilyDescriptor> families = {{rocksdb::kDefaultColumnFamilyName, {}},
                                                           {"datasets", {}},
                                                           {"names", {}},
                                                           {"key_versions", {}},
                                                           {"intents", {}},
                                                           {"meta", {}}};
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* db = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open({}, db_dir, families, &handles, &db).ok());
  rocksdb::ColumnFamilyHandle* meta = handles.back();
  std::unique_ptr<rocksdb::Iterator> it(db->NewIterator({}, meta));
  it->Seek("grant/");
  ASSERT_TRUE(it->Valid());
  std::string key = it->key().ToString();
  std::string value = it->value().ToString();
  ASSERT_EQ(key.rfind("grant/", 0), 0u);
  it.reset();
  if (flip) {
    value[value.size() / 3] ^= 0x01;
  } else {
    ASSERT_TRUE(db->Delete({}, meta, key).ok());
    key[key.size() - 1] ^= 0x40;
  }
  ASSERT_TRUE(db->Put({}, meta, key, value).ok());
  for (auto* h : handles) ASSERT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  delete db;
}

// A grant row is authenticated like every key-DB row: a flipped byte or a row moved to another id
// stops the open (and so the daemon's start) with KEY_DB_ROW_CORRUPT.
TEST_F(KeyManagerTest, AStoredGrantEditedOnDiskIsDetected) {
  for (bool flip : {true, false}) {
    SCOPED_TRACE(flip ? "flip" : "move");
    audit::testing::TempDir dir;
    KeyManagerOptions options = Options();
    options.key_db_directory = dir.Sub("keydb");
    ASSERT_OK_S(Open(options));
    const uint64_t crm = Create("crm");
    ASSERT_OK(manager_->AddGrant(UidGrant(1001, crm, {1})));
    manager_.reset();
    EditGrantRow(options.key_db_directory, flip);
    absl::Status opened = Open(options);
    EXPECT_THAT(opened, HasCode(ErrorCode::kKeyDbRowCorrupt));
    EXPECT_EQ(opened.code(), absl::StatusCode::kDataLoss);
  }
}

// Grants format 1 (v1::GrantsFormatRow, docs/formats.md): recorded at the first open by a build
// that knows grants (also in a key DB written before grants existed), and a key DB of another
// format is refused rather than served with its grants misread.
TEST_F(KeyManagerTest, GrantsFormat1IsRecordedAndANewerOneIsRefused) {
  OpenDefault();
  const uint64_t crm = Create("crm");
  ASSERT_OK(manager_->AddGrant(UidGrant(1001, crm, {1})));
  manager_.reset();
  auto read_format = [&] { return ReadFormatRow<v1::GrantsFormatRow>("grants_format"); };
  auto write_format = [&](std::optional<uint32_t> format) {
    WriteFormatRow<v1::GrantsFormatRow>("grants_format", format);
  };
  EXPECT_EQ(read_format(), std::optional<uint32_t>(1));

  write_format(std::nullopt);  // as a key DB from before grants
  OpenDefault();
  EXPECT_EQ(manager_->StoredGrants()->size(), 1u);
  manager_.reset();
  EXPECT_EQ(read_format(), std::optional<uint32_t>(1));

  write_format(2);
  EXPECT_THAT(Open(Options()), HasCode(ErrorCode::kUnsupportedFormat));
}

// Issue 20 item 6: the access audit's failure policy is an authenticated key-DB row (format 1),
// fail-closed until set, audited as a policy change (requested and completed, old and new
// value), kept across a reopen; a row of another format is refused rather than guessed at.
TEST_F(KeyManagerTest, AccessAuditFailurePolicyIsStoredAuditedAndRefusedInAnUnknownFormat) {
  OpenDefault();
  EXPECT_EQ(manager_->access_audit_failure(), AccessAuditFailure::kFailClosed);
  auto previous = manager_->SetAccessAuditFailure(AccessAuditFailure::kServeAndCount, TestAdmin());
  ASSERT_OK(previous);
  EXPECT_EQ(*previous, AccessAuditFailure::kFailClosed);
  EXPECT_EQ(manager_->access_audit_failure(), AccessAuditFailure::kServeAndCount);
  // No change, no entry.
  previous = manager_->SetAccessAuditFailure(AccessAuditFailure::kServeAndCount, TestAdmin());
  ASSERT_OK(previous);
  EXPECT_EQ(*previous, AccessAuditFailure::kServeAndCount);
  EXPECT_THAT(
      manager_->SetAccessAuditFailure(static_cast<AccessAuditFailure>(7), TestAdmin()).status(),
      HasCode(ErrorCode::kInvalidArgument));
  EXPECT_EQ(CountAudit(audit::v1::POLICY_CHANGE, audit::v1::STAGE_REQUESTED), 1u);
  EXPECT_EQ(CountAudit(audit::v1::POLICY_CHANGE, audit::v1::STAGE_COMPLETED), 1u);
  auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
  ASSERT_OK(entries);
  for (const auto& e : *entries) {
    if (e.kind() != audit::v1::POLICY_CHANGE) continue;
    EXPECT_EQ(e.dataset_handle(), 0u);
    EXPECT_EQ(e.policy().policy(), "access_audit_failure");
    EXPECT_EQ(e.policy().old_value(), 1);
    EXPECT_EQ(e.policy().new_value(), 2);
  }

  OpenDefault();  // a restart keeps it
  EXPECT_EQ(manager_->access_audit_failure(), AccessAuditFailure::kServeAndCount);
  ASSERT_OK(manager_->SetAccessAuditFailure(AccessAuditFailure::kFailClosed, TestAdmin()));
  OpenDefault();
  EXPECT_EQ(manager_->access_audit_failure(), AccessAuditFailure::kFailClosed);
  manager_.reset();

  // Open refuses on the row's format before it reads the policy in it.
  for (uint32_t format : {2u, 0u}) {
    SCOPED_TRACE(format);
    WriteFormatRow<v1::AccessAuditPolicyRow>("access_audit_policy", format);
    EXPECT_THAT(Open(Options()), HasCode(ErrorCode::kUnsupportedFormat));
  }
}

}  // namespace
}  // namespace coffer::kms
