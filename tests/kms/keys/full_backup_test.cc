// Full backups across the data DB, the key DB and the audit log, with real components: SoftHSM2,
// RocksDB for both DBs, the audit log on the token's keys. Restore must never resurrect: a purge
// or a destruction after the backup holds in the restored copy. Each operation reports its
// progress phases in order.

#include "kms/keys/full_backup.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/verifier.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/internal/backup_manifest.h"
#include "kms/keys/store_graph.h"
#include "storage/attachment_store.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"
#include "storage/reindex.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/fixed_row_authenticator.h"
#include "tests/kms/keys/kms_test_env.h"
#include "tests/testing/progress_log.h"

namespace coffer::kms {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::ProgressLog;
using storage::KeyPurpose;
using testing::TestAdmin;
constexpr auto kDay = std::chrono::hours(24);
constexpr uint64_t kMiB = uint64_t{1} << 20;

using Phases = std::vector<std::string>;

uint64_t TotalOf(const ProgressLog& log, std::string_view phase) {
  const std::vector<coffer::Progress> reports = log.Of(phase);
  return reports.empty() ? 0 : reports.back().total;
}

// Flips one byte of `path` in place and returns a function that flips it back.
void FlipByte(const std::string& path, size_t offset) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(file.is_open()) << path;
  file.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  file.get(c);
  file.seekp(static_cast<std::streamoff>(offset));
  file.put(static_cast<char>(c ^ 0x5a));
}

// The largest regular file under `dir` (recursively).
std::string LargestFile(const std::string& dir) {
  std::string best;
  uintmax_t best_size = 0;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file() && entry.file_size() > best_size) {
      best_size = entry.file_size();
      best = entry.path().string();
    }
  }
  return best;
}

class FullBackupTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("full-backup-test");
    ASSERT_TRUE(opened.ok()) << opened;
    auto pem = suite_.signer->PublicKeyPem();
    ASSERT_TRUE(pem.ok()) << pem.status();
    public_key_pem_ = *pem;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  void SetUp() override {
    audit::AuditLogOptions audit_options = suite_.AuditOptions(dir_.Sub("audit"), &clock_);
    // As the daemon wires it: checkpoints record the open instance's key-DB generation.
    audit_options.key_db_generation = [this] {
      const KeyManager* source = generation_source_.load();
      return source == nullptr ? uint64_t{0} : source->key_db_generation();
    };
    auto log = audit::AuditLog::Open(std::move(audit_options));
    ASSERT_TRUE(log.ok()) << log.status();
    log_ = *std::move(log);
    journal_ = std::make_unique<AuditPurgeJournal>(log_.get(), TestAdmin());

    FullBackupOptions backup_options;
    backup_options.directory = dir_.Sub("backups");
    backup_options.sync = false;
    backup_options.clock = &clock_;
    backup_options.token = &suite_.client->row_authenticator();
    auto backups = FullBackups::Open(backup_options);
    ASSERT_TRUE(backups.ok()) << backups.status();
    backups_ = *std::move(backups);

    OpenInstance(dir_.Sub("data"), dir_.Sub("keydb"));
  }

  void TearDown() override {
    CloseInstance();
    backups_.reset();
    journal_.reset();
    if (log_) log_->Close().IgnoreError();
  }

  KeyManagerOptions ManagerOptions(const std::string& key_db) {
    KeyManagerOptions options;
    options.key_db_directory = key_db;
    options.modules = {{"softhsm", &suite_.client->wrapping_keys()}};
    options.default_module = "softhsm";
    options.row_authenticator = &suite_.client->row_authenticator();
    options.signer = &suite_.client->signer();
    options.audit_log = log_.get();
    options.clock = &clock_;
    return options;
  }

  // Opens the key manager and the stores on a data DB and a key DB, as the daemon would.
  void OpenInstance(const std::string& data, const std::string& key_db) {
    data_path_ = data;
    key_db_path_ = key_db;
    auto db = storage::DataDb::Open(data, storage::DataDbOptions{});
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    StoreGraphOptions graph;
    graph.data_db = db_.get();
    graph.keys = ManagerOptions(key_db);
    graph.keys.crash_point = crash_point_;
    graph.purge_journal = journal_.get();
    auto stores = StoreGraph::Open(std::move(graph));
    ASSERT_TRUE(stores.ok()) << stores.status();
    stores_ = *std::move(stores);
    manager_ = &stores_->key_manager();
    counter_ = &stores_->counter();
    policies_ = &stores_->policies();
    records_ = &stores_->records();
    attachments_ = &stores_->attachments();
    bin_ = &stores_->bin();
    generation_source_ = manager_;
  }

  void CloseInstance() {
    generation_source_ = nullptr;
    manager_ = nullptr;
    counter_ = nullptr;
    policies_ = nullptr;
    records_ = nullptr;
    attachments_ = nullptr;
    bin_ = nullptr;
    stores_.reset();
    db_.reset();
  }

  FullBackupSources Sources() {
    return FullBackupSources{db_.get(), manager_, log_.get(), dir_.Sub("audit"), journal_.get()};
  }

  RestoreRequest Request(const std::string& target) {
    RestoreRequest request;
    request.target_directory = target;
    request.live_audit_directory = dir_.Sub("audit");
    request.audit_public_key_pem = public_key_pem_;
    request.key_manager = ManagerOptions("");
    request.actor = TestAdmin();
    return request;
  }

  uint64_t Create(std::string_view name) {
    auto handle = manager_->CreateDataset(name, std::nullopt, TestAdmin());
    EXPECT_TRUE(handle.ok()) << handle.status();
    return handle.value_or(0);
  }

  absl::Status PutAttachment(uint64_t handle, std::string_view name, std::string_view body) {
    COFFER_ASSIGN_OR_RETURN(auto upload, attachments_->BeginUpload(handle, name, "text/plain"));
    COFFER_RETURN_IF_ERROR(upload->Append(body));
    return upload->Commit();
  }

  std::map<std::pair<uint64_t, KeyPurpose>, uint32_t> Primaries() {
    std::map<std::pair<uint64_t, KeyPurpose>, uint32_t> out;
    for (const DatasetSummary& summary : manager_->ListDatasets()) {
      auto info = manager_->DescribeDataset(summary.handle);
      if (!info.ok()) continue;
      for (const PurposeInfo& purpose : info->purposes) {
        out[{summary.handle, purpose.purpose}] = purpose.primary_version;
      }
    }
    return out;
  }

  // Every DWK the suite's token holds now.
  std::vector<hsm::WrappingKeyId> TokenKeys() {
    auto ids = suite_.client->wrapping_keys().ListWrappingKeys();
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.value_or(std::vector<hsm::WrappingKeyId>{});
  }

  static bool Holds(const std::vector<hsm::WrappingKeyId>& ids, uint64_t handle, uint32_t version) {
    return std::find(ids.begin(), ids.end(), hsm::WrappingKeyId{handle, version}) != ids.end();
  }

  static inline testing::SuiteToken suite_;
  static inline std::string public_key_pem_;

  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
  std::unique_ptr<audit::AuditLog> log_;
  std::unique_ptr<AuditPurgeJournal> journal_;
  std::unique_ptr<FullBackups> backups_;
  std::string data_path_;
  std::string key_db_path_;
  std::unique_ptr<storage::DataDb> db_;
  std::unique_ptr<StoreGraph> stores_;  // as cofferd wires it; the parts below are its
  KeyManager* manager_ = nullptr;
  std::atomic<const KeyManager*> generation_source_{nullptr};  // manager_, for the log
  StoreDataCounter* counter_ = nullptr;
  KeyManagerPolicySource* policies_ = nullptr;
  storage::RecordStore* records_ = nullptr;
  storage::AttachmentStore* attachments_ = nullptr;
  storage::RecycleBin* bin_ = nullptr;
  // The live key manager's crash-point seam (KeyManagerOptions::crash_point, test-only): the
  // intent tests take a backup from inside an operation with it.
  CrashPoint crash_point_;
};

TEST_F(FullBackupTest, APurgeAfterTheBackupStaysPurgedWhenBothLiveDbsAreLostAndRestored) {
  uint64_t handle = Create("crm/contacts");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(records_->Put(handle, "c-" + std::to_string(i), "body " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(records_->Delete(handle, "c-5").ok());  // binned at backup time
  ASSERT_TRUE(PutAttachment(handle, "contract.pdf", std::string(5000, 'p')).ok());
  ASSERT_TRUE(PutAttachment(handle, "kept.pdf", "kept").ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  const auto before = Primaries();

  // After the backup: an admin purges a live record, the bin is emptied, an attachment purged.
  ASSERT_TRUE(bin_->PurgeRecord(handle, "c-3").ok());
  ASSERT_TRUE(bin_->EmptyBin(handle).ok());
  ASSERT_TRUE(bin_->PurgeAttachment(handle, "contract.pdf").ok());

  // Disaster: both live DBs are gone; the audit log survives.
  CloseInstance();
  fs::remove_all(data_path_);
  fs::remove_all(key_db_path_);

  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->purges_replayed, 3u);
  EXPECT_EQ(report->items_purged, 3u);
  EXPECT_TRUE(FullBackups::CheckRestoreComplete(target).ok());

  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  EXPECT_EQ(ErrorCodeOf(records_->Get(handle, "c-3").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(handle, "c-3")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(records_->Restore(handle, "c-5")), ErrorCode::kNotInRecycleBin);
  EXPECT_EQ(ErrorCodeOf(attachments_->Metadata(handle, "contract.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_TRUE(attachments_->Metadata(handle, "kept.pdf").ok());
  for (int i = 0; i < 20; ++i) {
    if (i == 3 || i == 5) continue;
    auto got = records_->Get(handle, "c-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "body " + std::to_string(i));
  }

  // (c) Every records and attachments primary is new; writes go under it.
  const auto after = Primaries();
  for (KeyPurpose purpose : {KeyPurpose::kRecords, KeyPurpose::kAttachments}) {
    EXPECT_GT(after.at({handle, purpose}), before.at({handle, purpose}));
  }
  EXPECT_EQ(after.at({handle, KeyPurpose::kLookup}), before.at({handle, KeyPurpose::kLookup}));
  ASSERT_TRUE(records_->Put(handle, "c-new", "after restore").ok());
  EXPECT_EQ(*counter_->CountProtectedBy(handle, KeyPurpose::kRecords,
                                        after.at({handle, KeyPurpose::kRecords})),
            1u);

  // The journal named records only by their 32-byte reference; the restore is audited.
  auto entries = audit::ReadAuditEntries(dir_.Sub("audit"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  int purges = 0;
  int restores = 0;
  for (const auto& entry : *entries) {
    if (entry.kind() == audit::v1::RECORD_PURGE || entry.kind() == audit::v1::ATTACHMENT_PURGE) {
      ++purges;
      EXPECT_EQ(entry.record_ref().size(), 32u);
      EXPECT_EQ(entry.record_ref().find("c-3"), std::string::npos);
    }
    if (entry.kind() == audit::v1::FULL_RESTORE && entry.stage() == audit::v1::STAGE_COMPLETED) {
      ++restores;
      EXPECT_EQ(entry.result_code(), 0);
      EXPECT_EQ(entry.record_count(), backup->id);
    }
  }
  EXPECT_EQ(purges, 3);
  EXPECT_EQ(restores, 1);
}

// Issue 17: the backup holds an item under lookup version 1; after a lookup rotation and the
// re-index the live copy is under version 2 when it is purged. The purge is journaled under both
// live versions, so the restore's replay deletes the backup's version 1 entry.
// Client moves after the backup, as cofferd audits them (ACCESS_DELETE naming the item by its
// ref, detail = the operation): a delete is in the bin again in the restored copy, at the
// delete's time; a restore of an item binned at backup time is live; a write is counted as an
// overwrite; a delete an older cofferd logged without a ref is counted, not replayed.
TEST_F(FullBackupTest, ClientMovesAfterTheBackupAreReplayedAndEntriesWithoutARefCounted) {
  uint64_t handle = Create("crm/moves");
  for (const char* i : {"0", "1", "2", "3", "4"}) {
    ASSERT_TRUE(records_->Put(handle, std::string("m-") + i, std::string("v") + i).ok());
  }
  ASSERT_TRUE(records_->Delete(handle, "m-4").ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();

  auto audit_move = [&](audit::v1::EventKind kind, audit::ItemMove move,
                        const crypto::HmacSha256Tag* ref) {
    audit::AuditEvent event;
    event.kind = kind;
    event.actor.uid = 1000;
    event.actor.socket = audit::v1::SOCKET_DATA;
    event.dataset_handle = handle;
    event.record_count = 1;
    if (ref != nullptr) {
      event.record_ref.emplace();
      std::copy(ref->begin(), ref->end(), event.record_ref->begin());
      event.detail = audit::ItemMoveDetail(move);
    }
    ASSERT_TRUE(log_->Append(event).ok());
  };
  crypto::HmacSha256Tag ref{};
  ASSERT_TRUE(records_->Delete(handle, "m-1", &ref).ok());
  audit_move(audit::v1::ACCESS_DELETE, audit::ItemMove::kRecordDelete, &ref);
  ASSERT_TRUE(records_->Restore(handle, "m-4", &ref).ok());
  audit_move(audit::v1::ACCESS_DELETE, audit::ItemMove::kRecordRestore, &ref);
  ASSERT_TRUE(records_->Put(handle, "m-2", "newer", &ref).ok());
  audit_move(audit::v1::ACCESS_WRITE, audit::ItemMove::kRecordWrite, &ref);
  ASSERT_TRUE(records_->Delete(handle, "m-3").ok());
  audit_move(audit::v1::ACCESS_DELETE, audit::ItemMove::kRecordDelete, nullptr);  // no ref

  CloseInstance();
  const std::string target = dir_.Sub("restored-moves");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->binned_again, 1u);
  EXPECT_EQ(report->restored_from_bin, 1u);
  EXPECT_EQ(report->records_overwritten, 1u);
  EXPECT_EQ(report->records_written_new, 0u);
  EXPECT_EQ(report->moves_without_ref, 1u);
  EXPECT_EQ(report->moves_not_found, 0u);

  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  EXPECT_EQ(ErrorCodeOf(records_->Get(handle, "m-1").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(records_->Get(handle, "m-4").value(), "v4");
  EXPECT_EQ(records_->Get(handle, "m-2").value(), "v2");  // the newer value is in no log
  EXPECT_EQ(records_->Get(handle, "m-3").value(), "v3");  // its delete named no item
  ASSERT_TRUE(records_->Restore(handle, "m-1").ok());
  EXPECT_EQ(records_->Get(handle, "m-1").value(), "v1");
}

TEST_F(FullBackupTest, APurgeAfterAReindexStaysPurgedInABackupHoldingTheOldLookupVersion) {
  uint64_t handle = Create("crm/reindexed");
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(records_->Put(handle, "r-" + std::to_string(i), "body " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(PutAttachment(handle, "scan.pdf", std::string(3000, 's')).ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();

  ASSERT_TRUE(
      manager_->Rotate(handle, KeyPurpose::kLookup, RotationCause::kReindex, TestAdmin()).ok());
  storage::ReindexJob reindex(db_.get(), manager_, attachments_, handle);
  auto reindexed = reindex.Run();
  ASSERT_TRUE(reindexed.ok()) << reindexed.status();
  EXPECT_EQ(reindexed->moved, 11u);
  ASSERT_TRUE(bin_->PurgeRecord(handle, "r-4").ok());
  ASSERT_TRUE(bin_->PurgeAttachment(handle, "scan.pdf").ok());

  CloseInstance();
  fs::remove_all(data_path_);
  fs::remove_all(key_db_path_);
  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->purges_replayed, 4u);  // two items, each under lookup versions 2 and 1
  EXPECT_EQ(report->items_purged, 2u);

  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  EXPECT_EQ(ErrorCodeOf(records_->Get(handle, "r-4").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(attachments_->Metadata(handle, "scan.pdf").status()),
            ErrorCode::kAttachmentNotFound);
  for (int i = 0; i < 10; ++i) {
    if (i == 4) continue;
    auto got = records_->Get(handle, "r-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "body " + std::to_string(i));
  }
}

// The crypto-shredding proof (issue 5, item 10).
TEST_F(FullBackupTest, ADatasetDestroyedAfterTheBackupIsUnreadableInTheRestoredCopy) {
  uint64_t doomed = Create("crm/account-17");
  uint64_t kept = Create("crm/account-18");
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(
        records_->Put(doomed, "r-" + std::to_string(i), "secret " + std::to_string(i)).ok());
    ASSERT_TRUE(records_->Put(kept, "r-" + std::to_string(i), "kept " + std::to_string(i)).ok());
  }
  ASSERT_TRUE(PutAttachment(doomed, "scan.png", "image bytes").ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  const auto before = Primaries();

  ASSERT_TRUE(manager_->Disable(doomed, TestAdmin()).ok());
  ASSERT_TRUE(manager_->ScheduleDestruction(doomed, TestAdmin()).ok());
  clock_.Advance(std::chrono::seconds(31 * kDay));
  auto work = manager_->RunDueWork();
  ASSERT_TRUE(work.ok()) << work.status();
  ASSERT_EQ(work->destroyed, std::vector<uint64_t>{doomed});
  CloseInstance();

  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->datasets_destroyed, std::vector<uint64_t>{doomed});

  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  auto info = manager_->DescribeDataset(doomed);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, DatasetState::kDestroyed);
  EXPECT_TRUE(manager_->GetTombstone(doomed).ok());
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(ErrorCodeOf(records_->Get(doomed, "r-" + std::to_string(i)).status()),
              ErrorCode::kKeyDestroyed)
        << i;
    auto got = records_->Get(kept, "r-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "kept " + std::to_string(i));
  }
  EXPECT_EQ(ErrorCodeOf(attachments_->Open(doomed, "scan.png").status()), ErrorCode::kKeyDestroyed);
  for (uint32_t version = 1; version <= 2; ++version) {
    EXPECT_EQ(ErrorCodeOf(manager_->KeyForVersion(doomed, KeyPurpose::kRecords, version).status()),
              ErrorCode::kKeyDestroyed);
  }
  const auto after = Primaries();
  EXPECT_GT(after.at({kept, KeyPurpose::kRecords}), before.at({kept, KeyPurpose::kRecords}));
  EXPECT_GT(after.at({kept, KeyPurpose::kAttachments}),
            before.at({kept, KeyPurpose::kAttachments}));
}

// docs/key-manager.md, "Key DB generation": a backup's key DB is older than the log says and
// is refused like any older copy; the restore gives its key DB a generation above everything
// the live log recorded, so it opens beside that log, and the old live key DB is then the older.
TEST_F(FullBackupTest, ARestoredKeyDbStartsAboveTheLiveLogsGeneration) {
  uint64_t crm = Create("crm/account-40");
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  ASSERT_TRUE(manager_->Disable(crm, TestAdmin()).ok());
  ASSERT_TRUE(log_->Checkpoint().ok());
  const uint64_t live = manager_->key_db_generation();
  ASSERT_EQ(log_->recorded_key_db_generation(), live);
  CloseInstance();

  // The backup's own key-DB copy, opened with the token and put in place as it is: refused.
  ASSERT_TRUE(FullBackups::ExtractKeyDb(dir_.Sub("backups"), backup->id,
                                        suite_.client->row_authenticator(), dir_.Sub("backup-keys"))
                  .ok());
  KeyManagerOptions raw = ManagerOptions(dir_.Sub("backup-keys"));
  raw.minimum_key_db_generation = log_->recorded_key_db_generation();
  EXPECT_EQ(ErrorCodeOf(KeyManager::Open(raw).status()), ErrorCode::kKeyDbRolledBack);

  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_GE(report->key_db_generation, live + kRestoredKeyDbGenerationStep);

  // Served beside the live log: it opens at the log's bar, in the backup's state.
  KeyManagerOptions restored = ManagerOptions(target + "/" + kRestoredKeyDbDir);
  restored.minimum_key_db_generation = log_->recorded_key_db_generation();
  auto manager = KeyManager::Open(restored);
  ASSERT_TRUE(manager.ok()) << manager.status();
  EXPECT_GE((*manager)->key_db_generation(), report->key_db_generation);
  EXPECT_EQ((*manager)->DescribeDataset(crm)->state, DatasetState::kActive);
  generation_source_ = manager->get();
  ASSERT_TRUE(log_->Checkpoint().ok());
  generation_source_ = nullptr;
  manager->reset();

  // Now the old live key DB is older than the log says.
  KeyManagerOptions old_live = ManagerOptions(dir_.Sub("keydb"));
  old_live.minimum_key_db_generation = log_->recorded_key_db_generation();
  EXPECT_EQ(ErrorCodeOf(KeyManager::Open(old_live).status()), ErrorCode::kKeyDbRolledBack);
}

TEST_F(FullBackupTest, VerifyDetectsACorruptFileInEachPart) {
  uint64_t handle = Create("crm/notes");
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(records_->Put(handle, "n-" + std::to_string(i), std::string(500, 'x')).ok());
  }
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  ASSERT_TRUE(backups_->Verify(backup->id).ok());
  const std::string full = dir_.Sub("backups") + "/full/" + std::to_string(backup->id);
  const std::vector<std::string> parts = {
      LargestFile(dir_.Sub("backups") + "/data/shared_checksum"),
      LargestFile(full + "/" + kRestoredKeyDbDir), LargestFile(full + "/" + kRestoredAuditDir),
      full + "/MANIFEST"};
  for (const std::string& path : parts) {
    ASSERT_FALSE(path.empty());
    const size_t offset = fs::file_size(path) / 2;
    FlipByte(path, offset);
    EXPECT_EQ(ErrorCodeOf(backups_->Verify(backup->id)), ErrorCode::kBackupCorrupt) << path;
    FlipByte(path, offset);  // the flip is its own inverse
    EXPECT_TRUE(backups_->Verify(backup->id).ok()) << path;
  }
  // A missing key-DB file is corruption too; a restore from a corrupt backup writes nothing.
  const std::string keys = LargestFile(full + "/" + kRestoredKeyDbDir);
  fs::rename(keys, keys + ".moved");
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(backup->id)), ErrorCode::kBackupCorrupt);
  auto refused = backups_->RestoreInto(backup->id, Request(dir_.Sub("restored")));
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kBackupCorrupt);
  EXPECT_FALSE(fs::exists(dir_.Sub("restored")));
  fs::rename(keys + ".moved", keys);
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(backup->id + 100)), ErrorCode::kBackupNotFound);
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// Whether any regular file in `dir` contains `text`.
bool AnyFileContains(const std::string& dir, std::string_view text) {
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.is_regular_file() && ReadAll(entry.path()).find(text) != std::string::npos) {
      return true;
    }
  }
  return false;
}

// Issue 20 item 3: the key DB copy inside a backup is sealed under a key only the token derives
// (manifest version 2), so a backup holder alone reads no key-DB row; verify and restore open it
// with the token; another token's key does not; and a version-1 backup (key DB in the clear, as
// earlier builds wrote it) still verifies and restores.
TEST_F(FullBackupTest, TheKeyDbCopyIsSealedUnderTheTokenAndAVersion1BackupStillRestores) {
  uint64_t handle = Create("crm/sealed");
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(records_->Put(handle, "s-" + std::to_string(i), "value " + std::to_string(i)).ok());
  }
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  const std::string full = dir_.Sub("backups") + "/full/" + std::to_string(backup->id);
  const std::string manifest_text = ReadAll(full + "/MANIFEST");
  EXPECT_EQ(manifest_text.rfind("coffer-full-backup v2\n", 0), 0u) << manifest_text;
  EXPECT_NE(manifest_text.find("\nkey_db_sealed "), std::string::npos);
  EXPECT_FALSE(fs::exists(full + "/keys.checkpoint"));  // the plain staging copy is gone
  // RocksDB's own files name it in the clear (the live key DB does); the sealed copy does not.
  ASSERT_TRUE(AnyFileContains(key_db_path_, "rocksdb"));
  EXPECT_FALSE(AnyFileContains(full + "/" + kRestoredKeyDbDir, "rocksdb"));
  for (const auto& entry : fs::directory_iterator(full + "/" + kRestoredKeyDbDir)) {
    EXPECT_EQ(entry.path().extension(), ".sealed") << entry.path();
  }
  ASSERT_TRUE(backups_->Verify(backup->id).ok());
  // With the token, the copy opens: the key DB as the backup took it.
  ASSERT_TRUE(FullBackups::ExtractKeyDb(dir_.Sub("backups"), backup->id,
                                        suite_.client->row_authenticator(), dir_.Sub("extracted"))
                  .ok());
  {
    auto extracted = KeyDb::Open(dir_.Sub("extracted"), &suite_.client->row_authenticator());
    ASSERT_TRUE(extracted.ok()) << extracted.status();
  }

  // Another token derives another key: verify names the key-DB file that does not open.
  {
    testing::FixedRowAuthenticator other_token;
    FullBackupOptions other;
    other.directory = dir_.Sub("backups");
    other.sync = false;
    other.clock = &clock_;
    other.token = &other_token;
    auto foreign = FullBackups::Open(other);
    ASSERT_TRUE(foreign.ok()) << foreign.status();
    absl::Status verified = (*foreign)->Verify(backup->id);
    EXPECT_EQ(ErrorCodeOf(verified), ErrorCode::kBackupCorrupt) << verified;
    EXPECT_NE(verified.message().find("another token"), std::string::npos) << verified;
    auto refused = (*foreign)->RestoreInto(backup->id, Request(dir_.Sub("foreign")));
    EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kBackupCorrupt);
    EXPECT_FALSE(fs::exists(dir_.Sub("foreign")));
    other.token = nullptr;
    EXPECT_EQ(ErrorCodeOf(FullBackups::Open(other).status()), ErrorCode::kInvalidArgument);
  }

  // The same backup as a build before sealing wrote it: key-DB files in the clear, manifest v1.
  auto manifest = internal::ReadManifest(backup->id, full);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  ASSERT_TRUE(manifest->key_db_seal_salt.has_value());
  auto sealer =
      internal::KeyDbSealer(suite_.client->row_authenticator(), *manifest->key_db_seal_salt);
  ASSERT_TRUE(sealer.ok()) << sealer.status();
  for (internal::ManifestFile& file : manifest->files) {
    if (!internal::InPart(file, kRestoredKeyDbDir)) continue;
    auto plain =
        internal::UnsealKeyDbFile(*sealer, backup->id, file, ReadAll(full + "/" + file.path));
    ASSERT_TRUE(plain.ok()) << plain.status();
    fs::remove(full + "/" + file.path);
    file.path =
        std::string(kRestoredKeyDbDir) + "/" + std::string(internal::KeyDbFileName(file, true));
    ASSERT_TRUE(internal::WriteWholeFile(full + "/" + file.path, *plain, false).ok());
    file.size = plain->size();
    file.sha256 = internal::Sha256Hex(*plain);
  }
  manifest->key_db_seal_salt.reset();
  const std::string v1 = internal::EncodeManifest(*manifest);
  ASSERT_EQ(v1.rfind("coffer-full-backup v1\n", 0), 0u);
  ASSERT_TRUE(internal::WriteWholeFile(full + "/MANIFEST", v1, false).ok());
  ASSERT_TRUE(AnyFileContains(full + "/" + kRestoredKeyDbDir, "rocksdb"));
  ASSERT_TRUE(backups_->Verify(backup->id).ok());

  CloseInstance();
  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  for (int i = 0; i < 10; ++i) {
    auto got = records_->Get(handle, "s-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "value " + std::to_string(i));
  }
}

// Run-time grants are key-DB rows: a restore brings back the backup's. The grant changes made
// after the backup (completed ADMIN_REQUEST grant_add / grant_remove entries, as
// kms/ops/runtime_grants.cc writes them) are counted, not replayed, so the admins learn what to
// redo; refused or merely requested changes do not count, nor do those before the backup.
TEST_F(FullBackupTest, ARestoreCountsTheGrantChangesMadeAfterTheBackup) {
  Create("crm/granted");
  auto grant_change = [&](audit::AuditText detail, audit::v1::Stage stage, ErrorCode result) {
    audit::AuditEvent event;
    event.kind = audit::v1::ADMIN_REQUEST;
    event.actor = TestAdmin();
    event.stage = stage;
    event.result = result;
    event.record_count = 1001;
    event.detail = detail;
    ASSERT_TRUE(log_->Append(event).ok());
  };
  grant_change("grant_add uid READ on the dataset", audit::v1::STAGE_COMPLETED, ErrorCode::kOk);
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  grant_change("grant_remove uid READ on the dataset", audit::v1::STAGE_REQUESTED, ErrorCode::kOk);
  grant_change("grant_remove uid READ on the dataset", audit::v1::STAGE_COMPLETED, ErrorCode::kOk);
  grant_change("grant_add gid READ,WRITE on every dataset", audit::v1::STAGE_COMPLETED,
               ErrorCode::kOk);
  grant_change("grant_add uid WRITE on the dataset", audit::v1::STAGE_COMPLETED,
               ErrorCode::kNotGranted);
  CloseInstance();
  auto report = backups_->RestoreInto(backup->id, Request(dir_.Sub("restored")));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->grants_removed_since, 1u);
  EXPECT_EQ(report->grants_added_since, 1u);
}

TEST_F(FullBackupTest, PruneKeepsTheNewestAndRestoreRefusesANonEmptyTargetOrAStaleLog) {
  uint64_t handle = Create("crm/deals");
  ASSERT_TRUE(records_->Put(handle, "d-1", "first").ok());
  auto first = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(first.ok()) << first.status();
  clock_.Advance(std::chrono::seconds(31 * kDay));
  ASSERT_TRUE(records_->Put(handle, "d-2", "second").ok());
  auto second = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_GT(second->audit_sequence, first->audit_sequence);
  auto listed = backups_->List();
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 2u);

  auto pruned = backups_->PruneExpired();
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_EQ(*pruned, std::vector<uint32_t>{first->id});
  clock_.Advance(std::chrono::seconds(365 * kDay));
  pruned = backups_->PruneExpired();  // the newest is kept however old
  ASSERT_TRUE(pruned.ok()) << pruned.status();
  EXPECT_TRUE(pruned->empty());
  listed = backups_->List();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ(listed->front().id, second->id);
  EXPECT_EQ(ErrorCodeOf(backups_->Verify(first->id)), ErrorCode::kBackupNotFound);
  EXPECT_TRUE(backups_->Verify(second->id).ok());

  const std::string busy = dir_.Sub("busy");
  fs::create_directories(busy);
  std::ofstream(busy + "/file") << "x";
  EXPECT_EQ(ErrorCodeOf(backups_->RestoreInto(second->id, Request(busy)).status()),
            ErrorCode::kRestoreTargetNotEmpty);

  // Another log (another log id) cannot say what happened after the backup.
  audit::AuditLogOptions other = suite_.AuditOptions(dir_.Sub("other-audit"), &clock_);
  auto other_log = audit::AuditLog::Open(std::move(other));
  ASSERT_TRUE(other_log.ok()) << other_log.status();
  ASSERT_TRUE((*other_log)->Close().ok());
  RestoreRequest stale = Request(dir_.Sub("restored"));
  stale.live_audit_directory = dir_.Sub("other-audit");
  EXPECT_EQ(ErrorCodeOf(backups_->RestoreInto(second->id, stale).status()),
            ErrorCode::kReplaySourceStale);
  EXPECT_FALSE(fs::exists(dir_.Sub("restored")));

  // A restore that did not finish is refused when the directory is checked before serving.
  const std::string half = dir_.Sub("half");
  fs::create_directories(half);
  std::ofstream(half + "/" + kRestoreMarker) << "";
  EXPECT_EQ(ErrorCodeOf(FullBackups::CheckRestoreComplete(half)), ErrorCode::kRestoreIncomplete);
}

// The newest anchor kept off the machine (docs/audit.md, "Tail truncation and rollback"): a live
// log cut back before it is refused before anything is restored, so the purges and
// destructions cut off cannot be lost by the replay.
TEST_F(FullBackupTest, ARestoreRefusesALiveLogThatEndsBeforeTheNewestAnchor) {
  uint64_t handle = Create("crm/cut");
  ASSERT_TRUE(records_->Put(handle, "c-1", "kept").ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();

  // A checkpoint, and its anchor as the journal host holds it.
  ASSERT_TRUE(log_->Checkpoint().ok());
  const std::string segment_path = audit::testing::LastSegmentPath(dir_.Sub("audit"));
  audit::testing::RawSegment segment = audit::testing::ReadSegment(segment_path);
  ASSERT_FALSE(segment.frames.empty());
  const audit::testing::RawFrame& last = segment.frames.back();
  ASSERT_EQ(last.Entry().kind(), audit::v1::LOG_CHECKPOINT);
  const audit::CheckpointAnchor anchor{segment.header.log_id, last.Entry().sequence(), last.hash,
                                       last.Entry().time_micros()};

  // The live log reaches it: the restore goes ahead.
  RestoreRequest reaches = Request(dir_.Sub("restored-ok"));
  reaches.minimum_anchor = anchor;
  auto restored = backups_->RestoreInto(backup->id, reaches);
  ASSERT_TRUE(restored.ok()) << restored.status();

  // Root cuts the live log back at a frame boundary before the anchored checkpoint.
  CloseInstance();
  ASSERT_TRUE(log_->Close().ok());
  segment = audit::testing::ReadSegment(segment_path);
  const size_t keep = audit::testing::FrameIndexOf(segment, anchor.sequence) - 1;
  segment.frames.resize(keep);
  audit::testing::WriteSegment(segment_path, segment);

  RestoreRequest cut = Request(dir_.Sub("restored-cut"));
  cut.minimum_anchor = anchor;
  const absl::Status refused = backups_->RestoreInto(backup->id, cut).status();
  EXPECT_EQ(ErrorCodeOf(refused), ErrorCode::kAuditTampered) << refused;
  EXPECT_NE(refused.message().find("truncated"), std::string::npos) << refused;
  EXPECT_FALSE(fs::exists(dir_.Sub("restored-cut")));
}

TEST_F(FullBackupTest, TheAuditJournalFailsClosed) {
  uint64_t handle = Create("crm/leads");
  ASSERT_TRUE(records_->Put(handle, "l-1", "lead").ok());
  // A journal over a closed log cannot make its entry durable: the purge does not happen.
  audit::AuditLogOptions other = suite_.AuditOptions(dir_.Sub("closed-audit"), &clock_);
  auto closed = audit::AuditLog::Open(std::move(other));
  ASSERT_TRUE(closed.ok()) << closed.status();
  ASSERT_TRUE((*closed)->Close().ok());
  AuditPurgeJournal journal(closed->get(), TestAdmin());
  storage::RecycleBin bin(db_.get(), manager_, policies_, &clock_, &journal);
  EXPECT_EQ(ErrorCodeOf(bin.PurgeRecord(handle, "l-1")), ErrorCode::kAuditLogClosed);
  EXPECT_EQ(*records_->Get(handle, "l-1"), "lead");
  // And a backup still finds the journal quiescent (the failed purge left nothing in flight).
  EXPECT_EQ(journal.QuiescentSequence(), (*closed)->stats().next_sequence);
}

// The backup boundary B waits for a purge between its journal entry and its deletes, and holds
// new purges off while it is read: every purge below B has its deletes written.
TEST_F(FullBackupTest, TheBackupBoundaryWaitsForPurgesInFlight) {
  storage::PurgedItem item;
  item.dataset_handle = 7;
  item.ref.fill(0xab);
  ASSERT_TRUE(journal_->WillPurge(item).ok());
  const uint64_t journaled = log_->stats().next_sequence - 1;
  std::atomic<bool> returned{false};
  uint64_t boundary = 0;
  std::thread backup([&] {
    boundary = journal_->QuiescentSequence();
    returned = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_FALSE(returned.load());  // the deletes are not written yet
  journal_->PurgeWritten(item);
  backup.join();
  EXPECT_GT(boundary, journaled);  // not replayed: its deletes are in any backup taken now
  ASSERT_TRUE(journal_->WillPurge(item).ok());
  EXPECT_GE(log_->stats().next_sequence - 1, boundary);  // a later purge is replayed
  journal_->PurgeWritten(item);
}

// Trust boundary, item 5: a backup taken while a dataset was being created holds its CREATING
// intent. Restoring it must not roll that create back in the token: by then the DWK is a live
// dataset's key, and destroying it would shred live data.
TEST_F(FullBackupTest, ACreatingIntentInABackupLeavesTheLiveDatasetsWrappingKeyAlone) {
  uint64_t other = Create("crm/existing");
  ASSERT_TRUE(records_->Put(other, "o-1", "other").ok());
  CloseInstance();
  std::optional<FullBackupInfo> backup;
  crash_point_ = [&](std::string_view step) {
    if (step != "create.wrapping_key" || backup.has_value()) return;
    auto made = backups_->Create(Sources(), TestAdmin());
    ASSERT_TRUE(made.ok()) << made.status();
    backup = *made;
  };
  OpenInstance(data_path_, key_db_path_);
  const uint64_t handle = Create("crm/being-created");
  ASSERT_TRUE(backup.has_value());
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(records_->Put(handle, "r-" + std::to_string(i), "live " + std::to_string(i)).ok());
  }
  CloseInstance();
  crash_point_ = nullptr;
  const std::vector<hsm::WrappingKeyId> before = TokenKeys();
  ASSERT_TRUE(Holds(before, handle, 1));

  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->intents_resolved, 1u);
  EXPECT_EQ(TokenKeys(), before);  // nothing created, nothing destroyed

  // The live dataset still decrypts, through a fresh key manager (no cached key): an unwrap
  // under its DWK in the token.
  OpenInstance(data_path_, key_db_path_);
  for (int i = 0; i < 5; ++i) {
    auto got = records_->Get(handle, "r-" + std::to_string(i));
    ASSERT_TRUE(got.ok()) << i << ": " << got.status();
    EXPECT_EQ(*got, "live " + std::to_string(i));
  }
  EXPECT_TRUE(manager_->recovery_report().missing_wrapping_keys.empty());
  CloseInstance();

  // The restored copy never had the dataset, and keeps no intent: a later open has nothing to do.
  OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
  EXPECT_EQ(ErrorCodeOf(manager_->DescribeDataset(handle).status()), ErrorCode::kDatasetNotFound);
  EXPECT_TRUE(manager_->recovery_report().creates_rolled_back.empty());
  EXPECT_EQ(*records_->Get(other, "o-1"), "other");
}

// Trust boundary, item 5: REWRAPPING intents in a backup. Dataset A was re-wrapped v1 -> v2
// (keeping v1), then v2 -> v3 destroying v2, so the token holds v1 and v3 but never v2 again;
// the backup caught the first re-wrap before it made v2. Dataset B was re-wrapped v1 -> v2; its
// backup caught that intent too. Neither restore creates or destroys a token object: A's copy
// drops the intent and stays under v1 (the code before this fix created v2 again), B's finishes
// the re-wrap in rows under the v2 the live re-wrap made.
TEST_F(FullBackupTest, ARewrappingIntentInABackupChangesNoTokenObject) {
  const uint64_t a = Create("crm/rewrap-a");
  const uint64_t b = Create("crm/rewrap-b");
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(records_->Put(a, "r-" + std::to_string(i), "a " + std::to_string(i)).ok());
    ASSERT_TRUE(records_->Put(b, "r-" + std::to_string(i), "b " + std::to_string(i)).ok());
  }
  CloseInstance();
  std::map<uint64_t, FullBackupInfo> backups;
  uint64_t rewrapping = 0;
  crash_point_ = [&](std::string_view step) {
    if (step != "rewrap.intent" || backups.contains(rewrapping)) return;
    auto made = backups_->Create(Sources(), TestAdmin());
    ASSERT_TRUE(made.ok()) << made.status();
    backups[rewrapping] = *made;
  };
  OpenInstance(data_path_, key_db_path_);
  rewrapping = a;
  ASSERT_TRUE(manager_->Rewrap(a, "", /*destroy_old=*/false, TestAdmin()).ok());
  ASSERT_TRUE(manager_->Rewrap(a, "", /*destroy_old=*/true, TestAdmin()).ok());
  rewrapping = b;
  ASSERT_TRUE(manager_->Rewrap(b, "", /*destroy_old=*/false, TestAdmin()).ok());
  ASSERT_EQ(backups.size(), 2u);
  CloseInstance();
  crash_point_ = nullptr;
  const std::vector<hsm::WrappingKeyId> before = TokenKeys();
  ASSERT_TRUE(Holds(before, a, 1));
  ASSERT_FALSE(Holds(before, a, 2));
  ASSERT_TRUE(Holds(before, a, 3));
  ASSERT_TRUE(Holds(before, b, 1));
  ASSERT_TRUE(Holds(before, b, 2));

  for (const auto& [handle, backup] : backups) {
    SCOPED_TRACE(handle == a ? "dataset A" : "dataset B");
    const std::string target = dir_.Sub("restored-" + std::to_string(handle));
    auto report = backups_->RestoreInto(backup.id, Request(target));
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_EQ(report->intents_resolved, 1u);
    EXPECT_EQ(TokenKeys(), before);  // the token's object count and ids are unchanged

    OpenInstance(target + "/" + kRestoredDataDir, target + "/" + kRestoredKeyDbDir);
    auto info = manager_->DescribeDataset(handle);
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_FALSE(info->wrapping_key_missing);
    EXPECT_EQ(info->current_wrapping_key.version, handle == a ? 1u : 2u);
    const char* prefix = handle == a ? "a " : "b ";
    for (int i = 0; i < 5; ++i) {
      auto got = records_->Get(handle, "r-" + std::to_string(i));
      ASSERT_TRUE(got.ok()) << i << ": " << got.status();
      EXPECT_EQ(*got, prefix + std::to_string(i));
    }
    EXPECT_TRUE(manager_->recovery_report().rewraps_completed.empty());  // nothing left to do
    CloseInstance();
  }
}

// Trust boundary, item 5: a backup taken while a destruction was under way holds its DESTROYING
// intent, and the live log holds the destruction's REQUESTED entry. Here the live system
// "crashed" right after the intent (the crash point throws), so the token still holds the DWK
// when the restore runs: the restore leaves it there and the dataset DESTROYING in the copy;
// the live key manager's own recovery destroys it when it opens again.
TEST_F(FullBackupTest, ADestroyingIntentInABackupDestroysNothingInTheToken) {
  struct Crashed {};
  const uint64_t doomed = Create("crm/doomed");
  ASSERT_TRUE(records_->Put(doomed, "d-1", "doomed").ok());
  ASSERT_TRUE(manager_->Disable(doomed, TestAdmin()).ok());
  ASSERT_TRUE(manager_->ScheduleDestruction(doomed, TestAdmin()).ok());
  CloseInstance();
  std::optional<FullBackupInfo> backup;
  crash_point_ = [&](std::string_view step) {
    if (step != "destroy.intent") return;
    auto made = backups_->Create(Sources(), TestAdmin());
    ASSERT_TRUE(made.ok()) << made.status();
    backup = *made;
    throw Crashed{};  // the live system stops here, its DWK still in the token
  };
  OpenInstance(data_path_, key_db_path_);
  clock_.Advance(std::chrono::seconds(31 * kDay));
  EXPECT_THROW(manager_->RunDueWork().IgnoreError(), Crashed);
  ASSERT_TRUE(backup.has_value());
  CloseInstance();
  crash_point_ = nullptr;
  const std::vector<hsm::WrappingKeyId> before = TokenKeys();
  ASSERT_TRUE(Holds(before, doomed, 1));

  auto report = backups_->RestoreInto(backup->id, Request(dir_.Sub("restored")));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->destructions_deferred, std::vector<uint64_t>{doomed});
  EXPECT_TRUE(report->datasets_destroyed.empty());
  EXPECT_EQ(TokenKeys(), before);

  // The live system's own recovery finishes its destruction.
  OpenInstance(data_path_, key_db_path_);
  EXPECT_EQ(manager_->recovery_report().destroys_completed, std::vector<uint64_t>{doomed});
  EXPECT_FALSE(Holds(TokenKeys(), doomed, 1));
  EXPECT_EQ(ErrorCodeOf(records_->Get(doomed, "d-1").status()), ErrorCode::kKeyDestroyed);
}

// Trust boundary, item 6: the restore creates its target itself and never writes through a
// path someone else prepared.
TEST_F(FullBackupTest, TheRestoreCreatesItsTargetAndNeverWritesThroughASymlink) {
  const uint64_t handle = Create("crm/target");
  ASSERT_TRUE(records_->Put(handle, "t-1", "target").ok());
  auto backup = backups_->Create(Sources(), TestAdmin());
  ASSERT_TRUE(backup.ok()) << backup.status();
  CloseInstance();
  auto code = [&](const std::string& target) {
    return ErrorCodeOf(backups_->RestoreInto(backup->id, Request(target)).status());
  };

  const std::string empty = dir_.Sub("empty");
  ASSERT_TRUE(fs::create_directory(empty));
  EXPECT_EQ(code(empty), ErrorCode::kRestoreTargetNotEmpty);  // exists, though empty
  EXPECT_TRUE(fs::is_empty(empty));

  const std::string victim = dir_.Sub("victim");
  ASSERT_TRUE(fs::create_directory(victim));
  fs::create_directory_symlink(victim, dir_.Sub("link"));
  EXPECT_EQ(code(dir_.Sub("link")), ErrorCode::kRestoreTargetNotEmpty);
  fs::create_directory_symlink(dir_.Sub("nowhere"), dir_.Sub("dangling"));
  EXPECT_EQ(code(dir_.Sub("dangling")), ErrorCode::kRestoreTargetNotEmpty);
  EXPECT_FALSE(fs::exists(dir_.Sub("nowhere")));
  fs::create_directory_symlink(victim, dir_.Sub("parent-link"));
  EXPECT_EQ(code(dir_.Sub("parent-link") + "/restored"), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(victim));  // nothing written through any of the links

  const std::string shared = dir_.Sub("shared");  // others may rename entries in it
  ASSERT_TRUE(fs::create_directory(shared));
  fs::permissions(shared, fs::perms::all);
  EXPECT_EQ(code(shared + "/restored"), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(shared));
  EXPECT_EQ(code(dir_.Sub("missing-parent") + "/restored"), ErrorCode::kInvalidArgument);

  // The restore: every directory 0700, every file 0600 (RocksDB's under the test's umask too).
  const std::string target = dir_.Sub("restored");
  auto report = backups_->RestoreInto(backup->id, Request(target));
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(fs::status(target).permissions(), fs::perms::owner_all);
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(target)) {
    const fs::file_status status = entry.symlink_status();
    ASSERT_FALSE(fs::is_symlink(status)) << entry.path();
    if (fs::is_directory(status)) {
      EXPECT_EQ(status.permissions(), fs::perms::owner_all) << entry.path();
    } else {
      ASSERT_TRUE(fs::is_regular_file(status)) << entry.path();
      EXPECT_EQ(status.permissions(), fs::perms::owner_read | fs::perms::owner_write)
          << entry.path();
      ++files;
    }
  }
  EXPECT_GT(files, 3u);
  EXPECT_EQ(code(target), ErrorCode::kRestoreTargetNotEmpty);
}

// Progress (crypto/base/progress.h): each operation reports its documented phases, in order, each
// from 0 to its total (ProgressLog::KeepsTheContract), throttled; an empty function is none.
TEST_F(FullBackupTest, CreateVerifyAndRestoreReportTheirPhasesInOrder) {
  const uint64_t kept = Create("crm/progress");
  const uint64_t doomed = Create("crm/progress-doomed");
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(records_->Put(kept, "r-" + std::to_string(i), "body").ok());
    ASSERT_TRUE(records_->Put(doomed, "r-" + std::to_string(i), "body").ok());
  }
  ASSERT_TRUE(PutAttachment(kept, "big.bin", std::string(3 * kMiB, 'b')).ok());

  ProgressLog create_log;
  auto backup = backups_->Create(Sources(), TestAdmin(), create_log.Function());
  ASSERT_TRUE(backup.ok()) << backup.status();
  EXPECT_TRUE(create_log.KeepsTheContract());
  EXPECT_EQ(create_log.Phases(), (Phases{"data", "keys", "audit"}));
  EXPECT_GE(create_log.Of("data").size(), 3u);  // the start, a step of the big file, the end
  EXPECT_GT(TotalOf(create_log, "keys"), 0u);
  EXPECT_GT(TotalOf(create_log, "audit"), 0u);
  // An empty function: a second backup reports nothing and is whole.
  auto second = backups_->Create(Sources(), TestAdmin(), coffer::ProgressFn());
  ASSERT_TRUE(second.ok()) << second.status();

  ProgressLog verify_log;
  ASSERT_TRUE(backups_->Verify(backup->id, verify_log.Function()).ok());
  EXPECT_TRUE(verify_log.KeepsTheContract());
  EXPECT_EQ(verify_log.Phases(), (Phases{"data", "keys", "audit"}));
  // Verify's totals are exact: the backup's parts.
  EXPECT_EQ(
      TotalOf(verify_log, "data") + TotalOf(verify_log, "keys") + TotalOf(verify_log, "audit"),
      backup->size_bytes);
  for (const std::string& phase : verify_log.Phases()) {  // throttled: per MiB at most
    EXPECT_LE(verify_log.Of(phase).size(), TotalOf(verify_log, phase) / kMiB + 2) << phase;
  }
  EXPECT_TRUE(backups_->Verify(second->id, coffer::ProgressFn()).ok());

  // Work for the replay: a purge after the backup, and a destruction.
  ASSERT_TRUE(bin_->PurgeRecord(kept, "r-1").ok());
  ASSERT_TRUE(manager_->Disable(doomed, TestAdmin()).ok());
  ASSERT_TRUE(manager_->ScheduleDestruction(doomed, TestAdmin()).ok());
  clock_.Advance(std::chrono::seconds(31 * kDay));
  ASSERT_TRUE(manager_->RunDueWork().ok());
  CloseInstance();

  ProgressLog restore_log;
  auto report =
      backups_->RestoreInto(backup->id, Request(dir_.Sub("restored")), restore_log.Function());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(restore_log.KeepsTheContract());
  EXPECT_EQ(restore_log.Phases(), (Phases{"verify", "data", "keys", "audit", "replay", "rotate"}));
  EXPECT_GT(TotalOf(restore_log, "verify"), backup->size_bytes);  // the parts and the live log
  EXPECT_EQ(TotalOf(restore_log, "data"), TotalOf(verify_log, "data"));
  EXPECT_EQ(TotalOf(restore_log, "keys"), TotalOf(verify_log, "keys"));
  EXPECT_EQ(TotalOf(restore_log, "audit"), TotalOf(verify_log, "audit"));
  EXPECT_EQ(report->purges_replayed, 1u);
  EXPECT_EQ(TotalOf(restore_log, "replay"), 2u);  // the purge and the destruction
  EXPECT_EQ(restore_log.Of("replay").size(), 3u);
  EXPECT_EQ(TotalOf(restore_log, "rotate"), 1u);  // the one ACTIVE dataset
  EXPECT_EQ(restore_log.Of("rotate").size(), 2u);
  EXPECT_TRUE(FullBackups::CheckRestoreComplete(dir_.Sub("restored")).ok());

  auto quiet = backups_->RestoreInto(second->id, Request(dir_.Sub("quiet")), coffer::ProgressFn());
  ASSERT_TRUE(quiet.ok()) << quiet.status();
  EXPECT_TRUE(FullBackups::CheckRestoreComplete(dir_.Sub("quiet")).ok());
}

}  // namespace
}  // namespace coffer::kms
