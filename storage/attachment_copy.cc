// AttachmentStore's copy of an attachment to the primary version: the re-encryption and the
// re-index of attachments (ReencryptToPrimary, MoveToStoredKey), one segment in memory at a time.

#include <functional>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "crypto/base/status.h"
#include "rocksdb/write_batch.h"
#include "storage/attachment_store.h"
#include "storage/internal/attachment_pointer.h"
#include "storage/internal/envelope.h"
#include "storage/internal/id_locks.h"

namespace coffer::storage {

using internal::AsView;
using internal::Cf;
using internal::EncodePointerBody;
using internal::ParsePointerBody;
using internal::PointerBody;
using internal::SegmentCount;
using internal::ToUploadId;

absl::StatusOr<bool> AttachmentStore::ReencryptToPrimary(Cf cf, std::string_view key,
                                                         std::string_view seen,
                                                         const std::function<void()>& before_flip) {
  return CopyToPrimary(cf, key, seen, {}, 0, before_flip);
}

absl::StatusOr<bool> AttachmentStore::MoveToStoredKey(Cf cf, std::string_view key,
                                                      std::string_view seen,
                                                      std::string_view new_stored_key,
                                                      uint32_t lookup_version,
                                                      const std::function<void()>& before_flip) {
  if (new_stored_key.size() != internal::kStoredKeySize) {
    return MakeError(ErrorCode::kInvalidArgument, "not a stored key");
  }
  return CopyToPrimary(cf, key, seen, new_stored_key, lookup_version, before_flip);
}

namespace {

// Re-encrypts the `segments` segments of upload `from` (as `snapshot` sees them) into upload
// `to` of dataset `handle`, one segment in memory at a time; plaintext is wiped as it goes. The
// first failure stops the copy (CIPHERTEXT_CORRUPT for a missing segment).
absl::Status CopySegments(DataDb* db, const rocksdb::Snapshot* snapshot, uint64_t handle,
                          const internal::UploadId& from, const internal::UploadId& to,
                          uint64_t segments, crypto::StreamSegmentDecrypter& decrypter,
                          crypto::StreamSegmentEncrypter& encrypter) {
  std::string segment;
  std::string plaintext;
  std::string ciphertext;
  absl::Cleanup wipe_plaintext = [&plaintext] {
    std::fill(plaintext.begin(), plaintext.end(), '\0');
  };
  for (uint64_t index = 0; index < segments; ++index) {
    const bool last = index + 1 == segments;
    bool found = false;
    COFFER_RETURN_IF_ERROR(db->Get(Cf::kAttachmentSegments,
                                   internal::SegmentKey(handle, from, static_cast<uint32_t>(index)),
                                   &segment, &found, snapshot));
    if (!found) return MakeError(ErrorCode::kCiphertextCorrupt, "an attachment segment is missing");
    std::fill(plaintext.begin(), plaintext.end(), '\0');
    plaintext.clear();
    COFFER_RETURN_IF_ERROR(decrypter.DecryptSegment(index, segment, last, &plaintext));
    ciphertext.clear();
    COFFER_RETURN_IF_ERROR(encrypter.EncryptSegment(plaintext, last, &ciphertext));
    COFFER_RETURN_IF_ERROR(
        FromRocks(db->rocks()->Put(db->write_options(), db->cf(Cf::kAttachmentSegments),
                                   internal::SegmentKey(handle, to, static_cast<uint32_t>(index)),
                                   ciphertext),
                  "write"));
  }
  return absl::OkStatus();
}

}  // namespace

// What CopyToPrimary's flip needs (all borrowed from its frame).
struct AttachmentStore::CopyFlip {
  Cf cf;                               // kAttachmentPointers or kRecycleBin
  std::string_view key;                // the entry's key in cf
  std::string_view seen;               // the value the caller read there
  std::string_view stored_key;         // its stored key
  std::string_view target_stored_key;  // where the copy goes (== stored_key unless it moves)
  std::string_view target_key;         // the copy's key in cf
  bool moves;
  uint64_t handle;
  uint32_t primary_version;  // the copy's attachments version
  uint32_t lookup_version;   // target_stored_key's lookup version (moves only)
  std::string_view upload_key;
  const internal::UploadId& old_upload;
  std::string_view new_value;
};

namespace {

// Where CopyToPrimary reads an attachment (its pointer under `key` in `cf`, holding `seen`) and
// where the copy goes: the same stored key (re-encryption) or `new_stored_key` (re-index, the
// name under the primary lookup version). The stream's context and the pointer's associated
// data both bind the target.
struct CopyPlace {
  std::string stored_key;
  std::string_view entry_bytes;  // the pointer entry inside `seen`
  int64_t deleted_at_us = 0;     // a binned pointer's bin time
  uint64_t handle = 0;
  std::string target_stored_key;
  std::string target_key;  // in `cf`
};

absl::StatusOr<CopyPlace> PlaceCopy(Cf cf, std::string_view key, std::string_view seen,
                                    std::string_view new_stored_key) {
  if (cf != Cf::kAttachmentPointers && cf != Cf::kRecycleBin) {
    return MakeError(ErrorCode::kInvalidArgument, "not an attachment pointer or bin key");
  }
  CopyPlace place;
  place.stored_key = std::string(key);
  place.entry_bytes = seen;
  if (cf == Cf::kRecycleBin) {
    COFFER_ASSIGN_OR_RETURN(internal::BinKeyParts parts, internal::ParseBinKey(key));
    if (parts.cf != Cf::kAttachmentPointers) {
      return MakeError(ErrorCode::kInvalidArgument, "not an attachment bin key");
    }
    place.stored_key = std::move(parts.stored_key);
    COFFER_ASSIGN_OR_RETURN(internal::BinValue bin, internal::ParseBinValue(seen));
    place.entry_bytes = bin.entry;
    place.deleted_at_us = bin.deleted_at_us;
  }
  place.handle = internal::HandleOf(place.stored_key);
  place.target_stored_key = new_stored_key.empty() ? place.stored_key : std::string(new_stored_key);
  if (internal::HandleOf(place.target_stored_key) != place.handle) {
    return MakeError(ErrorCode::kInvalidArgument, "an attachment moves only within its dataset");
  }
  place.target_key = cf == Cf::kRecycleBin
                         ? internal::BinKey(Cf::kAttachmentPointers, place.target_stored_key)
                         : place.target_stored_key;
  return place;
}

// The pending-upload marker of a copy (CleanupOrphanedUploads removes what a crash leaves).
absl::Status WriteUploadMarker(DataDb* db, const std::string& upload_key,
                               std::chrono::system_clock::time_point now) {
  std::string marker;
  internal::AppendU64(&marker, static_cast<uint64_t>(ToUnixMicros(now)));
  return FromRocks(db->rocks()->Put(db->write_options(), db->cf(Cf::kUploads), upload_key, marker),
                   "write");
}

// Whether `key` in `cf` still holds `seen` at `snapshot`.
absl::StatusOr<bool> StillSeen(DataDb* db, Cf cf, std::string_view key, std::string_view seen,
                               const rocksdb::Snapshot* snapshot) {
  std::string at_snapshot;
  bool found = false;
  COFFER_RETURN_IF_ERROR(db->Get(cf, key, &at_snapshot, &found, snapshot));
  return found && at_snapshot == seen;
}

// The decrypter of an attachment's stream sealed under attachments version `version`.
absl::StatusOr<crypto::StreamSegmentDecrypter> OldStream(KeyProvider* keys, uint64_t handle,
                                                         uint32_t version, const PointerBody& body,
                                                         std::string_view stored_key) {
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          keys->KeyForVersion(handle, KeyPurpose::kAttachments, version));
  COFFER_ASSIGN_OR_RETURN(
      crypto::StreamSegmentDecrypter decrypter,
      crypto::StreamSegmentDecrypter::Create(key->key(), version, body.stream_header, stored_key));
  if (SegmentCount(body.size, decrypter.segment_size()) - 1 > crypto::kMaxStreamSegmentIndex) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "impossible attachment size");
  }
  return decrypter;
}

// The pointer entry of a copied stream: the same item (id, size, times, content type) under
// `primary` at `stored_key`, naming upload `upload` and its stream header.
absl::StatusOr<std::string> ResealPointer(const DataKey& primary, std::string_view stored_key,
                                          const internal::OpenedEntry& opened,
                                          const PointerBody& body, std::string_view upload,
                                          std::string_view stream_header) {
  std::string new_body =
      EncodePointerBody(body.size, body.created_us, body.content_type, stream_header);
  absl::StatusOr<std::string> resealed =
      internal::SealEntryWith(primary, Cf::kAttachmentPointers, stored_key, opened.written_at_us,
                              upload, opened.id, new_body);
  std::fill(new_body.begin(), new_body.end(), '\0');
  return resealed;
}

// Deletes the segments and the marker of upload `upload` of dataset `handle` (a copy that is
// not kept).
absl::Status DropUpload(DataDb* db, uint64_t handle, const internal::UploadId& upload) {
  rocksdb::WriteBatch batch;
  COFFER_RETURN_IF_ERROR(FromRocks(
      batch.DeleteRange(db->cf(Cf::kAttachmentSegments), internal::SegmentsBegin(handle, upload),
                        internal::SegmentsEnd(handle, upload)),
      "batch"));
  COFFER_RETURN_IF_ERROR(
      FromRocks(batch.Delete(db->cf(Cf::kUploads), internal::UploadKey(handle, upload)), "batch"));
  return db->Write(&batch);
}

}  // namespace

absl::StatusOr<bool> AttachmentStore::CopyToPrimary(Cf cf, std::string_view key,
                                                    std::string_view seen,
                                                    std::string_view new_stored_key,
                                                    uint32_t lookup_version,
                                                    const std::function<void()>& before_flip) {
  COFFER_ASSIGN_OR_RETURN(CopyPlace place, PlaceCopy(cf, key, seen, new_stored_key));
  const std::string& stored_key = place.stored_key;
  const std::string& target_stored_key = place.target_stored_key;
  const std::string_view entry_bytes = place.entry_bytes;
  const uint64_t handle = place.handle;
  const bool moves = target_stored_key != stored_key;
  COFFER_ASSIGN_OR_RETURN(uint32_t old_version,
                          internal::EntryKeyVersion(Cf::kAttachmentPointers, entry_bytes));
  // Two encryptions, as for an upload: the stream and the pointer entry. Counted only when a
  // copy is actually made.
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> current,
                          keys_->PrimaryKey(handle, KeyPurpose::kAttachments, 0));
  if (current->version() == old_version && !moves) return false;

  // The snapshot pins the old segments while they are copied; the entry must still be `seen`
  // in it, or a replace already removed them.
  std::unique_ptr<ScopedSnapshot> snapshot = db_->NewSnapshot();
  COFFER_ASSIGN_OR_RETURN(bool still_seen, StillSeen(db_, cf, key, seen, snapshot->get()));
  if (!still_seen) return false;
  COFFER_ASSIGN_OR_RETURN(internal::OpenedEntry opened,
                          internal::OpenEntry(keys_, Cf::kAttachmentPointers,
                                              KeyPurpose::kAttachments, stored_key, entry_bytes));
  absl::Cleanup wipe = [&opened] {
    std::fill(opened.id.begin(), opened.id.end(), '\0');
    std::fill(opened.body.begin(), opened.body.end(), '\0');
  };
  COFFER_ASSIGN_OR_RETURN(PointerBody body, ParsePointerBody(opened.body));
  COFFER_ASSIGN_OR_RETURN(crypto::StreamSegmentDecrypter decrypter,
                          OldStream(keys_, handle, old_version, body, stored_key));
  const uint64_t segments = SegmentCount(body.size, decrypter.segment_size());
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                          keys_->PrimaryKey(handle, KeyPurpose::kAttachments, 2));
  COFFER_ASSIGN_OR_RETURN(
      crypto::StreamSegmentEncrypter encrypter,
      crypto::StreamSegmentEncrypter::Create(primary->key(), primary->version(), target_stored_key,
                                             decrypter.segment_size()));
  COFFER_ASSIGN_OR_RETURN(const internal::UploadId upload, NewActiveUpload());
  absl::Cleanup forget = [this, &upload] { Forget(upload); };
  const std::string upload_key = internal::UploadKey(handle, upload);
  auto drop_copy = [&] { return DropUpload(db_, handle, upload); };
  COFFER_RETURN_IF_ERROR(WriteUploadMarker(db_, upload_key, clock_->Now()));
  const internal::UploadId old_upload = ToUploadId(opened.upload_id);
  absl::Status copied = CopySegments(db_, snapshot->get(), handle, old_upload, upload, segments,
                                     decrypter, encrypter);
  snapshot.reset();
  if (!copied.ok()) {
    drop_copy().IgnoreError();  // what is left, CleanupOrphanedUploads removes
    return copied;
  }
  absl::StatusOr<std::string> resealed =
      ResealPointer(*primary, target_stored_key, opened, body, AsView(upload), encrypter.header());
  if (!resealed.ok()) {
    drop_copy().IgnoreError();
    return resealed.status();
  }
  std::string new_value =
      cf == Cf::kRecycleBin ? internal::EncodeBinValue(place.deleted_at_us, *resealed) : *resealed;

  if (before_flip) before_flip();
  CopyFlip flip{cf,
                key,
                seen,
                stored_key,
                target_stored_key,
                place.target_key,
                moves,
                handle,
                primary->version(),
                lookup_version,
                upload_key,
                old_upload,
                new_value};
  bool superseded = false;
  COFFER_ASSIGN_OR_RETURN(bool flipped, FlipCopy(flip, &superseded));
  if (!flipped || superseded) COFFER_RETURN_IF_ERROR(drop_copy());
  return flipped;
}

absl::StatusOr<bool> AttachmentStore::FlipCopy(const CopyFlip& f, bool* superseded) {
  DataDb::StripeLocks locks =
      db_->LockStripes({internal::MacOf(f.stored_key), internal::MacOf(f.target_stored_key)});
  // The copy is written only under versions no retirement is turning away
  // (KeyProvider::AcceptsWrites); otherwise it is dropped and a later pass copies again.
  COFFER_ASSIGN_OR_RETURN(
      bool accepted, keys_->AcceptsWrites(f.handle, KeyPurpose::kAttachments, f.primary_version));
  if (accepted && f.moves) {
    COFFER_ASSIGN_OR_RETURN(accepted,
                            keys_->AcceptsWrites(f.handle, KeyPurpose::kLookup, f.lookup_version));
  }
  std::string now_value;
  bool found = false;
  if (accepted) COFFER_RETURN_IF_ERROR(db_->Get(f.cf, f.key, &now_value, &found));
  if (!found || now_value != f.seen) return false;
  // A move onto a key that already holds an entry: that entry is a later write of the name
  // (every write goes to the primary and removes the older versions' entries), so the old
  // entry is stale — it and its segments go, and the copy is dropped.
  bool target_taken = false;
  if (f.moves) {
    std::string target_value;
    COFFER_RETURN_IF_ERROR(db_->Get(f.cf, f.target_key, &target_value, &target_taken));
  }
  rocksdb::WriteBatch batch;
  if (target_taken) {
    *superseded = true;
  } else {
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Put(db_->cf(f.cf), f.target_key, f.new_value), "batch"));
    COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(Cf::kUploads), f.upload_key), "batch"));
  }
  if (f.moves) COFFER_RETURN_IF_ERROR(FromRocks(batch.Delete(db_->cf(f.cf), f.key), "batch"));
  COFFER_RETURN_IF_ERROR(
      FromRocks(batch.DeleteRange(db_->cf(Cf::kAttachmentSegments),
                                  internal::SegmentsBegin(f.handle, f.old_upload),
                                  internal::SegmentsEnd(f.handle, f.old_upload)),
                "batch"));
  COFFER_RETURN_IF_ERROR(db_->Write(&batch));
  return true;
}

}  // namespace coffer::storage
