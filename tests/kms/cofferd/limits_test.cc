// Limits against a running cofferd (issue 19 item 8): a record value at the configured limit and
// one byte over, 64 clients at once, and the daemon at its file-descriptor limit — each served
// or refused cleanly, with nothing acknowledged lost and service back once descriptors free up.
// (The 1 GiB attachment, 10,000 datasets and a full disk run from scripts/limits: they take
// minutes or need a filesystem of their own.)

#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/one_dataset_daemon.h"
#include "tests/kms/cofferd/raw_connection.h"
#include "tests/testing/text.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::RawConnection;
namespace fs = std::filesystem;
namespace pb = ::coffer::v1;

constexpr char kDataset[] = "crm/limits";
constexpr size_t kMaxValueBytes = size_t{4} << 20;  // limits.max_value_bytes, the default

// "cT-I" (built by appending: GCC 12 warns, wrongly, on a chain of + over std::to_string).
std::string IdOf(int client, int record) {
  std::string id = "c";
  id.append(std::to_string(client)).append("-").append(std::to_string(record));
  return id;
}

class LimitsTest : public ::coffer::testing::OneDatasetDaemonTest {
 protected:
  LimitsTest() : OneDatasetDaemonTest("cofferd-limits", kDataset) {}
};

TEST_F(LimitsTest, AValueAtTheLimitIsStoredAndOneByteOverIsRefusedOnAConnectionThatCarriesOn) {
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  std::string at_limit(kMaxValueBytes, 'v');
  at_limit[12345] = 'w';
  ASSERT_TRUE(c->PutRecord(kDataset, "at-limit", at_limit).ok());
  const absl::Status over = c->PutRecord(kDataset, "over", std::string(kMaxValueBytes + 1, 'o'));
  EXPECT_EQ(ErrorCodeOf(over), ErrorCode::kValueTooLarge) << over;
  auto read = c->GetRecord(kDataset, "at-limit");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == at_limit);
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, "over").status()), ErrorCode::kRecordNotFound);
}

TEST_F(LimitsTest, SixtyFourClientsAtOnceEachReadBackEveryWriteOfTheirOwn) {
  constexpr int kClients = 64;
  constexpr int kRecordsEach = 40;
  std::atomic<int> failures{0};
  std::atomic<int> slowed{0};  // SLOW_DOWN answers, each waited out and retried
  std::mutex first_mu;
  std::string first_failure;  // the first failure's status, for the message
  auto fail = [&](const absl::Status& status) {
    ++failures;
    std::lock_guard<std::mutex> lock(first_mu);
    if (first_failure.empty()) first_failure = status.ToString();
  };
  std::vector<std::thread> threads;
  const std::string socket = daemon_->data_socket();
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      auto c = client::Client::Connect(socket);
      if (!c.ok()) {
        fail(c.status());
        return;
      }
      // 64 x 80 requests of one uid can outrun its rate limit (2,000/s, burst 4,000): as a
      // well-behaved client, each waits the SLOW_DOWN's retry_after_ms and asks again.
      auto polite = [&](const std::function<absl::Status()>& call) {
        absl::Status status = call();
        for (int attempt = 0; attempt < 1000 && ErrorCodeOf(status) == ErrorCode::kSlowDown;
             ++attempt) {
          ++slowed;
          std::this_thread::sleep_for(
              client::RetryAfter(status).value_or(std::chrono::milliseconds(1)));
          status = call();
        }
        return status;
      };
      for (int i = 0; i < kRecordsEach; ++i) {
        const std::string id = IdOf(t, i);
        absl::Status put = polite([&] { return (*c)->PutRecord(kDataset, id, "value of " + id); });
        if (!put.ok()) fail(put);
      }
      for (int i = 0; i < kRecordsEach; ++i) {
        const std::string id = IdOf(t, i);
        absl::StatusOr<std::string> value;
        absl::Status got = polite([&] {
          value = (*c)->GetRecord(kDataset, id);
          return value.status();
        });
        if (!got.ok()) fail(got);
        if (got.ok() && *value != "value of " + id) fail(absl::DataLossError("wrong value"));
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0) << "first: " << first_failure
                                << " (SLOW_DOWN answers waited out: " << slowed.load() << ")";
  auto c = Connect();
  ASSERT_NE(c, nullptr);
  auto listed = c->ListRecords(kDataset, "", 10000);
  ASSERT_TRUE(listed.ok()) << listed.status();
  EXPECT_EQ(listed->ids.size(), static_cast<size_t>(kClients * kRecordsEach));
}

// The daemon started under a low open-file limit (prlimit --nofile=200:200): it lowers its
// connection limit so that connections can never take the descriptors its databases and the
// HSM need (out of descriptors, SoftHSM2 loses the token's objects for the rest of the
// process), says so in its log, and turns connections beyond it away with SERVER_BUSY. Every
// answer is OK or SERVER_BUSY, every write acknowledged reads back, the refused ones succeed once
// connections close, and the daemon stops cleanly.
TEST(LimitsDescriptorTest, UnderALowOpenFileLimitConnectionsAreCappedAndRefusedCleanly) {
  ::coffer::testing::CofferdOptions options;
  options.name = "cofferd-nofile";
  options.launcher = {"/usr/bin/prlimit", "--nofile=200:200", "--"};
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  ASSERT_EQ(
      ::coffer::testing::Keyctl(daemon->admin_socket(), std::string("dataset create ") + kDataset)
          .exit_code,
      0);
  const std::string logs = daemon->Logs();
  const size_t at = logs.find("lowered to ");
  ASSERT_NE(at, std::string::npos) << logs;
  const int budget = std::stoi(logs.substr(at + 11));
  ASSERT_GE(budget, 4);
  ASSERT_LT(budget, 200);

  // More connections than the budget, each with a put.
  const int connections = budget + 8;
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < connections; ++i) {
    conns.push_back(std::make_unique<RawConnection>(daemon->data_socket()));
    ASSERT_TRUE(conns.back()->ok()) << "connect " << i;
    pb::Request put;
    put.set_request_id(static_cast<uint64_t>(i) + 1);
    put.mutable_record_put()->set_dataset(kDataset);
    put.mutable_record_put()->set_id("r-" + std::to_string(i));
    put.mutable_record_put()->set_value("written under the limit");
    ASSERT_TRUE(conns.back()->Send(put).ok());
  }
  std::vector<int> refused;
  int acknowledged = 0;
  for (int i = 0; i < connections; ++i) {
    auto answer = conns[i]->Receive();
    ASSERT_TRUE(answer.ok()) << "connection " << i << ": " << answer.status();
    if (!answer->has_error()) {
      ++acknowledged;
    } else {
      EXPECT_EQ(answer->error().code(), static_cast<int>(ErrorCode::kServerBusy))
          << "connection " << i << ": " << answer->error().DebugString();
      refused.push_back(i);
    }
  }
  EXPECT_FALSE(refused.empty()) << "no connection was beyond the lowered limit";
  EXPECT_GT(acknowledged, 0);
  conns.clear();

  // Connections closed: the refused writes go through, and every write reads back.
  auto c = client::Client::Connect(daemon->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (int i : refused) {
    ASSERT_TRUE((*c)->PutRecord(kDataset, "r-" + std::to_string(i), "written under the limit").ok())
        << i;
  }
  for (int i = 0; i < connections; ++i) {
    auto value = (*c)->GetRecord(kDataset, "r-" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
    EXPECT_EQ(*value, "written under the limit");
  }
  c->reset();
  EXPECT_TRUE(daemon->Stop()) << daemon->Logs();
}

// A limit that leaves no room for connections at all refuses to start, and says why.
TEST(LimitsDescriptorTest, AnOpenFileLimitWithNoRoomForConnectionsRefusesToStart) {
  ::coffer::testing::CofferdOptions options;
  options.name = "cofferd-nofile-low";
  options.launcher = {"/usr/bin/prlimit", "--nofile=100:100", "--"};
  options.start = false;
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  auto [exit_code, output] = daemon->RunToExit({daemon->UserArg()});
  EXPECT_NE(exit_code, 0) << output;
  EXPECT_NE(exit_code, 124) << "cofferd started: " << output;
  EXPECT_NE(output.find("RLIMIT_NOFILE"), std::string::npos) << output;
}

// Record `i` of the full-disk test: 64 KiB that compress badly.
std::string Chunk64K(int i) {
  return ::coffer::testing::Pattern(64 << 10, static_cast<uint32_t>(i));
}

// The daemon's whole state directory on a 512 MiB tmpfs with limits.min_free_bytes 64 MiB, then
// filled (a file the test removes later) until 128 MiB are free. Writes go on until the free
// space drops below the minimum, then every request that changes state is refused with
// RESOURCE_EXHAUSTED — cleanly, audited, the daemon answering — while reads are served; once
// the file is removed the very next write is served, with no restart; every acknowledged write
// reads back and the audit log verifies. Without the check the disk would fill: RocksDB 7.8
// aborts the process on the write after a failed WAL write, and the audit log refuses appends
// after a failed write. Needs root to mount.
TEST(LimitsDiskTest, BelowTheFreeSpaceMinimumWritesAreRefusedCleanlyAndResumeWhenSpaceReturns) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to mount a tmpfs";
  ::coffer::testing::CofferdOptions options;
  options.name = "cofferd-disk";
  options.start = false;
  options.extra_config = [](const std::string&) {
    // 192 MiB: room for what RocksDB writes after the guard's last look — a flush (16 MiB
    // memtables) and an L0 compaction (up to 64 MiB written before the inputs go) — so the audit
    // log never meets the full disk (the default is 256 MiB for the same reason).
    return std::string("limits { min_free_bytes: 201326592 }\n");
  };
  auto daemon = Cofferd::Create(std::move(options));
  ASSERT_NE(daemon, nullptr);
  const std::string dir = daemon->dir();
  const std::string saved = dir + ".saved";
  ASSERT_EQ(std::system(("cp -a " + dir + " " + saved).c_str()), 0);
  if (mount("tmpfs", dir.c_str(), "tmpfs", 0, "size=512m,mode=0700") != 0) {
    const int error = errno;
    std::system(("rm -rf " + saved).c_str());
    GTEST_SKIP() << "cannot mount a tmpfs here: " << std::strerror(error);
  }
  ASSERT_EQ(std::system(("cp -a " + saved + "/. " + dir + "/ && rm -rf " + saved).c_str()), 0);
  struct stat owner {};
  ASSERT_EQ(stat((dir + "/hsm").c_str(), &owner), 0);
  ASSERT_EQ(chown(dir.c_str(), owner.st_uid, owner.st_gid), 0);
  ASSERT_EQ(chmod(dir.c_str(), 0755), 0);
  struct Unmount {
    std::string dir;
    ~Unmount() { umount2(dir.c_str(), MNT_DETACH); }
  } unmount{dir};
  ASSERT_TRUE(daemon->Start());
  ASSERT_EQ(
      ::coffer::testing::Keyctl(daemon->admin_socket(), std::string("dataset create ") + kDataset)
          .exit_code,
      0);
  const std::string filler = dir + "/filler";
  ASSERT_EQ(std::system(("fallocate -l $(( $(df --output=avail -B1 " + dir +
                         " | tail -1) - 256*1024*1024 )) " + filler)
                            .c_str()),
            0);

  auto c = client::Client::Connect(daemon->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  std::vector<int> acknowledged;
  absl::Status refused;
  for (int i = 0; i < 4000; ++i) {
    absl::Status put = (*c)->PutRecord(kDataset, "r-" + std::to_string(i), Chunk64K(i));
    if (!put.ok()) {
      refused = put;
      break;
    }
    acknowledged.push_back(i);
  }
  ASSERT_EQ(ErrorCodeOf(refused), ErrorCode::kResourceExhausted) << refused;
  EXPECT_FALSE(acknowledged.empty());
  // RocksDB's own files grow and shrink (a flush deletes a preallocated WAL): hold the disk well
  // below the minimum (at most 24 MiB free; it may already be less, and RocksDB may take more
  // between df and fallocate: a full disk is what the rest of the test wants anyway) while the
  // other requests are tried.
  const std::string filler2 = dir + "/filler2";
  ASSERT_EQ(std::system(("a=$(df --output=avail -B1 " + dir +
                         " | tail -1); [ \"$a\" -le 25165824 ] || fallocate -l $((a - 25165824)) " +
                         filler2 + " 2>/dev/null || true")
                            .c_str()),
            0);
  // Reads are served, other changes refused alike, the daemon answers its admins.
  auto read = (*c)->GetRecord(kDataset, "r-0");
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == Chunk64K(0));
  EXPECT_EQ(ErrorCodeOf((*c)->DeleteRecord(kDataset, "r-0")), ErrorCode::kResourceExhausted);
  auto created = ::coffer::testing::Keyctl(daemon->admin_socket(), "dataset create crm/more");
  EXPECT_NE(created.exit_code, 0);
  EXPECT_NE(created.err.find("min_free_bytes"), std::string::npos) << created.err;
  EXPECT_EQ(::coffer::testing::Keyctl(daemon->admin_socket(), "status").exit_code, 0);

  // Space returns: the next write is served, no restart. Had the disk filled up under the audit
  // log itself (RocksDB's flushes can take the last bytes), the log reopens itself once
  // kAuditReopenInterval has passed on the daemon's clock (kms/audit/audit_log.h, Recovery).
  ASSERT_EQ(unlink(filler.c_str()), 0);
  ASSERT_TRUE(unlink(filler2.c_str()) == 0 || errno == ENOENT) << filler2;
  daemon->AdvanceClock(std::chrono::seconds(2));
  absl::Status resumed = (*c)->PutRecord(kDataset, "after", "space returned");
  ASSERT_TRUE(resumed.ok()) << resumed;
  for (int i : acknowledged) {
    auto value = (*c)->GetRecord(kDataset, "r-" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
    ASSERT_TRUE(*value == Chunk64K(i)) << i;
  }
  // Every refusal is in the audit log under the caller.
  auto audit =
      ::coffer::testing::Keyctl(daemon->admin_socket(), "--json audit search --limit 100000");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  int refusals = 0;
  for (const auto& entry : audit.JsonOrEmpty().value("entries", nlohmann::json::array())) {
    if (entry.value("kind", "") == "REQUEST_REFUSED" &&
        entry.value("result_code", 0) == static_cast<int>(ErrorCode::kResourceExhausted)) {
      refusals += std::max(1, entry.value("record_count", 1));
    }
  }
  EXPECT_EQ(refusals, 3) << audit.out;  // the put, the delete, the dataset create
  auto verified = ::coffer::testing::Keyctl(daemon->admin_socket(), "audit verify");
  EXPECT_EQ(verified.exit_code, 0) << verified.err << verified.out;
  (*c).reset();
  EXPECT_TRUE(daemon->Stop()) << daemon->Logs();
  std::cout << "limits: disk below the minimum after " << acknowledged.size()
            << " records of 64 KiB; writes refused, then served again without a restart\n";
}

// A cofferd whose audit log lives on a 2 MiB tmpfs of its own (the free-space guard off, so that
// requests reach the full disk), which Fill() fills and Free() empties. Needs root to mount.
class SmallAuditDisk {
 public:
  // Empty when the daemon runs; otherwise why the test must be skipped (or an ADD_FAILURE).
  std::string Start(const std::string& name) {
    if (geteuid() != 0) return "needs root to mount a tmpfs";
    ::coffer::testing::CofferdOptions options;
    options.name = name;
    options.start = false;
    options.extra_config = [](const std::string& dir) {
      return "limits { min_free_bytes: 0 }\naudit_directory: \"" + dir + "/auditfs/audit\"\n";
    };
    daemon_ = Cofferd::Create(std::move(options));
    if (daemon_ == nullptr) {
      ADD_FAILURE() << "cofferd not created";
      return "";
    }
    fs_dir_ = daemon_->dir() + "/auditfs";
    if (mkdir(fs_dir_.c_str(), 0700) != 0) ADD_FAILURE() << "mkdir " << fs_dir_;
    if (mount("tmpfs", fs_dir_.c_str(), "tmpfs", 0, "size=2m,mode=0700") != 0) {
      const std::string why = std::string("cannot mount a tmpfs here: ") + std::strerror(errno);
      fs_dir_.clear();
      return why;
    }
    struct stat owner {};
    if (stat((daemon_->dir() + "/hsm").c_str(), &owner) != 0 ||
        chown(fs_dir_.c_str(), owner.st_uid, owner.st_gid) != 0) {
      ADD_FAILURE() << "cannot give the tmpfs to the daemon's user";
    }
    if (!daemon_->Start()) ADD_FAILURE() << "cofferd did not start: " << daemon_->Logs();
    return "";
  }
  ~SmallAuditDisk() {
    if (!fs_dir_.empty()) umount2(fs_dir_.c_str(), MNT_DETACH);
  }

  Cofferd& daemon() { return *daemon_; }
  ::coffer::testing::KeyctlResult Admin(const std::string& args) {
    return ::coffer::testing::Keyctl(daemon_->admin_socket(), args);
  }
  void Fill() {
    ASSERT_EQ(std::system(("fallocate -l $(df --output=avail -B1 " + fs_dir_ + " | tail -1) " +
                           filler() + " 2>/dev/null; dd if=/dev/zero of=" + filler() +
                           ".tail bs=4k 2>/dev/null; true")
                              .c_str()),
              0);
  }
  void Free() {
    ASSERT_EQ(std::system(("rm -f " + filler() + " " + filler() + ".tail").c_str()), 0);
  }
  nlohmann::json AuditStatus() {
    auto status = Admin("--json status");
    EXPECT_EQ(status.exit_code, 0) << status.err;
    return status.JsonOrEmpty()["audit"];
  }

 private:
  std::string filler() const { return fs_dir_ + "/filler"; }
  std::unique_ptr<Cofferd> daemon_;
  std::string fs_dir_;
};

// Issue 20 item 6: the audit log's own disk fills up. The write that meets the full disk fails,
// every request after it is refused — reads too: none is served unaudited (the default failure
// policy, fail-closed) —, `keyctl status` says the log is not writable; once space returns and a
// second has passed on the daemon's clock, the next request is served, with no restart, and the
// log (one epoch more) verifies.
TEST(LimitsDiskTest, AFullAuditDiskRefusesServiceUntilSpaceReturnsWithoutARestart) {
  SmallAuditDisk disk;
  if (std::string skip = disk.Start("cofferd-audit-disk"); !skip.empty()) GTEST_SKIP() << skip;
  ASSERT_FALSE(HasFailure());
  Cofferd& daemon = disk.daemon();
  ASSERT_EQ(disk.Admin(std::string("dataset create ") + kDataset).exit_code, 0);
  auto c = client::Client::Connect(daemon.data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->PutRecord(kDataset, "before", "written before the disk filled").ok());

  ASSERT_NO_FATAL_FAILURE(disk.Fill());
  // The segment's last page still takes a few entries; the first write that needs a new page
  // fails, and it and every request after it are refused.
  absl::Status failed;
  for (int i = 0; i < 1000 && failed.ok(); ++i) {
    failed = (*c)->PutRecord(kDataset, "during-" + std::to_string(i), "not acknowledged");
  }
  EXPECT_EQ(ErrorCodeOf(failed), ErrorCode::kAuditNotDurable) << failed;
  auto read = (*c)->GetRecord(kDataset, "before");
  EXPECT_FALSE(read.ok());
  const ErrorCode refused = ErrorCodeOf(read.status());
  EXPECT_TRUE(refused == ErrorCode::kAuditLogClosed || refused == ErrorCode::kAuditNotDurable)
      << read.status();
  EXPECT_EQ(disk.AuditStatus().value("writable", true), false);

  // Space returns: a second later on the daemon's clock, the next request is served.
  ASSERT_NO_FATAL_FAILURE(disk.Free());
  daemon.AdvanceClock(std::chrono::seconds(2));
  auto c2 = client::Client::Connect(daemon.data_socket());  // the failed one may be closed
  ASSERT_TRUE(c2.ok()) << c2.status();
  auto again = (*c2)->GetRecord(kDataset, "before");
  ASSERT_TRUE(again.ok()) << again.status() << daemon.Logs();
  EXPECT_EQ(*again, "written before the disk filled");
  ASSERT_TRUE((*c2)->PutRecord(kDataset, "after", "space returned").ok());
  const nlohmann::json audit = disk.AuditStatus();
  EXPECT_EQ(audit.value("writable", false), true) << audit.dump();
  EXPECT_GE(::coffer::testing::JsonNumber(audit.value("reopens", nlohmann::json(0))), 1u)
      << audit.dump();
  auto verified = disk.Admin("audit verify");
  EXPECT_EQ(verified.exit_code, 0) << verified.err << verified.out;
  (*c2).reset();
  (*c).reset();
  EXPECT_TRUE(daemon.Stop()) << daemon.Logs();
}

// Issue 20 item 6, the relaxed policy: under SERVE_AND_COUNT (development mode here, so one admin
// sets it; keyctl_dual_control_test shows that MFA mode asks a second) the same full audit disk
// does not stop data requests. They are served and counted, status shows the count, key
// operations still fail closed, and once the log reopens the counts are written as access
// entries (record_count = how many, the fixed detail) that add up to exactly what was served.
TEST(LimitsDiskTest, ServeAndCountServesThroughAFullAuditDiskAndAuditsTheCountsAfterwards) {
  SmallAuditDisk disk;
  if (std::string skip = disk.Start("cofferd-audit-open"); !skip.empty()) GTEST_SKIP() << skip;
  ASSERT_FALSE(HasFailure());
  Cofferd& daemon = disk.daemon();
  ASSERT_EQ(disk.Admin(std::string("dataset create ") + kDataset).exit_code, 0);
  auto set = disk.Admin("audit policy --access-failure serve-and-count");
  ASSERT_EQ(set.exit_code, 0) << set.err << set.out;
  EXPECT_NE(set.out.find("serve-and-count (was fail-closed)"), std::string::npos) << set.out;
  auto c = client::Client::Connect(daemon.data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE((*c)->PutRecord(kDataset, "before", "written before the disk filled").ok());

  ASSERT_NO_FATAL_FAILURE(disk.Fill());
  // Every write is acknowledged; status tells when the log has failed.
  int written = 0;
  bool log_failed = false;
  for (; written < 1000 && !log_failed; ++written) {
    absl::Status put = (*c)->PutRecord(kDataset, "during-" + std::to_string(written),
                                       "acknowledged while the log was failing");
    ASSERT_TRUE(put.ok()) << put;
    if (written % 8 == 7) log_failed = !disk.AuditStatus().value("writable", true);
  }
  ASSERT_TRUE(log_failed) << "the audit log never failed";
  // Reads are served too, with their values.
  constexpr int kReads = 6;
  for (int i = 0; i < kReads; ++i) {
    auto value = (*c)->GetRecord(kDataset, i % 2 == 0 ? "before" : "during-0");
    ASSERT_TRUE(value.ok()) << value.status();
    EXPECT_EQ(*value, i % 2 == 0 ? "written before the disk filled"
                                 : "acknowledged while the log was failing");
  }
  // Refusals made meanwhile (no PSEUDONYMIZE grant) are kept until the log can take them.
  constexpr int kRefusals = 3;
  for (int i = 0; i < kRefusals; ++i) {
    auto refused = (*c)->Pseudonymize(kDataset, {"jane@example.com"});
    ASSERT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kNotGranted) << refused.status();
  }
  // A key operation fails closed whatever the policy.
  auto rotate = disk.Admin(std::string("--json key rotate ") + kDataset + " --purpose records");
  EXPECT_NE(rotate.exit_code, 0) << rotate.out;
  EXPECT_EQ(rotate.CodeName().rfind("AUDIT_", 0), 0u) << rotate.out << rotate.err;
  nlohmann::json audit = disk.AuditStatus();
  EXPECT_EQ(audit.value("writable", true), false) << audit.dump();
  const uint64_t served =
      ::coffer::testing::JsonNumber(audit.value("served_unaudited", nlohmann::json(0)));
  EXPECT_GE(served, uint64_t{kReads} + 1) << audit.dump();
  EXPECT_EQ(::coffer::testing::JsonNumber(audit.value("unaudited_pending", nlohmann::json(0))),
            served)
      << audit.dump();

  // Space returns: the next request reopens the log and writes the counts before its reply.
  ASSERT_NO_FATAL_FAILURE(disk.Free());
  daemon.AdvanceClock(std::chrono::seconds(2));
  auto again = (*c)->GetRecord(kDataset, "during-0");
  ASSERT_TRUE(again.ok()) << again.status() << daemon.Logs();
  audit = disk.AuditStatus();
  EXPECT_EQ(audit.value("writable", false), true) << audit.dump();
  EXPECT_EQ(::coffer::testing::JsonNumber(audit.value("unaudited_pending", nlohmann::json(1))), 0u)
      << audit.dump();
  EXPECT_EQ(::coffer::testing::JsonNumber(audit.value("served_unaudited", nlohmann::json(0))),
            served);

  auto entries =
      disk.Admin("--json audit search --dataset " + std::string(kDataset) + " --limit 100000");
  ASSERT_EQ(entries.exit_code, 0) << entries.err;
  uint64_t counted = 0;
  uint64_t counted_reads = 0;
  uint64_t not_granted = 0;
  const nlohmann::json all = entries.JsonOrEmpty();
  for (const nlohmann::json& e : all["entries"]) {
    if (e.value("kind", "") == "REQUEST_REFUSED" && e.value("result_code", 0) == 502) {
      not_granted += ::coffer::testing::JsonNumber(e.value("record_count", nlohmann::json(0)));
    }
    if (e.value("detail", "") !=
        "served while the audit log was failing (SERVE_AND_COUNT); record_count accesses") {
      continue;
    }
    EXPECT_EQ(e.value("result_code", -1), 0) << e.dump();
    const uint64_t count =
        ::coffer::testing::JsonNumber(e.value("record_count", nlohmann::json(0)));
    counted += count;
    if (e.value("kind", "") == "ACCESS_READ") counted_reads += count;
  }
  EXPECT_EQ(counted, served) << entries.out;
  EXPECT_EQ(counted_reads, uint64_t{kReads}) << entries.out;
  EXPECT_EQ(not_granted, uint64_t{kRefusals}) << entries.out;
  // Nothing acknowledged was lost.
  for (int i = 0; i < written; ++i) {
    auto value = (*c)->GetRecord(kDataset, "during-" + std::to_string(i));
    ASSERT_TRUE(value.ok()) << i << ": " << value.status();
  }
  auto verified = disk.Admin("audit verify");
  EXPECT_EQ(verified.exit_code, 0) << verified.err << verified.out;
  (*c).reset();
  EXPECT_TRUE(daemon.Stop()) << daemon.Logs();
}

}  // namespace
}  // namespace coffer
