#include "storage/scrub.h"

#include <algorithm>

#include "crypto/streaming_aead.h"
#include "storage/damaged_item.h"
#include "storage/internal/envelope.h"
#include "storage/internal/layout.h"

namespace coffer::storage {

using internal::Cf;

namespace {

// Opens every segment of the attachment `pointer` (stored under `stored_key`) names.
absl::Status CheckSegments(DataDb* db, KeyProvider* keys, const std::string& stored_key,
                           const internal::OpenedEntry& pointer, const rocksdb::Snapshot* snapshot,
                           uint64_t* segments_checked) {
  std::string_view body = pointer.body;
  // Pointer body: size (8) ‖ created (8) ‖ type length (2) ‖ type ‖ stream header (80).
  if (body.size() < 18 + crypto::kStreamHeaderSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "malformed attachment pointer");
  }
  uint64_t size = internal::ReadU64(body);
  std::string_view header = body.substr(body.size() - crypto::kStreamHeaderSize);
  uint64_t handle = internal::HandleOf(stored_key);
  COFFER_ASSIGN_OR_RETURN(
      std::shared_ptr<const DataKey> key,
      keys->KeyForVersion(handle, KeyPurpose::kAttachments, pointer.key_version));
  COFFER_ASSIGN_OR_RETURN(
      crypto::StreamSegmentDecrypter decrypter,
      crypto::StreamSegmentDecrypter::Create(key->key(), key->version(), header, stored_key));
  uint64_t count = size == 0 ? 1 : (size + decrypter.segment_size() - 1) / decrypter.segment_size();
  internal::UploadId upload{};
  std::copy_n(pointer.upload_id.begin(), upload.size(), upload.begin());
  std::string segment;
  std::string plaintext;
  for (uint64_t index = 0; index < count; ++index) {
    bool found = false;
    COFFER_RETURN_IF_ERROR(db->Get(
        Cf::kAttachmentSegments, internal::SegmentKey(handle, upload, static_cast<uint32_t>(index)),
        &segment, &found, snapshot));
    if (!found) {
      return MakeError(ErrorCode::kCiphertextCorrupt,
                       "segment " + std::to_string(index) + " is missing");
    }
    plaintext.clear();
    absl::Status opened = decrypter.DecryptSegment(index, segment, index + 1 == count, &plaintext);
    std::fill(plaintext.begin(), plaintext.end(), '\0');
    if (segments_checked != nullptr) ++*segments_checked;
    if (!opened.ok()) {
      return MakeError(ErrorCodeOf(opened),
                       "segment " + std::to_string(index) + ": " + std::string(opened.message()));
    }
  }
  return absl::OkStatus();
}

std::string Hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(bytes.size() * 2);
  for (char c : bytes) {
    hex.push_back(kDigits[static_cast<uint8_t>(c) >> 4]);
    hex.push_back(kDigits[static_cast<uint8_t>(c) & 15]);
  }
  return hex;
}

class Scrubber {
 public:
  Scrubber(DataDb* db, KeyProvider* keys, const rocksdb::Snapshot* snapshot,
           const std::function<void(const ScrubReport&)>& on_progress)
      : db_(db), keys_(keys), snapshot_(snapshot), on_progress_(on_progress) {}

  absl::Status Run(Cf cf, std::optional<uint64_t> handle) {
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot_;
    std::string end = handle ? internal::DatasetEnd(*handle) : std::string();
    rocksdb::Slice upper(end);
    if (handle) read_options.iterate_upper_bound = &upper;
    ScopedIterator it = db_->NewIterator(cf, read_options);
    for (handle ? it->Seek(internal::DatasetBegin(*handle)) : it->SeekToFirst(); it->Valid();
         it->Next()) {
      std::string_view key = it->key().ToStringView();
      absl::Status status = Check(cf, key, it->value().ToStringView());
      ++report_.entries_checked;
      if (!status.ok()) {
        report_.findings.push_back(
            ScrubFinding{std::string(internal::CfName(cf)),
                         key.size() >= internal::kHandleSize ? internal::HandleOf(key) : 0,
                         Hex(key), DamagedRef(internal::CfName(cf), key), ErrorCodeOf(status),
                         std::string(status.message())});
      }
      if (on_progress_ && report_.entries_checked % 1024 == 0) on_progress_(report_);
    }
    return FromRocks(it->status(), "iterate");
  }

  ScrubReport& report() { return report_; }

 private:
  absl::Status Check(Cf cf, std::string_view key, std::string_view value) {
    return CheckItem(db_, keys_, cf, key, value, snapshot_, &report_.segments_checked);
  }

  DataDb* db_;
  KeyProvider* keys_;
  const rocksdb::Snapshot* snapshot_;
  const std::function<void(const ScrubReport&)>& on_progress_;
  ScrubReport report_;
};

}  // namespace

absl::Status CheckItem(DataDb* db, KeyProvider* keys, internal::Cf cf, std::string_view key,
                       std::string_view value, const rocksdb::Snapshot* snapshot,
                       uint64_t* segments_checked) {
  COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts item, internal::ItemKeyOf(cf, key));
  COFFER_ASSIGN_OR_RETURN(std::string_view entry, internal::EntryOf(cf, value));
  const Cf kind = item.cf;
  const std::string& stored_key = item.stored_key;
  KeyPurpose purpose = kind == Cf::kRecords ? KeyPurpose::kRecords : KeyPurpose::kAttachments;
  COFFER_ASSIGN_OR_RETURN(internal::OpenedEntry opened,
                          internal::OpenEntry(keys, kind, purpose, stored_key, entry));
  absl::Status segments = kind == Cf::kRecords ? absl::OkStatus()
                                               : CheckSegments(db, keys, stored_key, opened,
                                                               snapshot, segments_checked);
  std::fill(opened.body.begin(), opened.body.end(), '\0');
  std::fill(opened.id.begin(), opened.id.end(), '\0');
  return segments;
}

absl::StatusOr<ScrubReport> Scrub(DataDb* db, KeyProvider* keys, std::optional<uint64_t> handle,
                                  const std::function<void(const ScrubReport&)>& on_progress) {
  std::unique_ptr<ScopedSnapshot> snapshot = db->NewSnapshot();
  Scrubber scrubber(db, keys, snapshot->get(), on_progress);
  for (Cf cf : {Cf::kRecords, Cf::kAttachmentPointers, Cf::kRecycleBin}) {
    COFFER_RETURN_IF_ERROR(scrubber.Run(cf, handle));
  }
  return std::move(scrubber.report());
}

}  // namespace coffer::storage
