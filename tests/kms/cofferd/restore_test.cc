// Full-backup restores through a running cofferd (trust boundary issue, items 5 and 6): the
// restore is asked of test-cofferd over its admin socket with keyctl, on a real SoftHSM2 token,
// and checked against that token afterwards.
//
//  - A restore never changes the token. Backups that captured a CREATING or a REWRAPPING intent
//    are needed; a running daemon cannot be stopped mid-create on demand, so the test stops it,
//    opens the very same state in this process with the daemon's own parts (HsmClient, audit log
//    on the token's keys, RocksDB key and data DBs, FullBackups) and takes each backup from inside
//    the operation through KeyManagerOptions::crash_point (a test-only seam: the daemon never
//    sets it). The daemon is then started again and restores those backups itself.
//  - The restore target is created by the daemon, never through a path prepared for it.
//  - The audit public key is published without following a symlink.
//
// Run as root, the daemon runs as `nobody`; files this process writes are given back to it.

#include <pwd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "hsm/hsm_client.h"
#include "kms/audit/audit_log.h"
#include "kms/cofferd/daemon.h"
#include "kms/config/config.h"
#include "kms/keys/audited_purge_journal.h"
#include "kms/keys/full_backup.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/store_graph.h"
#include "storage/data_db.h"
#include "storage/record_store.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"

namespace coffer {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunShell;

// The daemon's clock (a controlled one stands still until the test advances it), for the parts
// this process opens on its state.
class DaemonClock final : public Clock {
 public:
  explicit DaemonClock(const Cofferd* daemon) : daemon_(daemon) {}
  std::chrono::system_clock::time_point Now() const override { return daemon_->Now(); }

 private:
  const Cofferd* daemon_;
};

kms::audit::AuditActor TestActor() {
  kms::audit::AuditActor actor;
  actor.uid = static_cast<uint32_t>(geteuid());
  actor.pid = static_cast<uint32_t>(getpid());
  actor.socket = kms::audit::v1::SOCKET_ADMIN;
  return actor;
}

// A stopped daemon's state opened in this process, part by part as kms/cofferd/daemon.cc opens
// it: the token (its configuration and PIN from the directory), the audit log, the data DB, the
// key manager (module "primary") and the backups.
class OpenedState {
 public:
  // `restored`: the state is a restore's target directory (data, keys, audit under it), opened
  // as a restored copy (the key manager never changes the token for it).
  static std::unique_ptr<OpenedState> Open(const Cofferd& daemon, kms::CrashPoint crash_point,
                                           const std::string& restored = "") {
    auto s = std::unique_ptr<OpenedState>(new OpenedState(&daemon));
    const std::string dir = daemon.dir();
    const std::string root = restored.empty() ? dir : restored;
    setenv("SOFTHSM2_CONF", (dir + "/hsm/softhsm2.conf").c_str(), 1);
    std::string pin = ReadWholeFile(dir + "/hsm/user.pin");
    while (!pin.empty() && (pin.back() == '\n' || pin.back() == '\r')) pin.pop_back();
    setenv("COFFER_RESTORE_TEST_PIN", pin.c_str(), 1);
    hsm::HsmOptions hsm_options;
    hsm_options.module_path = std::string(daemon::kDefaultHsmModulePath);
    hsm_options.token_label = "coffer";
    hsm_options.pin = hsm::PinSource::FromEnvironment("COFFER_RESTORE_TEST_PIN");
    auto hsm = hsm::HsmClient::Open(hsm_options);
    unsetenv("COFFER_RESTORE_TEST_PIN");
    EXPECT_TRUE(hsm.ok()) << hsm.status();
    if (!hsm.ok()) return nullptr;
    s->hsm_ = *std::move(hsm);
    s->signer_ = std::make_unique<kms::HsmCheckpointSigner>(s->hsm_->signer());

    kms::audit::AuditLogOptions audit_options;
    audit_options.directory = root + "/" + kms::kRestoredAuditDir;
    audit_options.signer = s->signer_.get();
    audit_options.epoch_keys = kms::HsmEpochKeyProvider(s->hsm_->row_authenticator());
    audit_options.clock = &s->clock_;
    auto log = kms::audit::AuditLog::Open(std::move(audit_options));
    EXPECT_TRUE(log.ok()) << log.status();
    if (!log.ok()) return nullptr;
    s->log_ = *std::move(log);
    s->journal_ = std::make_unique<kms::AuditPurgeJournal>(s->log_.get(), TestActor());

    auto db = storage::DataDb::Open(root + "/" + kms::kRestoredDataDir, storage::DataDbOptions{});
    EXPECT_TRUE(db.ok()) << db.status();
    if (!db.ok()) return nullptr;
    s->db_ = *std::move(db);
    kms::StoreGraphOptions graph;
    graph.data_db = s->db_.get();
    graph.keys.key_db_directory = root + "/" + kms::kRestoredKeyDbDir;
    graph.keys.restored_copy = !restored.empty();
    graph.keys.modules = {{cofferd::kPrimaryModuleName, &s->hsm_->wrapping_keys()}};
    graph.keys.default_module = cofferd::kPrimaryModuleName;
    graph.keys.row_authenticator = &s->hsm_->row_authenticator();
    graph.keys.signer = &s->hsm_->signer();
    graph.keys.audit_log = s->log_.get();
    graph.keys.clock = &s->clock_;
    graph.keys.crash_point = std::move(crash_point);
    auto stores = kms::StoreGraph::Open(std::move(graph));
    EXPECT_TRUE(stores.ok()) << stores.status();
    if (!stores.ok()) return nullptr;
    s->stores_ = *std::move(stores);

    kms::FullBackupOptions backup_options;
    backup_options.directory = dir + "/backups";
    backup_options.clock = &s->clock_;
    backup_options.token = &s->hsm_->row_authenticator();
    auto backups = kms::FullBackups::Open(backup_options);
    EXPECT_TRUE(backups.ok()) << backups.status();
    if (!backups.ok()) return nullptr;
    s->backups_ = *std::move(backups);
    return s;
  }

  ~OpenedState() {
    backups_.reset();
    stores_.reset();
    db_.reset();
    journal_.reset();
    if (log_) {
      EXPECT_TRUE(log_->Close().ok());
    }
    log_.reset();
    signer_.reset();
    if (hsm_) {
      EXPECT_TRUE(hsm_->Close().ok());
    }
  }

  // A full backup of the state now, as the daemon's backup_create makes it.
  absl::StatusOr<kms::FullBackupInfo> Backup() {
    kms::FullBackupSources sources{db_.get(), &stores_->key_manager(), log_.get(),
                                   daemon_->dir() + "/audit", journal_.get()};
    return backups_->Create(sources, TestActor());
  }

  std::vector<hsm::WrappingKeyId> TokenKeys() {
    auto ids = hsm_->wrapping_keys().ListWrappingKeys();
    EXPECT_TRUE(ids.ok()) << ids.status();
    return ids.value_or(std::vector<hsm::WrappingKeyId>{});
  }

  kms::KeyManager& keys() { return stores_->key_manager(); }
  storage::RecordStore& records() { return stores_->records(); }

 private:
  explicit OpenedState(const Cofferd* daemon) : daemon_(daemon), clock_(daemon) {}

  const Cofferd* daemon_;
  DaemonClock clock_;
  std::unique_ptr<hsm::HsmClient> hsm_;
  std::unique_ptr<kms::HsmCheckpointSigner> signer_;
  std::unique_ptr<kms::audit::AuditLog> log_;
  std::unique_ptr<kms::AuditPurgeJournal> journal_;
  std::unique_ptr<storage::DataDb> db_;
  std::unique_ptr<kms::StoreGraph> stores_;  // as cofferd wires it
  std::unique_ptr<kms::FullBackups> backups_;
};

bool Holds(const std::vector<hsm::WrappingKeyId>& ids, uint64_t handle, uint32_t version) {
  return std::find(ids.begin(), ids.end(), hsm::WrappingKeyId{handle, version}) != ids.end();
}

// The daemon's uid (nobody when run as root).
uid_t DaemonUid(const Cofferd& daemon) {
  if (!daemon.as_root()) return geteuid();
  passwd* nobody = getpwnam("nobody");
  return nobody == nullptr ? 0 : nobody->pw_uid;
}

// Gives everything under the directory back to the daemon's user (files this process wrote).
void GiveBack(const Cofferd& daemon) {
  if (!daemon.as_root()) return;
  ASSERT_EQ(RunShell("chown -R " + std::to_string(DaemonUid(daemon)) + ":" +
                     std::to_string(daemon.daemon_gid()) + " " + daemon.dir()),
            0);
}

std::string Joined(const KeyctlResult& r) { return r.out + "\n" + r.err; }

// Item 5: backups that captured a CREATING and a REWRAPPING intent, restored by the running
// daemon. The code before this fix destroyed crm/created's live DWK (its data no longer
// decrypts) and created crm/rewrapped's DWK v2 again after the live system had destroyed it.
TEST(CofferdRestoreTest, RestoringIntentsCapturedByABackupNeverChangesTheToken) {
  CofferdOptions options;
  options.name = "cofferd-restore";
  auto daemon = Cofferd::Create(std::move(options));  // the daemon makes its state, then stops
  ASSERT_NE(daemon, nullptr);
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();

  std::map<std::string, uint32_t> backup_of;  // "create" / "rewrap" -> backup id
  std::string taking;                         // which backup the next crash point takes
  uint64_t created = 0;
  uint64_t rewrapped = 0;
  std::vector<hsm::WrappingKeyId> before;
  {
    OpenedState* opened = nullptr;
    auto state = OpenedState::Open(*daemon, [&](std::string_view step) {
      const bool wanted = (taking == "create" && step == "create.wrapping_key") ||
                          (taking == "rewrap" && step == "rewrap.intent");
      if (!wanted || backup_of.contains(taking)) return;
      auto backup = opened->Backup();
      ASSERT_TRUE(backup.ok()) << backup.status();
      backup_of[taking] = backup->id;
    });
    ASSERT_NE(state, nullptr);
    opened = state.get();
    auto other = state->keys().CreateDataset("crm/rewrapped", std::nullopt, TestActor());
    ASSERT_TRUE(other.ok()) << other.status();
    rewrapped = *other;
    taking = "create";
    auto made = state->keys().CreateDataset("crm/created", std::nullopt, TestActor());
    ASSERT_TRUE(made.ok()) << made.status();
    created = *made;
    for (int i = 0; i < 5; ++i) {
      const std::string id = "r-" + std::to_string(i);
      ASSERT_TRUE(state->records().Put(created, id, "created " + id).ok());
      ASSERT_TRUE(state->records().Put(rewrapped, id, "rewrapped " + id).ok());
    }
    // v1 -> v2 keeping v1 (the backup catches this intent before v2 exists), then v2 -> v3
    // destroying v2: the token holds v1 and v3, and v2 must never come back.
    taking = "rewrap";
    ASSERT_TRUE(state->keys().Rewrap(rewrapped, "", /*destroy_old=*/false, TestActor()).ok());
    ASSERT_TRUE(state->keys().Rewrap(rewrapped, "", /*destroy_old=*/true, TestActor()).ok());
    ASSERT_EQ(backup_of.size(), 2u);
    before = state->TokenKeys();
    ASSERT_TRUE(Holds(before, created, 1));
    ASSERT_TRUE(Holds(before, rewrapped, 1));
    ASSERT_FALSE(Holds(before, rewrapped, 2));
    ASSERT_TRUE(Holds(before, rewrapped, 3));
  }
  GiveBack(*daemon);

  ASSERT_TRUE(daemon->Start());
  for (const auto& [what, id] : backup_of) {
    const std::string target = daemon->dir() + "/restored-" + what;
    KeyctlResult restored = Keyctl(
        daemon->admin_socket(), "backup restore " + std::to_string(id) + " " + target + " --json");
    ASSERT_EQ(restored.exit_code, 0) << Joined(restored) << daemon->Logs();
    EXPECT_TRUE(fs::is_directory(target + "/keys"));
  }
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();

  // The token is what it was, and the live datasets decrypt through a fresh key manager (no
  // cached key: every record needs an unwrap under its DWK in the token).
  {
    auto state = OpenedState::Open(*daemon, {});
    ASSERT_NE(state, nullptr);
    EXPECT_EQ(state->TokenKeys(), before);
    EXPECT_TRUE(state->keys().recovery_report().missing_wrapping_keys.empty());
    for (int i = 0; i < 5; ++i) {
      const std::string id = "r-" + std::to_string(i);
      auto got = state->records().Get(created, id);
      ASSERT_TRUE(got.ok()) << id << ": " << got.status();
      EXPECT_EQ(*got, "created " + id);
      got = state->records().Get(rewrapped, id);
      ASSERT_TRUE(got.ok()) << id << ": " << got.status();
      EXPECT_EQ(*got, "rewrapped " + id);
    }
  }
  GiveBack(*daemon);
  // The daemon still starts on its state after all this.
  ASSERT_TRUE(daemon->Start());
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();
}

// The backup holder (docs/threat-model.md): a dataset destroyed after a backup was taken cannot
// be read from that backup. The running daemon restores it; the restore replays the destruction
// the audit log records, and the dataset's wrapping keys are gone from the token anyway. A
// dataset still live reads back from the same restore.
TEST(CofferdRestoreTest, ADatasetDestroyedAfterTheBackupIsUnreadableInItsRestore) {
  CofferdOptions options;
  options.name = "cofferd-restore-shred";
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();
  uint64_t doomed = 0;
  uint64_t kept = 0;
  {
    auto state = OpenedState::Open(*daemon, {});
    ASSERT_NE(state, nullptr);
    kms::DatasetPolicy quick;
    quick.destruction_wait = std::chrono::seconds(1);
    auto made = state->keys().CreateDataset("crm/doomed", quick, TestActor());
    ASSERT_TRUE(made.ok()) << made.status();
    doomed = *made;
    made = state->keys().CreateDataset("crm/kept", std::nullopt, TestActor());
    ASSERT_TRUE(made.ok()) << made.status();
    kept = *made;
    for (int i = 0; i < 5; ++i) {
      const std::string id = "r-" + std::to_string(i);
      ASSERT_TRUE(state->records().Put(doomed, id, "doomed " + id).ok());
      ASSERT_TRUE(state->records().Put(kept, id, "kept " + id).ok());
    }
  }
  GiveBack(*daemon);
  ASSERT_TRUE(daemon->Start());
  KeyctlResult backup = Keyctl(daemon->admin_socket(), "--json backup create");
  ASSERT_EQ(backup.exit_code, 0) << Joined(backup);
  const uint64_t backup_id = backup.JsonOrEmpty().value("id", uint64_t{0});
  ASSERT_NE(backup_id, 0u) << backup.out;
  ASSERT_EQ(Keyctl(daemon->admin_socket(), "dataset disable crm/doomed").exit_code, 0);
  ASSERT_EQ(Keyctl(daemon->admin_socket(), "dataset destroy crm/doomed").exit_code, 0);
  // Past the destruction wait, the rotation clock's run destroys it.
  KeyctlResult ran = daemon->RunJobAfter(std::chrono::seconds(2), "rotation");
  ASSERT_EQ(ran.exit_code, 0) << Joined(ran);
  KeyctlResult receipt = Keyctl(daemon->admin_socket(), "receipt get crm/doomed");
  ASSERT_EQ(receipt.exit_code, 0) << Joined(receipt) << daemon->Logs();
  const std::string target = daemon->dir() + "/restored-shred";
  KeyctlResult restored =
      Keyctl(daemon->admin_socket(), "backup restore " + std::to_string(backup_id) + " " + target);
  ASSERT_EQ(restored.exit_code, 0) << Joined(restored) << daemon->Logs();
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();

  auto state = OpenedState::Open(*daemon, {}, target);
  ASSERT_NE(state, nullptr);
  auto info = state->keys().DescribeDataset(doomed);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->state, kms::DatasetState::kDestroyed);
  for (const hsm::WrappingKeyId& id : state->TokenKeys()) EXPECT_NE(id.dataset_handle, doomed);
  for (int i = 0; i < 5; ++i) {
    const std::string id = "r-" + std::to_string(i);
    EXPECT_EQ(ErrorCodeOf(state->records().Get(doomed, id).status()), ErrorCode::kKeyDestroyed)
        << id;
    auto got = state->records().Get(kept, id);
    ASSERT_TRUE(got.ok()) << id << ": " << got.status();
    EXPECT_EQ(*got, "kept " + id);
  }
}

// Issue 20 item 3: the backups live on another file system than the state (here a tmpfs
// mounted for the test; in production another disk or a network mount). Backup, verify and
// restore work across the mount: nothing relies on hard links between the two.
TEST(CofferdRestoreTest, BackupsOnAnotherFileSystemBackUpVerifyAndRestore) {
  if (geteuid() != 0) GTEST_SKIP() << "mounting a file system for the backups needs root";
  std::string mount_point;
  CofferdOptions options;
  options.name = "cofferd-offsite";
  options.prepare = [&mount_point](const std::string& dir) {
    mount_point = dir + "/offsite";
    ASSERT_EQ(::mkdir(mount_point.c_str(), 0700), 0);
    ASSERT_EQ(::mount("tmpfs", mount_point.c_str(), "tmpfs", 0, "size=64m,mode=0700"), 0)
        << std::strerror(errno);
  };
  options.extra_config = [](const std::string& dir) {
    return "backup_directory: \"" + dir + "/offsite/backups\"\n";
  };
  auto daemon = Cofferd::Create(std::move(options));
  // Unmounted (lazily) before the daemon's directory is removed, whatever the test's outcome.
  struct Unmount {
    const std::string& path;
    ~Unmount() {
      if (!path.empty()) ::umount2(path.c_str(), MNT_DETACH);
    }
  } unmount{mount_point};
  ASSERT_NE(daemon, nullptr);
  struct stat state_dir {};
  struct stat backup_fs {};
  ASSERT_EQ(::stat(daemon->dir().c_str(), &state_dir), 0);
  ASSERT_EQ(::stat(mount_point.c_str(), &backup_fs), 0);
  ASSERT_NE(state_dir.st_dev, backup_fs.st_dev) << "the backups are not on another file system";
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();
  uint64_t handle = 0;
  {
    auto state = OpenedState::Open(*daemon, {});
    ASSERT_NE(state, nullptr);
    auto made = state->keys().CreateDataset("crm/offsite", std::nullopt, TestActor());
    ASSERT_TRUE(made.ok()) << made.status();
    handle = *made;
    for (int i = 0; i < 10; ++i) {
      const std::string id = "r-" + std::to_string(i);
      ASSERT_TRUE(state->records().Put(handle, id, "offsite " + id).ok());
    }
  }
  GiveBack(*daemon);
  ASSERT_TRUE(daemon->Start());
  KeyctlResult backup = Keyctl(daemon->admin_socket(), "--json backup create");
  ASSERT_EQ(backup.exit_code, 0) << Joined(backup) << daemon->Logs();
  const uint64_t backup_id = backup.JsonOrEmpty().value("id", uint64_t{0});
  ASSERT_NE(backup_id, 0u) << backup.out;
  KeyctlResult verified =
      Keyctl(daemon->admin_socket(), "backup verify " + std::to_string(backup_id));
  EXPECT_EQ(verified.exit_code, 0) << Joined(verified);
  // The key DB copy and the data DB backup are on the backup file system.
  size_t files_there = 0;
  for (const auto& entry : fs::recursive_directory_iterator(mount_point + "/backups")) {
    if (entry.is_regular_file()) ++files_there;
  }
  EXPECT_GT(files_there, 3u);
  const std::string target = daemon->dir() + "/restored-offsite";
  KeyctlResult restored =
      Keyctl(daemon->admin_socket(), "backup restore " + std::to_string(backup_id) + " " + target);
  ASSERT_EQ(restored.exit_code, 0) << Joined(restored) << daemon->Logs();
  ASSERT_TRUE(daemon->Stop()) << daemon->Logs();
  {
    auto state = OpenedState::Open(*daemon, {}, target);
    ASSERT_NE(state, nullptr);
    for (int i = 0; i < 10; ++i) {
      const std::string id = "r-" + std::to_string(i);
      EXPECT_EQ(state->records().Get(handle, id).value_or("<missing>"), "offsite " + id);
    }
  }
}

// Item 6: the daemon creates the restore target itself. An existing directory, a symlink to one
// and a target under a symlinked parent are refused and nothing is written through them; the
// restored tree is the daemon's, directories 0700 and files 0600.
TEST(CofferdRestoreTest, TheDaemonCreatesTheRestoreTargetAndNeverWritesThroughASymlink) {
  CofferdOptions options;
  options.name = "cofferd-restore-target";
  options.prepare = [](const std::string& dir) {
    fs::create_directory(dir + "/existing");
    fs::create_directory(dir + "/victim");
    fs::create_directory_symlink(dir + "/victim", dir + "/link");
    fs::create_directory_symlink(dir + "/victim", dir + "/parent-link");
  };
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  KeyctlResult created = Keyctl(daemon->admin_socket(), "backup create --json");
  ASSERT_EQ(created.exit_code, 0) << Joined(created);
  const std::string id = std::to_string(created.Json().at("id").get<uint32_t>());
  const std::string dir = daemon->dir();
  auto restore = [&](const std::string& target) {
    return Keyctl(daemon->admin_socket(), "backup restore " + id + " " + target + " --json");
  };

  KeyctlResult existing = restore(dir + "/existing");
  EXPECT_NE(existing.exit_code, 0);
  EXPECT_NE(Joined(existing).find("RESTORE_TARGET_NOT_EMPTY"), std::string::npos)
      << Joined(existing);
  EXPECT_NE(Joined(existing).find("name a path that does not exist"), std::string::npos)
      << Joined(existing);
  EXPECT_TRUE(fs::is_empty(dir + "/existing"));

  KeyctlResult link = restore(dir + "/link");
  EXPECT_NE(link.exit_code, 0);
  EXPECT_NE(Joined(link).find("RESTORE_TARGET_NOT_EMPTY"), std::string::npos) << Joined(link);
  KeyctlResult parent = restore(dir + "/parent-link/restored");
  EXPECT_NE(parent.exit_code, 0);
  EXPECT_NE(Joined(parent).find("MALFORMED_REQUEST"), std::string::npos) << Joined(parent);
  EXPECT_NE(Joined(parent).find("parent-link of restore target"), std::string::npos)
      << Joined(parent);
  EXPECT_NE(Joined(parent).find("is a symlink"), std::string::npos) << Joined(parent);
  EXPECT_TRUE(fs::is_empty(dir + "/victim"));  // nothing written through either link

  const std::string target = dir + "/restored";
  KeyctlResult restored = restore(target);
  ASSERT_EQ(restored.exit_code, 0) << Joined(restored) << daemon->Logs();
  const uid_t owner = DaemonUid(*daemon);
  struct stat st {};
  ASSERT_EQ(lstat(target.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_uid, owner);
  size_t files = 0;
  for (const auto& entry : fs::recursive_directory_iterator(target)) {
    ASSERT_EQ(lstat(entry.path().c_str(), &st), 0) << entry.path();
    EXPECT_EQ(st.st_uid, owner) << entry.path();
    if (S_ISDIR(st.st_mode)) {
      EXPECT_EQ(st.st_mode & 07777, 0700u) << entry.path();
    } else {
      ASSERT_TRUE(S_ISREG(st.st_mode)) << entry.path();
      EXPECT_EQ(st.st_mode & 07777, 0600u) << entry.path();
      ++files;
    }
  }
  EXPECT_GT(files, 3u);
}

// Item 6: audit-public-key.pem is replaced, never written through a symlink planted in its place.
TEST(CofferdRestoreTest, TheAuditPublicKeyIsNeverWrittenThroughASymlink) {
  CofferdOptions options;
  options.name = "cofferd-public-key";
  options.prepare = [](const std::string& dir) {
    std::ofstream(dir + "/victim.txt") << "not a key";
    fs::create_symlink(dir + "/victim.txt", dir + "/audit-public-key.pem");
  };
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  const std::string pem = daemon->dir() + "/audit-public-key.pem";
  EXPECT_EQ(ReadWholeFile(daemon->dir() + "/victim.txt"), "not a key");
  struct stat st {};
  ASSERT_EQ(lstat(pem.c_str(), &st), 0);
  EXPECT_TRUE(S_ISREG(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0644u);
  EXPECT_NE(ReadWholeFile(pem).find("BEGIN PUBLIC KEY"), std::string::npos);
}

}  // namespace
}  // namespace coffer
