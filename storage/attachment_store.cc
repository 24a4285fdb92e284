#include "storage/attachment_store.h"

#include <algorithm>
#include <utility>

#include "crypto/base/status.h"
#include "crypto/random.h"
#include "rocksdb/write_batch.h"
#include "storage/internal/attachment_pointer.h"
#include "storage/internal/bin_moves.h"
#include "storage/internal/envelope.h"
#include "storage/internal/id_locks.h"
#include "storage/internal/id_pages.h"

namespace coffer::storage {

using internal::AsView;
using internal::Cf;
using internal::EncodePointerBody;
using internal::ParsePointerBody;
using internal::PointerBody;
using internal::SegmentCount;
using internal::ToUploadId;

namespace {

struct OpenedPointer {
  internal::UploadId upload{};
  PointerBody body;
  uint32_t key_version = 0;
};

absl::StatusOr<OpenedPointer> OpenPointer(KeyProvider* keys, std::string_view stored_key,
                                          std::string_view value) {
  COFFER_ASSIGN_OR_RETURN(internal::OpenedEntry opened,
                          internal::OpenEntry(keys, Cf::kAttachmentPointers,
                                              KeyPurpose::kAttachments, stored_key, value));
  OpenedPointer pointer;
  pointer.upload = ToUploadId(opened.upload_id);
  pointer.key_version = opened.key_version;
  COFFER_ASSIGN_OR_RETURN(pointer.body, ParsePointerBody(opened.body));
  return pointer;
}

}  // namespace

// --- AttachmentUpload ---

AttachmentUpload::AttachmentUpload(AttachmentStore* store, uint64_t handle, std::string name,
                                   std::string content_type, std::string stored_key,
                                   internal::UploadId upload, std::shared_ptr<const DataKey> key,
                                   crypto::StreamSegmentEncrypter encrypter)
    : store_(store),
      handle_(handle),
      name_(std::move(name)),
      content_type_(std::move(content_type)),
      stored_key_(std::move(stored_key)),
      upload_(upload),
      key_(std::move(key)),
      encrypter_(std::move(encrypter)) {}

AttachmentUpload::~AttachmentUpload() {
  if (state_ == State::kOpen || state_ == State::kFailed) {
    // Best effort: whatever is left, CleanupOrphanedUploads removes after a restart.
    Abort().IgnoreError();
  }
  std::fill(pending_.begin(), pending_.end(), '\0');
}

absl::Status AttachmentUpload::Fail(absl::Status status) {
  state_ = State::kFailed;
  return status;
}

absl::Status AttachmentUpload::Emit(bool last) {
  ciphertext_.clear();
  absl::Status encrypted = encrypter_.EncryptSegment(pending_, last, &ciphertext_);
  if (!encrypted.ok()) return Fail(encrypted);
  uint64_t index = encrypter_.next_segment_index() - 1;
  DataDb* db = store_->db_;
  const std::string segment_key =
      internal::SegmentKey(handle_, upload_, static_cast<uint32_t>(index));
  QuotaMeter::Ticket admitted;
  if (store_->quota_ != nullptr) {
    absl::StatusOr<QuotaMeter::Ticket> ticket =
        store_->quota_->Admit(handle_, 0, segment_key.size() + ciphertext_.size());
    if (!ticket.ok()) return Fail(ticket.status());
    admitted = *std::move(ticket);
  }
  absl::Status written =
      FromRocks(db->rocks()->Put(db->write_options(), db->cf(Cf::kAttachmentSegments), segment_key,
                                 ciphertext_),
                "write");
  if (!written.ok()) return Fail(written);
  std::fill(pending_.begin(), pending_.end(), '\0');
  pending_.clear();
  return absl::OkStatus();
}

absl::Status AttachmentUpload::Append(std::string_view chunk) {
  if (state_ != State::kOpen) {
    return MakeError(ErrorCode::kUploadClosed, "the upload was committed, aborted or failed");
  }
  size_t segment_size = encrypter_.segment_size();
  while (!chunk.empty()) {
    // A full buffered segment is emitted only once more data shows it is not the last.
    if (pending_.size() == segment_size) COFFER_RETURN_IF_ERROR(Emit(/*last=*/false));
    size_t take = std::min(segment_size - pending_.size(), chunk.size());
    pending_.append(chunk.substr(0, take));
    chunk.remove_prefix(take);
    size_ += take;
  }
  return absl::OkStatus();
}

crypto::HmacSha256Tag AttachmentUpload::ref() const { return internal::RefOf(stored_key_); }

absl::Status AttachmentUpload::Commit() {
  if (state_ != State::kOpen) {
    return MakeError(ErrorCode::kUploadClosed, "the upload was committed, aborted or failed");
  }
  COFFER_RETURN_IF_ERROR(Emit(/*last=*/true));
  int64_t now = ToUnixMicros(store_->clock_->Now());
  std::string body = EncodePointerBody(size_, now, content_type_, encrypter_.header());
  absl::StatusOr<std::string> entry = internal::SealEntryWith(
      *key_, Cf::kAttachmentPointers, stored_key_, now, AsView(upload_), name_, body);
  if (!entry.ok()) return Fail(entry.status());

  DataDb* db = store_->db_;
  rocksdb::WriteBatch batch;
  {
    // The name's stripes under every live lookup version: a lookup rotation during the upload
    // leaves this upload's stored key under an older version, and the name may meanwhile have
    // been written under the new primary. The commit replaces whatever the name holds under any
    // version (the re-index job moves this one to the primary later).
    absl::StatusOr<internal::LockedId> locked = internal::LockId(db, store_->keys_, handle_, name_);
    if (!locked.ok()) return Fail(locked.status());
    const std::vector<std::string>& stored_keys = locked->keys.stored_keys;
    if (std::find(stored_keys.begin(), stored_keys.end(), stored_key_) == stored_keys.end()) {
      return Fail(MakeError(ErrorCode::kFailedPrecondition,
                            "the lookup key version this upload began under was retired; "
                            "upload again"));
    }
    // Likewise for the attachments version the stream was sealed under (a retirement under way
    // turns it away before its barrier and final count: KeyProvider::AcceptsWrites).
    absl::StatusOr<bool> accepted =
        store_->keys_->AcceptsWrites(handle_, KeyPurpose::kAttachments, key_->version());
    if (!accepted.ok()) return Fail(accepted.status());
    if (!*accepted) {
      return Fail(MakeError(ErrorCode::kFailedPrecondition,
                            "the attachment key version this upload began under was retired; "
                            "upload again"));
    }
    // An attachment inside its minimum retention is not replaced (compliance lock).
    absl::Status status = internal::CheckOverwrite(db, store_->policies_, store_->clock_,
                                                   Cf::kAttachmentPointers, handle_, stored_keys);
    if (!status.ok()) return Fail(status);
    for (const std::string& key : stored_keys) {
      std::string previous;
      bool found = false;
      if (status.ok()) status = db->Get(Cf::kAttachmentPointers, key, &previous, &found);
      if (status.ok() && found) status = internal::DeleteSegmentsOf(db, key, previous, &batch);
      if (status.ok() && found && key != stored_key_) {
        status = FromRocks(batch.Delete(db->cf(Cf::kAttachmentPointers), key), "batch");
      }
    }
    // The pointer's bytes (a replaced attachment's are freed at the next census).
    QuotaMeter::Ticket admitted;
    if (status.ok() && store_->quota_ != nullptr) {
      absl::StatusOr<QuotaMeter::Ticket> ticket =
          store_->quota_->Admit(handle_, 0, stored_key_.size() + entry->size());
      if (ticket.ok()) {
        admitted = *std::move(ticket);
      } else {
        status = ticket.status();
      }
    }
    if (status.ok()) {
      status = FromRocks(batch.Put(db->cf(Cf::kAttachmentPointers), stored_key_, *entry), "batch");
    }
    if (status.ok()) {
      status = FromRocks(batch.Delete(db->cf(Cf::kUploads), internal::UploadKey(handle_, upload_)),
                         "batch");
    }
    if (status.ok()) status = db->Write(&batch);
    if (!status.ok()) return Fail(status);
  }
  state_ = State::kCommitted;
  store_->Forget(upload_);
  return absl::OkStatus();
}

absl::Status AttachmentUpload::Abort() {
  if (state_ == State::kCommitted || state_ == State::kAborted) {
    return MakeError(ErrorCode::kUploadClosed, "the upload was committed or aborted");
  }
  DataDb* db = store_->db_;
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(FromRocks(
      batch.DeleteRange(db->cf(Cf::kAttachmentSegments), internal::SegmentsBegin(handle_, upload_),
                        internal::SegmentsEnd(handle_, upload_)),
      "batch"));
  COFFER_RETURN_IF_ERROR(FromRocks(
      batch.Delete(db->cf(Cf::kUploads), internal::UploadKey(handle_, upload_)), "batch"));
  COFFER_RETURN_IF_ERROR(db->Write(&batch));
  state_ = State::kAborted;
  store_->Forget(upload_);
  return absl::OkStatus();
}

// --- AttachmentReader ---

AttachmentReader::AttachmentReader(DataDb* db, std::unique_ptr<ScopedSnapshot> snapshot,
                                   uint64_t handle, std::string stored_key,
                                   internal::UploadId upload, AttachmentInfo info,
                                   uint64_t segment_count, crypto::StreamSegmentDecrypter decrypter)
    : db_(db),
      snapshot_(std::move(snapshot)),
      handle_(handle),
      stored_key_(std::move(stored_key)),
      upload_(upload),
      info_(std::move(info)),
      segment_count_(segment_count),
      decrypter_(std::move(decrypter)) {}

AttachmentReader::~AttachmentReader() { std::fill(plaintext_.begin(), plaintext_.end(), '\0'); }

absl::Status AttachmentReader::Read(uint64_t offset, size_t length, std::string* out) {
  out->clear();
  if (offset > info_.size || length > info_.size - offset) {
    return MakeError(ErrorCode::kRangeBeyondEnd, "the range ends beyond the attachment's " +
                                                     std::to_string(info_.size) + " bytes");
  }
  if (length == 0) return absl::OkStatus();
  out->reserve(length);
  uint64_t segment_size = decrypter_.segment_size();
  uint64_t end = offset + length;
  for (uint64_t index = offset / segment_size; index * segment_size < end; ++index) {
    absl::Status status = OpenSegment(index);
    if (!status.ok()) {
      std::fill(out->begin(), out->end(), '\0');
      out->clear();
      return status;
    }
    uint64_t segment_begin = index * segment_size;
    uint64_t from = std::max(offset, segment_begin) - segment_begin;
    uint64_t to = std::min(end, segment_begin + plaintext_.size()) - segment_begin;
    out->append(plaintext_, from, to - from);
  }
  return absl::OkStatus();
}

absl::Status AttachmentReader::Verify() {
  for (uint64_t index = 0; index < segment_count_; ++index) {
    absl::Status status = OpenSegment(index);
    std::fill(plaintext_.begin(), plaintext_.end(), '\0');
    COFFER_RETURN_IF_ERROR(status);
  }
  return absl::OkStatus();
}

void AttachmentReader::AddDamageTo(DamagedItems* damaged, const absl::Status& status) const {
  damaged->Add(internal::CfName(Cf::kAttachmentPointers), stored_key_, status);
}

absl::Status AttachmentReader::OpenSegment(uint64_t index) {
  bool found = false;
  COFFER_RETURN_IF_ERROR(db_->Get(
      Cf::kAttachmentSegments, internal::SegmentKey(handle_, upload_, static_cast<uint32_t>(index)),
      &segment_, &found, snapshot_->get()));
  if (!found) return MakeError(ErrorCode::kCiphertextCorrupt, "an attachment segment is missing");
  plaintext_.clear();
  return decrypter_.DecryptSegment(index, segment_, index + 1 == segment_count_, &plaintext_);
}

// --- AttachmentStore ---

absl::StatusOr<std::unique_ptr<AttachmentUpload>> AttachmentStore::BeginUpload(
    uint64_t handle, std::string_view name, std::string_view content_type) {
  if (content_type.size() > kMaxContentTypeSize) {
    return MakeError(ErrorCode::kInvalidArgument, "content types are limited to 255 bytes");
  }
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, name));
  // Refused before any byte is sent when the name holds an attachment inside its minimum
  // retention (under the primary lookup version; the commit checks every version again).
  COFFER_RETURN_IF_ERROR(internal::CheckOverwrite(db_, policies_, clock_, Cf::kAttachmentPointers,
                                                  handle, {stored_key}));
  // Two encryptions: the stream and the pointer entry.
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          keys_->PrimaryKey(handle, KeyPurpose::kAttachments, 2));
  COFFER_ASSIGN_OR_RETURN(crypto::StreamSegmentEncrypter encrypter,
                          crypto::StreamSegmentEncrypter::Create(key->key(), key->version(),
                                                                 stored_key, segment_size_));
  COFFER_ASSIGN_OR_RETURN(const internal::UploadId upload, NewActiveUpload());
  std::string marker;
  internal::AppendU64(&marker, static_cast<uint64_t>(ToUnixMicros(clock_->Now())));
  absl::Status written = FromRocks(db_->rocks()->Put(db_->write_options(), db_->cf(Cf::kUploads),
                                                     internal::UploadKey(handle, upload), marker),
                                   "write");
  if (!written.ok()) {
    Forget(upload);
    return written;
  }
  return std::unique_ptr<AttachmentUpload>(
      new AttachmentUpload(this, handle, std::string(name), std::string(content_type),
                           std::move(stored_key), upload, std::move(key), std::move(encrypter)));
}

absl::StatusOr<std::unique_ptr<AttachmentReader>> AttachmentStore::Open(uint64_t handle,
                                                                        std::string_view name) {
  return internal::ReadAgainIfRetired([&] { return OpenOnce(handle, name); });
}

absl::StatusOr<std::unique_ptr<AttachmentReader>> AttachmentStore::OpenOnce(uint64_t handle,
                                                                            std::string_view name) {
  COFFER_ASSIGN_OR_RETURN(std::string stored_key, internal::StoredKeyFor(keys_, handle, name));
  std::unique_ptr<ScopedSnapshot> snapshot = db_->NewSnapshot();
  std::string value;
  bool found = false;
  COFFER_RETURN_IF_ERROR(
      db_->Get(Cf::kAttachmentPointers, stored_key, &value, &found, snapshot->get()));
  if (!found) {
    // Under an older live lookup version until the re-index moves it.
    COFFER_ASSIGN_OR_RETURN(internal::IdStoredKeys all,
                            internal::StoredKeysFor(keys_, handle, name));
    for (size_t i = 1; i < all.stored_keys.size() && !found; ++i) {
      COFFER_RETURN_IF_ERROR(
          db_->Get(Cf::kAttachmentPointers, all.stored_keys[i], &value, &found, snapshot->get()));
      if (found) stored_key = all.stored_keys[i];
    }
  }
  if (!found) return MakeError(ErrorCode::kAttachmentNotFound, "no live attachment of this name");
  COFFER_ASSIGN_OR_RETURN(OpenedPointer pointer, OpenPointer(keys_, stored_key, value));
  COFFER_ASSIGN_OR_RETURN(
      std::shared_ptr<const DataKey> key,
      keys_->KeyForVersion(handle, KeyPurpose::kAttachments, pointer.key_version));
  COFFER_ASSIGN_OR_RETURN(crypto::StreamSegmentDecrypter decrypter,
                          crypto::StreamSegmentDecrypter::Create(
                              key->key(), key->version(), pointer.body.stream_header, stored_key));
  AttachmentInfo info{pointer.body.size, pointer.body.content_type,
                      FromUnixMicros(pointer.body.created_us), pointer.key_version};
  uint64_t segments = SegmentCount(info.size, decrypter.segment_size());
  if (segments - 1 > crypto::kMaxStreamSegmentIndex) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "impossible attachment size");
  }
  return std::unique_ptr<AttachmentReader>(
      new AttachmentReader(db_, std::move(snapshot), handle, std::move(stored_key), pointer.upload,
                           std::move(info), segments, std::move(decrypter)));
}

absl::StatusOr<AttachmentInfo> AttachmentStore::Metadata(uint64_t handle, std::string_view name) {
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<AttachmentReader> reader, Open(handle, name));
  return reader->info();
}

absl::Status AttachmentStore::Delete(uint64_t handle, std::string_view name,
                                     crypto::HmacSha256Tag* ref) {
  return internal::MoveToBin(db_, keys_, policies_, clock_, Cf::kAttachmentPointers, handle, name,
                             ErrorCode::kAttachmentNotFound, ref);
}

absl::Status AttachmentStore::Restore(uint64_t handle, std::string_view name,
                                      crypto::HmacSha256Tag* ref) {
  return internal::RestoreFromBin(db_, keys_, Cf::kAttachmentPointers, handle, name, ref);
}

absl::StatusOr<internal::UploadId> AttachmentStore::NewActiveUpload() {
  internal::UploadId upload{};
  COFFER_RETURN_IF_ERROR(crypto::RandomNonce(absl::MakeSpan(upload.data(), upload.size())));
  std::lock_guard<std::mutex> lock(active_mu_);
  active_.insert(upload);  // before its marker exists, so a cleanup pass skips it
  return upload;
}

void AttachmentStore::Forget(const internal::UploadId& upload) {
  std::lock_guard<std::mutex> lock(active_mu_);
  active_.erase(upload);
}

absl::StatusOr<size_t> AttachmentStore::CleanupOrphanedUploads() {
  std::set<internal::UploadId> active;
  {
    std::lock_guard<std::mutex> lock(active_mu_);
    active = active_;
  }
  rocksdb::WriteBatch batch;
  size_t removed = 0;
  {
    ScopedIterator it = db_->NewIterator(Cf::kUploads);
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      std::string_view key(it->key().data(), it->key().size());
      if (key.size() != internal::kUploadKeySize) {
        return MakeError(ErrorCode::kCiphertextCorrupt, "malformed pending-upload marker");
      }
      internal::UploadId upload = internal::UploadIdOf(key);
      if (active.count(upload) != 0) continue;
      uint64_t handle = internal::HandleOf(key);
      COFFER_RETURN_IF_ERROR(FromRocks(batch.DeleteRange(db_->cf(Cf::kAttachmentSegments),
                                                         internal::SegmentsBegin(handle, upload),
                                                         internal::SegmentsEnd(handle, upload)),
                                       "batch"));
      COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(Cf::kUploads), key), "batch"));
      ++removed;
    }
    COFFER_RETURN_IF_ERROR(FromRocks(it->status(), "iterate"));
  }
  if (removed > 0) COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  return removed;
}

absl::StatusOr<AttachmentStore::NamePage> AttachmentStore::ListNames(uint64_t handle,
                                                                     std::string_view page_token,
                                                                     size_t max_names) {
  COFFER_ASSIGN_OR_RETURN(
      internal::IdPage listed,
      internal::ListIdPage(db_, keys_, Cf::kAttachmentPointers, KeyPurpose::kAttachments, handle,
                           page_token, max_names));
  return NamePage{std::move(listed.ids), std::move(listed.next_page_token),
                  std::move(listed.damaged)};
}

}  // namespace coffer::storage
