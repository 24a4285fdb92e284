// Export archives, format export-v1 (docs/formats.md#export-v1): what `keyctl dataset export`
// receives and `keyctl export open` reads.
//
//   archive   = preamble ‖ header ‖ content ‖ signature block
//   preamble  = "CFEXPORT" (8) ‖ version 0x01 (1) ‖ header length (u32 BE)
//   header    = coffer.export_archive.v1.ExportHeader (kms/formats/export_archive.proto), in clear:
//   the
//               dataset, the recipient key's type and fingerprint and the per-export 256-bit key
//               wrapped to it (crypto/recipient_wrap.h), the signer's fingerprint
//   content   = one contiguous stream-v1 stream (crypto/streaming_io.h) under the export key,
//               key version 1, context "coffer-export-v1 content" ‖ SHA-256(preamble ‖ header);
//               its plaintext is a sequence of entries, each u32 BE length ‖ ExportEntry:
//               records, attachments (the entry, then exactly `size` data bytes), and last a
//               trailer with the counts
//   signature = DER ECDSA P-256 signature ‖ its length (u16 BE) ‖ "CFXSIGN1" (8), by the
//               token's signing key over SHA-256("coffer-export-v1 signature" 0x00 ‖ D), where
//               D = SHA-256(preamble ‖ header ‖ content)
//
// ArchiveWriter produces an archive as a stream of bytes into an ArchiveSink, holding one
// content segment at a time (memory O(segment + largest record)). OpenArchive reads one from a
// file in two passes — the signature first, then the content — with the same bound, handing
// records and attachment data to an ArchiveVisitor as it authenticates them.
//
// Thread safety: an ArchiveWriter belongs to one thread. Ownership: the writer borrows its
// signer and sink; both must outlive it.
// Failures: EXPORT_ARCHIVE_CORRUPT (541) for anything malformed, truncated, extended, unsigned
// or failing authentication; EXPORT_WRONG_RECIPIENT (542) for a private key that is not the
// archive's recipient; IO_ERROR for a file that cannot be read; the sink's or visitor's own
// errors as they are. Messages never contain key material, ids, names or values.

#ifndef COFFER_KMS_FORMATS_EXPORT_ARCHIVE_H_
#define COFFER_KMS_FORMATS_EXPORT_ARCHIVE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/base/progress.h"
#include "crypto/recipient_wrap.h"
#include "crypto/streaming_io.h"
#include "kms/audit/signer.h"
#include "kms/audit/signing_domain.h"
#include "kms/formats/export_archive.pb.h"

namespace coffer::kms::dataset_export {

namespace v1 = ::coffer::export_archive::v1;

// docs/formats.md#export-v1
inline constexpr std::string_view kArchiveMagic = "CFEXPORT";
inline constexpr uint8_t kArchiveVersion = 1;
inline constexpr size_t kPreambleSize = 8 + 1 + 4;
inline constexpr std::string_view kSignatureMagic = "CFXSIGN1";
inline constexpr size_t kSignatureTrailerSize = 2 + 8;  // length ‖ magic
inline constexpr size_t kMaxSignatureSize = 80;         // DER ECDSA P-256 is at most 72
inline constexpr std::string_view kContentContextLabel = "coffer-export-v1 content";
// Followed by one 0x00 byte and the 32-byte digest D in the signed message: the export domain's
// label (kms/audit/signing_domain.h), which export-v1 has signed from the start.
inline constexpr std::string_view kSignatureLabel = audit::kExportArchiveLabel;
inline constexpr uint32_t kContentKeyVersion = 1;
inline constexpr size_t kMaxHeaderSize = size_t{1} << 20;
inline constexpr size_t kMaxEntrySize = size_t{64} << 20;
static_assert(kArchiveMagic.size() == 8 && kSignatureMagic.size() == 8,
              "docs/formats.md#export-v1 fixes both magics at 8 bytes");

using Sha256Digest = std::array<uint8_t, 32>;

// Where a writer puts the archive's bytes, in order.
class ArchiveSink {
 public:
  virtual ~ArchiveSink() = default;
  virtual absl::Status Write(std::string_view bytes) = 0;
};

struct ArchiveDescription {
  std::string dataset;
  uint64_t dataset_handle = 0;
  std::string dataset_state;
  int64_t exported_micros = 0;
  uint64_t approval_id = 0;
};

struct ArchiveCounts {
  uint64_t records = 0;
  uint64_t attachments = 0;
  uint64_t attachment_bytes = 0;
  uint64_t archive_bytes = 0;
  Sha256Digest archive_sha256{};  // of every byte written, signature included
};

// The message the signature covers for content digest `digest`.
std::string SignedMessage(const Sha256Digest& digest);
// SHA-256 of a PEM public key's SubjectPublicKeyInfo DER (the signer fingerprint).
absl::StatusOr<Sha256Digest> PublicKeyPemFingerprint(std::string_view pem);

class ArchiveWriter {
 public:
  // Draws the export key, wraps it to `recipient` and writes the preamble, the header and the
  // content stream's header to `sink`.
  static absl::StatusOr<std::unique_ptr<ArchiveWriter>> Create(
      const ArchiveDescription& description, const crypto::RecipientPublicKey& recipient,
      audit::CheckpointSigner* signer, ArchiveSink* sink);
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;
  ~ArchiveWriter();

  absl::Status AddRecord(std::string_view id, std::string_view value);
  // Starts an attachment of exactly `size` bytes, which AppendAttachmentData then supplies
  // (FAILED_PRECONDITION for more, or for another entry or Finish before all of them).
  absl::Status BeginAttachment(std::string_view name, uint64_t size, std::string_view content_type,
                               int64_t created_micros);
  absl::Status AppendAttachmentData(std::string_view data);
  // Writes the trailer, closes the content stream and appends the signature block.
  absl::StatusOr<ArchiveCounts> Finish();

 private:
  class HashingSink;
  ArchiveWriter(std::unique_ptr<HashingSink> hashing, audit::CheckpointSigner* signer);
  absl::Status WriteEntry(const v1::ExportEntry& entry);
  absl::Status Fail(absl::Status status);

  std::unique_ptr<HashingSink> hashing_;
  std::unique_ptr<crypto::StreamEncryptingWriter> content_;
  audit::CheckpointSigner* signer_;
  ArchiveCounts counts_;
  uint64_t attachment_remaining_ = 0;
  absl::Status status_;  // sticky: the first failure
  bool finished_ = false;
};

// What OpenArchive hands out, in archive order.
class ArchiveVisitor {
 public:
  virtual ~ArchiveVisitor() = default;
  virtual absl::Status Record(std::string_view id, std::string_view value) = 0;
  virtual absl::Status BeginAttachment(const v1::ExportEntry::Attachment& attachment) = 0;
  virtual absl::Status AttachmentData(std::string_view data) = 0;
  virtual absl::Status EndAttachment() = 0;
};

struct OpenedArchive {
  v1::ExportHeader header;
  v1::ExportEntry::Trailer trailer;
};

// Reads and parses the preamble and header only; authenticates nothing.
absl::StatusOr<v1::ExportHeader> ReadArchiveHeader(const std::string& path);

// Verifies the archive at `path` against the token public key `token_public_key_pem`, opens the
// export key with `private_key` and hands every entry to `visitor`. Progress phases: "verify"
// (archive bytes hashed) and "decrypt" (content bytes read).
absl::StatusOr<OpenedArchive> OpenArchive(const std::string& path,
                                          const crypto::RecipientPrivateKey& private_key,
                                          std::string_view token_public_key_pem,
                                          ArchiveVisitor* visitor,
                                          const coffer::ProgressFn& progress = {});

}  // namespace coffer::kms::dataset_export

#endif  // COFFER_KMS_FORMATS_EXPORT_ARCHIVE_H_
