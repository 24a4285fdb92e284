// Test helpers for the audit log: a temp directory, a fake clock, an anchor sink that records,
// a deterministic epoch-key provider, a file system that fails on demand, and raw segment
// editing (to play the attacker: edit, delete, reorder, truncate, re-hash, re-sign).
//
// Test-only. Not thread-safe unless stated.

#ifndef COFFER_TESTS_KMS_AUDIT_TEST_UTIL_H_
#define COFFER_TESTS_KMS_AUDIT_TEST_UTIL_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "kms/audit/anchor.h"
#include "kms/audit/audit.pb.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/audit_log.h"
#include "kms/audit/file_system.h"
#include "kms/audit/signer.h"

namespace coffer::kms::audit::testing {

// A fresh directory under $TMPDIR, removed with its content on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  // path()/name
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Time stands still until Advance(). Thread-safe.
class FakeClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::time_point(std::chrono::microseconds(micros_.load()));
  }
  void Advance(std::chrono::microseconds by) { micros_ += by.count(); }

 private:
  std::atomic<int64_t> micros_{1'800'000'000'000'000};  // 2027-01-15
};

// Records every anchor. Thread-safe.
class CapturingAnchorSink final : public AnchorSink {
 public:
  absl::Status Publish(const CheckpointAnchor& anchor) override {
    std::lock_guard<std::mutex> lock(mu_);
    anchors_.push_back(anchor);
    return absl::OkStatus();
  }
  std::vector<CheckpointAnchor> anchors() const {
    std::lock_guard<std::mutex> lock(mu_);
    return anchors_;
  }
  // Forgets anchors published after the first `count`.
  void KeepFirst(size_t count) {
    std::lock_guard<std::mutex> lock(mu_);
    if (anchors_.size() > count) anchors_.resize(count);
  }

 private:
  mutable std::mutex mu_;
  std::vector<CheckpointAnchor> anchors_;
};

// K_0 = HMAC-SHA256(a fixed test master key, log id | epoch) — the shape the daemon's HSM
// derivation will have. `salt` changes the master (a wrong provider).
EpochKeyProvider TestEpochKeys(uint8_t salt = 0);

// Wraps the POSIX file system; appends or syncs fail (IO_ERROR) once the matching flag is set.
// `partial_write` makes a failing Append first write half of its data (a torn write).
class FailingFileSystem final : public AuditFileSystem {
 public:
  std::atomic<bool> fail_append{false};
  std::atomic<bool> fail_sync{false};
  std::atomic<bool> partial_write{false};

  absl::StatusOr<std::unique_ptr<AuditFile>> CreateFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<AuditFile>> OpenForAppend(const std::string& path) override;
  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    return PosixAuditFileSystem().ReadFile(path);
  }
  absl::Status Truncate(const std::string& path, uint64_t size) override {
    return PosixAuditFileSystem().Truncate(path, size);
  }
  absl::Status RemoveFile(const std::string& path) override {
    return PosixAuditFileSystem().RemoveFile(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& directory) override {
    return PosixAuditFileSystem().ListDirectory(directory);
  }
  absl::Status CreateDirectory(const std::string& directory) override {
    return PosixAuditFileSystem().CreateDirectory(directory);
  }
  absl::Status SyncDirectory(const std::string& directory) override {
    return PosixAuditFileSystem().SyncDirectory(directory);
  }

 private:
  std::unique_ptr<AuditFile> Wrap(std::unique_ptr<AuditFile> file);
};

// Everything a test log needs, owned together.
struct TestLogEnv {
  TempDir dir;
  FakeClock clock;
  CapturingAnchorSink anchors;
  std::unique_ptr<SoftwareEcdsaSigner> signer;
  std::string public_key_pem;

  TestLogEnv();
  std::string log_dir() const { return dir.Sub("audit"); }
  AuditLogOptions Options(uint64_t checkpoint_every_entries = 5);
};

// A key-operation event (KEY_ROTATE on dataset `i`) and an access event.
AuditEvent KeyEvent(uint64_t i);
AuditEvent AccessEvent(uint64_t i);

// One frame of a segment, as stored.
struct RawFrame {
  std::string payload;
  ChainHash hash{};
  MacTag mac{};
  ::coffer::audit::v1::AuditEntry Entry() const;
};

struct RawSegment {
  SegmentHeader header;
  std::vector<RawFrame> frames;
};

RawSegment ReadSegment(const std::string& path);
void WriteSegment(const std::string& path, const RawSegment& segment);

// The path of the (single or last) segment of the log in `log_dir`.
std::string LastSegmentPath(const std::string& log_dir);

// Recomputes the chain hashes of frames [from, end) from the hash before `from` (what an
// attacker without the MAC key can do). MACs are left as they are.
void Rehash(RawSegment& segment, size_t from);

// Re-signs every checkpoint in frames [from, end) with `signer` so it matches the (rehashed)
// chain, then rehashes: an attacker holding the signing key.
void Resign(RawSegment& segment, size_t from, CheckpointSigner& signer);

// Simulates a crash of `log`: the directory goes back to what was on disk before the log is
// destroyed (every append is synced, so that is what a crash leaves), and `anchors` forgets the
// closing checkpoint's anchor, without leaking the log.
void SimulateCrash(std::unique_ptr<AuditLog> log, const std::string& log_dir,
                   CapturingAnchorSink& anchors);

// Index of the frame holding `sequence`.
size_t FrameIndexOf(const RawSegment& segment, uint64_t sequence);

}  // namespace coffer::kms::audit::testing

#endif  // COFFER_TESTS_KMS_AUDIT_TEST_UTIL_H_
