#include "crypto/streaming_io.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <string>

#include "crypto/base/status.h"

namespace coffer::crypto {
namespace {

// Zeroes and empties a plaintext buffer, keeping its capacity for reuse.
void Wipe(std::string& buffer) {
  if (!buffer.empty()) OPENSSL_cleanse(buffer.data(), buffer.size());
  buffer.clear();
}

absl::Status ReadExactly(CiphertextSource* source, uint64_t offset, size_t length,
                         std::string* out) {
  COFFER_RETURN_IF_ERROR(source->ReadAt(offset, length, out));
  if (out->size() != length) {
    return MakeError(ErrorCode::kIoError, "ciphertext source returned a short read");
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StringCiphertextSink::Append(std::string_view bytes) {
  out_->append(bytes);
  return absl::OkStatus();
}

absl::Status StringCiphertextSource::ReadAt(uint64_t offset, size_t length, std::string* out) {
  if (offset > bytes_.size() || length > bytes_.size() - offset) {
    return MakeError(ErrorCode::kOutOfRange, "read beyond the end of the ciphertext");
  }
  out->assign(bytes_.substr(offset, length));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StreamEncryptingWriter>> StreamEncryptingWriter::Create(
    const SecretBytes& key, uint32_t key_version, std::string_view context, CiphertextSink* sink,
    uint32_t segment_size) {
  COFFER_ASSIGN_OR_RETURN(StreamSegmentEncrypter encrypter,
                          StreamSegmentEncrypter::Create(key, key_version, context, segment_size));
  COFFER_RETURN_IF_ERROR(sink->Append(encrypter.header()));
  return std::unique_ptr<StreamEncryptingWriter>(
      new StreamEncryptingWriter(std::move(encrypter), sink));
}

StreamEncryptingWriter::StreamEncryptingWriter(StreamSegmentEncrypter encrypter,
                                               CiphertextSink* sink)
    : encrypter_(std::move(encrypter)), sink_(sink) {
  pending_.reserve(encrypter_.segment_size());
  ciphertext_.reserve(encrypter_.segment_size() + kStreamSegmentTagSize);
}

StreamEncryptingWriter::~StreamEncryptingWriter() { Wipe(pending_); }

absl::Status StreamEncryptingWriter::Emit(std::string_view segment_plaintext, bool last) {
  ciphertext_.clear();
  status_ = encrypter_.EncryptSegment(segment_plaintext, last, &ciphertext_);
  if (status_.ok()) status_ = sink_->Append(ciphertext_);
  return status_;
}

absl::Status StreamEncryptingWriter::Write(std::string_view plaintext) {
  COFFER_RETURN_IF_ERROR(status_);
  if (closed_) return MakeError(ErrorCode::kFailedPrecondition, "Write after Close");
  const size_t segment_size = encrypter_.segment_size();
  while (!plaintext.empty()) {
    // A full buffer followed by more bytes cannot be the last segment.
    if (pending_.size() == segment_size) {
      COFFER_RETURN_IF_ERROR(Emit(pending_, /*last=*/false));
      Wipe(pending_);
    }
    // Whole segments with bytes after them skip the buffer (no copy).
    if (pending_.empty() && plaintext.size() > segment_size) {
      COFFER_RETURN_IF_ERROR(Emit(plaintext.substr(0, segment_size), /*last=*/false));
      plaintext.remove_prefix(segment_size);
      continue;
    }
    size_t take = std::min(segment_size - pending_.size(), plaintext.size());
    pending_.append(plaintext.substr(0, take));
    plaintext.remove_prefix(take);
  }
  return absl::OkStatus();
}

absl::Status StreamEncryptingWriter::Close() {
  COFFER_RETURN_IF_ERROR(status_);
  if (closed_) return MakeError(ErrorCode::kFailedPrecondition, "Close called twice");
  absl::Status status = Emit(pending_, /*last=*/true);
  Wipe(pending_);
  closed_ = true;
  return status;
}

absl::StatusOr<std::unique_ptr<StreamDecryptingReader>> StreamDecryptingReader::Create(
    const SecretBytes& key, uint32_t key_version, std::string_view context,
    CiphertextSource* source) {
  COFFER_ASSIGN_OR_RETURN(uint64_t total, source->Size());
  if (total < kStreamHeaderSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "stream is shorter than its header");
  }
  std::string header;
  COFFER_RETURN_IF_ERROR(ReadExactly(source, 0, kStreamHeaderSize, &header));
  COFFER_ASSIGN_OR_RETURN(StreamSegmentDecrypter decrypter,
                          StreamSegmentDecrypter::Create(key, key_version, header, context));
  const uint64_t segment_size = decrypter.segment_size();
  const uint64_t full_segment = segment_size + kStreamSegmentTagSize;
  const uint64_t body = total - kStreamHeaderSize;
  const uint64_t segment_count = (body + full_segment - 1) / full_segment;
  const uint64_t last_size = body - (segment_count == 0 ? 0 : (segment_count - 1) * full_segment);
  if (segment_count == 0 || last_size < kStreamSegmentTagSize) {
    return MakeError(ErrorCode::kCiphertextCorrupt,
                     "stream size does not end in a whole segment (truncated or extended)");
  }
  if (segment_count - 1 > kMaxStreamSegmentIndex) {
    return MakeError(ErrorCode::kCiphertextCorrupt, "stream has more than 2^32 segments");
  }
  const uint64_t plaintext_size =
      (segment_count - 1) * segment_size + (last_size - kStreamSegmentTagSize);
  std::unique_ptr<StreamDecryptingReader> reader(
      new StreamDecryptingReader(std::move(decrypter), source, segment_count, plaintext_size));
  // Authenticating the last segment now makes size() trustworthy and reports truncation or
  // appended data before any byte is returned.
  COFFER_RETURN_IF_ERROR(reader->LoadSegment(segment_count - 1));
  return reader;
}

StreamDecryptingReader::StreamDecryptingReader(StreamSegmentDecrypter decrypter,
                                               CiphertextSource* source, uint64_t segment_count,
                                               uint64_t plaintext_size)
    : decrypter_(std::move(decrypter)),
      source_(source),
      segment_count_(segment_count),
      plaintext_size_(plaintext_size) {}

StreamDecryptingReader::~StreamDecryptingReader() { Wipe(cached_plaintext_); }

absl::Status StreamDecryptingReader::LoadSegment(uint64_t index) {
  if (index == cached_index_) return absl::OkStatus();
  const uint64_t full_segment = uint64_t{decrypter_.segment_size()} + kStreamSegmentTagSize;
  const bool last = index + 1 == segment_count_;
  const uint64_t offset = kStreamHeaderSize + index * full_segment;
  const uint64_t length =
      last ? (plaintext_size_ - index * decrypter_.segment_size()) + kStreamSegmentTagSize
           : full_segment;
  Wipe(cached_plaintext_);
  cached_index_ = UINT64_MAX;
  COFFER_RETURN_IF_ERROR(ReadExactly(source_, offset, length, &ciphertext_));
  COFFER_RETURN_IF_ERROR(decrypter_.DecryptSegment(index, ciphertext_, last, &cached_plaintext_));
  cached_index_ = index;
  return absl::OkStatus();
}

absl::Status StreamDecryptingReader::Read(uint64_t offset, size_t length, std::string* out) {
  Wipe(*out);
  if (offset > plaintext_size_) {
    return MakeError(ErrorCode::kOutOfRange, "read offset beyond the end of the plaintext");
  }
  const uint64_t end = offset + std::min<uint64_t>(length, plaintext_size_ - offset);
  const uint64_t segment_size = decrypter_.segment_size();
  out->reserve(end - offset);
  for (uint64_t position = offset; position < end;) {
    const uint64_t index = position / segment_size;
    absl::Status status = LoadSegment(index);
    if (!status.ok()) {
      Wipe(*out);
      return status;
    }
    const uint64_t within = position - index * segment_size;
    const uint64_t take = std::min<uint64_t>(end - position, cached_plaintext_.size() - within);
    out->append(cached_plaintext_, within, take);
    position += take;
  }
  return absl::OkStatus();
}

}  // namespace coffer::crypto
