// Contiguous-stream wrappers over the stream-v1 format (crypto/streaming_aead.h,
// docs/formats.md#stream-v1): an encrypting writer and a random-access decrypting reader.
//
// Layout of a contiguous stream: header (80 bytes) ‖ segment 0 ‖ segment 1 ‖ … ‖ last segment,
// each segment being its plaintext size + 16 bytes. Every segment but the last is full, so a
// reader derives the segment count and the plaintext size from the ciphertext size alone.
//
// Memory: both hold one segment of plaintext and one of ciphertext at a time, whatever the
// stream's size.
//
// Thread safety: neither wrapper is thread-safe (each keeps a current segment); use one per
// thread. Sinks and sources are borrowed: they must outlive the writer or reader.
//
// Failures: the codes of crypto/streaming_aead.h, plus whatever the sink or source returns.
// A writer that failed stays failed. A reader authenticates the last segment when it is
// created, so size() is authentic and truncation or appended data is reported at once, not at
// the end of a read.

#ifndef COFFER_CRYPTO_STREAMING_IO_H_
#define COFFER_CRYPTO_STREAMING_IO_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "crypto/secret_bytes.h"
#include "crypto/streaming_aead.h"

namespace coffer::crypto {

// Where an encrypting writer puts ciphertext: bytes are appended in order.
class CiphertextSink {
 public:
  virtual ~CiphertextSink() = default;
  virtual absl::Status Append(std::string_view bytes) = 0;
};

// Where a decrypting reader gets ciphertext from: a fixed-size byte range read at any offset.
class CiphertextSource {
 public:
  virtual ~CiphertextSource() = default;
  // The total ciphertext size in bytes.
  virtual absl::StatusOr<uint64_t> Size() = 0;
  // Replaces *out with exactly `length` bytes starting at `offset`, or fails.
  virtual absl::Status ReadAt(uint64_t offset, size_t length, std::string* out) = 0;
};

// A sink that appends to a caller-owned string.
class StringCiphertextSink final : public CiphertextSink {
 public:
  explicit StringCiphertextSink(std::string* out) : out_(out) {}
  absl::Status Append(std::string_view bytes) override;

 private:
  std::string* out_;
};

// A source over caller-owned bytes, which must outlive it.
class StringCiphertextSource final : public CiphertextSource {
 public:
  explicit StringCiphertextSource(std::string_view bytes) : bytes_(bytes) {}
  absl::StatusOr<uint64_t> Size() override { return bytes_.size(); }
  absl::Status ReadAt(uint64_t offset, size_t length, std::string* out) override;

 private:
  std::string_view bytes_;
};

class StreamEncryptingWriter {
 public:
  // Starts a stream under DEK `key` of version `key_version`, bound to `context`, and writes
  // its header to `sink` at once.
  static absl::StatusOr<std::unique_ptr<StreamEncryptingWriter>> Create(
      const SecretBytes& key, uint32_t key_version, std::string_view context, CiphertextSink* sink,
      uint32_t segment_size = kDefaultStreamSegmentSize);

  StreamEncryptingWriter(const StreamEncryptingWriter&) = delete;
  StreamEncryptingWriter& operator=(const StreamEncryptingWriter&) = delete;
  // Wipes the buffered plaintext. A writer destroyed before Close leaves an unfinished stream
  // in the sink, which no reader accepts (it lacks a last segment).
  ~StreamEncryptingWriter();

  // Encrypts `plaintext` (any size), emitting each segment once the next byte shows it is not
  // the last.
  absl::Status Write(std::string_view plaintext);

  // Emits the buffered remainder as the last segment. Required; later calls fail.
  absl::Status Close();

 private:
  StreamEncryptingWriter(StreamSegmentEncrypter encrypter, CiphertextSink* sink);
  absl::Status Emit(std::string_view segment_plaintext, bool last);

  StreamSegmentEncrypter encrypter_;
  CiphertextSink* sink_;
  std::string pending_;     // plaintext not yet encrypted, at most one segment
  std::string ciphertext_;  // reused per segment
  absl::Status status_;     // sticky: the first failure
  bool closed_ = false;
};

class StreamDecryptingReader {
 public:
  // Opens the stream in `source` with DEK `key` of version `key_version` and `context`:
  // verifies the header's key commitment and authenticates the last segment.
  static absl::StatusOr<std::unique_ptr<StreamDecryptingReader>> Create(const SecretBytes& key,
                                                                        uint32_t key_version,
                                                                        std::string_view context,
                                                                        CiphertextSource* source);

  StreamDecryptingReader(const StreamDecryptingReader&) = delete;
  StreamDecryptingReader& operator=(const StreamDecryptingReader&) = delete;
  ~StreamDecryptingReader();  // wipes the cached plaintext segment

  // The authenticated plaintext size.
  uint64_t size() const { return plaintext_size_; }

  // Replaces *out with up to `length` plaintext bytes from `offset` (fewer at the end).
  // OUT_OF_RANGE when offset > size(). On failure *out is empty.
  absl::Status Read(uint64_t offset, size_t length, std::string* out);

 private:
  StreamDecryptingReader(StreamSegmentDecrypter decrypter, CiphertextSource* source,
                         uint64_t segment_count, uint64_t plaintext_size);
  // Makes segment `index` the cached one.
  absl::Status LoadSegment(uint64_t index);

  StreamSegmentDecrypter decrypter_;
  CiphertextSource* source_;
  uint64_t segment_count_;
  uint64_t plaintext_size_;
  uint64_t cached_index_ = UINT64_MAX;  // none
  std::string cached_plaintext_;
  std::string ciphertext_;  // reused per segment
};

}  // namespace coffer::crypto

#endif  // COFFER_CRYPTO_STREAMING_IO_H_
