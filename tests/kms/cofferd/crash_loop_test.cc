// Issue 19 item 2: the crash loop. test-cofferd (fresh SoftHSM2 token, real RocksDB, real
// sockets; tests/kms/cofferd/cofferd_harness.h) under mixed load — record puts, overwrites and
// deletes, attachment uploads (some aborted, some cut by the kill), attachment deletes, key
// rotations, re-encryption jobs, key re-wraps, dataset creations and full backups — is killed
// with SIGKILL at a random moment and started again on the same state, N times. After each
// restart:
//  - start-up recovery finished: the daemon serves, every dataset is ACTIVE, every re-encryption
//    it resumed ends DONE, no wrapping key is missing;
//  - every acknowledged write reads back exactly, and an operation the kill interrupted either
//    happened or did not, nothing in between: a record holds its acknowledged value or the
//    interrupted one, an attachment is absent or complete with exactly the bytes of one of them
//    (never truncated), a backup the daemon lists verifies;
//  - every record of the dataset decrypts: the listing names no damaged item and exactly the
//    model's live ids, each one reads, and a scrub authenticates every record and segment;
//  - the audit log verifies (the admin socket's audit_verify).
//
// Each load thread owns its ids and names, so the model of each item is sequential: what the
// last acknowledged operation left, plus at most one interrupted operation. After the checks
// the model takes what was read back, and the next iteration starts from there.
//
// COFFER_CRASH_ITERATIONS (default 10) sets N, COFFER_CRASH_SEED the seed (default: drawn and
// printed); COFFER_CRASH_KEEP_STATE=DIR copies the daemon's directory there when the test fails.
// The seed fixes every choice the test makes — operations, sizes, the delay before each kill — not
// the daemon's scheduling, so a failing seed replays the same scenario, not the same interleaving.
// The kill's moment is random; nothing asserts a timing. The summary line gives iterations,
// acknowledged operations, items checked, lost (asserted 0) and the restart time (from exec to the
// first status answered) p50/max, a figure only. scripts/crash-test runs this binary with a longer
// N.

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/keyctl/admin_client.h"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;

constexpr char kDataset[] = "crash/data";
constexpr int kRecordWriters = 3;
constexpr int kRecordsPerWriter = 40;
constexpr int kAttachmentWriters = 2;
constexpr int kAttachmentsPerWriter = 6;
constexpr size_t kMaxAttachmentBytes = 300 * 1024;  // up to five 64 KiB segments
// The kill comes this long after the load started: long enough for every kind of operation to
// be under way, short enough that an iteration stays a few seconds.
constexpr int kMinKillDelayMillis = 150;
constexpr int kMaxKillDelayMillis = 1200;

uint64_t EnvNumber(const char* name, uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  return std::strtoull(text, nullptr, 10);
}

// A failure that a kill explains: the daemon is gone (or went while answering).
bool KilledUnderneath(const absl::Status& status) {
  const ErrorCode code = ErrorCodeOf(status);
  return code == ErrorCode::kDaemonUnavailable || code == ErrorCode::kRequestTimeout ||
         code == ErrorCode::kUnexpectedFrame;
}

std::string Describe(const absl::Status& status) {
  return std::string(ErrorCodeName(ErrorCodeOf(status))) + " " + std::string(status.message());
}

// Test values only (never real data): a short description of a value for failure messages —
// its size and first bytes in hex.
std::string Show(const std::optional<std::string>& value) {
  if (!value) return "<absent>";
  static constexpr char kHex[] = "0123456789abcdef";
  std::string head;
  for (size_t i = 0; i < std::min<size_t>(value->size(), 12); ++i) {
    const auto byte = static_cast<unsigned char>((*value)[i]);
    head += {kHex[byte >> 4], kHex[byte & 15]};
  }
  return "<" + std::to_string(value->size()) + " bytes " + head +
         (value->size() > 12 ? "...>" : ">");
}

// What one record id or attachment name holds according to the model: `acked` is what the last
// acknowledged operation left (nullopt: absent). When `interrupted`, the kill cut an operation
// that would have left `if_applied`; it may or may not have happened.
struct ItemModel {
  std::optional<std::string> acked;
  bool interrupted = false;
  std::optional<std::string> if_applied;

  bool Allows(const std::optional<std::string>& actual) const {
    return actual == acked || (interrupted && actual == if_applied);
  }
  void Interrupt(std::optional<std::string> value) {
    interrupted = true;
    if_applied = std::move(value);
  }
  // After the checks: the state read back is the new acknowledged state.
  void Settle(std::optional<std::string> actual) {
    acked = std::move(actual);
    interrupted = false;
    if_applied.reset();
  }
};

// One load thread's items and its tally for the current iteration. Owned by its thread while
// the load runs, by the test thread afterwards.
struct Worker {
  std::vector<ItemModel> items;
  std::mt19937_64 rng;
  std::map<std::string, uint64_t> acked;  // acknowledged operations by kind, this iteration
  std::string failure;                    // an error the kill does not explain
};

// The admin thread's model: acknowledged rotations, re-wraps, dataset creations and backups.
struct AdminModel {
  uint32_t records_primary = 1;  // the newest acknowledged primary versions
  uint32_t attachments_primary = 1;
  uint32_t wrapping_version = 0;   // the newest acknowledged re-wrap's DWK version
  std::set<std::string> datasets;  // acknowledged creations (and kDataset)
  std::set<uint32_t> backups;      // acknowledged backups
  std::set<uint32_t> verified;     // listed backups already verified
  uint64_t created = 0;            // names of datasets asked for so far
};

class CrashLoopTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CofferdOptions options;
    options.name = "cofferd-crash";
    // The load is far above the default per-uid rate (2,000 requests/s).
    options.extra_config = [](const std::string&) {
      return std::string(
          "rate_limit { default_limit { requests_per_second: 1000000 burst: 1000000 } }\n");
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    pb::Request create;
    create.mutable_dataset_create()->set_name(kDataset);
    auto created = Admin(create);
    ASSERT_TRUE(created.ok()) << created.status();
    admin_model_.datasets.insert(kDataset);
  }
  void TearDown() override {
    if (!HasFailure() || !daemon_) return;
    std::cerr << "crash loop: seed " << seed_ << "; cofferd's last log:\n"
              << LastLog() << std::endl;
    // The state the failure left, for a post-mortem (the harness removes its directory).
    const char* keep = std::getenv("COFFER_CRASH_KEEP_STATE");
    if (keep != nullptr && *keep != '\0') {
      if (daemon_->pid() > 0) daemon_->SignalAndWait(SIGKILL);
      std::error_code copied;
      std::filesystem::copy(daemon_->dir(), keep, std::filesystem::copy_options::recursive, copied);
      std::cerr << "crash loop: state directory copied to " << keep
                << (copied ? " (failed: " + copied.message() + ")" : "") << std::endl;
    }
  }

  absl::StatusOr<pb::Response> Admin(const pb::Request& request) {
    auto client = keyctl::AdminClient::Connect(daemon_->admin_socket());
    if (!client.ok()) return client.status();
    return (*client)->Call(request);
  }

  // The log of the daemon's current (or last) run.
  std::string LastLog() const {
    const std::string all = daemon_->Logs();
    return all.substr(std::min(all.size(), log_start_));
  }

  void RunRecordLoad(Worker& w, int thread, const std::atomic<bool>& stop);
  void RunAttachmentLoad(Worker& w, int thread, const std::atomic<bool>& stop);
  void RunAdminLoad(Worker& w, const std::atomic<bool>& stop);
  // One upload of item `k`: begins, appends in pieces, commits (or aborts halfway, one in six)
  // and updates the model. Returns false when the daemon is gone or answered an error.
  bool UploadOnce(client::Client& c, Worker& w, int thread, int k);

  void CheckRecovery();
  void CheckRecords(std::vector<Worker>& writers);
  void CheckAttachments(std::vector<Worker>& writers);
  void CheckAdminModel();
  void CheckScrubAndAudit();

  std::unique_ptr<Cofferd> daemon_;
  uint64_t seed_ = 0;
  size_t log_start_ = 0;
  AdminModel admin_model_;
  // The dataset creation the kill interrupted in this iteration, if any (its name).
  std::optional<std::string> interrupted_dataset_;
  uint64_t checked_ = 0;  // items compared with the model, all iterations
  uint64_t lost_ = 0;     // items outside what the model allows, all iterations
  uint64_t applied_ = 0;  // interrupted record and attachment operations found applied
};

// Moves a worker's tally of the iteration into `acked`.
void Tally(Worker& w, std::map<std::string, uint64_t>& acked) {
  for (const auto& [kind, count] : w.acked) acked[kind] += count;
  w.acked.clear();
}

std::string RecordId(int thread, int k) {
  return "rec/" + std::to_string(thread) + "/" + std::to_string(k);
}
std::string AttachmentName(int thread, int k) {
  return "att/" + std::to_string(thread) + "/" + std::to_string(k);
}

void CrashLoopTest::RunRecordLoad(Worker& w, int thread, const std::atomic<bool>& stop) {
  auto c = client::Client::Connect(daemon_->data_socket());
  if (!c.ok()) {
    w.failure = "connect: " + Describe(c.status());
    return;
  }
  for (uint64_t n = 0; !stop.load(); ++n) {
    const int k = static_cast<int>(w.rng() % kRecordsPerWriter);
    ItemModel& item = w.items[k];
    const bool remove = item.acked.has_value() && w.rng() % 4 == 0;
    std::optional<std::string> next;
    absl::Status done;
    if (remove) {
      done = (*c)->DeleteRecord(kDataset, RecordId(thread, k));
    } else {
      // Values of 1 B to 3 KiB; the prefix makes every put's value distinct.
      next = RecordId(thread, k) + "#" + std::to_string(w.rng()) + ":" +
             std::string(w.rng() % 3000, static_cast<char>('a' + w.rng() % 26));
      done = (*c)->PutRecord(kDataset, RecordId(thread, k), *next);
    }
    if (done.ok()) {
      item.Settle(std::move(next));
      ++w.acked[remove ? "record deletes" : "record puts"];
      continue;
    }
    if (KilledUnderneath(done)) {
      item.Interrupt(std::move(next));
    } else {
      w.failure = RecordId(thread, k) + (remove ? " delete: " : " put: ") + Describe(done);
    }
    return;
  }
}

bool CrashLoopTest::UploadOnce(client::Client& c, Worker& w, int thread, int k) {
  ItemModel& item = w.items[k];
  const std::string name = AttachmentName(thread, k);
  std::string bytes(1 + w.rng() % kMaxAttachmentBytes, '\0');
  for (char& b : bytes) b = static_cast<char>(w.rng() & 0xff);
  const bool abort_midway = w.rng() % 6 == 0;
  auto writer = c.BeginAttachment(kDataset, name, "application/octet-stream");
  if (!writer.ok()) {
    // Nothing was written under the new upload: the name keeps its state either way.
    if (!KilledUnderneath(writer.status()))
      w.failure = name + " begin: " + Describe(writer.status());
    return false;
  }
  size_t sent = 0;
  const size_t stop_at = abort_midway ? bytes.size() / 2 : bytes.size();
  while (sent < stop_at) {
    const size_t piece = std::min(stop_at - sent, static_cast<size_t>(1 + w.rng() % 65536));
    absl::Status appended = (*writer)->Append(std::string_view(bytes).substr(sent, piece));
    if (!appended.ok()) {
      // Uncommitted bytes must never show: the name keeps its acknowledged state.
      if (!KilledUnderneath(appended)) w.failure = name + " append: " + Describe(appended);
      return false;
    }
    sent += piece;
  }
  if (abort_midway) {
    absl::Status aborted = (*writer)->Abort();
    if (aborted.ok()) {
      ++w.acked["upload aborts"];
      return true;
    }
    if (!KilledUnderneath(aborted)) w.failure = name + " abort: " + Describe(aborted);
    return false;
  }
  absl::StatusOr<client::AttachmentInfo> committed = (*writer)->Commit();
  if (committed.ok()) {
    if (committed->size != bytes.size()) {
      w.failure = name + " commit answered size " + std::to_string(committed->size) + " for " +
                  std::to_string(bytes.size()) + " bytes";
    }
    item.Settle(std::move(bytes));
    ++w.acked["uploads"];
    return w.failure.empty();
  }
  if (KilledUnderneath(committed.status())) {
    item.Interrupt(std::move(bytes));
  } else {
    w.failure = name + " commit: " + Describe(committed.status());
  }
  return false;
}

void CrashLoopTest::RunAttachmentLoad(Worker& w, int thread, const std::atomic<bool>& stop) {
  client::ClientOptions options;
  options.chunk_bytes = 16 * 1024;  // uploads stream in many frames, so the kill cuts some
  auto c = client::Client::Connect(daemon_->data_socket(), options);
  if (!c.ok()) {
    w.failure = "connect: " + Describe(c.status());
    return;
  }
  while (!stop.load()) {
    const int k = static_cast<int>(w.rng() % kAttachmentsPerWriter);
    ItemModel& item = w.items[k];
    if (item.acked.has_value() && w.rng() % 8 == 0) {
      absl::Status deleted = (*c)->DeleteAttachment(kDataset, AttachmentName(thread, k));
      if (deleted.ok()) {
        item.Settle(std::nullopt);
        ++w.acked["attachment deletes"];
        continue;
      }
      if (KilledUnderneath(deleted)) {
        item.Interrupt(std::nullopt);
      } else {
        w.failure = AttachmentName(thread, k) + " delete: " + Describe(deleted);
      }
      return;
    }
    if (!UploadOnce(**c, w, thread, k)) return;
  }
}

// Rotations, re-encryption starts, backups, re-wraps and dataset creations, one at a time, on
// the admin socket.
void CrashLoopTest::RunAdminLoad(Worker& w, const std::atomic<bool>& stop) {
  auto client = keyctl::AdminClient::Connect(daemon_->admin_socket());
  if (!client.ok()) {
    w.failure = "admin connect: " + Describe(client.status());
    return;
  }
  AdminModel& m = admin_model_;
  while (!stop.load()) {
    pb::Request request;
    const uint64_t pick = w.rng() % 20;
    std::string what;
    if (pick < 7) {
      what = "key rotate";
      request.mutable_key_rotate()->set_dataset(kDataset);
    } else if (pick < 12) {
      what = "re-encryption start";
      request.mutable_job_start()->set_kind(pb::JOB_REENCRYPT);
      request.mutable_job_start()->set_dataset(kDataset);
    } else if (pick < 16) {
      what = "backup create";
      request.mutable_backup_create();
    } else if (pick < 18) {
      what = "key rewrap";
      request.mutable_key_rewrap()->set_dataset(kDataset);
      request.mutable_key_rewrap()->set_destroy_old(true);
    } else {
      what = "dataset create";
      request.mutable_dataset_create()->set_name("crash/extra-" + std::to_string(m.created++));
    }
    absl::StatusOr<pb::Response> response = (*client)->Call(request);
    if (!response.ok()) {
      if (KilledUnderneath(response.status())) {
        if (request.has_dataset_create()) interrupted_dataset_ = request.dataset_create().name();
        return;
      }
      // A re-encryption still running from an earlier start is no failure.
      if (request.has_job_start() && ErrorCodeOf(response.status()) == ErrorCode::kAlreadyExists) {
        continue;
      }
      w.failure = what + ": " + Describe(response.status());
      return;
    }
    ++w.acked[what];
    if (response->has_key_rotate()) {
      for (const pb::KeyVersion& v : response->key_rotate().new_primaries()) {
        if (v.purpose() == pb::PURPOSE_RECORDS) m.records_primary = v.version();
        if (v.purpose() == pb::PURPOSE_ATTACHMENTS) m.attachments_primary = v.version();
      }
    } else if (response->has_key_rewrap()) {
      for (const pb::KeyVersion& v : response->key_rewrap().dataset().versions()) {
        if (v.state() != pb::KEY_RETIRED) {
          m.wrapping_version = std::max(m.wrapping_version, v.wrapping_version());
        }
      }
    } else if (response->has_backup_create()) {
      m.backups.insert(response->backup_create().id());
    } else if (response->has_dataset_create()) {
      m.datasets.insert(request.dataset_create().name());
    }
  }
}

// Start-up recovery finished: the daemon serves (Start waited for a status answer), its log
// reports recovery and no missing wrapping key, every dataset is ACTIVE, and every re-encryption
// it resumed ran to DONE.
void CrashLoopTest::CheckRecovery() {
  const std::string log = LastLog();
  EXPECT_NE(log.find("; recovery: "), std::string::npos) << log;
  EXPECT_EQ(log.find("are missing from the token"), std::string::npos) << log;
  pb::Request list;
  list.mutable_dataset_list();
  auto listed = Admin(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::set<std::string> names;
  for (const pb::DatasetInfo& d : listed->dataset_list().datasets()) {
    names.insert(d.name());
    EXPECT_EQ(d.state(), pb::DATASET_ACTIVE) << d.name();
  }
  for (const std::string& name : admin_model_.datasets) {
    EXPECT_EQ(names.count(name), 1u) << "acknowledged dataset creation lost: " << name;
    if (names.count(name) == 0) ++lost_;
  }
  for (const std::string& name : names) {
    const bool expected = admin_model_.datasets.count(name) != 0 || name == interrupted_dataset_;
    EXPECT_TRUE(expected) << "a dataset nobody created: " << name;
  }
  if (interrupted_dataset_ && names.count(*interrupted_dataset_) != 0) {
    admin_model_.datasets.insert(*interrupted_dataset_);
  }
  interrupted_dataset_.reset();
  checked_ += admin_model_.datasets.size();

  pb::Request jobs;
  jobs.mutable_job_status();
  std::string unfinished;
  const bool ended = Cofferd::WaitUntil([&] {
    auto status = Admin(jobs);
    if (!status.ok()) {
      unfinished = Describe(status.status());
      return false;
    }
    unfinished.clear();
    for (const pb::JobStatus& job : status->job_status().jobs()) {
      if (job.kind() != pb::JOB_REENCRYPT) continue;
      if (job.state() == pb::JOB_PENDING || job.state() == pb::JOB_RUNNING) {
        unfinished = "re-encryption job " + std::to_string(job.id()) + " still running";
      } else if (job.state() == pb::JOB_FAILED) {
        unfinished = "re-encryption job " + std::to_string(job.id()) +
                     " failed: " + job.error().DebugString();
        return true;
      }
    }
    return unfinished.empty();
  });
  EXPECT_TRUE(ended && unfinished.empty()) << unfinished;
}

void CrashLoopTest::CheckRecords(std::vector<Worker>& writers) {
  auto c = client::Client::Connect(daemon_->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  std::set<std::string> listed;
  std::string token;
  do {
    auto page = (*c)->ListRecords(kDataset, token, 1000);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_EQ(page->damaged, 0u) << "records that no longer decrypt";
    listed.insert(page->ids.begin(), page->ids.end());
    token = page->next_page_token;
  } while (!token.empty());

  std::set<std::string> modelled;
  for (int t = 0; t < kRecordWriters; ++t) {
    for (int k = 0; k < kRecordsPerWriter; ++k) {
      const std::string id = RecordId(t, k);
      modelled.insert(id);
      ItemModel& item = writers[t].items[k];
      auto got = (*c)->GetRecord(kDataset, id);
      std::optional<std::string> actual;
      if (got.ok()) {
        actual = *got;
      } else {
        ASSERT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound)
            << id << " does not read: " << Describe(got.status());
      }
      ++checked_;
      if (item.interrupted && actual == item.if_applied && actual != item.acked) ++applied_;
      if (!item.Allows(actual)) {
        ++lost_;
        ADD_FAILURE() << id << ": read " << Show(actual) << ", acknowledged " << Show(item.acked)
                      << (item.interrupted ? ", interrupted " + Show(item.if_applied) : "");
      }
      EXPECT_EQ(listed.count(id) != 0, actual.has_value()) << id << ": listing and get disagree";
      item.Settle(std::move(actual));
    }
  }
  for (const std::string& id : listed) {
    EXPECT_EQ(modelled.count(id), 1u) << "a record nobody wrote: " << id;
  }
}

void CrashLoopTest::CheckAttachments(std::vector<Worker>& writers) {
  auto c = client::Client::Connect(daemon_->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (int t = 0; t < kAttachmentWriters; ++t) {
    for (int k = 0; k < kAttachmentsPerWriter; ++k) {
      const std::string name = AttachmentName(t, k);
      ItemModel& item = writers[t].items[k];
      std::optional<std::string> actual;
      auto reader = (*c)->OpenAttachment(kDataset, name);
      if (reader.ok()) {
        auto bytes = (*reader)->ReadAll();
        ASSERT_TRUE(bytes.ok()) << name << " does not read: " << Describe(bytes.status());
        EXPECT_EQ((*reader)->info().size, bytes->size()) << name << ": size and bytes disagree";
        actual = *std::move(bytes);
      } else {
        ASSERT_EQ(ErrorCodeOf(reader.status()), ErrorCode::kAttachmentNotFound)
            << name << " does not open: " << Describe(reader.status());
      }
      ++checked_;
      if (item.interrupted && actual == item.if_applied && actual != item.acked) ++applied_;
      if (!item.Allows(actual)) {
        ++lost_;
        ADD_FAILURE() << name << ": read " << Show(actual) << ", acknowledged " << Show(item.acked)
                      << (item.interrupted ? ", interrupted " + Show(item.if_applied) : "");
      }
      item.Settle(std::move(actual));
    }
  }
}

// Key versions and wrapping keys at least as new as the acknowledged rotations and re-wraps;
// every acknowledged backup listed, and every listed backup (acknowledged or not) verifies.
void CrashLoopTest::CheckAdminModel() {
  AdminModel& m = admin_model_;
  pb::Request describe;
  describe.mutable_dataset_describe()->set_name(kDataset);
  auto described = Admin(describe);
  ASSERT_TRUE(described.ok()) << described.status();
  uint32_t records_primary = 0;
  uint32_t attachments_primary = 0;
  for (const pb::KeyVersion& v : described->dataset_describe().versions()) {
    if (v.state() == pb::KEY_RETIRED) continue;
    if (v.state() == pb::KEY_PRIMARY && v.purpose() == pb::PURPOSE_RECORDS) {
      records_primary = v.version();
    }
    if (v.state() == pb::KEY_PRIMARY && v.purpose() == pb::PURPOSE_ATTACHMENTS) {
      attachments_primary = v.version();
    }
    // A re-wrap with destroy_old destroyed the older DWKs: nothing may still need one.
    EXPECT_GE(v.wrapping_version(), m.wrapping_version) << "version " << v.version();
  }
  checked_ += 3;
  if (records_primary < m.records_primary || attachments_primary < m.attachments_primary) {
    ++lost_;
    ADD_FAILURE() << "acknowledged rotation lost: primaries " << records_primary << "/"
                  << attachments_primary << ", acknowledged " << m.records_primary << "/"
                  << m.attachments_primary;
  }
  m.records_primary = records_primary;
  m.attachments_primary = attachments_primary;

  pb::Request list;
  list.mutable_backup_list();
  auto listed = Admin(list);
  ASSERT_TRUE(listed.ok()) << listed.status();
  std::set<uint32_t> ids;
  for (const pb::BackupInfo& b : listed->backup_list().backups()) ids.insert(b.id());
  for (uint32_t id : m.backups) {
    ++checked_;
    if (ids.count(id) == 0) {
      ++lost_;
      ADD_FAILURE() << "acknowledged backup " << id << " is not listed";
    }
  }
  for (uint32_t id : ids) {
    if (m.verified.count(id) != 0) continue;
    pb::Request verify;
    verify.mutable_backup_verify()->set_id(id);
    auto verified = Admin(verify);
    EXPECT_TRUE(verified.ok()) << "listed backup " << id << ": " << verified.status();
    m.verified.insert(id);
  }
}

// Every record and attachment segment authenticates (a scrub of the dataset), and the audit
// log's chain, MACs and checkpoint signatures verify.
void CrashLoopTest::CheckScrubAndAudit() {
  pb::Request scrub;
  scrub.mutable_job_start()->set_kind(pb::JOB_SCRUB);
  scrub.mutable_job_start()->set_dataset(kDataset);
  auto started = Admin(scrub);
  ASSERT_TRUE(started.ok()) << started.status();
  const uint64_t id = started->job_start().id();
  pb::Request status;
  status.mutable_job_status()->set_id(id);
  pb::JobStatus last;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    auto s = Admin(status);
    if (!s.ok() || s->job_status().jobs_size() != 1) return false;
    last = s->job_status().jobs(0);
    return last.state() == pb::JOB_DONE || last.state() == pb::JOB_FAILED;
  })) << "scrub did not end";
  EXPECT_EQ(last.state(), pb::JOB_DONE) << last.DebugString();
  EXPECT_EQ(last.failures(), 0u) << last.DebugString();
  EXPECT_EQ(last.damaged(), 0u) << last.DebugString();

  pb::Request verify;
  verify.mutable_audit_verify();
  auto verified = Admin(verify);
  ASSERT_TRUE(verified.ok()) << "audit log: " << verified.status();
  EXPECT_GT(verified->audit_verify().entries(), 0u);
}

TEST_F(CrashLoopTest, AcknowledgedWritesSurviveSigkillAndNothingIsHalfVisible) {
  const uint64_t iterations = EnvNumber("COFFER_CRASH_ITERATIONS", 10);
  seed_ = EnvNumber("COFFER_CRASH_SEED", std::random_device{}());
  std::cout << "crash loop: " << iterations << " iterations, seed " << seed_
            << " (COFFER_CRASH_SEED=" << seed_ << " replays the choices)" << std::endl;
  std::mt19937_64 master(seed_);

  std::vector<Worker> records(kRecordWriters);
  std::vector<Worker> attachments(kAttachmentWriters);
  Worker admin;
  for (Worker& w : records) w.items.resize(kRecordsPerWriter);
  for (Worker& w : attachments) w.items.resize(kAttachmentsPerWriter);

  std::map<std::string, uint64_t> acked;
  uint64_t interrupted = 0;  // operations the kills cut (either outcome allowed)
  std::vector<double> restart_millis;
  for (uint64_t i = 0; i < iterations && !HasFailure(); ++i) {
    for (Worker& w : records) w.rng.seed(master());
    for (Worker& w : attachments) w.rng.seed(master());
    admin.rng.seed(master());
    const int delay_millis =
        kMinKillDelayMillis +
        static_cast<int>(master() % (kMaxKillDelayMillis - kMinKillDelayMillis + 1));
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    for (int t = 0; t < kRecordWriters; ++t) {
      threads.emplace_back([&, t] { RunRecordLoad(records[t], t, stop); });
    }
    for (int t = 0; t < kAttachmentWriters; ++t) {
      threads.emplace_back([&, t] { RunAttachmentLoad(attachments[t], t, stop); });
    }
    threads.emplace_back([&] { RunAdminLoad(admin, stop); });
    // The kill's moment: random, and only that (a pause of the test thread, not a wait for
    // anything the daemon does).
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_millis));
    daemon_->SignalAndWait(SIGKILL);
    stop = true;
    for (std::thread& th : threads) th.join();
    ASSERT_EQ(admin.failure, "") << "iteration " << i;
    for (const Worker& w : records) ASSERT_EQ(w.failure, "") << "iteration " << i;
    for (const Worker& w : attachments) ASSERT_EQ(w.failure, "") << "iteration " << i;
    for (const std::vector<Worker>* ws : {&records, &attachments}) {
      for (const Worker& w : *ws) {
        for (const ItemModel& item : w.items) interrupted += item.interrupted ? 1 : 0;
      }
    }
    if (interrupted_dataset_) ++interrupted;
    Tally(admin, acked);
    for (Worker& w : records) Tally(w, acked);
    for (Worker& w : attachments) Tally(w, acked);

    log_start_ = daemon_->Logs().size();
    const auto started = std::chrono::steady_clock::now();
    ASSERT_TRUE(daemon_->Start()) << "iteration " << i;
    restart_millis.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started)
            .count());

    CheckRecovery();
    CheckRecords(records);
    CheckAttachments(attachments);
    CheckAdminModel();
    CheckScrubAndAudit();
    if (HasFailure()) {
      std::cerr << "iteration " << i << " failed (kill after " << delay_millis << " ms)"
                << std::endl;
    }
  }
  EXPECT_TRUE(daemon_->Stop()) << "the last run did not stop cleanly";

  std::sort(restart_millis.begin(), restart_millis.end());
  const double p50 = restart_millis.empty() ? 0 : restart_millis[restart_millis.size() / 2];
  const double max = restart_millis.empty() ? 0 : restart_millis.back();
  uint64_t total = 0;
  std::string kinds;
  for (const auto& [kind, count] : acked) {
    total += count;
    kinds += (kinds.empty() ? "" : ", ") + std::to_string(count) + " " + kind;
  }
  std::cout << "crash loop: acknowledged " << kinds << "; " << interrupted
            << " operations interrupted by the kills (" << applied_ << " of them found applied)"
            << std::endl;
  std::cout << "crash loop: " << restart_millis.size() << " iterations, " << total
            << " acknowledged operations, " << checked_ << " items checked, lost " << lost_
            << ", restart p50 " << static_cast<int64_t>(p50) << " ms, max "
            << static_cast<int64_t>(max) << " ms (seed " << seed_ << ")" << std::endl;
  EXPECT_EQ(lost_, 0u);
  EXPECT_EQ(restart_millis.size(), iterations);
}

}  // namespace
}  // namespace coffer
