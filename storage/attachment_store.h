// AttachmentStore: encrypted attachments of any size, streamed in and out with memory
// O(segment) (docs/formats.md#data-db-attachments).
//
// An upload (BeginUpload, Append…, Commit) encrypts stream-v1 segments under a fresh random
// upload id and writes each as its own value; nothing is visible until Commit flips the
// attachment's pointer in one WriteBatch (pointer put, pending marker delete, previous version's
// segments deleted). So a replace is atomic, and an abort or a crash before the flip leaves
// nothing visible: the pending marker names the orphaned segments, and CleanupOrphanedUploads
// deletes them. The pointer entry seals the name and the metadata (size, content type, created
// time, stream header) under the attachments key, with the same associated data as records; the
// stream's context is the stored name key, so segments moved to another attachment or dataset
// fail. Readers pin a snapshot, so a concurrent replace or delete cannot pull segments from
// under them.
//
// Thread safety: the store's methods may be called concurrently. An AttachmentUpload or
// AttachmentReader belongs to one thread at a time. Ownership: the store borrows the DataDb,
// key provider, policy source and clock; uploads and readers borrow the store and must be
// destroyed before it. An upload destroyed without Commit or Abort aborts.
//
// Failures (stable codes): INVALID_ARGUMENT (empty name, content type > 255 bytes);
// ID_TOO_LONG; ATTACHMENT_NOT_FOUND; UPLOAD_CLOSED (append or commit after commit, abort or a
// failure); RANGE_BEYOND_END; NOT_IN_RECYCLE_BIN; ALREADY_EXISTS; COMPLIANCE_LOCKED; the key
// provider's codes; CIPHERTEXT_CORRUPT / KEY_COMMITMENT_MISMATCH for damaged or moved data;
// QUOTA_EXCEEDED (a quota meter is set and the dataset's storage quota is reached); DATA_DB_ERROR.
// A failed upload writes nothing visible.

#ifndef COFFER_STORAGE_ATTACHMENT_STORE_H_
#define COFFER_STORAGE_ATTACHMENT_STORE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/clock.h"
#include "crypto/hmac.h"
#include "crypto/streaming_aead.h"
#include "storage/damaged_item.h"
#include "storage/data_db.h"
#include "storage/dataset_policy.h"
#include "storage/internal/layout.h"
#include "storage/key_provider.h"
#include "storage/quota_meter.h"

namespace coffer::storage {

inline constexpr size_t kMaxContentTypeSize = 255;

struct AttachmentInfo {
  uint64_t size = 0;
  std::string content_type;
  std::chrono::system_clock::time_point created;
  uint32_t key_version = 0;
};

class AttachmentStore;

class AttachmentUpload {
 public:
  AttachmentUpload(const AttachmentUpload&) = delete;
  AttachmentUpload& operator=(const AttachmentUpload&) = delete;
  ~AttachmentUpload();  // aborts an upload neither committed nor aborted

  // Encrypts and writes `chunk` (any size), holding back at most one segment of plaintext.
  absl::Status Append(std::string_view chunk);
  // Writes the last segment and makes the upload the attachment's content, atomically;
  // COMPLIANCE_LOCKED (and the upload fails) when the attachment it would replace is still
  // inside the dataset's minimum retention.
  absl::Status Commit();
  // Deletes what was written. UPLOAD_CLOSED after Commit.
  absl::Status Abort();
  uint64_t bytes_appended() const { return size_; }
  // The stored-key MAC the attachment is committed under: the ref an audit entry names it by.
  crypto::HmacSha256Tag ref() const;

 private:
  friend class AttachmentStore;
  AttachmentUpload(AttachmentStore* store, uint64_t handle, std::string name,
                   std::string content_type, std::string stored_key, internal::UploadId upload,
                   std::shared_ptr<const DataKey> key, crypto::StreamSegmentEncrypter encrypter);
  absl::Status Emit(bool last);
  absl::Status Fail(absl::Status status);

  enum class State { kOpen, kCommitted, kAborted, kFailed };
  AttachmentStore* store_;
  uint64_t handle_;
  std::string name_;
  std::string content_type_;
  std::string stored_key_;
  internal::UploadId upload_;
  std::shared_ptr<const DataKey> key_;
  crypto::StreamSegmentEncrypter encrypter_;
  std::string pending_;     // plaintext not yet encrypted, at most one segment
  std::string ciphertext_;  // reused per segment
  uint64_t size_ = 0;
  State state_ = State::kOpen;
};

class AttachmentReader {
 public:
  AttachmentReader(const AttachmentReader&) = delete;
  AttachmentReader& operator=(const AttachmentReader&) = delete;
  ~AttachmentReader();

  const AttachmentInfo& info() const { return info_; }
  // Replaces *out with the `length` plaintext bytes at `offset`; RANGE_BEYOND_END when
  // offset + length > size. Authenticates every segment it touches; on failure *out is empty.
  absl::Status Read(uint64_t offset, size_t length, std::string* out);
  // Authenticates every segment, keeping no plaintext: OK when the whole attachment opens, or
  // the first segment's failure. For a walk that must not begin writing out an attachment it
  // cannot finish (export: an archive entry, once begun, cannot be taken back). The reader's
  // snapshot makes a later Read see the very bytes Verify checked.
  absl::Status Verify();
  // Adds this attachment to `damaged` as failing with `status`, under the reference of its
  // pointer (the one listings, scrub and re-encryption report for it).
  void AddDamageTo(DamagedItems* damaged, const absl::Status& status) const;

 private:
  friend class AttachmentStore;
  AttachmentReader(DataDb* db, std::unique_ptr<ScopedSnapshot> snapshot, uint64_t handle,
                   std::string stored_key, internal::UploadId upload, AttachmentInfo info,
                   uint64_t segment_count, crypto::StreamSegmentDecrypter decrypter);
  // Reads and decrypts segment `index` into plaintext_.
  absl::Status OpenSegment(uint64_t index);
  DataDb* db_;
  std::unique_ptr<ScopedSnapshot> snapshot_;
  uint64_t handle_;
  std::string stored_key_;  // the pointer's RocksDB key
  internal::UploadId upload_;
  AttachmentInfo info_;
  uint64_t segment_count_;
  crypto::StreamSegmentDecrypter decrypter_;
  std::string segment_;    // reused per segment: ciphertext
  std::string plaintext_;  // reused per segment
};

class AttachmentStore {
 public:
  AttachmentStore(DataDb* db, KeyProvider* keys, DatasetPolicySource* policies, const Clock* clock,
                  uint32_t segment_size = crypto::kDefaultStreamSegmentSize)
      : db_(db), keys_(keys), policies_(policies), clock_(clock), segment_size_(segment_size) {}
  AttachmentStore(const AttachmentStore&) = delete;
  AttachmentStore& operator=(const AttachmentStore&) = delete;

  // Quotas: every segment and pointer written is admitted by `quota` first (QUOTA_EXCEEDED fails
  // the upload, and it is aborted). Null (the default): no quotas. Set before any upload.
  void set_quota_meter(QuotaMeter* quota) { quota_ = quota; }

  // Starts uploading attachment `name` of dataset `handle` (created or replaced at Commit);
  // COMPLIANCE_LOCKED at once when `name` holds an attachment inside the minimum retention.
  absl::StatusOr<std::unique_ptr<AttachmentUpload>> BeginUpload(uint64_t handle,
                                                                std::string_view name,
                                                                std::string_view content_type);
  // Opens the current version of attachment `name` for ranged reads.
  absl::StatusOr<std::unique_ptr<AttachmentReader>> Open(uint64_t handle, std::string_view name);
  absl::StatusOr<AttachmentInfo> Metadata(uint64_t handle, std::string_view name);
  // Moves attachment `name` (pointer and segments) to the recycle bin, and back; `ref` as for
  // RecordStore::Delete.
  absl::Status Delete(uint64_t handle, std::string_view name, crypto::HmacSha256Tag* ref = nullptr);
  absl::Status Restore(uint64_t handle, std::string_view name,
                       crypto::HmacSha256Tag* ref = nullptr);

  // Deletes the segments and marker of every pending upload that no AttachmentUpload of this
  // store is writing (left by a crash or a failed abort). Returns how many it removed. Run at
  // start-up, before uploads begin, or any time: uploads in progress here are skipped.
  absl::StatusOr<size_t> CleanupOrphanedUploads();

  // For the re-encryption job (storage/reencryption.h): moves one attachment onto the primary
  // attachments key. `key` is its pointer's stored key (cf kAttachmentPointers) or its bin key
  // (cf kRecycleBin), `seen` the value the job read there. The stream is copied segment by
  // segment (memory O(segment)) under a new pending upload id registered like any upload, then
  // one WriteBatch under the name's lock stripe flips the pointer (same name, size, content
  // type, created and written times, and deletion time for a bin entry), deletes the marker and
  // the old segments — but only if the value is still `seen`; otherwise the copy is dropped, so
  // a client replace, delete or restore in between is never overwritten. `before_flip`, if set,
  // runs after the copy and before the stripe is taken (tests use it to race a replace).
  // Returns true when it flipped the pointer, false when the entry was already on the primary
  // version or changed meanwhile, or when a retirement turns the copy's version away
  // (KeyProvider::AcceptsWrites; a later pass copies again).
  absl::StatusOr<bool> ReencryptToPrimary(internal::Cf cf, std::string_view key,
                                          std::string_view seen,
                                          const std::function<void()>& before_flip = {});

  // For the re-index job (storage/reindex.h): moves one attachment whose pointer (cf
  // kAttachmentPointers) or bin entry (cf kRecycleBin) at `key` sits under an older lookup
  // version to `new_stored_key`, the name's stored key under lookup version `lookup_version`
  // (the primary when the job hashed it; if a retirement is turning it away by the flip, the
  // copy is dropped and false returned: KeyProvider::AcceptsWrites). The
  // stream is copied as ReencryptToPrimary copies it, but bound to the new stored key (the
  // stream's context and the pointer's associated data bind it); the flip, under the stripes of
  // the old and the new stored key, puts the entry under the new key and deletes the old one and
  // its segments — only if the old entry is still `seen`. If the new key already holds an entry
  // (a later write of the name), the old entry and its segments are deleted and the copy
  // dropped. Returns true when the old entry went, false when it had changed meanwhile.
  absl::StatusOr<bool> MoveToStoredKey(internal::Cf cf, std::string_view key, std::string_view seen,
                                       std::string_view new_stored_key, uint32_t lookup_version,
                                       const std::function<void()>& before_flip = {});

  struct NamePage {
    std::vector<std::string> names;  // in stored-key order (HMAC order, not name order)
    std::string next_page_token;     // empty when this is the last page
    DamagedItems damaged;            // pointers on this page that do not open (skipped)
  };
  // Up to `max_names` (>= 1) live attachment names of dataset `handle`, after `page_token`
  // (empty: the first page), as RecordStore::ListIds lists ids (export walks them; the data
  // socket has no attachment listing). Tokens are opaque and stay valid across writes.
  absl::StatusOr<NamePage> ListNames(uint64_t handle, std::string_view page_token,
                                     size_t max_names);

 private:
  friend class AttachmentUpload;
  // A fresh random upload id, registered as this process's (a cleanup pass skips it) until
  // Forget.
  absl::StatusOr<internal::UploadId> NewActiveUpload();
  void Forget(const internal::UploadId& upload);
  // One read and open; Open repeats it through internal::ReadAgainIfRetired.
  absl::StatusOr<std::unique_ptr<AttachmentReader>> OpenOnce(uint64_t handle,
                                                             std::string_view name);
  // ReencryptToPrimary (`new_stored_key` empty: same stored key; false at once when already on
  // the primary attachments version) and MoveToStoredKey (`lookup_version`: new_stored_key's).
  absl::StatusOr<bool> CopyToPrimary(internal::Cf cf, std::string_view key, std::string_view seen,
                                     std::string_view new_stored_key, uint32_t lookup_version,
                                     const std::function<void()>& before_flip);
  // CopyToPrimary's flip, under the stripes of the old and the target stored key: writes the
  // copy and deletes the old segments (and the old entry when it moves) only if the entry is
  // still what the copy was made from and its versions are still accepted. True when it
  // flipped; *superseded when the target already held a later write of the name (the old entry
  // went, the copy is to be dropped).
  struct CopyFlip;
  absl::StatusOr<bool> FlipCopy(const CopyFlip& flip, bool* superseded);

  DataDb* db_;
  KeyProvider* keys_;
  DatasetPolicySource* policies_;
  const Clock* clock_;
  uint32_t segment_size_;
  QuotaMeter* quota_ = nullptr;
  std::mutex active_mu_;
  std::set<internal::UploadId> active_;  // guarded by active_mu_
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_ATTACHMENT_STORE_H_
