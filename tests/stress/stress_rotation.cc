// stress_rotation: key rotation under load, on the components cofferd wires (issue 17).
//
//   stress_rotation --seconds N    rotator rounds until N seconds of wall time (at least one)
//   stress_rotation --rounds N     exactly N rotator rounds (a fixed amount of work, for ctest)
//
// One process holds what the daemon holds, wired as tests/kms/keys/storage_bridge_test.cc wires
// it: a fresh SoftHSM2 token, the audit log, the data DB, the key manager counting through the
// store (StoreDataCounter), and the record and attachment stores. Then, concurrently:
//  - kWriters writers put, get, delete (to the recycle bin) and restore records of two datasets.
//    Each owns its ids, so it knows every id's last acknowledged state (the live value and the
//    value in the bin) and checks every get against it;
//  - one attachment thread uploads (creates and replaces, sizes around the 64 KiB segment), reads
//    back and deletes attachments, checking every byte it reads;
//  - the rotator (the main thread) loops rounds: on each dataset, rotate records, attachments and
//    lookup; run the re-encryption and re-index jobs to completion; retire every version below
//    the primaries.
// Then the writers stop, the jobs and retirements run once more (now nothing may refuse them),
// and every id (its live value or RECORD_NOT_FOUND; a value in the bin restores) and every
// attachment is checked.
//
// Two outcomes are allowed, and counted: a retirement refused with KEY_VERSION_IN_USE while
// writers run (a write sealed under the old version landed after the job's census; the next
// round moves it), and a commit turned away with FAILED_PRECONDITION "upload again" (its version
// was retired between BeginUpload and Commit): docs/key-manager.md, "Retirement and writers".
// Anything else that differs from the acknowledged state is a failure. Output: one summary line,
// then the first few failures, naming only the test's synthetic ids (never values or keys). Exit
// status 0 without failures, 1 with any, 2 when the command line or the set-up is wrong.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_log.h"
#include "kms/keys/key_manager.h"
#include "kms/keys/store_graph.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/data_key.h"
#include "storage/record_store.h"
#include "storage/reencryption.h"
#include "storage/reindex.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/keys/kms_test_env.h"

namespace coffer::stress {
namespace {

using storage::KeyPurpose;
using WallClock = std::chrono::steady_clock;

constexpr int kWriters = 4;
constexpr size_t kIdsPerWriter = 200;    // in each dataset
constexpr size_t kAttachmentNames = 8;   // in each dataset
constexpr uint64_t kMinWriterOps = 300;  // each writer's, even if the rotator is done first
constexpr uint64_t kMinAttachmentOps = 20;
constexpr uint64_t kWarmUpOps = 10;  // each worker's, before the rotator's first round
constexpr uint64_t kMaxAttachmentBytes = 3 * 64 * 1024 + 1;
constexpr size_t kUploadChunk = 20'000;  // appends straddle the 64 KiB segments
constexpr size_t kFailuresShown = 10;
constexpr std::string_view kDatasetNames[] = {"stress/a", "stress/b"};
constexpr KeyPurpose kRotatedPurposes[] = {KeyPurpose::kRecords, KeyPurpose::kAttachments,
                                           KeyPurpose::kLookup};

// What every thread reports: operations, allowed refusals, failures. Thread-safe.
class Tally {
 public:
  void Fail(std::string what) {
    std::lock_guard<std::mutex> lock(mu_);
    if (shown_.size() < kFailuresShown) shown_.push_back(std::move(what));
    ++failures_;
  }
  uint64_t failures() const {
    std::lock_guard<std::mutex> lock(mu_);
    return failures_;
  }
  std::vector<std::string> shown() const {
    std::lock_guard<std::mutex> lock(mu_);
    return shown_;
  }

  std::atomic<uint64_t> operations{0};
  std::atomic<uint64_t> retirements_refused{0};
  std::atomic<uint64_t> commits_turned_away{0};

 private:
  mutable std::mutex mu_;
  uint64_t failures_ = 0;
  std::vector<std::string> shown_;  // the first kFailuresShown
};

// "what: CODE (message)". Coffer's messages name no key, value or id.
std::string Describe(std::string what, const absl::Status& status) {
  what.append(": ").append(ErrorCodeName(ErrorCodeOf(status)));
  what.append(" (").append(std::string(status.message())).append(")");
  return what;
}

// The components cofferd wires (kms::StoreGraph), on a fresh token and directory.
class Coffer {
 public:
  Coffer() = default;
  Coffer(const Coffer&) = delete;
  Coffer& operator=(const Coffer&) = delete;
  ~Coffer() {
    manager = nullptr;
    records = nullptr;
    attachments = nullptr;
    stores.reset();
    db.reset();
    if (log) log->Close().IgnoreError();
    log.reset();
    token.Reset();
  }

  absl::Status Open() {
    COFFER_RETURN_IF_ERROR(token.Open("stress-rotation"));
    COFFER_ASSIGN_OR_RETURN(
        log, kms::audit::AuditLog::Open(token.AuditOptions(dir.Sub("audit"), &clock)));
    COFFER_ASSIGN_OR_RETURN(db, storage::DataDb::Open(dir.Sub("data"), storage::DataDbOptions{}));
    kms::StoreGraphOptions graph;
    graph.data_db = db.get();
    graph.keys.key_db_directory = dir.Sub("keydb");
    graph.keys.modules = {{"softhsm", &token.client->wrapping_keys()}};
    graph.keys.default_module = "softhsm";
    graph.keys.row_authenticator = &token.client->row_authenticator();
    graph.keys.signer = &token.client->signer();
    graph.keys.audit_log = log.get();
    graph.keys.clock = &clock;
    COFFER_ASSIGN_OR_RETURN(stores, kms::StoreGraph::Open(std::move(graph)));
    manager = &stores->key_manager();
    records = &stores->records();
    attachments = &stores->attachments();
    return absl::OkStatus();
  }

  kms::testing::SuiteToken token;
  kms::audit::testing::TempDir dir;
  kms::audit::testing::FakeClock clock;
  std::unique_ptr<kms::audit::AuditLog> log;
  std::unique_ptr<storage::DataDb> db;
  std::unique_ptr<kms::StoreGraph> stores;  // as cofferd wires it; the parts below are its
  kms::KeyManager* manager = nullptr;
  storage::RecordStore* records = nullptr;
  storage::AttachmentStore* attachments = nullptr;
};

// The last acknowledged state of one of a writer's ids.
struct IdState {
  std::optional<std::string> live;
  std::optional<std::string> binned;  // what the last delete moved to the recycle bin
};

// A writer's ids, "w<writer>-<n>" with n < kIdsPerWriter in each dataset: [dataset][n].
using WriterIds = std::vector<std::vector<IdState>>;

// The last acknowledged content of an attachment: Pattern(seed, size).
struct AttachmentContent {
  uint64_t seed = 0;
  uint64_t size = 0;
};

std::string IdName(int writer, size_t n) {
  std::string id = "w";
  id.append(std::to_string(writer)).append("-").append(std::to_string(n));
  return id;
}

std::string AttachmentName(size_t n) {
  std::string name = "att-";
  name.append(std::to_string(n));
  return name;
}

// `size` bytes determined by `seed` (xorshift64), so a replace reads differently.
std::string Pattern(uint64_t seed, uint64_t size) {
  std::string bytes(size, '\0');
  uint64_t x = seed | 1;
  for (char& c : bytes) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x);
  }
  return bytes;
}

bool TurnedAway(const absl::Status& committed) {
  return ErrorCodeOf(committed) == ErrorCode::kFailedPrecondition &&
         std::string(committed.message()).find("upload again") != std::string::npos;
}

class Workload {
 public:
  Workload(Coffer* coffer, std::vector<uint64_t> datasets, Tally* tally)
      : coffer_(coffer),
        datasets_(std::move(datasets)),
        tally_(tally),
        writers_(kWriters, WriterIds(datasets_.size(), std::vector<IdState>(kIdsPerWriter))),
        attachments_(datasets_.size(),
                     std::vector<std::optional<AttachmentContent>>(kAttachmentNames)) {}

  // Puts every writer's ids, and moves every tenth to the bin.
  absl::Status Seed() {
    for (int w = 0; w < kWriters; ++w) {
      for (size_t d = 0; d < datasets_.size(); ++d) {
        for (size_t n = 0; n < kIdsPerWriter; ++n) {
          IdState& state = writers_[w][d][n];
          std::string value = "seed/";
          value.append(std::to_string(n));
          COFFER_RETURN_IF_ERROR(coffer_->records->Put(datasets_[d], IdName(w, n), value));
          state.live = std::move(value);
          if (n % 10 != 0) continue;
          COFFER_RETURN_IF_ERROR(coffer_->records->Delete(datasets_[d], IdName(w, n)));
          state.binned = std::move(state.live);
          state.live.reset();
        }
      }
    }
    return absl::OkStatus();
  }

  // Writer `w`: random operations on its own ids until stop (and at least kMinWriterOps).
  void RunWriter(int w) {
    std::mt19937_64 random(static_cast<uint64_t>(w) + 1);
    for (uint64_t op = 0; !stop.load() || op < kMinWriterOps; ++op) {
      if (op == kWarmUpOps) warmed_up.count_down();
      const size_t d = random() % datasets_.size();
      const size_t n = random() % kIdsPerWriter;
      const uint64_t handle = datasets_[d];
      const std::string id = IdName(w, n);
      IdState& state = writers_[w][d][n];
      const uint64_t dice = random() % 10;
      if (dice < 2 && state.live.has_value()) {
        absl::Status deleted = coffer_->records->Delete(handle, id);
        if (deleted.ok()) {
          state.binned = std::move(state.live);
          state.live.reset();
        } else {
          tally_->Fail(Describe(Where("delete", d, id), deleted));
        }
      } else if (dice < 3 && !state.live.has_value() && state.binned.has_value()) {
        absl::Status restored = coffer_->records->Restore(handle, id);
        if (restored.ok()) {
          state.live = std::move(state.binned);
          state.binned.reset();
        } else {
          tally_->Fail(Describe(Where("restore", d, id), restored));
        }
      } else if (dice < 6) {
        CheckRecord(d, id, state, "get");
      } else {
        std::string value = std::to_string(w);  // (GCC 12 -Wrestrict misfires on "w" + …)
        value.append("/").append(std::to_string(op)).append(random() % 512, 'v');
        absl::Status put = coffer_->records->Put(handle, id, value);
        if (put.ok()) {
          state.live = std::move(value);
        } else {
          tally_->Fail(Describe(Where("put", d, id), put));
        }
      }
      ++tally_->operations;
    }
  }

  // The attachment thread: uploads, reads and deletes until stop (and at least
  // kMinAttachmentOps).
  void RunAttachments() {
    std::mt19937_64 random(kWriters + 1);
    for (uint64_t op = 0; !stop.load() || op < kMinAttachmentOps; ++op) {
      if (op == kWarmUpOps) warmed_up.count_down();
      const size_t d = random() % datasets_.size();
      const size_t n = random() % kAttachmentNames;
      const std::string name = AttachmentName(n);
      std::optional<AttachmentContent>& state = attachments_[d][n];
      const uint64_t dice = random() % 8;
      if (dice < 4) {
        AttachmentContent content{random(), random() % kMaxAttachmentBytes};
        absl::Status committed = Upload(datasets_[d], name, Pattern(content.seed, content.size));
        if (committed.ok()) {
          state = content;
          CheckAttachment(d, name, state, "read after commit");
        } else if (TurnedAway(committed)) {
          ++tally_->commits_turned_away;  // nothing visible: the previous content stays
        } else {
          tally_->Fail(Describe(Where("upload", d, name), committed));
        }
      } else if (dice < 6 || !state.has_value()) {
        CheckAttachment(d, name, state, "read");
      } else {
        absl::Status deleted = coffer_->attachments->Delete(datasets_[d], name);
        if (deleted.ok()) {
          state.reset();
        } else {
          tally_->Fail(Describe(Where("attachment delete", d, name), deleted));
        }
      }
      ++tally_->operations;
    }
  }

  // One rotator round: on every dataset, new primaries for records, attachments and lookup,
  // every item moved onto them, every older version retired.
  void Round() {
    for (size_t d = 0; d < datasets_.size(); ++d) {
      bool rotated = true;
      for (KeyPurpose purpose : kRotatedPurposes) {
        const kms::RotationCause cause = purpose == KeyPurpose::kLookup
                                             ? kms::RotationCause::kReindex
                                             : kms::RotationCause::kManual;
        auto version =
            coffer_->manager->Rotate(datasets_[d], purpose, cause, kms::testing::TestAdmin());
        if (!version.ok()) {
          tally_->Fail(
              Describe(Where("rotate", d, storage::KeyPurposeName(purpose)), version.status()));
          rotated = false;
        }
      }
      if (rotated) MoveAndRetire(d, /*writers_stopped=*/false);
    }
  }

  // Runs the re-encryption and re-index jobs on dataset `d` to completion, then retires every
  // version below the primaries. While writers run, a retirement may be refused with
  // KEY_VERSION_IN_USE (a write under an old version landed after the job's census); once they
  // have stopped, nothing may be refused.
  void MoveAndRetire(size_t d, bool writers_stopped) {
    const uint64_t handle = datasets_[d];
    storage::ReencryptionJob reencryption(coffer_->db.get(), coffer_->manager, coffer_->attachments,
                                          handle);
    auto reencrypted = reencryption.Run();
    if (!reencrypted.ok()) {
      tally_->Fail(Describe(Where("re-encryption", d, ""), reencrypted.status()));
    } else if (!reencrypted->finished) {
      tally_->Fail(Where("re-encryption", d, "") + ": ended unfinished");
    }
    storage::ReindexJob reindex(coffer_->db.get(), coffer_->manager, coffer_->attachments, handle);
    auto reindexed = reindex.Run();
    if (!reindexed.ok()) {
      tally_->Fail(Describe(Where("re-index", d, ""), reindexed.status()));
    } else if (!reindexed->finished) {
      tally_->Fail(Where("re-index", d, "") + ": ended unfinished");
    }
    for (KeyPurpose purpose : kRotatedPurposes) {
      const std::string what = Where("retire", d, storage::KeyPurposeName(purpose));
      auto live = coffer_->manager->LiveVersions(handle, purpose);
      if (!live.ok() || live->empty()) {
        tally_->Fail(Describe(what + ": live versions", live.status()));
        continue;
      }
      absl::Status retired =
          coffer_->manager->RetireBelow(handle, purpose, live->front(), kms::testing::TestAdmin());
      if (retired.ok()) continue;
      if (!writers_stopped && ErrorCodeOf(retired) == ErrorCode::kKeyVersionInUse) {
        ++tally_->retirements_refused;
      } else {
        tally_->Fail(Describe(what, retired));
      }
    }
  }

  // After the last MoveAndRetire, with every thread joined: each id holds its last acknowledged
  // value (a value in the bin restores), each attachment its content, and only the primary of
  // each rotated purpose is live.
  void Verify() {
    for (int w = 0; w < kWriters; ++w) {
      for (size_t d = 0; d < datasets_.size(); ++d) {
        for (size_t n = 0; n < kIdsPerWriter; ++n) {
          const std::string id = IdName(w, n);
          IdState& state = writers_[w][d][n];
          CheckRecord(d, id, state, "final get");
          if (state.live.has_value() || !state.binned.has_value()) continue;
          absl::Status restored = coffer_->records->Restore(datasets_[d], id);
          if (!restored.ok()) {
            tally_->Fail(Describe(Where("final restore", d, id), restored));
            continue;
          }
          state.live = std::move(state.binned);
          state.binned.reset();
          CheckRecord(d, id, state, "get after the final restore");
        }
      }
    }
    for (size_t d = 0; d < datasets_.size(); ++d) {
      for (size_t n = 0; n < kAttachmentNames; ++n) {
        CheckAttachment(d, AttachmentName(n), attachments_[d][n], "final read");
      }
      for (KeyPurpose purpose : kRotatedPurposes) {
        const std::string what = Where("final versions", d, storage::KeyPurposeName(purpose));
        auto live = coffer_->manager->LiveVersions(datasets_[d], purpose);
        if (!live.ok()) {
          tally_->Fail(Describe(what, live.status()));
        } else if (live->size() != 1) {
          tally_->Fail(what + ": more than the primary live");
        }
      }
    }
  }

  std::atomic<bool> stop{false};
  std::latch warmed_up{kWriters + 1};  // each writer and the attachment thread, once

 private:
  // "what dataset subject", e.g. "put stress/a w1-17".
  static std::string Where(std::string_view what, size_t d, std::string_view subject) {
    std::string where(what);
    where.append(" ").append(kDatasetNames[d]);
    if (!subject.empty()) where.append(" ").append(subject);
    return where;
  }

  // A get of `id` must agree with its last acknowledged state.
  void CheckRecord(size_t d, const std::string& id, const IdState& state, std::string_view what) {
    absl::StatusOr<std::string> got = coffer_->records->Get(datasets_[d], id);
    if (state.live.has_value()) {
      if (!got.ok()) {
        tally_->Fail(Describe(Where(what, d, id) + ": live id", got.status()));
      } else if (*got != *state.live) {
        tally_->Fail(Where(what, d, id) + ": not the last value written");
      }
    } else if (got.ok()) {
      tally_->Fail(Where(what, d, id) + ": a deleted id reads back");
    } else if (ErrorCodeOf(got.status()) != ErrorCode::kRecordNotFound) {
      tally_->Fail(Describe(Where(what, d, id) + ": deleted id", got.status()));
    }
  }

  // A read of attachment `name` must return its last committed content, or ATTACHMENT_NOT_FOUND.
  void CheckAttachment(size_t d, const std::string& name,
                       const std::optional<AttachmentContent>& state, std::string_view what) {
    absl::StatusOr<std::string> got = ReadWhole(datasets_[d], name);
    if (state.has_value()) {
      if (!got.ok()) {
        tally_->Fail(Describe(Where(what, d, name), got.status()));
      } else if (*got != Pattern(state->seed, state->size)) {
        tally_->Fail(Where(what, d, name) + ": not the content last committed");
      }
    } else if (got.ok()) {
      tally_->Fail(Where(what, d, name) + ": a deleted attachment reads back");
    } else if (ErrorCodeOf(got.status()) != ErrorCode::kAttachmentNotFound) {
      tally_->Fail(Describe(Where(what, d, name) + ": deleted attachment", got.status()));
    }
  }

  absl::Status Upload(uint64_t handle, const std::string& name, const std::string& content) {
    COFFER_ASSIGN_OR_RETURN(
        auto upload, coffer_->attachments->BeginUpload(handle, name, "application/x-stress"));
    for (size_t offset = 0; offset < content.size(); offset += kUploadChunk) {
      COFFER_RETURN_IF_ERROR(
          upload->Append(std::string_view(content).substr(offset, kUploadChunk)));
    }
    return upload->Commit();
  }

  absl::StatusOr<std::string> ReadWhole(uint64_t handle, const std::string& name) {
    COFFER_ASSIGN_OR_RETURN(auto reader, coffer_->attachments->Open(handle, name));
    std::string content;
    COFFER_RETURN_IF_ERROR(reader->Read(0, static_cast<size_t>(reader->info().size), &content));
    return content;
  }

  Coffer* coffer_;
  const std::vector<uint64_t> datasets_;
  Tally* tally_;
  std::vector<WriterIds> writers_;  // [writer]: only that writer's thread, until joined
  std::vector<std::vector<std::optional<AttachmentContent>>> attachments_;  // [dataset][name]
};

std::string Duration(WallClock::duration elapsed) {
  const double seconds = std::chrono::duration<double>(elapsed).count();
  char text[32];
  if (seconds < 60) {
    std::snprintf(text, sizeof(text), "%.1f seconds", seconds);
  } else {
    std::snprintf(text, sizeof(text), "%.1f minutes", seconds / 60);
  }
  return text;
}

int Main(int argc, char** argv) {
  CLI::App app{"Key rotation under load, on the components cofferd wires (issue 17)",
               "stress_rotation"};
  double seconds = 0;
  int rounds = 0;
  CLI::Option* seconds_option =
      app.add_option("--seconds", seconds, "Rotator rounds until N seconds of wall time")
          ->check(CLI::PositiveNumber);
  CLI::Option* rounds_option =
      app.add_option("--rounds", rounds, "Exactly N rotator rounds")->check(CLI::PositiveNumber);
  seconds_option->excludes(rounds_option);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error) == 0 ? 0 : 2;
  }
  if (seconds_option->count() == 0 && rounds_option->count() == 0) {
    std::fprintf(stderr, "stress-rotation: give --seconds N or --rounds N\n");
    return 2;
  }

  Coffer coffer;
  if (absl::Status opened = coffer.Open(); !opened.ok()) {
    std::fprintf(stderr, "stress-rotation: set-up failed: %s\n", opened.ToString().c_str());
    return 2;
  }
  std::vector<uint64_t> datasets;
  for (std::string_view name : kDatasetNames) {
    auto handle = coffer.manager->CreateDataset(name, std::nullopt, kms::testing::TestAdmin());
    if (!handle.ok()) {
      std::fprintf(stderr, "stress-rotation: set-up failed: %s\n",
                   handle.status().ToString().c_str());
      return 2;
    }
    datasets.push_back(*handle);
  }
  Tally tally;
  Workload workload(&coffer, datasets, &tally);
  if (absl::Status seeded = workload.Seed(); !seeded.ok()) {
    std::fprintf(stderr, "stress-rotation: set-up failed: %s\n", seeded.ToString().c_str());
    return 2;
  }

  const WallClock::time_point start = WallClock::now();
  const WallClock::time_point deadline = start + std::chrono::duration_cast<WallClock::duration>(
                                                     std::chrono::duration<double>(seconds));
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w)
    threads.emplace_back([&workload, w] { workload.RunWriter(w); });
  threads.emplace_back([&workload] { workload.RunAttachments(); });
  // The rotator: this thread, once every worker is under way.
  workload.warmed_up.wait();
  int done = 0;
  do {
    workload.Round();
    ++done;
  } while (rounds_option->count() > 0 ? done < rounds : WallClock::now() < deadline);
  workload.stop = true;
  for (std::thread& thread : threads) thread.join();
  const uint64_t operations = tally.operations.load();
  for (size_t d = 0; d < datasets.size(); ++d) workload.MoveAndRetire(d, /*writers_stopped=*/true);
  workload.Verify();

  const uint64_t failures = tally.failures();
  std::printf(
      "stress-rotation: %s, %d rounds, %llu operations, %llu failures (retirements refused while "
      "a write landed: %llu, commits turned away: %llu)\n",
      Duration(WallClock::now() - start).c_str(), done, static_cast<unsigned long long>(operations),
      static_cast<unsigned long long>(failures),
      static_cast<unsigned long long>(tally.retirements_refused.load()),
      static_cast<unsigned long long>(tally.commits_turned_away.load()));
  const std::vector<std::string> shown = tally.shown();
  for (const std::string& failure : shown) std::printf("  failure: %s\n", failure.c_str());
  if (failures > shown.size()) {
    std::printf("  ... and %llu more\n", static_cast<unsigned long long>(failures - shown.size()));
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace coffer::stress

int main(int argc, char** argv) { return coffer::stress::Main(argc, argv); }
