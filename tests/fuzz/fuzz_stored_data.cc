// Fuzz target: what the data DB stores, read back as if a disk or a restored backup altered it.
//
// Every input goes through every parser of stored bytes: the recycle bin's key and value
// (storage/internal/layout.h), a record or attachment pointer entry in each column family and
// the key version it names (storage/internal/envelope.h), the record-v1 header and RecordAead
// opening, the stream-v1 header, and StreamDecryptingReader over the input as a whole stream
// (crypto/streaming_io.h) — key commitment, segment framing and every segment's decryption —
// under a fixed test key of the version the header names. The seeds are real entries, records
// and streams under that key (tests/fuzz/make_seeds.cc).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/record_aead.h"
#include "crypto/secret_bytes.h"
#include "crypto/streaming_aead.h"
#include "crypto/streaming_io.h"
#include "storage/internal/envelope.h"
#include "storage/internal/layout.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/stored_data_keys.h"

namespace {

namespace internal = ::coffer::storage::internal;
using coffer::fuzz::Fail;

void ParseLayout(std::string_view bytes) {
  auto bin_key = internal::ParseBinKey(bytes);
  if (bin_key.ok() && internal::BinKey(bin_key->cf, bin_key->stored_key) != bytes) {
    Fail("a parsed bin key does not encode back to its bytes");
  }
  for (internal::Cf cf : internal::kAllCfs) {
    internal::ParseEntry(cf, bytes).IgnoreError();
    internal::EntryKeyVersion(cf, bytes).IgnoreError();
  }
  auto bin_value = internal::ParseBinValue(bytes);
  if (bin_value.ok()) {
    internal::ParseEntry(internal::Cf::kRecords, bin_value->entry).IgnoreError();
    internal::ParseEntry(internal::Cf::kAttachmentPointers, bin_value->entry).IgnoreError();
  }
}

void OpenRecord(std::string_view bytes) {
  auto header = coffer::crypto::ParseRecordHeader(bytes);
  if (!header.ok()) return;
  auto aead =
      coffer::crypto::RecordAead::Create(coffer::fuzz::StoredDataKey(), header->key_version);
  if (!aead.ok()) Fail("RecordAead::Create");
  coffer::fuzz::Report("record", aead->Open(bytes, coffer::fuzz::kStoredDataContext).status());
}

void OpenStream(std::string_view bytes) {
  if (bytes.size() < coffer::crypto::kStreamHeaderSize) return;
  auto header =
      coffer::crypto::ParseStreamHeader(bytes.substr(0, coffer::crypto::kStreamHeaderSize));
  if (!header.ok()) return;
  coffer::crypto::StringCiphertextSource source(bytes);
  auto reader = coffer::crypto::StreamDecryptingReader::Create(
      coffer::fuzz::StoredDataKey(), header->key_version, coffer::fuzz::kStoredDataContext,
      &source);
  coffer::fuzz::Report("stream", reader.status());
  if (!reader.ok()) return;
  std::string out;
  uint64_t offset = 0;
  while (offset < (*reader)->size()) {
    if (!(*reader)->Read(offset, 4096, &out).ok()) return;
    if (out.empty()) Fail("a stream read below its size returned nothing");
    offset += out.size();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  ParseLayout(bytes);
  OpenRecord(bytes);
  OpenStream(bytes);
  return 0;
}
