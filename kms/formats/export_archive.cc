#include "kms/formats/export_archive.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "crypto/base/status.h"
#include "crypto/random.h"
#include "crypto/streaming_aead.h"
#include "openssl/bio.h"
#include "openssl/pem.h"
#include "openssl/x509.h"

namespace coffer::kms::dataset_export {
namespace {

constexpr size_t kReadChunk = size_t{1} << 20;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

// An incremental SHA-256.
class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    ok_ = ctx_ != nullptr && EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1;
  }
  void Update(std::string_view bytes) {
    ok_ = ok_ && EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) == 1;
  }
  absl::StatusOr<Sha256Digest> Final() {
    Sha256Digest digest{};
    unsigned int length = 0;
    if (!ok_ || EVP_DigestFinal_ex(ctx_.get(), digest.data(), &length) != 1 ||
        length != digest.size()) {
      return MakeError(ErrorCode::kCryptoLibraryError, "SHA-256 failed");
    }
    ok_ = false;
    return digest;
  }

 private:
  MdCtxPtr ctx_;
  bool ok_;
};

std::string_view AsView(const Sha256Digest& digest) {
  return {reinterpret_cast<const char*>(digest.data()), digest.size()};
}

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(v >> shift));
}
uint32_t GetU32(std::string_view in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<uint8_t>(in[i]);
  return v;
}

absl::Status Corrupt(std::string_view why) {
  return MakeError(ErrorCode::kExportArchiveCorrupt,
                   std::string("export archive: ") + std::string(why));
}

// The content stream's context: label ‖ SHA-256(preamble ‖ header).
std::string ContentContext(const Sha256Digest& head_digest) {
  std::string context(kContentContextLabel);
  context.append(AsView(head_digest));
  return context;
}

std::string Preamble(size_t header_size) {
  std::string preamble(kArchiveMagic);
  preamble.push_back(static_cast<char>(kArchiveVersion));
  PutU32(&preamble, static_cast<uint32_t>(header_size));
  return preamble;
}

// A file read at offsets, closed with the object.
class ArchiveFile {
 public:
  static absl::StatusOr<std::unique_ptr<ArchiveFile>> Open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return MakeError(ErrorCode::kIoError,
                       "cannot open export archive " + path + ": " + std::strerror(errno));
    }
    struct stat st {};
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      return MakeError(ErrorCode::kIoError, "export archive " + path + " is not a regular file");
    }
    return std::unique_ptr<ArchiveFile>(new ArchiveFile(fd, static_cast<uint64_t>(st.st_size)));
  }
  ~ArchiveFile() { ::close(fd_); }
  uint64_t size() const { return size_; }
  absl::Status ReadAt(uint64_t offset, size_t length, std::string* out) const {
    if (offset > size_ || length > size_ - offset) return Corrupt("truncated");
    out->resize(length);
    size_t done = 0;
    while (done < length) {
      ssize_t n =
          ::pread(fd_, out->data() + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return MakeError(ErrorCode::kIoError,
                         std::string("reading the export archive: ") + std::strerror(errno));
      }
      if (n == 0) return Corrupt("truncated while reading (the file shrank)");
      done += static_cast<size_t>(n);
    }
    return absl::OkStatus();
  }

 private:
  ArchiveFile(int fd, uint64_t size) : fd_(fd), size_(size) {}
  int fd_;
  uint64_t size_;
};

// The content range of an archive file as a stream-v1 ciphertext source.
class ContentSource final : public crypto::CiphertextSource {
 public:
  ContentSource(const ArchiveFile* file, uint64_t begin, uint64_t end)
      : file_(file), begin_(begin), end_(end) {}
  absl::StatusOr<uint64_t> Size() override { return end_ - begin_; }
  absl::Status ReadAt(uint64_t offset, size_t length, std::string* out) override {
    if (offset > end_ - begin_ || length > end_ - begin_ - offset) return Corrupt("truncated");
    return file_->ReadAt(begin_ + offset, length, out);
  }

 private:
  const ArchiveFile* file_;
  uint64_t begin_;
  uint64_t end_;
};

// Sequential reads of the decrypted content.
class PlaintextCursor {
 public:
  explicit PlaintextCursor(crypto::StreamDecryptingReader* reader) : reader_(reader) {}
  uint64_t offset() const { return offset_; }
  uint64_t remaining() const { return reader_->size() - offset_; }
  absl::Status Take(size_t length, std::string* out) {
    if (length > remaining()) return Corrupt("content ends inside an entry");
    out->clear();
    std::string piece;
    while (out->size() < length) {
      absl::Status read = reader_->Read(offset_, length - out->size(), &piece);
      if (!read.ok()) return Corrupt("content failed authentication");
      if (piece.empty()) return Corrupt("content ends inside an entry");
      offset_ += piece.size();
      out->append(piece);
    }
    return absl::OkStatus();
  }

 private:
  crypto::StreamDecryptingReader* reader_;
  uint64_t offset_ = 0;
};

}  // namespace

std::string SignedMessage(const Sha256Digest& digest) {
  return audit::DomainMessage(audit::SigningDomain::kExportArchive, AsView(digest));
}

absl::StatusOr<Sha256Digest> PublicKeyPemFingerprint(std::string_view pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), &BIO_free);
  if (bio == nullptr) return MakeError(ErrorCode::kCryptoLibraryError, "BIO_new_mem_buf");
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr), &EVP_PKEY_free);
  if (key == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the token public key is not a PEM public key (audit-public-key.pem)");
  }
  unsigned char* der = nullptr;
  const int length = i2d_PUBKEY(key.get(), &der);
  if (length <= 0) return MakeError(ErrorCode::kCryptoLibraryError, "i2d_PUBKEY");
  Sha256Digest digest{};
  SHA256(der, static_cast<size_t>(length), digest.data());
  OPENSSL_free(der);
  return digest;
}

// ---------------------------------------------------------------------------------------------
// Writer

// Forwards to the archive sink, hashing the signed prefix and the whole archive.
class ArchiveWriter::HashingSink final : public crypto::CiphertextSink {
 public:
  explicit HashingSink(ArchiveSink* sink) : sink_(sink) {}
  absl::Status Append(std::string_view bytes) override {
    if (!signing_) signed_.Update(bytes);
    whole_.Update(bytes);
    written_ += bytes.size();
    return sink_->Write(bytes);
  }
  // Ends the signed prefix and returns its digest D.
  absl::StatusOr<Sha256Digest> EndSigned() {
    signing_ = true;
    return signed_.Final();
  }
  absl::StatusOr<Sha256Digest> EndWhole() { return whole_.Final(); }
  uint64_t written() const { return written_; }

 private:
  ArchiveSink* sink_;
  Sha256 signed_;
  Sha256 whole_;
  bool signing_ = false;
  uint64_t written_ = 0;
};

ArchiveWriter::ArchiveWriter(std::unique_ptr<HashingSink> hashing, audit::CheckpointSigner* signer)
    : hashing_(std::move(hashing)), signer_(signer) {}
ArchiveWriter::~ArchiveWriter() = default;

absl::StatusOr<std::unique_ptr<ArchiveWriter>> ArchiveWriter::Create(
    const ArchiveDescription& description, const crypto::RecipientPublicKey& recipient,
    audit::CheckpointSigner* signer, ArchiveSink* sink) {
  if (signer == nullptr || sink == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "ArchiveWriter needs a signer and a sink");
  }
  COFFER_ASSIGN_OR_RETURN(std::string signer_pem, signer->PublicKeyPem());
  COFFER_ASSIGN_OR_RETURN(Sha256Digest signer_fingerprint, PublicKeyPemFingerprint(signer_pem));
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes export_key,
                          crypto::RandomSecret(crypto::kRecipientWrappedKeySize));
  COFFER_ASSIGN_OR_RETURN(std::string wrapped, recipient.Wrap(export_key));

  v1::ExportHeader header;
  header.set_format_version(kArchiveVersion);
  header.set_dataset(description.dataset);
  header.set_dataset_handle(description.dataset_handle);
  header.set_dataset_state(description.dataset_state);
  header.set_exported_micros(description.exported_micros);
  header.set_recipient_key_type(static_cast<uint32_t>(recipient.type()));
  header.set_recipient_fingerprint(
      std::string(reinterpret_cast<const char*>(recipient.fingerprint().data()), 32));
  header.set_wrapped_key(std::move(wrapped));
  header.set_segment_size(crypto::kDefaultStreamSegmentSize);
  header.set_signer_fingerprint(std::string(AsView(signer_fingerprint)));
  header.set_approval_id(description.approval_id);
  std::string header_bytes;
  if (!header.SerializeToString(&header_bytes) || header_bytes.size() > kMaxHeaderSize) {
    return MakeError(ErrorCode::kInvalidArgument, "the export header does not serialize");
  }
  std::string head = Preamble(header_bytes.size());
  head.append(header_bytes);
  Sha256 head_hash;
  head_hash.Update(head);
  COFFER_ASSIGN_OR_RETURN(Sha256Digest head_digest, head_hash.Final());

  auto hashing = std::make_unique<HashingSink>(sink);
  COFFER_RETURN_IF_ERROR(hashing->Append(head));
  std::unique_ptr<ArchiveWriter> writer(new ArchiveWriter(std::move(hashing), signer));
  COFFER_ASSIGN_OR_RETURN(writer->content_,
                          crypto::StreamEncryptingWriter::Create(
                              export_key, kContentKeyVersion, ContentContext(head_digest),
                              writer->hashing_.get(), crypto::kDefaultStreamSegmentSize));
  return writer;
}

absl::Status ArchiveWriter::Fail(absl::Status status) {
  if (status_.ok()) status_ = status;
  return status;
}

absl::Status ArchiveWriter::WriteEntry(const v1::ExportEntry& entry) {
  COFFER_RETURN_IF_ERROR(status_);
  if (finished_) return MakeError(ErrorCode::kFailedPrecondition, "the archive is finished");
  if (attachment_remaining_ != 0) {
    return Fail(MakeError(ErrorCode::kFailedPrecondition,
                          "an attachment's data is incomplete in the export archive"));
  }
  std::string bytes;
  PutU32(&bytes, 0);
  if (!entry.AppendToString(&bytes) || bytes.size() - 4 > kMaxEntrySize) {
    return Fail(MakeError(ErrorCode::kInvalidArgument, "an export entry is too large"));
  }
  const auto length = static_cast<uint32_t>(bytes.size() - 4);
  for (int i = 0; i < 4; ++i) bytes[i] = static_cast<char>(length >> (24 - 8 * i));
  absl::Status written = content_->Write(bytes);
  OPENSSL_cleanse(bytes.data(), bytes.size());
  if (!written.ok()) return Fail(written);
  return absl::OkStatus();
}

absl::Status ArchiveWriter::AddRecord(std::string_view id, std::string_view value) {
  v1::ExportEntry entry;
  entry.mutable_record()->set_id(std::string(id));
  entry.mutable_record()->set_value(std::string(value));
  COFFER_RETURN_IF_ERROR(WriteEntry(entry));
  ++counts_.records;
  return absl::OkStatus();
}

absl::Status ArchiveWriter::BeginAttachment(std::string_view name, uint64_t size,
                                            std::string_view content_type, int64_t created_micros) {
  v1::ExportEntry entry;
  auto* attachment = entry.mutable_attachment();
  attachment->set_name(std::string(name));
  attachment->set_size(size);
  attachment->set_content_type(std::string(content_type));
  attachment->set_created_micros(created_micros);
  COFFER_RETURN_IF_ERROR(WriteEntry(entry));
  ++counts_.attachments;
  attachment_remaining_ = size;
  return absl::OkStatus();
}

absl::Status ArchiveWriter::AppendAttachmentData(std::string_view data) {
  COFFER_RETURN_IF_ERROR(status_);
  if (data.size() > attachment_remaining_) {
    return Fail(MakeError(ErrorCode::kFailedPrecondition,
                          "more attachment data than the attachment's size"));
  }
  absl::Status written = content_->Write(data);
  if (!written.ok()) return Fail(written);
  attachment_remaining_ -= data.size();
  counts_.attachment_bytes += data.size();
  return absl::OkStatus();
}

absl::StatusOr<ArchiveCounts> ArchiveWriter::Finish() {
  v1::ExportEntry entry;
  entry.mutable_trailer()->set_records(counts_.records);
  entry.mutable_trailer()->set_attachments(counts_.attachments);
  entry.mutable_trailer()->set_attachment_bytes(counts_.attachment_bytes);
  COFFER_RETURN_IF_ERROR(WriteEntry(entry));
  finished_ = true;
  absl::Status closed = content_->Close();
  if (!closed.ok()) return Fail(closed);
  COFFER_ASSIGN_OR_RETURN(Sha256Digest digest, hashing_->EndSigned());
  absl::StatusOr<std::string> signature = signer_->Sign(SignedMessage(digest));
  if (!signature.ok()) return Fail(signature.status());
  if (signature->empty() || signature->size() > kMaxSignatureSize) {
    return Fail(MakeError(ErrorCode::kCryptoLibraryError, "the signature has an unexpected size"));
  }
  std::string block = *signature;
  block.push_back(static_cast<char>(signature->size() >> 8));
  block.push_back(static_cast<char>(signature->size() & 0xFF));
  block.append(kSignatureMagic);
  absl::Status written = hashing_->Append(block);
  if (!written.ok()) return Fail(written);
  counts_.archive_bytes = hashing_->written();
  COFFER_ASSIGN_OR_RETURN(counts_.archive_sha256, hashing_->EndWhole());
  return counts_;
}

// ---------------------------------------------------------------------------------------------
// Reader

namespace {

struct ParsedHead {
  v1::ExportHeader header;
  uint64_t header_end = 0;
  Sha256Digest head_digest{};
};

absl::StatusOr<ParsedHead> ParseHead(const ArchiveFile& file) {
  if (file.size() < kPreambleSize) return Corrupt("too short to be an export archive");
  std::string preamble;
  COFFER_RETURN_IF_ERROR(file.ReadAt(0, kPreambleSize, &preamble));
  if (std::string_view(preamble).substr(0, kArchiveMagic.size()) != kArchiveMagic) {
    return Corrupt("not an export archive (bad magic)");
  }
  if (static_cast<uint8_t>(preamble[8]) != kArchiveVersion) {
    return Corrupt("unsupported export archive version " +
                   std::to_string(static_cast<uint8_t>(preamble[8])));
  }
  const uint32_t header_size = GetU32(std::string_view(preamble).substr(9));
  if (header_size == 0 || header_size > kMaxHeaderSize ||
      header_size > file.size() - kPreambleSize) {
    return Corrupt("the header length is out of range (truncated or damaged)");
  }
  std::string header_bytes;
  COFFER_RETURN_IF_ERROR(file.ReadAt(kPreambleSize, header_size, &header_bytes));
  ParsedHead head;
  if (!head.header.ParseFromString(header_bytes) ||
      head.header.format_version() != kArchiveVersion) {
    return Corrupt("the header does not parse");
  }
  const uint32_t segment_size = head.header.segment_size();
  if (segment_size < crypto::kMinStreamSegmentSize ||
      segment_size > crypto::kMaxStreamSegmentSize ||
      head.header.recipient_fingerprint().size() != 32 ||
      head.header.signer_fingerprint().size() != 32 || head.header.wrapped_key().empty()) {
    return Corrupt("the header has a field out of range");
  }
  Sha256 hash;
  hash.Update(preamble);
  hash.Update(header_bytes);
  COFFER_ASSIGN_OR_RETURN(head.head_digest, hash.Final());
  head.header_end = kPreambleSize + header_size;
  return head;
}

// The signature block at the end of an archive: where the signed content ends, and the
// signature.
struct SignatureBlock {
  uint64_t content_end = 0;
  std::string signature;
};

absl::StatusOr<SignatureBlock> ReadSignatureBlock(ArchiveFile& file, const ParsedHead& head) {
  const uint64_t size = file.size();
  if (size < head.header_end + crypto::kStreamHeaderSize + kSignatureTrailerSize) {
    return Corrupt("truncated (no content or no signature)");
  }
  std::string tail;
  COFFER_RETURN_IF_ERROR(file.ReadAt(size - kSignatureTrailerSize, kSignatureTrailerSize, &tail));
  if (std::string_view(tail).substr(2) != kSignatureMagic) {
    return Corrupt("truncated or extended (no signature block at the end)");
  }
  const size_t signature_size =
      (static_cast<size_t>(static_cast<uint8_t>(tail[0])) << 8) | static_cast<uint8_t>(tail[1]);
  if (signature_size == 0 || signature_size > kMaxSignatureSize ||
      size - kSignatureTrailerSize - head.header_end < crypto::kStreamHeaderSize + signature_size) {
    return Corrupt("the signature length is out of range");
  }
  SignatureBlock block;
  block.content_end = size - kSignatureTrailerSize - signature_size;
  COFFER_RETURN_IF_ERROR(file.ReadAt(block.content_end, signature_size, &block.signature));
  return block;
}

// Checks the block's signature over every byte before it, by the token key given, and that the
// header names that key as its signer.
absl::Status VerifySignature(ArchiveFile& file, const ParsedHead& head, const SignatureBlock& block,
                             std::string_view token_public_key_pem,
                             const coffer::ProgressFn& progress) {
  absl::StatusOr<audit::CheckpointVerifier> verifier =
      audit::CheckpointVerifier::FromPublicKeyPem(token_public_key_pem);
  if (!verifier.ok()) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "the token public key is not an EC P-256 PEM public key "
                     "(audit-public-key.pem)");
  }
  COFFER_ASSIGN_OR_RETURN(Sha256Digest token_fingerprint,
                          PublicKeyPemFingerprint(token_public_key_pem));
  if (head.header.signer_fingerprint() != AsView(token_fingerprint)) {
    return Corrupt(
        "signed by another key than the token public key given (another daemon's token, or a "
        "forged header)");
  }
  Sha256 hash;
  std::string chunk;
  for (uint64_t offset = 0; offset < block.content_end;) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(kReadChunk, block.content_end - offset));
    COFFER_RETURN_IF_ERROR(file.ReadAt(offset, n, &chunk));
    hash.Update(chunk);
    offset += n;
    if (progress) progress({"verify", offset, block.content_end});
  }
  COFFER_ASSIGN_OR_RETURN(Sha256Digest digest, hash.Final());
  if (!verifier->Verify(SignedMessage(digest), block.signature).ok()) {
    return Corrupt("the signature does not verify: the archive was altered or damaged");
  }
  return absl::OkStatus();
}

// Hands every entry of the decrypted content to `visitor`, and returns the trailer once its
// counts match what came before it and nothing follows it.
absl::StatusOr<v1::ExportEntry::Trailer> ReadContent(crypto::StreamDecryptingReader* reader,
                                                     ArchiveVisitor* visitor,
                                                     const coffer::ProgressFn& progress) {
  PlaintextCursor cursor(reader);
  const uint64_t total = reader->size();
  uint64_t records = 0, attachments = 0, attachment_bytes = 0;
  std::string bytes;
  absl::Cleanup wipe = [&bytes] { OPENSSL_cleanse(bytes.data(), bytes.size()); };
  std::optional<v1::ExportEntry::Trailer> trailer;
  while (!trailer.has_value()) {
    if (cursor.remaining() == 0) return Corrupt("the content ends without a trailer");
    COFFER_RETURN_IF_ERROR(cursor.Take(4, &bytes));
    const uint32_t length = GetU32(bytes);
    if (length > kMaxEntrySize) return Corrupt("an entry is larger than the format allows");
    COFFER_RETURN_IF_ERROR(cursor.Take(length, &bytes));
    v1::ExportEntry entry;
    if (!entry.ParseFromString(bytes)) return Corrupt("an entry does not parse");
    switch (entry.entry_case()) {
      case v1::ExportEntry::kRecord:
        COFFER_RETURN_IF_ERROR(visitor->Record(entry.record().id(), entry.record().value()));
        ++records;
        break;
      case v1::ExportEntry::kAttachment: {
        COFFER_RETURN_IF_ERROR(visitor->BeginAttachment(entry.attachment()));
        uint64_t left = entry.attachment().size();
        if (left > cursor.remaining()) return Corrupt("an attachment runs past the content");
        while (left > 0) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(left, kReadChunk));
          COFFER_RETURN_IF_ERROR(cursor.Take(n, &bytes));
          COFFER_RETURN_IF_ERROR(visitor->AttachmentData(bytes));
          left -= n;
          attachment_bytes += n;
          if (progress) progress({"decrypt", cursor.offset(), total});
        }
        COFFER_RETURN_IF_ERROR(visitor->EndAttachment());
        ++attachments;
        break;
      }
      case v1::ExportEntry::kTrailer:
        trailer = entry.trailer();
        break;
      default:
        return Corrupt("an entry of an unknown kind");
    }
    if (progress) progress({"decrypt", cursor.offset(), total});
  }
  if (cursor.remaining() != 0) return Corrupt("data after the trailer");
  if (trailer->records() != records || trailer->attachments() != attachments ||
      trailer->attachment_bytes() != attachment_bytes) {
    return Corrupt("the trailer's counts differ from the content");
  }
  return *trailer;
}

}  // namespace

absl::StatusOr<v1::ExportHeader> ReadArchiveHeader(const std::string& path) {
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<ArchiveFile> file, ArchiveFile::Open(path));
  COFFER_ASSIGN_OR_RETURN(ParsedHead head, ParseHead(*file));
  return head.header;
}

absl::StatusOr<OpenedArchive> OpenArchive(const std::string& path,
                                          const crypto::RecipientPrivateKey& private_key,
                                          std::string_view token_public_key_pem,
                                          ArchiveVisitor* visitor,
                                          const coffer::ProgressFn& progress) {
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<ArchiveFile> file, ArchiveFile::Open(path));
  COFFER_ASSIGN_OR_RETURN(ParsedHead head, ParseHead(*file));
  COFFER_ASSIGN_OR_RETURN(SignatureBlock block, ReadSignatureBlock(*file, head));
  // Pass 1: the signature over everything before it, by the expected token key.
  COFFER_RETURN_IF_ERROR(VerifySignature(*file, head, block, token_public_key_pem, progress));

  // The recipient.
  if (head.header.recipient_key_type() != static_cast<uint32_t>(private_key.type()) ||
      head.header.recipient_fingerprint() !=
          std::string_view(reinterpret_cast<const char*>(private_key.fingerprint().data()), 32)) {
    return MakeError(ErrorCode::kExportWrongRecipient,
                     "the private key is not this archive's recipient (its public key's "
                     "fingerprint differs)");
  }
  COFFER_ASSIGN_OR_RETURN(crypto::SecretBytes export_key,
                          private_key.Unwrap(head.header.wrapped_key()));

  // Pass 2: the content.
  ContentSource source(file.get(), head.header_end, block.content_end);
  absl::StatusOr<std::unique_ptr<crypto::StreamDecryptingReader>> reader =
      crypto::StreamDecryptingReader::Create(export_key, kContentKeyVersion,
                                             ContentContext(head.head_digest), &source);
  if (!reader.ok()) {
    if (ErrorCodeOf(reader.status()) == ErrorCode::kIoError) return reader.status();
    return Corrupt("the content does not open under the export key (damaged or truncated)");
  }
  OpenedArchive opened;
  opened.header = head.header;
  COFFER_ASSIGN_OR_RETURN(opened.trailer, ReadContent(reader->get(), visitor, progress));
  return opened;
}

}  // namespace coffer::kms::dataset_export
