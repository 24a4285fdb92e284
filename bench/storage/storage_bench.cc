// Storage benchmarks (scripts/bench-storage runs them and prints the ratios).
//
//  - Encrypted 1 KiB and 16 KiB record put/get (RecordStore: HMAC of the id, AES-256-GCM
//    envelope) against plain RocksDB put/get of the same ids and values, both opened with
//    DataDbRocksOptions (same cache, memtable budget, no compression) and the durability named in
//    the benchmark (wal: acknowledged in the WAL, no fsync). Ids are drawn at random from
//    --records ids (default 200,000) for 1 KiB values, and from a sixteenth as many for 16 KiB
//    (the same bytes loaded), which are loaded before the gets.
//  - Attachment write and read throughput for 16 MiB and 256 MiB streams (1 GiB with
//    --attachment_1gib), with the process's peak RSS during the benchmark as a counter.
//  - Re-encryption of --reencrypt_records 1 KiB records (default 200,000) after a rotation,
//    as records per second; then again with a foreground reader, whose get p99 during the job
//    is reported beside the p99 of the same reads on the same data just before it.
// Keys come from storage/testing's FakeKeyProvider: cached keys, i.e. the hot path. Rates are
// per wall-clock second (UseRealTime: RocksDB's background work counts).

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "rocksdb/cache.h"
#include "rocksdb/db.h"
#include "rocksdb/write_buffer_manager.h"
#include "storage/attachment_store.h"
#include "storage/data_db.h"
#include "storage/record_store.h"
#include "storage/reencryption.h"
#include "storage/testing/fakes.h"
#include "tests/testing/peak_rss.h"

namespace coffer::storage {
namespace {

constexpr uint64_t kDataset = 0xBE7C;
constexpr size_t kValueSize = 1024;  // re-encryption's records

uint64_t g_records = 200000;
uint64_t g_reencrypt_records = 200000;
bool g_attachment_1gib = false;

class ScratchDir {
 public:
  ScratchDir() {
    const char* base = std::getenv("COFFER_BENCH_DIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/coffer-bench-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (mkdtemp(buffer.data()) == nullptr) std::abort();
    path_ = buffer.data();
  }
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  ~ScratchDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Fixed seeds on purpose: every run draws the same ids and values.
std::mt19937_64 FixedSeed(uint64_t seed) { return std::mt19937_64(seed); }

std::string IdOf(uint64_t i) { return "customer-" + std::to_string(i); }

std::string RandomValue(std::mt19937_64* random, size_t size = kValueSize) {
  std::string value(size, '\0');
  for (size_t i = 0; i < value.size(); i += 8) {
    uint64_t word = (*random)();
    std::memcpy(&value[i], &word, 8);
  }
  return value;
}

// An encrypted data DB and a plain RocksDB with identical options, in one scratch directory,
// for values of `value_size` bytes under `id_count` ids.
struct RecordFixture {
  explicit RecordFixture(size_t value_bytes = kValueSize, uint64_t ids = g_records)
      : value_size(value_bytes), id_count(ids) {
    if (!keys.CreateDataset(kDataset).ok()) std::abort();
    policies.Set(kDataset, DatasetPolicy{});
    auto opened = DataDb::Open(dir.Sub("data"), options);
    if (!opened.ok()) std::abort();
    db = std::move(*opened);
    records = std::make_unique<RecordStore>(db.get(), &keys, &policies, &clock);

    cache = rocksdb::NewLRUCache(options.block_cache_bytes);
    wbm = std::make_shared<rocksdb::WriteBufferManager>(options.memtable_budget_bytes, cache,
                                                        /*allow_stall=*/true);
    rocksdb::Options rocks = DataDbRocksOptions(options, cache, wbm);
    rocksdb::DB* raw = nullptr;
    if (!rocksdb::DB::Open(rocks, dir.Sub("plain"), &raw).ok()) std::abort();
    plain.reset(raw);
    plain_write.sync = options.durability == Durability::kSync;
  }
  ~RecordFixture() {
    records.reset();
    db.reset();
    plain.reset();
  }
  // Flushes and fully compacts both databases, so each benchmark starts from the same settled
  // state and no background compaction left over from a load or another benchmark runs during
  // it (the order of the benchmarks would otherwise favour whichever runs later).
  void Settle() {
    rocksdb::CompactRangeOptions compact;
    compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    for (internal::Cf cf : internal::kAllCfs) {
      if (!db->rocks()->Flush(rocksdb::FlushOptions(), db->cf(cf)).ok()) std::abort();
    }
    if (!db->rocks()
             ->CompactRange(compact, db->cf(internal::Cf::kRecords), nullptr, nullptr)
             .ok() ||
        !plain->Flush(rocksdb::FlushOptions()).ok() ||
        !plain->CompactRange(compact, nullptr, nullptr).ok()) {
      std::abort();
    }
  }
  // Loads every id once into both stores (outside the timed loops).
  void Load() {
    if (loaded) return;
    std::mt19937_64 random = FixedSeed(1);
    for (uint64_t i = 0; i < id_count; ++i) {
      std::string value = RandomValue(&random, value_size);
      if (!records->Put(kDataset, IdOf(i), value).ok()) std::abort();
      if (!plain->Put(plain_write, IdOf(i), value).ok()) std::abort();
    }
    loaded = true;
  }

  size_t value_size;
  uint64_t id_count;
  ScratchDir dir;
  DataDbOptions options;
  testing::FakeKeyProvider keys;
  testing::FakeDatasetPolicies policies;
  testing::FakeClock clock;
  std::unique_ptr<DataDb> db;
  std::unique_ptr<RecordStore> records;
  std::shared_ptr<rocksdb::Cache> cache;
  std::shared_ptr<rocksdb::WriteBufferManager> wbm;
  std::unique_ptr<rocksdb::DB> plain;
  rocksdb::WriteOptions plain_write;
  bool loaded = false;
};

// One fixture per value size: 1 KiB values under --records ids, 16 KiB under a sixteenth as many.
RecordFixture& Records(size_t value_size) {
  static auto* small = new RecordFixture(1024, g_records);  // live until exit; scratch dirs
  static auto* large = new RecordFixture(16384, std::max<uint64_t>(g_records / 16, 1));
  return value_size == 1024 ? *small : *large;
}

void BM_EncryptedPut(benchmark::State& state, size_t value_size) {
  RecordFixture& f = Records(value_size);
  f.Settle();
  std::mt19937_64 random = FixedSeed(2);
  std::string value = RandomValue(&random, value_size);
  for (auto _ : state) {
    if (!f.records->Put(kDataset, IdOf(random() % f.id_count), value).ok()) {
      state.SkipWithError("put failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * value_size));
}

void BM_PlainPut(benchmark::State& state, size_t value_size) {
  RecordFixture& f = Records(value_size);
  f.Settle();
  std::mt19937_64 random = FixedSeed(2);
  std::string value = RandomValue(&random, value_size);
  for (auto _ : state) {
    if (!f.plain->Put(f.plain_write, IdOf(random() % f.id_count), value).ok()) {
      state.SkipWithError("put failed");
      break;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * value_size));
}

void BM_EncryptedGet(benchmark::State& state, size_t value_size) {
  RecordFixture& f = Records(value_size);
  f.Load();
  f.Settle();
  std::mt19937_64 random = FixedSeed(3);
  for (auto _ : state) {
    auto value = f.records->Get(kDataset, IdOf(random() % f.id_count));
    if (!value.ok()) {
      state.SkipWithError("get failed");
      break;
    }
    benchmark::DoNotOptimize(value->data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * value_size));
}

void BM_PlainGet(benchmark::State& state, size_t value_size) {
  RecordFixture& f = Records(value_size);
  f.Load();
  f.Settle();
  std::mt19937_64 random = FixedSeed(3);
  std::string value;
  for (auto _ : state) {
    if (!f.plain->Get(rocksdb::ReadOptions(), IdOf(random() % f.id_count), &value).ok()) {
      state.SkipWithError("get failed");
      break;
    }
    benchmark::DoNotOptimize(value.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * value_size));
}

// Attachments: one data DB per benchmark, 64 KiB segments, 1 MiB appends and reads.
struct AttachmentFixture {
  AttachmentFixture() {
    if (!keys.CreateDataset(kDataset).ok()) std::abort();
    policies.Set(kDataset, DatasetPolicy{});
    auto opened = DataDb::Open(dir.Sub("data"), DataDbOptions{});
    if (!opened.ok()) std::abort();
    db = std::move(*opened);
    store = std::make_unique<AttachmentStore>(db.get(), &keys, &policies, &clock);
  }
  ~AttachmentFixture() {
    store.reset();
    db.reset();
  }
  bool Write(uint64_t size, const std::string& chunk) {
    auto upload = store->BeginUpload(kDataset, "bench.bin", "application/octet-stream");
    if (!upload.ok()) return false;
    for (uint64_t done = 0; done < size; done += chunk.size()) {
      if (!(*upload)->Append(chunk).ok()) return false;
    }
    return (*upload)->Commit().ok();
  }
  ScratchDir dir;
  testing::FakeKeyProvider keys;
  testing::FakeDatasetPolicies policies;
  testing::FakeClock clock;
  std::unique_ptr<DataDb> db;
  std::unique_ptr<AttachmentStore> store;
};

constexpr size_t kChunk = 1 << 20;

void BM_AttachmentWrite_Wal(benchmark::State& state) {
  const auto size = static_cast<uint64_t>(state.range(0)) << 20;
  AttachmentFixture f;
  std::mt19937_64 random = FixedSeed(4);
  std::string chunk(kChunk, '\0');
  for (char& byte : chunk) byte = static_cast<char>(random());
  coffer::testing::ResetPeakRss();
  for (auto _ : state) {
    if (!f.Write(size, chunk)) {
      state.SkipWithError("upload failed");
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.counters["peak_rss_MiB"] = static_cast<double>(coffer::testing::PeakRssBytes()) / (1 << 20);
}

void BM_AttachmentRead_Wal(benchmark::State& state) {
  const auto size = static_cast<uint64_t>(state.range(0)) << 20;
  AttachmentFixture f;
  std::mt19937_64 random = FixedSeed(5);
  std::string chunk(kChunk, '\0');
  for (char& byte : chunk) byte = static_cast<char>(random());
  if (!f.Write(size, chunk)) {
    state.SkipWithError("upload failed");
    return;
  }
  coffer::testing::ResetPeakRss();
  std::string out;
  for (auto _ : state) {
    auto reader = f.store->Open(kDataset, "bench.bin");
    if (!reader.ok()) {
      state.SkipWithError("open failed");
      break;
    }
    for (uint64_t offset = 0; offset < size; offset += kChunk) {
      if (!(*reader)->Read(offset, kChunk, &out).ok()) {
        state.SkipWithError("read failed");
        return;
      }
      benchmark::DoNotOptimize(out.data());
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * size));
  state.counters["peak_rss_MiB"] = static_cast<double>(coffer::testing::PeakRssBytes()) / (1 << 20);
}

void AttachmentSizes(benchmark::internal::Benchmark* b) {
  b->Arg(16)->Arg(256);
  if (g_attachment_1gib) b->Arg(1024);
  b->ArgName("MiB")->Unit(benchmark::kMillisecond)->Iterations(2)->UseRealTime();
}

// Re-encryption: loads the records under version 1, rotates, and times the job alone.
void BM_Reencryption_1KiB_Wal(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<RecordFixture>();
    auto attachments =
        std::make_unique<AttachmentStore>(f->db.get(), &f->keys, &f->policies, &f->clock);
    std::mt19937_64 random = FixedSeed(6);
    for (uint64_t i = 0; i < g_reencrypt_records; ++i) {
      if (!f->records->Put(kDataset, IdOf(i), RandomValue(&random)).ok()) std::abort();
    }
    if (!f->keys.Rotate(kDataset, KeyPurpose::kRecords).ok()) std::abort();
    ReencryptionJob job(f->db.get(), &f->keys, attachments.get(), kDataset);
    state.ResumeTiming();
    auto result = job.Run();
    state.PauseTiming();
    if (!result.ok() || result->reencrypted != g_reencrypt_records) {
      state.SkipWithError("re-encryption failed");
      break;
    }
    attachments.reset();
    f.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * g_reencrypt_records));
  state.counters["records"] = static_cast<double>(g_reencrypt_records);
}

// Reads random ids of `f` until `stop` is true (or, with no `stop`, for `seconds`); returns the
// latency of each get in nanoseconds, or an empty vector on a failed get.
std::vector<uint32_t> ReadUntil(RecordFixture& f, const std::atomic<bool>* stop, double seconds) {
  using Clock = std::chrono::steady_clock;
  std::mt19937_64 random = FixedSeed(7);
  std::vector<uint32_t> latencies;
  const auto end = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                      std::chrono::duration<double>(seconds));
  while (stop != nullptr ? !stop->load() : Clock::now() < end) {
    const auto begin = Clock::now();
    auto value = f.records->Get(kDataset, IdOf(random() % f.id_count));
    if (!value.ok()) return {};
    latencies.push_back(static_cast<uint32_t>(std::min<int64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - begin).count(),
        UINT32_MAX)));
  }
  return latencies;
}

double P99Micros(std::vector<uint32_t> samples) {
  if (samples.empty()) return 0;
  auto index = static_cast<ptrdiff_t>(0.99 * static_cast<double>(samples.size() - 1));
  std::nth_element(samples.begin(), samples.begin() + index, samples.end());
  return samples[static_cast<size_t>(index)] / 1000.0;
}

// Re-encryption with one thread reading random records meanwhile: records/s of the job (the
// timed part) and the reads' p99 during it, beside their p99 over 2 s just before the rotation
// (after 1 s of the same reads to warm the cache).
void BM_ReencryptionForeground_1KiB_Wal(benchmark::State& state) {
  for (auto _ : state) {
    state.PauseTiming();
    auto f = std::make_unique<RecordFixture>(kValueSize, g_reencrypt_records);
    auto attachments =
        std::make_unique<AttachmentStore>(f->db.get(), &f->keys, &f->policies, &f->clock);
    std::mt19937_64 random = FixedSeed(6);
    for (uint64_t i = 0; i < g_reencrypt_records; ++i) {
      if (!f->records->Put(kDataset, IdOf(i), RandomValue(&random)).ok()) std::abort();
    }
    f->Settle();
    (void)ReadUntil(*f, nullptr, 1.0);  // warm the block cache, as the job's reads will
    std::vector<uint32_t> before = ReadUntil(*f, nullptr, 2.0);
    if (!f->keys.Rotate(kDataset, KeyPurpose::kRecords).ok()) std::abort();
    ReencryptionJob job(f->db.get(), &f->keys, attachments.get(), kDataset);
    std::atomic<bool> done{false};
    absl::StatusOr<ReencryptionProgress> result;
    state.ResumeTiming();
    std::thread worker([&] {
      result = job.Run();
      done.store(true);
    });
    std::vector<uint32_t> during = ReadUntil(*f, &done, 0);
    worker.join();
    state.PauseTiming();
    if (!result.ok() || result->reencrypted != g_reencrypt_records || before.empty() ||
        during.empty()) {
      state.SkipWithError("re-encryption or a foreground get failed");
      break;
    }
    state.counters["baseline_p99_us"] = P99Micros(std::move(before));
    state.counters["foreground_gets"] = static_cast<double>(during.size());
    state.counters["foreground_p99_us"] = P99Micros(std::move(during));
    attachments.reset();
    f.reset();
    state.ResumeTiming();
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * g_reencrypt_records));
  state.counters["records"] = static_cast<double>(g_reencrypt_records);
}

bool TakeFlag(int* argc, char** argv, const char* name, std::string* value) {
  const size_t length = std::strlen(name);
  for (int i = 1; i < *argc; ++i) {
    if (std::strncmp(argv[i], name, length) != 0) continue;
    if (argv[i][length] == '=') {
      *value = argv[i] + length + 1;
    } else if (argv[i][length] == '\0') {
      *value = "true";
    } else {
      continue;
    }
    for (int j = i; j + 1 < *argc; ++j) argv[j] = argv[j + 1];
    --*argc;
    return true;
  }
  return false;
}

}  // namespace
}  // namespace coffer::storage

int main(int argc, char** argv) {
  using namespace coffer::storage;  // NOLINT(google-build-using-namespace): main only
  std::string value;
  if (TakeFlag(&argc, argv, "--records", &value)) g_records = std::stoull(value);
  if (TakeFlag(&argc, argv, "--reencrypt_records", &value)) {
    g_reencrypt_records = std::stoull(value);
  }
  if (TakeFlag(&argc, argv, "--attachment_1gib", &value)) g_attachment_1gib = value != "false";

  AttachmentSizes(
      benchmark::RegisterBenchmark("BM_AttachmentWrite/durability:wal", BM_AttachmentWrite_Wal));
  AttachmentSizes(
      benchmark::RegisterBenchmark("BM_AttachmentRead/durability:wal", BM_AttachmentRead_Wal));
  for (auto [size, label] : {std::pair<size_t, const char*>{1024, "1KiB"}, {16384, "16KiB"}}) {
    using Function = void (*)(benchmark::State&, size_t);
    for (auto [name, function] : {std::pair<const char*, Function>{"EncryptedPut", BM_EncryptedPut},
                                  {"PlainPut", BM_PlainPut},
                                  {"EncryptedGet", BM_EncryptedGet},
                                  {"PlainGet", BM_PlainGet}}) {
      std::string full = std::string("BM_") + name + "_" + label + "/durability:wal";
      benchmark::RegisterBenchmark(full.c_str(), function, size)->UseRealTime();
    }
  }
  benchmark::RegisterBenchmark("BM_Reencryption_1KiB/durability:wal", BM_Reencryption_1KiB_Wal)
      ->Unit(benchmark::kSecond)
      ->Iterations(1)
      ->UseRealTime();
  benchmark::RegisterBenchmark("BM_ReencryptionForeground_1KiB/durability:wal",
                               BM_ReencryptionForeground_1KiB_Wal)
      ->Unit(benchmark::kSecond)
      ->Iterations(1)
      ->UseRealTime();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
