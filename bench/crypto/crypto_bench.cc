// Crypto-layer throughput: record Seal/Open by size, the 256 MiB stream, HMAC of a 32-byte id.
// scripts/bench-crypto runs this beside `openssl speed -evp aes-256-gcm` and prints the ratios.
// Figures are in-memory CPU throughput; no storage durability mode applies.

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>

#include "crypto/hmac.h"
#include "crypto/internal/aes_gcm.h"
#include "crypto/record_aead.h"
#include "crypto/secret_bytes.h"
#include "crypto/streaming_io.h"

// Google Benchmark's `for (auto _ : state)` loop variable is unused by design.
// NOLINTBEGIN(clang-analyzer-deadcode.DeadStores)
namespace coffer::crypto {
namespace {

SecretBytes BenchKey(char fill) {
  std::string bytes(32, fill);
  auto key = SecretBytes::CopyFrom({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  if (!key.ok()) std::abort();
  return std::move(key).value();
}

RecordAead BenchAead() {
  auto aead = RecordAead::Create(BenchKey('k'), 1);
  if (!aead.ok()) std::abort();
  return std::move(aead).value();
}

constexpr std::string_view kAssociatedData = "records|dataset-0001|records|v1|0123456789abcdef";

void BM_RecordSeal(benchmark::State& state) {
  RecordAead aead = BenchAead();
  std::string plaintext(static_cast<size_t>(state.range(0)), 'p');
  std::string out;
  out.reserve(plaintext.size() + kRecordOverhead);
  for (auto _ : state) {
    out.clear();
    if (!aead.SealTo(plaintext, kAssociatedData, &out).ok()) state.SkipWithError("seal failed");
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RecordSeal)->Arg(64)->Arg(1024)->Arg(64 << 10)->Arg(1 << 20);

void BM_RecordOpen(benchmark::State& state) {
  RecordAead aead = BenchAead();
  std::string sealed =
      *aead.Seal(std::string(static_cast<size_t>(state.range(0)), 'p'), kAssociatedData);
  for (auto _ : state) {
    auto opened = aead.Open(sealed, kAssociatedData);
    if (!opened.ok()) state.SkipWithError("open failed");
    benchmark::DoNotOptimize(opened->data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_RecordOpen)->Arg(64)->Arg(1024)->Arg(64 << 10)->Arg(1 << 20);

// The bare GCM primitive with a fixed nonce: the record format's own cost is the difference.
void BM_AesGcmSealPrimitive(benchmark::State& state) {
  auto gcm = internal::AesGcm256::Create(BenchKey('k'));
  std::string plaintext(static_cast<size_t>(state.range(0)), 'p');
  std::string out(plaintext.size() + internal::kAesGcmTagSize, '\0');
  const uint8_t nonce[internal::kAesGcmNonceSize] = {};
  for (auto _ : state) {
    if (!gcm->Seal(nonce, plaintext, "", kAssociatedData,
                   absl::MakeSpan(reinterpret_cast<uint8_t*>(out.data()), out.size()))
             .ok()) {
      state.SkipWithError("seal failed");
    }
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(state.iterations() * state.range(0));
}
BENCHMARK(BM_AesGcmSealPrimitive)->Arg(64)->Arg(1024)->Arg(64 << 10)->Arg(1 << 20);

constexpr size_t kStreamBytes = size_t{256} << 20;
constexpr size_t kWriteChunk = size_t{1} << 20;

class CountingSink final : public CiphertextSink {
 public:
  absl::Status Append(std::string_view bytes) override {
    bytes_ += bytes.size();
    benchmark::DoNotOptimize(bytes.data());
    return absl::OkStatus();
  }
  size_t bytes_ = 0;
};

void BM_StreamEncrypt256MiB(benchmark::State& state) {
  SecretBytes key = BenchKey('k');
  std::string chunk(kWriteChunk, 'p');
  for (auto _ : state) {
    CountingSink sink;
    auto writer = StreamEncryptingWriter::Create(key, 1, "dataset|name", &sink);
    if (!writer.ok()) state.SkipWithError("create failed");
    for (size_t done = 0; done < kStreamBytes; done += chunk.size()) {
      if (!(*writer)->Write(chunk).ok()) state.SkipWithError("write failed");
    }
    if (!(*writer)->Close().ok()) state.SkipWithError("close failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kStreamBytes));
}
BENCHMARK(BM_StreamEncrypt256MiB)->Unit(benchmark::kMillisecond);

void BM_StreamDecrypt256MiB(benchmark::State& state) {
  SecretBytes key = BenchKey('k');
  std::string ciphertext;
  {
    StringCiphertextSink sink(&ciphertext);
    auto writer = StreamEncryptingWriter::Create(key, 1, "dataset|name", &sink);
    std::string chunk(kWriteChunk, 'p');
    for (size_t done = 0; done < kStreamBytes; done += chunk.size()) {
      if (!(*writer)->Write(chunk).ok()) std::abort();
    }
    if (!(*writer)->Close().ok()) std::abort();
  }
  std::string out;
  for (auto _ : state) {
    StringCiphertextSource source(ciphertext);
    auto reader = StreamDecryptingReader::Create(key, 1, "dataset|name", &source);
    if (!reader.ok()) state.SkipWithError("open failed");
    for (uint64_t offset = 0; offset < (*reader)->size(); offset += out.size()) {
      if (!(*reader)->Read(offset, kWriteChunk, &out).ok()) state.SkipWithError("read failed");
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kStreamBytes));
}
BENCHMARK(BM_StreamDecrypt256MiB)->Unit(benchmark::kMillisecond);

void BM_HmacSha256Id32(benchmark::State& state) {
  auto hmac = HmacSha256::Create(BenchKey('h'));
  std::string id(32, 'i');
  for (auto _ : state) {
    auto tag = hmac->Compute(id);
    benchmark::DoNotOptimize(tag->data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * 32);
}
BENCHMARK(BM_HmacSha256Id32);

}  // namespace
}  // namespace coffer::crypto
// NOLINTEND(clang-analyzer-deadcode.DeadStores)

BENCHMARK_MAIN();
