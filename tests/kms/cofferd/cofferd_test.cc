// Integration tests of the cofferd program: a running daemon process, started as a non-root
// user on a temporary directory with a fresh SoftHSM2 token (tests/kms/cofferd/cofferd_harness.h),
// driven only over its two sockets — by the client library (kms/client/client.h) and by raw
// coffer.v1 frames (kms/api/framing.h) for the admin socket and for broken clients. CofferdTest
// runs test-cofferd (the same program on a clock the test controls); the start-up refusals and
// CofferdSmokeTest run the shipped cofferd on the system clock.
//
// Run as root (CI, this sandbox), the daemon runs as `nobody` (--user nobody; the temporary
// directory is given to it) and clients that drop to other uids (fork + setresuid) check the
// grants; run as another user, the daemon runs as that user and the other-uid tests skip.
// COFFER_SKIP_LARGE_TESTS=1 skips the 256 MiB attachment.

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"
#include "kms/client/client.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/raw_connection.h"
#include "tests/storage/storage_test_util.h"
#include "tests/testing/process.h"

namespace coffer {
namespace {

namespace fs = std::filesystem;
namespace pb = ::coffer::v1;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Dial;
using ::coffer::testing::RawConnection;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunAsUid;

constexpr char kDataset[] = "crm/test";
// Uids the other-uid clients drop to (none has an account; the kernel does not need one).
// The test's own uid may pseudonymize in both, and re-identify only in the first.
constexpr char kPseudoDataset[] = "crm/pseudo";
constexpr char kPseudoOtherDataset[] = "crm/pseudo-other";
constexpr uid_t kMetadataUid = 41001;   // METADATA on every dataset
constexpr uid_t kNoGrantUid = 41002;    // nothing
constexpr uid_t kRateLimitUid = 41003;  // READ, rate-limited to a burst of 3
constexpr uid_t kScopedUid = 41004;     // READ, WRITE on kDataset only
constexpr uint32_t kRateLimitBurst = 3;

// ---- raw frames ----------------------------------------------------------------------------

int ErrorOf(const absl::StatusOr<pb::Response>& response) {
  if (!response.ok()) return -static_cast<int>(ErrorCodeOf(response.status()));
  return response->error().code();
}

// ---- the daemon process --------------------------------------------------------------------

// This suite's configuration after the token and durability (cofferd_harness.h).
std::string SuiteConfig(const std::string& /*dir*/, const std::string& /*group*/) {
  const std::string me = std::to_string(geteuid());
  std::ostringstream out;
  // Small timeouts: the truncated, stalled and idle connections end in seconds.
  out << "limits { workers: 8 max_connections: 256 idle_timeout_seconds: 3 "
         "request_timeout_seconds: 3 }\n"
      << "access_audit { crash_loss_window_millis: 0 }\n"
      << "grants { principals { uid: " << me
      << " } datasets: \"*\" rights: READ rights: WRITE rights: DELETE }\n"
      << "grants { principals { uid: " << me << " } datasets: \"" << kPseudoDataset
      << "\" rights: PSEUDONYMIZE rights: REIDENTIFY }\n"
      << "grants { principals { uid: " << me << " } datasets: \"" << kPseudoOtherDataset
      << "\" rights: PSEUDONYMIZE }\n"
      << "grants { principals { uid: " << kMetadataUid << " } datasets: \"*\" rights: METADATA }\n"
      << "grants { principals { uid: " << kScopedUid << " } datasets: \"" << kDataset
      << "\" rights: READ rights: WRITE }\n"
      << "grants { principals { uid: " << kRateLimitUid << " } datasets: \"" << kDataset
      << "\" rights: READ }\n"
      << "admins { uid: " << me
      << " }\n"
      // Transport and data paths are under test; admin MFA has its own tests.
      << "mfa { required: false }\n"
      << "rate_limit {\n"
      << "  default_limit { requests_per_second: 1000000 burst: 1000000 }\n"
      << "  overrides { principal { uid: " << kRateLimitUid
      << " } limit { requests_per_second: 0.001 burst: " << kRateLimitBurst << " } }\n"
      << "}\n"
      << "jobs { rotation_check_seconds: 1 retention_interval_seconds: 1 "
         "backup_interval_seconds: 86400 }\n";
  return out.str();
}

// A fresh state directory with a token and this suite's configuration, not started. On
// `controlled_clock` the daemon is test-cofferd, otherwise the shipped cofferd.
std::unique_ptr<Cofferd> CreateDaemon(bool controlled_clock) {
  CofferdOptions options;
  options.name = "cofferd-test";
  options.controlled_clock = controlled_clock;
  options.config_body = SuiteConfig;
  options.start = false;
  return Cofferd::Create(std::move(options));
}

// Runs `body` in a child process that has dropped to `uid` (gid `uid`, supplementary group
// `group`, which owns the data socket); returns what the body returned, or "child failed".
// ---- the suite -----------------------------------------------------------------------------

class CofferdTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    daemon_ = CreateDaemon(/*controlled_clock=*/true);
    ASSERT_NE(daemon_, nullptr) << "could not prepare the state directory and token";
    ASSERT_TRUE(daemon_->Start());
    RawConnection admin(daemon_->admin_socket());
    pb::Request create;
    create.mutable_dataset_create()->set_name(kDataset);
    auto created = admin.Call(create);
    ASSERT_TRUE(created.ok()) << created.status();
    ASSERT_FALSE(created->has_error()) << created->error().DebugString();
    handle_ = created->dataset_create().handle();
  }
  static void TearDownTestSuite() {
    if (daemon_ && daemon_->pid() > 0) {
      EXPECT_EQ(daemon_->SignalAndWait(SIGTERM), 0);
    }
    daemon_.reset();
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }

  static std::unique_ptr<client::Client> Connect() {
    auto c = client::Client::Connect(daemon_->data_socket());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  static absl::StatusOr<pb::Response> Admin(const pb::Request& request) {
    RawConnection admin(daemon_->admin_socket());
    return admin.Call(request);
  }

  static inline std::unique_ptr<Cofferd> daemon_;
  static inline uint64_t handle_ = 0;
};

TEST_F(CofferdTest, SocketsAreUnixSocketsOfMode0660AndStatusShowsEveryJob) {
  for (const std::string& path : {daemon_->data_socket(), daemon_->admin_socket()}) {
    struct stat st {};
    ASSERT_EQ(stat(path.c_str(), &st), 0) << path;
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 0777, 0660u) << path;
  }
  pb::Request request;
  request.mutable_status();
  auto status = Admin(request);
  ASSERT_TRUE(status.ok()) << status.status();
  ASSERT_FALSE(status->has_error()) << status->error().DebugString();
  EXPECT_EQ(status->status().data_socket(), daemon_->data_socket());
  EXPECT_EQ(status->status().durability(), "wal");
  std::set<int> kinds;
  for (const pb::JobStatus& job : status->status().jobs()) kinds.insert(job.kind());
  EXPECT_TRUE(kinds.count(pb::JOB_ROTATION)) << status->DebugString();
  EXPECT_TRUE(kinds.count(pb::JOB_BIN_RETENTION)) << status->DebugString();
  EXPECT_TRUE(kinds.count(pb::JOB_UPLOAD_CLEANUP)) << status->DebugString();
  EXPECT_TRUE(kinds.count(pb::JOB_BACKUP)) << status->DebugString();
}

TEST_F(CofferdTest, RunsUnprivilegedWithoutCoreDumps) {
  const std::string proc = "/proc/" + std::to_string(daemon_->pid());
  std::string status = ReadWholeFile(proc + "/status");
  size_t uid_line = status.find("\nUid:");
  ASSERT_NE(uid_line, std::string::npos);
  std::istringstream uids(status.substr(uid_line + 5));
  uid_t real = 0, effective = 0, saved = 0;
  uids >> real >> effective >> saved;
  if (daemon_->as_root()) {
    EXPECT_NE(real, 0u);
    EXPECT_NE(effective, 0u);
    EXPECT_NE(saved, 0u);  // root cannot be regained
  }
  EXPECT_EQ(real, effective);

  std::string limits = ReadWholeFile(proc + "/limits");
  size_t core = limits.find("Max core file size");
  ASSERT_NE(core, std::string::npos);
  std::istringstream core_line(limits.substr(core + std::strlen("Max core file size")));
  std::string soft, hard;
  core_line >> soft >> hard;
  EXPECT_EQ(soft, "0");
  EXPECT_EQ(hard, "0");

  // PR_SET_DUMPABLE 0: the kernel makes the process's /proc files root's.
  struct stat st {};
  ASSERT_EQ(stat((proc + "/environ").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, 0u);

  // The secure heap is really locked (issue 19 item 5): started as root, cofferd locks it before
  // dropping privileges, and the kernel's count of locked memory covers it. Started otherwise,
  // RLIMIT_MEMLOCK may forbid it, and the log must then say so.
  const std::string logs = daemon_->Logs();
  const size_t heap = logs.find("secure heap ");
  ASSERT_NE(heap, std::string::npos) << logs;
  std::istringstream heap_line(logs.substr(heap + std::strlen("secure heap ")));
  uint64_t heap_mib = 0;
  std::string unit, locked;
  heap_line >> heap_mib >> unit >> locked;
  EXPECT_EQ(unit, "MiB");
  const size_t vm_lck = status.find("\nVmLck:");
  ASSERT_NE(vm_lck, std::string::npos) << status;
  std::istringstream lck_line(status.substr(vm_lck + std::strlen("\nVmLck:")));
  uint64_t locked_kib = 0;
  lck_line >> locked_kib;
  if (daemon_->as_root()) {
    EXPECT_EQ(locked, "(locked)") << logs;
  }
  if (locked == "(locked)") {
    EXPECT_GE(locked_kib, heap_mib * 1024)
        << "VmLck " << locked_kib << " kB, secure heap " << heap_mib << " MiB";
  } else {
    EXPECT_EQ(locked, "(NOT") << logs;
  }
  std::cout << "VmLck " << locked_kib << " kB, secure heap " << heap_mib << " MiB " << locked
            << "\n";
}

TEST_F(CofferdTest, BackupsOverTheAdminSocket) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->PutRecord(kDataset, "backup/1", "backed up").ok());

  pb::Request create;
  create.mutable_backup_create();
  auto created = Admin(create);
  ASSERT_TRUE(created.ok()) << created.status();
  ASSERT_FALSE(created->has_error()) << created->error().DebugString();
  const uint32_t id = created->backup_create().id();
  EXPECT_GT(created->backup_create().size_bytes(), 0u);

  pb::Request list;
  list.mutable_backup_list();
  auto listed = Admin(list);
  ASSERT_TRUE(listed.ok() && !listed->has_error());
  bool found = false;
  for (const pb::BackupInfo& info : listed->backup_list().backups()) found |= info.id() == id;
  EXPECT_TRUE(found) << listed->DebugString();

  pb::Request verify;
  verify.mutable_backup_verify()->set_id(id);
  auto verified = Admin(verify);
  ASSERT_TRUE(verified.ok());
  EXPECT_FALSE(verified->has_error()) << verified->error().DebugString();

  pb::Request restore;
  restore.mutable_backup_restore()->set_id(id);
  restore.mutable_backup_restore()->set_target_directory(daemon_->dir() + "/restored");
  auto restored = Admin(restore);
  ASSERT_TRUE(restored.ok());
  EXPECT_FALSE(restored->has_error()) << restored->error().DebugString();
  EXPECT_TRUE(fs::is_directory(daemon_->dir() + "/restored/data"));
  EXPECT_TRUE(fs::is_directory(daemon_->dir() + "/restored/keys"));
  // Not empty any more: a second restore there is refused.
  auto again = Admin(restore);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->error().code(), static_cast<int>(ErrorCode::kRestoreTargetNotEmpty));

  pb::Request prune;
  prune.mutable_backup_prune();
  auto pruned = Admin(prune);
  ASSERT_TRUE(pruned.ok());
  EXPECT_FALSE(pruned->has_error()) << pruned->error().DebugString();
  EXPECT_EQ(pruned->backup_prune().deleted_size(), 0);  // the newest is always kept
}

TEST_F(CofferdTest, RecordsRoundTrip) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  ASSERT_TRUE(c->PutRecord(kDataset, "customer/1", "value one").ok());
  std::string binary_id("\0\x01\xff id", 6);
  ASSERT_TRUE(c->PutRecord(kDataset, binary_id, std::string(100000, 'x')).ok());
  EXPECT_EQ(*c->GetRecord(kDataset, "customer/1"), "value one");
  EXPECT_EQ(*c->GetRecord(kDataset, binary_id), std::string(100000, 'x'));
  EXPECT_TRUE(*c->RecordExists(kDataset, "customer/1"));
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, "customer/none").status()),
            ErrorCode::kRecordNotFound);
  ASSERT_TRUE(c->DeleteRecord(kDataset, "customer/1").ok());
  EXPECT_FALSE(*c->RecordExists(kDataset, "customer/1"));
  ASSERT_TRUE(c->RestoreRecord(kDataset, "customer/1").ok());
  EXPECT_EQ(*c->GetRecord(kDataset, "customer/1"), "value one");
  std::set<std::string> listed;
  std::string token;
  do {
    auto page = c->ListRecords(kDataset, token, 1);
    ASSERT_TRUE(page.ok()) << page.status();
    listed.insert(page->ids.begin(), page->ids.end());
    token = page->next_page_token;
  } while (!token.empty());
  EXPECT_TRUE(listed.count("customer/1"));
  EXPECT_TRUE(listed.count(binary_id));
  EXPECT_EQ(ErrorCodeOf(c->GetRecord("crm/unknown", "customer/1").status()),
            ErrorCode::kDatasetNotFound);
}

// Deterministic pseudo-random bytes: chunk `index` of an attachment.
std::string Chunk(uint64_t index, size_t size) {
  std::mt19937_64 rng(index * 0x9e3779b97f4a7c15ULL + 1);
  std::string out(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  return out;
}

TEST_F(CofferdTest, Attachment256MiBBothWays) {
  if (std::getenv("COFFER_SKIP_LARGE_TESTS") != nullptr) GTEST_SKIP() << "COFFER_SKIP_LARGE_TESTS";
  constexpr size_t kChunk = size_t{1} << 20;
  constexpr uint64_t kChunks = 256;
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto writer = c->BeginAttachment(kDataset, "scan.pdf", "application/pdf");
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint64_t i = 0; i < kChunks; ++i) {
    ASSERT_TRUE((*writer)->Append(Chunk(i, kChunk)).ok()) << i;
  }
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, kChunks * kChunk);

  auto reader = c->OpenAttachment(kDataset, "scan.pdf");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().size, kChunks * kChunk);
  EXPECT_EQ((*reader)->info().content_type, "application/pdf");
  std::string buf(kChunk, '\0');
  for (uint64_t i = 0; i < kChunks; ++i) {
    size_t have = 0;
    while (have < kChunk) {
      auto n = (*reader)->Read(buf.data() + have, kChunk - have);
      ASSERT_TRUE(n.ok()) << n.status();
      ASSERT_GT(*n, 0u) << "short download at chunk " << i;
      have += *n;
    }
    ASSERT_TRUE(buf == Chunk(i, kChunk)) << "chunk " << i << " differs";
  }
  auto end = (*reader)->Read(buf.data(), kChunk);
  ASSERT_TRUE(end.ok());
  EXPECT_EQ(*end, 0u);

  // A range across a chunk boundary.
  auto range = c->OpenAttachment(kDataset, "scan.pdf", kChunk - 10, 20);
  ASSERT_TRUE(range.ok()) << range.status();
  auto bytes = (*range)->ReadAll();
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes, Chunk(0, kChunk).substr(kChunk - 10) + Chunk(1, kChunk).substr(0, 10));
}

// Each client owns its ids; the model is the expected state of each id: a live value and a
// recycle-bin value, either of which may be absent.
TEST_F(CofferdTest, SixteenClientsThousandMixedOperationsEachMatchTheModel) {
  constexpr int kClients = 16;
  constexpr int kOperations = 1000;
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  threads.reserve(kClients);
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([t, &failures] {
      auto c = client::Client::Connect(daemon_->data_socket());
      if (!c.ok()) {
        failures[t] = "connect: " + std::string(c.status().message());
        return;
      }
      struct State {
        std::optional<std::string> live, binned;
      };
      std::map<std::string, State> model;
      std::mt19937 rng(static_cast<uint32_t>(t) + 7);
      auto fail = [&](int i, const std::string& what, const absl::Status& s) {
        failures[t] = "op " + std::to_string(i) + " " + what + ": " +
                      std::string(ErrorCodeName(ErrorCodeOf(s))) + " " + std::string(s.message());
      };
      for (int i = 0; i < kOperations && failures[t].empty(); ++i) {
        std::string id = "load/" + std::to_string(t) + "/" + std::to_string(rng() % 40);
        State& s = model[id];
        int op = static_cast<int>(rng() % 6);
        if (op == 4 && s.live && !s.binned) op = 1;  // restore would fit two documented codes
        switch (op) {
          case 0: {
            std::string value = "v" + std::to_string(rng()) + std::string(rng() % 2000, 'p');
            absl::Status put = (*c)->PutRecord(kDataset, id, value);
            if (!put.ok()) {
              fail(i, "put", put);
            } else {
              s.live = value;
            }
            break;
          }
          case 1: {
            auto got = (*c)->GetRecord(kDataset, id);
            if (s.live ? (!got.ok() || *got != *s.live)
                       : ErrorCodeOf(got.status()) != ErrorCode::kRecordNotFound) {
              fail(i, "get", got.status());
              if (got.ok()) failures[t] += " (wrong value)";
            }
            break;
          }
          case 2: {
            auto exists = (*c)->RecordExists(kDataset, id);
            if (!exists.ok() || *exists != s.live.has_value()) fail(i, "exists", exists.status());
            break;
          }
          case 3: {
            absl::Status deleted = (*c)->DeleteRecord(kDataset, id);
            if (s.live) {
              if (!deleted.ok()) fail(i, "delete", deleted);
              s.binned = std::move(s.live);
              s.live.reset();
            } else if (ErrorCodeOf(deleted) != ErrorCode::kRecordNotFound) {
              fail(i, "delete of nothing", deleted);
            }
            break;
          }
          case 4: {
            absl::Status restored = (*c)->RestoreRecord(kDataset, id);
            if (!s.binned) {
              if (ErrorCodeOf(restored) != ErrorCode::kNotInRecycleBin) {
                fail(i, "restore of nothing", restored);
              }
            } else if (s.live) {
              if (ErrorCodeOf(restored) != ErrorCode::kAlreadyExists) {
                fail(i, "restore over a live record", restored);
              }
            } else {
              if (!restored.ok()) fail(i, "restore", restored);
              s.live = std::move(s.binned);
              s.binned.reset();
            }
            break;
          }
          default: {
            auto page = (*c)->ListRecords(kDataset, "", 0);  // one page (paging: RecordsRoundTrip)
            if (!page.ok()) fail(i, "list", page.status());
            break;
          }
        }
      }
      // Finally every id must read back as the model says.
      for (const auto& [id, s] : model) {
        if (!failures[t].empty()) break;
        auto got = (*c)->GetRecord(kDataset, id);
        if (s.live ? (!got.ok() || *got != *s.live)
                   : ErrorCodeOf(got.status()) != ErrorCode::kRecordNotFound) {
          fail(-1, "final get", got.status());
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int t = 0; t < kClients; ++t) EXPECT_EQ(failures[t], "") << "client " << t;
}

// Record and attachment operations as raw requests, for clients in other processes: 0 put,
// 1 get, 2 exists, 3 delete, 4 restore, 5 list, 6 upload begin, 7 download, 8 metadata,
// 9 attachment delete, 10 attachment restore.
pb::Request DataRequest(int which) {
  pb::Request r;
  r.set_request_id(static_cast<uint64_t>(which) + 1);
  const std::string id = "customer/1";
  const std::string name = "scan.pdf";
  switch (which) {
    case 0: {
      auto* op = r.mutable_record_put();
      op->set_dataset(kDataset);
      op->set_id(id);
      op->set_value("x");
      break;
    }
    case 1: {
      auto* op = r.mutable_record_get();
      op->set_dataset(kDataset);
      op->set_id(id);
      break;
    }
    case 2: {
      auto* op = r.mutable_record_exists();
      op->set_dataset(kDataset);
      op->set_id(id);
      break;
    }
    case 3: {
      auto* op = r.mutable_record_delete();
      op->set_dataset(kDataset);
      op->set_id(id);
      break;
    }
    case 4: {
      auto* op = r.mutable_record_restore();
      op->set_dataset(kDataset);
      op->set_id(id);
      break;
    }
    case 5:
      r.mutable_record_list()->set_dataset(kDataset);
      break;
    case 6: {
      auto* op = r.mutable_attachment_put_begin();
      op->set_dataset(kDataset);
      op->set_name(name);
      break;
    }
    case 7: {
      auto* op = r.mutable_attachment_get();
      op->set_dataset(kDataset);
      op->set_name(name);
      break;
    }
    case 8: {
      auto* op = r.mutable_attachment_metadata();
      op->set_dataset(kDataset);
      op->set_name(name);
      break;
    }
    case 9: {
      auto* op = r.mutable_attachment_delete();
      op->set_dataset(kDataset);
      op->set_name(name);
      break;
    }
    case 10: {
      auto* op = r.mutable_attachment_restore();
      op->set_dataset(kDataset);
      op->set_name(name);
      break;
    }
    case 11: {
      auto* op = r.mutable_pseudonymize();
      op->set_dataset(kDataset);
      op->add_identifiers("jane@example.com");
      break;
    }
    case 12: {
      auto* op = r.mutable_pseudonym_translate();
      op->set_dataset(kDataset);
      op->add_tokens("cp1.1.AAAAAAAAAAAAAAAAAAAAAAA");
      break;
    }
    default: {
      auto* op = r.mutable_pseudonym_reidentify();
      op->set_dataset(kDataset);
      op->add_tokens("cp1.1.AAAAAAAAAAAAAAAAAAAAAAA");
      break;
    }
  }
  return r;
}
constexpr int kDataRequestKinds = 14;

// Pseudonymization end to end (real token, real key DB, the client library): deterministic
// tokens per dataset and version, re-identification only with the grant and always audited,
// re-keying by translate, display masks, and every bad input refused with its code.
TEST_F(CofferdTest, PseudonymsAreDeterministicPerDatasetReidentifiedOnlyWithTheGrantAndTranslated) {
  for (const char* name : {kPseudoDataset, kPseudoOtherDataset}) {
    pb::Request create;
    create.mutable_dataset_create()->set_name(name);
    auto created = Admin(create);
    ASSERT_TRUE(created.ok()) << created.status();
    ASSERT_FALSE(created->has_error()) << created->error().DebugString();
  }
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const std::vector<std::string> ids = {"jane@example.com", "+1 (555) 123-4567", "C-000042"};

  auto first = client->Pseudonymize(kPseudoDataset, ids);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->tokens.size(), ids.size());
  EXPECT_EQ(first->key_version, 1u);
  auto again = client->Pseudonymize(kPseudoDataset, ids);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->tokens, first->tokens);  // stable: joins keep working
  EXPECT_NE(first->tokens[0], first->tokens[1]);
  auto other = client->Pseudonymize(kPseudoOtherDataset, ids);
  ASSERT_TRUE(other.ok()) << other.status();
  for (size_t i = 0; i < ids.size(); ++i) {
    EXPECT_EQ(first->tokens[i].rfind("cp1.1.", 0), 0u) << first->tokens[i];
    EXPECT_NE(other->tokens[i], first->tokens[i]);  // unrelated across datasets
    EXPECT_EQ(first->tokens[i].find(ids[i]), std::string::npos);
  }

  auto back = client->Reidentify(kPseudoDataset, first->tokens);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, ids);
  auto masked_email = client->Reidentify(kPseudoDataset, {first->tokens[0]}, pb::MASK_EMAIL);
  ASSERT_TRUE(masked_email.ok()) << masked_email.status();
  EXPECT_EQ(*masked_email, std::vector<std::string>{"j***@example.com"});
  auto masked_phone = client->Reidentify(kPseudoDataset, {first->tokens[1]}, pb::MASK_PHONE);
  ASSERT_TRUE(masked_phone.ok()) << masked_phone.status();
  EXPECT_EQ(*masked_phone, std::vector<std::string>{"***-***-4567"});

  // Without the REIDENTIFY grant: refused (and audited as a refusal).
  auto refused = client->Reidentify(kPseudoOtherDataset, other->tokens);
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kNotGranted) << refused.status();
  // Another dataset's token does not open here.
  auto foreign = client->TranslatePseudonyms(kPseudoOtherDataset, {first->tokens[0]});
  EXPECT_EQ(ErrorCodeOf(foreign.status()), ErrorCode::kPseudonymTokenMismatch) << foreign.status();
  auto foreign_back = client->Reidentify(kPseudoDataset, {other->tokens[0]});
  EXPECT_EQ(ErrorCodeOf(foreign_back.status()), ErrorCode::kPseudonymTokenMismatch);

  // Re-keying: rotate the pseudonym key, translate old tokens to the new version.
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset(kPseudoDataset);
  rotate.mutable_key_rotate()->add_purposes(pb::PURPOSE_PSEUDONYM);
  auto rotated = Admin(rotate);
  ASSERT_TRUE(rotated.ok()) << rotated.status();
  ASSERT_FALSE(rotated->has_error()) << rotated->error().DebugString();
  auto translated = client->TranslatePseudonyms(kPseudoDataset, first->tokens);
  ASSERT_TRUE(translated.ok()) << translated.status();
  EXPECT_EQ(translated->key_version, 2u);
  auto fresh = client->Pseudonymize(kPseudoDataset, ids);
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->key_version, 2u);
  EXPECT_EQ(translated->tokens, fresh->tokens);
  EXPECT_NE(fresh->tokens[0], first->tokens[0]);
  auto identity = client->TranslatePseudonyms(kPseudoDataset, fresh->tokens);
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->tokens, fresh->tokens);
  auto old_back = client->Reidentify(kPseudoDataset, first->tokens);  // old versions still open
  ASSERT_TRUE(old_back.ok()) << old_back.status();
  EXPECT_EQ(*old_back, ids);

  // Bad input.
  EXPECT_EQ(ErrorCodeOf(client->Pseudonymize(kPseudoDataset, {""}).status()),
            ErrorCode::kIdentifierInvalid);
  EXPECT_EQ(ErrorCodeOf(client->Pseudonymize(kPseudoDataset, {std::string(1025, 'x')}).status()),
            ErrorCode::kIdentifierInvalid);
  EXPECT_EQ(ErrorCodeOf(client->Pseudonymize(kPseudoDataset, {}).status()),
            ErrorCode::kMalformedRequest);
  EXPECT_EQ(ErrorCodeOf(client->Reidentify(kPseudoDataset, {"not-a-token"}).status()),
            ErrorCode::kPseudonymTokenMalformed);
  std::string altered = first->tokens[2];
  altered.back() = altered.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(ErrorCodeOf(client->Reidentify(kPseudoDataset, {altered}).status()),
            ErrorCode::kPseudonymTokenMismatch);
  EXPECT_EQ(ErrorCodeOf(client->Pseudonymize("crm/no-such", ids).status()), ErrorCode::kNotGranted);

  // Every re-identification is in the audit log with the caller's uid and the token count.
  pb::Request query;
  query.mutable_audit_query()->set_dataset(kPseudoDataset);
  query.mutable_audit_query()->set_limit(10000);
  auto audited = Admin(query);
  ASSERT_TRUE(audited.ok()) << audited.status();
  ASSERT_FALSE(audited->has_error()) << audited->error().DebugString();
  int reidentified = 0;
  int failed = 0;
  for (const pb::AuditRecord& entry : audited->audit_query().entries()) {
    if (entry.kind() != "ACCESS_REIDENTIFY") continue;
    EXPECT_EQ(entry.uid(), geteuid());
    if (entry.result_code() == 0) {
      reidentified += static_cast<int>(entry.record_count());
    } else {
      ++failed;
    }
  }
  EXPECT_EQ(reidentified, 3 + 1 + 1 + 3);  // both full batches and the two masked ones
  EXPECT_EQ(failed, 3);                    // foreign, malformed and altered tokens

  // The old version retires only on the operator's word that the translate run is done, never
  // by a plain retire (the scheduler never retires one either: KeyManagerTest
  // PseudonymVersionsRetireOnlyOnTheOperatorsTranslateConfirmation; this daemon's clock is
  // shared by the whole suite, so it is not moved here).
  pb::Request retire;
  retire.mutable_key_retire()->set_dataset(kPseudoDataset);
  retire.mutable_key_retire()->set_purpose(pb::PURPOSE_PSEUDONYM);
  retire.mutable_key_retire()->set_below(2);
  auto unconfirmed = Admin(retire);
  ASSERT_TRUE(unconfirmed.ok()) << unconfirmed.status();
  ASSERT_TRUE(unconfirmed->has_error());
  EXPECT_EQ(unconfirmed->error().code(),
            static_cast<int>(ErrorCode::kPseudonymTranslateUnconfirmed));
  EXPECT_NE(unconfirmed->error().message().find("--translate-done"), std::string::npos);
  auto still_open = client->Reidentify(kPseudoDataset, first->tokens);
  ASSERT_TRUE(still_open.ok()) << still_open.status();
  EXPECT_EQ(*still_open, ids);
  pb::Request confirmed = retire;
  confirmed.mutable_key_retire()->set_translate_done(true);
  auto retired = Admin(confirmed);
  ASSERT_TRUE(retired.ok()) << retired.status();
  ASSERT_FALSE(retired->has_error()) << retired->error().DebugString();
  ASSERT_EQ(retired->key_retire().retired_size(), 1);
  EXPECT_EQ(retired->key_retire().retired(0), 1u);
  EXPECT_EQ(ErrorCodeOf(client->Reidentify(kPseudoDataset, first->tokens).status()),
            ErrorCode::kKeyVersionRetired);
  EXPECT_EQ(ErrorCodeOf(client->TranslatePseudonyms(kPseudoDataset, first->tokens).status()),
            ErrorCode::kKeyVersionRetired);
  auto new_back = client->Reidentify(kPseudoDataset, fresh->tokens);
  ASSERT_TRUE(new_back.ok()) << new_back.status();
  EXPECT_EQ(*new_back, ids);
  pb::Request records_confirmed = confirmed;
  records_confirmed.mutable_key_retire()->set_purpose(pb::PURPOSE_RECORDS);
  auto misused = Admin(records_confirmed);
  ASSERT_TRUE(misused.ok()) << misused.status();
  ASSERT_TRUE(misused->has_error());
  EXPECT_EQ(misused->error().code(), static_cast<int>(ErrorCode::kInvalidArgument));
}

TEST_F(CofferdTest, UidWithoutGrantIsRefusedAndTheRefusalIsAudited) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  std::string socket = daemon_->data_socket();
  std::string codes = RunAsUid(kNoGrantUid, daemon_->daemon_gid(), [&socket] {
    RawConnection conn(socket);
    if (!conn.ok()) return std::string("connect failed");
    std::string out;
    for (int which : {1, 0}) out += std::to_string(ErrorOf(conn.Call(DataRequest(which)))) + ",";
    return out;
  });
  EXPECT_EQ(codes, "502,502,");  // NOT_GRANTED for a read and a write

  pb::Request query;
  query.mutable_audit_query()->set_caller_uid(kNoGrantUid);
  query.mutable_audit_query()->set_limit(1000);
  auto audited = Admin(query);
  ASSERT_TRUE(audited.ok()) << audited.status();
  ASSERT_FALSE(audited->has_error()) << audited->error().DebugString();
  int refusals = 0;
  for (const pb::AuditRecord& entry : audited->audit_query().entries()) {
    EXPECT_EQ(entry.uid(), kNoGrantUid);
    // Repeated refusals of one peer may be audited as one entry with a count.
    if (entry.kind() == "REQUEST_REFUSED" && entry.result_code() == 502) {
      refusals += std::max<int>(1, static_cast<int>(entry.record_count()));
    }
  }
  EXPECT_EQ(refusals, 2) << audited->DebugString();
}

TEST_F(CofferdTest, MetadataRoleSeesDatasetsButIsRefusedEveryContentOperation) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  std::string socket = daemon_->data_socket();
  std::string result = RunAsUid(kMetadataUid, daemon_->daemon_gid(), [&socket] {
    RawConnection conn(socket);
    if (!conn.ok()) return std::string("connect failed");
    std::string out;
    pb::Request list;
    list.mutable_dataset_list();
    auto listed = conn.Call(list);
    // Other tests create datasets too: the suite's own must be listed.
    bool has_dataset = false;
    if (listed.ok()) {
      for (const auto& d : listed->dataset_list().datasets()) has_dataset |= d.name() == kDataset;
    }
    out += "list=" + std::to_string(ErrorOf(listed)) + ":" + (has_dataset ? "listed" : "missing") +
           ";";
    pb::Request describe;
    describe.mutable_dataset_describe()->set_name(kDataset);
    out += "describe=" + std::to_string(ErrorOf(conn.Call(describe))) + ";";
    for (int which = 0; which < kDataRequestKinds; ++which) {
      out += std::to_string(ErrorOf(conn.Call(DataRequest(which)))) + ",";
    }
    return out;
  });
  std::string refused;
  for (int which = 0; which < kDataRequestKinds; ++which) refused += "502,";
  EXPECT_EQ(result, "list=0:listed;describe=0;" + refused);
}

// A local user with a grant (a CRM backend's uid): its grant on one dataset gives it nothing on
// another tenant's, which it does not even see listed; the name salt of its own dataset is for
// admins only.
TEST_F(CofferdTest, AGrantOnOneDatasetGivesNothingOnAnotherAndNoNameSalt) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  const std::string other = "crm/other-tenant";
  pb::Request create;
  create.mutable_dataset_create()->set_name(other);
  auto created = Admin(create);
  ASSERT_TRUE(created.ok() && !created->has_error()) << created->DebugString();
  EXPECT_EQ(created->dataset_create().name_salt().size(), 64u);  // the admin socket shows it
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->PutRecord(other, "tenant/1", "another tenant's record").ok());
  }
  const std::string socket = daemon_->data_socket();
  std::string result = RunAsUid(kScopedUid, daemon_->daemon_gid(), [&socket, &other] {
    auto c = client::Client::Connect(socket);
    if (!c.ok()) return std::string("connect failed");
    auto code = [](const absl::Status& s) { return std::string(ErrorCodeName(ErrorCodeOf(s))); };
    std::string out = "own put " + code((*c)->PutRecord(kDataset, "scoped/1", "mine"));
    out += ", own get " + code((*c)->GetRecord(kDataset, "scoped/1").status());
    out += ", other get " + code((*c)->GetRecord(other, "tenant/1").status());
    out += ", other put " + code((*c)->PutRecord(other, "tenant/2", "forged"));
    out += ", other exists " + code((*c)->RecordExists(other, "tenant/1").status());
    out += ", other list " + code((*c)->ListRecords(other, "").status());
    auto listed = (*c)->ListDatasets();
    bool sees_other = false;
    if (listed.ok()) {
      for (const auto& d : *listed) sees_other |= d.name() == other;
    }
    out += std::string(", other listed ") + (sees_other ? "yes" : "no");
    auto described = (*c)->DescribeDataset(kDataset);
    out += ", own salt " + (described.ok() ? std::to_string(described->name_salt().size())
                                           : code(described.status()));
    return out;
  });
  EXPECT_EQ(result,
            "own put OK, own get OK, other get NOT_GRANTED, other put NOT_GRANTED, other exists "
            "NOT_GRANTED, other list NOT_GRANTED, other listed no, own salt 0");
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  EXPECT_EQ(*c->GetRecord(other, "tenant/1"), "another tenant's record");  // nothing forged
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(other, "tenant/2").status()), ErrorCode::kRecordNotFound);
}

// A local user without the daemon's group cannot even connect to either socket (0660, the
// daemon's user and group).
TEST_F(CofferdTest, AUserOutsideTheDaemonsGroupCannotConnect) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  const std::string data = daemon_->data_socket();
  const std::string admin = daemon_->admin_socket();
  constexpr gid_t kNoGroup = 41999;  // a group no socket belongs to
  ASSERT_NE(daemon_->daemon_gid(), kNoGroup);
  std::string result = RunAsUid(kNoGrantUid, kNoGroup, [&data, &admin] {
    std::string out;
    for (const std::string& path : {data, admin}) {
      auto c = client::Client::Connect(path);
      out += c.ok() ? "connected;" : "refused;";
    }
    return out;
  });
  EXPECT_EQ(result, "refused;refused;");
  // The same uid with the group connects (the check above can fail).
  EXPECT_EQ(
      RunAsUid(kNoGrantUid, daemon_->daemon_gid(),
               [&data] { return client::Client::Connect(data).ok() ? "connected" : "refused"; }),
      "connected");
}

TEST_F(CofferdTest, AdminOperationOnTheDataSocketIsWrongSocket) {
  RawConnection conn(daemon_->data_socket());
  ASSERT_TRUE(conn.ok());
  pb::Request create;
  create.mutable_dataset_create()->set_name("crm/sneaky");
  EXPECT_EQ(ErrorOf(conn.Call(create)), 504);
  pb::Request status;
  status.mutable_status();
  EXPECT_EQ(ErrorOf(conn.Call(status)), 504);
  // The connection still serves data requests.
  EXPECT_EQ(ErrorOf(conn.Call(DataRequest(2))), 0);
}

TEST_F(CofferdTest, ClientOverItsRateLimitGetsSlowDownWhileOthersAreServed) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  std::string socket = daemon_->data_socket();
  std::string result = RunAsUid(kRateLimitUid, daemon_->daemon_gid(), [&socket] {
    RawConnection conn(socket);
    if (!conn.ok()) return std::string("connect failed");
    std::string out;
    for (uint32_t i = 0; i < kRateLimitBurst + 3; ++i) {
      auto response = conn.Call(DataRequest(2));
      out += std::to_string(ErrorOf(response));
      if (response.ok() && response->error().code() == 503) {
        out += response->error().retry_after_ms() > 0 ? "+" : "(no retry_after)";
      }
      out += ",";
    }
    return out;
  });
  // Three admitted (the burst), then slowed down with a retry delay.
  EXPECT_EQ(result, "0,0,0,503+,503+,503+,");
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(c->RecordExists(kDataset, "customer/1").ok()) << i;
}

TEST_F(CofferdTest, BrokenClientsAreAnsweredOrDroppedWhileOthersAreServed) {
  // Oversized: a size prefix of 1 GiB.
  RawConnection oversized(daemon_->data_socket());
  ASSERT_TRUE(oversized.ok());
  ASSERT_TRUE(oversized.SendBytes(std::string("\x80\x80\x80\x80\x04", 5)).ok());
  // Garbage: bytes that are not a varint-delimited Request.
  RawConnection garbage(daemon_->data_socket());
  ASSERT_TRUE(garbage.ok());
  std::string junk(64, '\xff');
  ASSERT_TRUE(garbage.SendBytes(junk).ok());
  // Truncated: a frame of 100 bytes of which 10 arrive.
  RawConnection truncated(daemon_->data_socket());
  ASSERT_TRUE(truncated.ok());
  ASSERT_TRUE(truncated.SendBytes(std::string("\x64") + std::string(10, '\x08')).ok());
  // Half-closed: a complete request, then no more writing.
  RawConnection half_closed(daemon_->data_socket());
  ASSERT_TRUE(half_closed.ok());
  ASSERT_TRUE(half_closed.Send(DataRequest(2)).ok());
  ASSERT_EQ(shutdown(half_closed.fd(), SHUT_WR), 0);
  // Stalled: connected, sends nothing.
  RawConnection stalled(daemon_->data_socket());
  ASSERT_TRUE(stalled.ok());
  // Stalled reader: asks for a download and never reads it.
  RawConnection stalled_reader(daemon_->data_socket());
  ASSERT_TRUE(stalled_reader.ok());
  ASSERT_TRUE(stalled_reader.Send(DataRequest(7)).ok());

  // Others are served meanwhile.
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  for (int i = 0; i < 100; ++i) {
    std::string id = "broken-neighbours/" + std::to_string(i);
    ASSERT_TRUE(c->PutRecord(kDataset, id, "v").ok()) << i;
    ASSERT_EQ(*c->GetRecord(kDataset, id), "v");
  }

  auto big = oversized.Receive();
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->error().code(), 500);  // FRAME_TOO_LARGE, then closed
  EXPECT_TRUE(oversized.ClosedByDaemon());

  auto junk_answer = garbage.Receive();
  if (junk_answer.ok()) {
    EXPECT_EQ(junk_answer->error().code(), 501);  // MALFORMED_REQUEST
  }
  EXPECT_TRUE(garbage.ClosedByDaemon());

  auto cut = truncated.Receive();
  if (cut.ok()) {
    EXPECT_EQ(cut->error().code(), 505);  // REQUEST_TIMEOUT
  }
  EXPECT_TRUE(truncated.ClosedByDaemon());

  auto answered = half_closed.Receive();
  ASSERT_TRUE(answered.ok()) << answered.status();
  EXPECT_EQ(answered->request_id(), DataRequest(2).request_id());
  EXPECT_FALSE(answered->has_error()) << answered->error().DebugString();
  EXPECT_TRUE(half_closed.ClosedByDaemon());

  EXPECT_TRUE(stalled.ClosedByDaemon());  // the idle timeout

  // Still served after all of them.
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(c->RecordExists(kDataset, "customer/1").ok());
}

TEST_F(CofferdTest, SighupReloadsGrants) {
  if (!daemon_->as_root()) GTEST_SKIP() << "needs root to drop to other uids";
  std::string socket = daemon_->data_socket();
  auto exists_as_no_grant_uid = [&socket] {
    return RunAsUid(kNoGrantUid, daemon_->daemon_gid(), [&socket] {
      RawConnection conn(socket);
      return conn.ok() ? std::to_string(ErrorOf(conn.Call(DataRequest(2)))) : "connect failed";
    });
  };
  EXPECT_EQ(exists_as_no_grant_uid(), "502");

  daemon_->WriteConfig("grants { principals { uid: " + std::to_string(kNoGrantUid) +
                       " } datasets: \"" + kDataset + "\" rights: READ }\n");
  size_t log_size = daemon_->Logs().size();
  ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_->WaitForLog("grants, admins and rate limits reloaded", log_size));
  EXPECT_EQ(exists_as_no_grant_uid(), "0");

  // A configuration that does not load keeps the grants in force.
  {
    std::ofstream broken(daemon_->dir() + "/cofferd.conf", std::ios::trunc);
    broken << "grants { principals { uid: 1 } rights: NO_SUCH_RIGHT }\n";
  }
  log_size = daemon_->Logs().size();
  ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_->WaitForLog("kept the previous grants", log_size));
  EXPECT_EQ(exists_as_no_grant_uid(), "0");

  daemon_->WriteConfig();
  log_size = daemon_->Logs().size();
  ASSERT_EQ(kill(daemon_->pid(), SIGHUP), 0);
  ASSERT_TRUE(daemon_->WaitForLog("grants, admins and rate limits reloaded", log_size));
  EXPECT_EQ(exists_as_no_grant_uid(), "502");
}

// Last: stops the suite's daemon with SIGTERM under load and restarts it on the same state.
TEST_F(CofferdTest, SigtermDuringLoadLosesNoAcknowledgedWriteAndRestartReusesTheState) {
  pb::Request describe;
  describe.mutable_dataset_describe()->set_name(kDataset);
  auto before = Admin(describe);
  ASSERT_TRUE(before.ok() && !before->has_error());
  {
    auto c = Connect();
    ASSERT_NE(c, nullptr);
    ASSERT_TRUE(c->PutRecord(kDataset, "restart/marker", "written before the restart").ok());
  }

  constexpr int kWriters = 8;
  constexpr size_t kAckedBeforeSignal = 2000;
  std::mutex mu;
  std::condition_variable enough;
  std::map<std::string, std::string> acked;  // guarded by mu
  int writers_done = 0;                      // guarded by mu
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  writers.reserve(kWriters);
  for (int t = 0; t < kWriters; ++t) {
    writers.emplace_back([&, t] {
      auto c = client::Client::Connect(daemon_->data_socket());
      for (uint64_t n = 0; c.ok() && !stop.load(); ++n) {
        std::string id = "sigterm/" + std::to_string(t) + "/" + std::to_string(n);
        std::string value = id + "=" + std::to_string(n * 7919);
        if (!(*c)->PutRecord(kDataset, id, value).ok()) break;  // the daemon is going away
        std::lock_guard<std::mutex> lock(mu);
        acked[id] = value;
        if (acked.size() >= kAckedBeforeSignal) enough.notify_all();
      }
      std::lock_guard<std::mutex> lock(mu);
      ++writers_done;
      enough.notify_all();
    });
  }
  bool loaded = false;
  {
    std::unique_lock<std::mutex> lock(mu);
    enough.wait(lock,
                [&] { return acked.size() >= kAckedBeforeSignal || writers_done == kWriters; });
    loaded = acked.size() >= kAckedBeforeSignal;
  }
  // Signalled while the writers are still writing: requests in flight drain, and the daemon
  // exits 0.
  int exit_code = daemon_->SignalAndWait(SIGTERM);
  stop = true;
  for (std::thread& th : writers) th.join();
  ASSERT_TRUE(loaded) << "writers failed before the signal";
  EXPECT_EQ(exit_code, 0) << daemon_->Logs();
  EXPECT_NE(daemon_->Logs().find("stopped cleanly"), std::string::npos);

  ASSERT_TRUE(daemon_->Start());
  auto after = Admin(describe);
  ASSERT_TRUE(after.ok() && !after->has_error());
  EXPECT_EQ(after->dataset_describe().handle(), before->dataset_describe().handle());

  auto c = Connect();
  ASSERT_NE(c, nullptr);
  size_t checked = 0;
  for (const auto& [id, value] : acked) {
    auto got = c->GetRecord(kDataset, id);
    ASSERT_TRUE(got.ok()) << "acknowledged write lost: " << got.status();
    ASSERT_EQ(*got, value);
    ++checked;
  }
  EXPECT_GE(checked, kAckedBeforeSignal);
  auto marker = c->GetRecord(kDataset, "restart/marker");
  ASSERT_TRUE(marker.ok()) << marker.status();
  EXPECT_EQ(*marker, "written before the restart");

  // The audit log closed cleanly and still verifies, online, across the restart.
  pb::Request verify;
  verify.mutable_audit_verify();
  auto verified = Admin(verify);
  ASSERT_TRUE(verified.ok()) << verified.status();
  EXPECT_FALSE(verified->has_error()) << verified->error().DebugString();
  EXPECT_GT(verified->audit_verify().checkpoints(), 0u);
}

// Start-up checks: each refusal exits 1 with a message that says what to fix.
class CofferdStartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The shipped binary's own start-up checks.
    state_ = CreateDaemon(/*controlled_clock=*/false);
    ASSERT_NE(state_, nullptr);
  }
  std::unique_ptr<Cofferd> state_;
};

TEST_F(CofferdStartupTest, RefusesToRunAsRootWithoutUser) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  auto [code, log] = state_->RunToExit({});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("cofferd does not run as root; pass --user"), std::string::npos) << log;
}

TEST_F(CofferdStartupTest, RefusesAPinFileOthersCanRead) {
  ASSERT_EQ(chmod((state_->dir() + "/hsm/user.pin").c_str(), 0644), 0);
  auto [code, log] = state_->RunToExit({state_->UserArg()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("HSM_PIN_UNAVAILABLE"), std::string::npos) << log;
  EXPECT_NE(log.find("chmod"), std::string::npos) << log;
  std::string pin = ReadWholeFile(state_->dir() + "/hsm/user.pin");
  ASSERT_FALSE(pin.empty());
  EXPECT_EQ(log.find(pin.substr(0, 16)), std::string::npos) << "the PIN reached the log";
}

TEST_F(CofferdStartupTest, RefusesTokenStorageInsideTheDataDirectory) {
  // SOFTHSM2_CONF names the token storage hsm/tokens; with hsm/ as the data directory, a copy
  // of the data would carry the token's keys. (hsm.token_directory is moved out of the way,
  // or the configuration check would refuse first.)
  std::string conf = ReadWholeFile(state_->dir() + "/cofferd.conf");
  const std::string token_directory = "token_directory: \"hsm\"";
  size_t at = conf.find(token_directory);
  ASSERT_NE(at, std::string::npos);
  conf.replace(at, token_directory.size(), "token_directory: \"elsewhere\"");
  std::ofstream(state_->dir() + "/cofferd.conf", std::ios::trunc)
      << conf << "data_directory: \"" << state_->dir() << "/hsm\"\n";
  auto [code, log] = state_->RunToExit({state_->UserArg()},
                                       "SOFTHSM2_CONF=" + state_->dir() + "/hsm/softhsm2.conf");
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("lies inside data_directory"), std::string::npos) << log;
}

// Trust boundary, item 6: the state directory itself (sockets, the audit public key and every
// store live in it) must be the daemon's and writable by nobody else.
TEST_F(CofferdStartupTest, RefusesAStateDirectoryOthersCanWrite) {
  ASSERT_EQ(chmod(state_->dir().c_str(), 0777), 0);
  auto [code, log] = state_->RunToExit({state_->UserArg()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("state_directory " + state_->dir() + " is writable by group or others"),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("chmod go-w " + state_->dir()), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(state_->dir() + "/keys"));  // refused before anything was opened
}

TEST_F(CofferdStartupTest, RefusesAStateDirectoryOwnedByAnotherUid) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to give the directory away";
  ASSERT_EQ(chown(state_->dir().c_str(), 1, 1), 0);
  auto [code, log] = state_->RunToExit({state_->UserArg()});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("state_directory " + state_->dir() + " is owned by uid 1"), std::string::npos)
      << log;
  EXPECT_NE(log.find("Fix: chown"), std::string::npos) << log;
}

TEST_F(CofferdStartupTest, RefusesAMissingTokenWithAHint) {
  auto [code, log] = state_->RunToExit({state_->UserArg(), "--token-label", "nosuchtoken"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("HSM_TOKEN_NOT_FOUND"), std::string::npos) << log;
  EXPECT_NE(log.find("scripts/softhsm-token"), std::string::npos) << log;
}

TEST_F(CofferdStartupTest, RefusesAMissingModule) {
  auto [code, log] = state_->RunToExit({state_->UserArg(), "--hsm-module", "/nonexistent/p11.so"});
  EXPECT_EQ(code, 1);
  EXPECT_NE(log.find("hsm.module_path /nonexistent/p11.so does not exist"), std::string::npos)
      << log;
}

// Real-time smoke test of the shipped binary: every suite above runs test-cofferd, the same
// program on a controlled clock, so this one checks that the real cofferd starts, serves a
// record, accepts an admin command whose TOTP code comes from the system clock (MFA on, as
// root), and stops cleanly on SIGTERM.
// The disk thief (docs/threat-model.md): everything a running cofferd wrote under its state
// directory — data DB, key DB, audit log, event log, admin registry, backups, the token's files —
// holds no dataset name, record id or value, attachment name, type or content in the clear.
TEST(CofferdDiskThiefTest, NoNameIdValueOrAttachmentInAnyFileTheDaemonWrote) {
  std::unique_ptr<Cofferd> daemon = CreateDaemon(/*controlled_clock=*/true);
  ASSERT_NE(daemon, nullptr);
  ASSERT_TRUE(daemon->Start());
  const std::string dataset = "initech-holdings-3b9e";
  const std::string id = "ticket-marker-8d41c6";
  const std::string value = "value-marker-f0a2e9";
  const std::string attachment = "contract-marker-55aa07.pdf";
  const std::string type = "application/type-marker-c3d1";
  const std::string content = "content-marker-9e7b21";
  {
    RawConnection admin(daemon->admin_socket());
    pb::Request create;
    create.mutable_dataset_create()->set_name(dataset);
    auto created = admin.Call(create);
    ASSERT_TRUE(created.ok() && !created->has_error()) << created->DebugString();
  }
  {
    auto c = client::Client::Connect(daemon->data_socket());
    ASSERT_TRUE(c.ok()) << c.status();
    for (int i = 0; i < 20; ++i) {
      const std::string n = std::to_string(i);
      ASSERT_TRUE((*c)->PutRecord(dataset, id + "-" + n, value + "-" + n).ok());
    }
    ASSERT_TRUE((*c)->DeleteRecord(dataset, id + "-3").ok());  // a recycle-bin entry too
    auto upload = (*c)->BeginAttachment(dataset, attachment, type);
    ASSERT_TRUE(upload.ok()) << upload.status();
    for (int i = 0; i < 100; ++i) ASSERT_TRUE((*upload)->Append(content + " ").ok());
    ASSERT_TRUE((*upload)->Commit().ok());
    EXPECT_EQ(*(*c)->GetRecord(dataset, id + "-7"), value + "-7");
  }
  {
    RawConnection admin(daemon->admin_socket());
    pb::Request backup;
    backup.mutable_backup_create();
    auto created = admin.Call(backup);
    ASSERT_TRUE(created.ok() && !created->has_error()) << created->DebugString();
  }
  ASSERT_EQ(daemon->SignalAndWait(SIGTERM), 0) << daemon->Logs();

  EXPECT_GT(storage::testing::ListFiles(daemon->dir()).size(), 20u);
  for (const std::string& marker : {dataset, id, value, attachment, type, content}) {
    std::vector<std::string> hits;
    for (const std::string& path : storage::testing::FilesContaining(daemon->dir(), marker)) {
      // The operator's configuration is not written by cofferd.
      if (!path.ends_with(".conf")) hits.push_back(path);
    }
    EXPECT_THAT(hits, ::testing::IsEmpty()) << "\"" << marker << "\" is in the clear";
  }
  // The scan sees a marker where one is in the clear (it can fail).
  std::ofstream(daemon->dir() + "/probe") << "x" << dataset << "x";
  EXPECT_EQ(storage::testing::FilesContaining(daemon->dir(), dataset).size(), 1u);
}

TEST(CofferdSmokeTest, ShippedBinaryServesARecordAnAdminCommandWithARealTotpAndStops) {
  const bool mfa = geteuid() == 0;  // keyctl as admin uids needs root
  CofferdOptions options;
  options.name = "cofferd-smoke";
  options.controlled_clock = false;
  options.mfa = mfa;
  // With MFA on, the test's uid (root) is an enrolled admin and gets no content: the record is
  // served to uid 2, an application user.
  const uid_t app = mfa ? 2 : geteuid();
  options.extra_config = [app](const std::string&) {
    return "grants { principals { uid: " + std::to_string(app) +
           " } datasets: \"*\" rights: READ rights: WRITE }\n";
  };
  std::unique_ptr<Cofferd> daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr) << "could not prepare or start the shipped cofferd";
  ASSERT_FALSE(daemon->controlled_clock());

  const std::string dataset = "smoke/records";
  if (mfa) {
    auto keyctl = [&](const std::string& args) {
      return ::coffer::testing::KeyctlAs(::coffer::testing::kAdminA, daemon->keyctl(),
                                         daemon->admin_socket(), args);
    };
    ::coffer::testing::KeyctlResult enrolled = keyctl("--json admin enroll");
    ASSERT_EQ(enrolled.exit_code, 0) << enrolled.err << enrolled.out;
    ::coffer::testing::TotpCodes codes(daemon.get());
    codes.SetSecret(::coffer::testing::kAdminA,
                    ::coffer::testing::SecretOf(enrolled.JsonOrEmpty().value("otpauth_uri", "")));
    ::coffer::testing::KeyctlResult created =
        keyctl("--totp " + codes.Next(::coffer::testing::kAdminA) + " dataset create " + dataset);
    ASSERT_EQ(created.exit_code, 0) << created.err << created.out;
    // A code the system clock does not give now is refused.
    ::coffer::testing::KeyctlResult wrong =
        keyctl("--totp " + codes.At(::coffer::testing::kAdminA, daemon->TotpStep() + 1000) +
               " dataset create smoke/refused");
    EXPECT_NE(wrong.exit_code, 0) << wrong.out;
  } else {
    ::coffer::testing::KeyctlResult created =
        ::coffer::testing::Keyctl(daemon->admin_socket(), "dataset create " + dataset);
    ASSERT_EQ(created.exit_code, 0) << created.err << created.out;
  }

  {
    const std::string socket = daemon->data_socket();
    auto serve = [&socket, &dataset]() -> std::string {
      auto c = client::Client::Connect(socket);
      if (!c.ok()) return "connect failed";
      if (!(*c)->PutRecord(dataset, "customer/1", "a value").ok()) return "put failed";
      auto got = (*c)->GetRecord(dataset, "customer/1");
      return got.ok() ? *got : "get failed";
    };
    EXPECT_EQ(mfa ? RunAsUid(app, daemon->daemon_gid(), serve) : serve(), "a value");
  }

  EXPECT_EQ(daemon->SignalAndWait(SIGTERM), 0) << daemon->Logs();
  EXPECT_NE(daemon->Logs().find("stopped cleanly"), std::string::npos) << daemon->Logs();
}

}  // namespace
}  // namespace coffer
