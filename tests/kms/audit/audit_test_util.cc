#include "tests/kms/audit/audit_test_util.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "crypto/base/status.h"
#include "crypto/hmac.h"
#include "gtest/gtest.h"
#include "kms/audit/internal/segment_scan.h"

namespace coffer::kms::audit::testing {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/coffer-audit-XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) std::abort();
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

EpochKeyProvider TestEpochKeys(uint8_t salt) {
  return [salt](const EpochKeyRequest& request) -> absl::StatusOr<crypto::SecretBytes> {
    std::vector<uint8_t> master(32, static_cast<uint8_t>(0x5a ^ salt));
    auto master_key = crypto::SecretBytes::CopyFrom(master);
    if (!master_key.ok()) return master_key.status();
    auto hmac = crypto::HmacSha256::Create(*master_key);
    if (!hmac.ok()) return hmac.status();
    std::string input(AsStringView(request.log_id));
    for (int shift = 56; shift >= 0; shift -= 8) {
      input.push_back(static_cast<char>(request.epoch >> shift));
    }
    auto tag = hmac->Compute(input);
    if (!tag.ok()) return tag.status();
    return crypto::SecretBytes::CopyFrom(*tag);
  };
}

namespace {

class FailingFile final : public AuditFile {
 public:
  FailingFile(std::unique_ptr<AuditFile> inner, FailingFileSystem& fs)
      : inner_(std::move(inner)), fs_(fs) {}

  absl::Status Append(std::string_view data) override {
    if (fs_.fail_append) {
      if (fs_.partial_write) inner_->Append(data.substr(0, data.size() / 2)).IgnoreError();
      return MakeError(ErrorCode::kIoError, "injected write failure (ENOSPC)");
    }
    return inner_->Append(data);
  }
  absl::Status Sync() override {
    if (fs_.fail_sync) return MakeError(ErrorCode::kIoError, "injected fdatasync failure (EIO)");
    return inner_->Sync();
  }

 private:
  std::unique_ptr<AuditFile> inner_;
  FailingFileSystem& fs_;
};

}  // namespace

std::unique_ptr<AuditFile> FailingFileSystem::Wrap(std::unique_ptr<AuditFile> file) {
  return std::make_unique<FailingFile>(std::move(file), *this);
}

absl::StatusOr<std::unique_ptr<AuditFile>> FailingFileSystem::CreateFile(const std::string& path) {
  auto file = PosixAuditFileSystem().CreateFile(path);
  if (!file.ok()) return file.status();
  return Wrap(*std::move(file));
}

absl::StatusOr<std::unique_ptr<AuditFile>> FailingFileSystem::OpenForAppend(
    const std::string& path) {
  auto file = PosixAuditFileSystem().OpenForAppend(path);
  if (!file.ok()) return file.status();
  return Wrap(*std::move(file));
}

TestLogEnv::TestLogEnv() {
  auto generated = SoftwareEcdsaSigner::Generate();
  if (!generated.ok()) std::abort();
  signer = *std::move(generated);
  auto pem = signer->PublicKeyPem();
  if (!pem.ok()) std::abort();
  public_key_pem = *pem;
}

AuditLogOptions TestLogEnv::Options(uint64_t checkpoint_every_entries) {
  AuditLogOptions options;
  options.directory = log_dir();
  options.checkpoint_every_entries = checkpoint_every_entries;
  options.checkpoint_interval = std::chrono::seconds(0);
  options.signer = signer.get();
  options.epoch_keys = TestEpochKeys();
  options.anchor_sink = &anchors;
  options.clock = &clock;
  return options;
}

AuditEvent KeyEvent(uint64_t i) {
  AuditEvent event;
  event.kind = v1::KEY_ROTATE;
  event.actor.uid = 1000;
  event.actor.pid = 4242;
  event.actor.admin_id = 7;
  event.actor.admin_name = "alice";
  event.actor.socket = v1::SOCKET_ADMIN;
  event.dataset_handle = 100 + i;
  event.purpose = v1::PURPOSE_RECORDS;
  event.key_version = static_cast<uint32_t>(i + 1);
  event.detail = "rotation requested by an admin";
  return event;
}

AuditEvent AccessEvent(uint64_t i) {
  AuditEvent event;
  event.kind = v1::ACCESS_READ;
  event.actor.uid = 2000;
  event.actor.pid = static_cast<uint32_t>(i);
  event.actor.socket = v1::SOCKET_DATA;
  event.dataset_handle = 7;
  event.purpose = v1::PURPOSE_RECORDS;
  event.key_version = 3;
  event.record_count = 1;
  return event;
}

::coffer::audit::v1::AuditEntry RawFrame::Entry() const {
  ::coffer::audit::v1::AuditEntry entry;
  EXPECT_TRUE(entry.ParseFromString(payload));
  return entry;
}

RawSegment ReadSegment(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string bytes = buffer.str();
  auto scan = internal::ScanSegment(bytes);
  EXPECT_TRUE(scan.ok() && scan->header.has_value()) << path;
  RawSegment segment;
  if (!scan.ok() || !scan->header.has_value()) return segment;
  segment.header = *scan->header;
  for (const internal::ScannedFrame& frame : scan->frames) {
    segment.frames.push_back({std::string(frame.payload), frame.hash, frame.mac});
  }
  return segment;
}

void WriteSegment(const std::string& path, const RawSegment& segment) {
  std::string bytes = EncodeSegmentHeader(segment.header);
  for (const RawFrame& frame : segment.frames) {
    bytes += EncodeFrame(frame.payload, frame.hash, frame.mac);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good());
}

std::string LastSegmentPath(const std::string& log_dir) {
  std::string last;
  for (const auto& entry : std::filesystem::directory_iterator(log_dir)) {
    const std::string name = entry.path().filename().string();
    if (ParseSegmentFileName(name).has_value() && name > last) last = name;
  }
  return log_dir + "/" + last;
}

void Rehash(RawSegment& segment, size_t from) {
  ChainHash previous = from == 0 ? segment.header.previous_hash : segment.frames[from - 1].hash;
  for (size_t i = from; i < segment.frames.size(); ++i) {
    RawFrame& frame = segment.frames[i];
    auto hash =
        ComputeChainHash(segment.header.log_id, previous, frame.Entry().sequence(), frame.payload);
    ASSERT_TRUE(hash.ok());
    frame.hash = *hash;
    previous = *hash;
  }
}

void Resign(RawSegment& segment, size_t from, CheckpointSigner& signer) {
  for (size_t i = from; i < segment.frames.size(); ++i) {
    Rehash(segment, i);
    ::coffer::audit::v1::AuditEntry entry = segment.frames[i].Entry();
    if (entry.kind() != v1::LOG_CHECKPOINT || i == 0) continue;
    const ChainHash& head = segment.frames[i - 1].hash;
    auto signature = signer.Sign(CheckpointMessage(
        segment.header.log_id, entry.checkpoint().covered_sequence(), head, entry.time_micros()));
    ASSERT_TRUE(signature.ok());
    entry.mutable_checkpoint()->set_head_hash(std::string(AsStringView(head)));
    entry.mutable_checkpoint()->set_signature(*signature);
    segment.frames[i].payload = entry.SerializeAsString();
    Rehash(segment, i);  // the new payload changes this entry's hash and every later one
  }
}

void SimulateCrash(std::unique_ptr<AuditLog> log, const std::string& log_dir,
                   CapturingAnchorSink& anchors) {
  const std::string snapshot = log_dir + ".crash";
  std::filesystem::copy(log_dir, snapshot);
  const size_t published = anchors.anchors().size();
  log.reset();  // writes a closing checkpoint, which the snapshot does not have
  anchors.KeepFirst(published);
  std::filesystem::remove_all(log_dir);
  std::filesystem::rename(snapshot, log_dir);
}

size_t FrameIndexOf(const RawSegment& segment, uint64_t sequence) {
  for (size_t i = 0; i < segment.frames.size(); ++i) {
    if (segment.frames[i].Entry().sequence() == sequence) return i;
  }
  ADD_FAILURE() << "no frame for sequence " << sequence;
  return 0;
}

}  // namespace coffer::kms::audit::testing
