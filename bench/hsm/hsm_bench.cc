// HSM benchmarks against a real SoftHSM2 token (file object store):
//   BM_Startup/N   module load + C_Initialize + login + the one handle-map enumeration, with N
//                  dataset wrapping keys in the token (C_Finalize is not timed)
//   BM_TokenLoginFind/N   the anchor for BM_Startup: what the token itself needs — module load +
//                  C_Initialize, C_OpenSession, C_Login and one C_FindObjects pass over every
//                  secret key — with the same keys, through raw PKCS#11 calls; each runs right
//                  after BM_Startup/N. On a reused token every size sees all the keys created
//                  before (keys_mapped and objects_found say how many).
//   BM_Wrap        Wrap of a 32-byte DEK (C_CreateObject + C_WrapKey + C_DestroyObject)
//   BM_Unwrap      Unwrap (C_UnwrapKey into a session object + read + destroy)
//   BM_UnwrapThreads/T   T threads unwrapping at once through the session pool
//
// The token lives in $COFFER_BENCH_HSM_DIR (reused between runs, so the 10,000 keys are created
// once) or a temporary directory. Key counts above 1,000 run only when
// COFFER_BENCH_HSM_MAX_KEYS allows them (creating 10,000 keys takes from ~90 s on a quiet machine
// to 20 minutes on a busy one: SoftHSM2's creates slow down as the token grows): scripts/bench-hsm.
// Figures are for the development machine; SoftHSM2 does no fsync, so durability is moot here.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "benchmark/benchmark.h"
#include "crypto/random.h"
#include "hsm/hsm_client.h"
#include "hsm/internal/pkcs11.h"
#include "hsm/module.h"

namespace coffer::hsm {
namespace {

constexpr char kLabel[] = "coffer-bench";
constexpr uint64_t kBenchDataset = 1ull << 40;  // DWKs for the key-count sweep: handles below

std::string g_dir;
bool g_remove_dir = false;
std::unique_ptr<HsmClient> g_client;

HsmOptions Options() {
  HsmOptions options;
  options.token_label = kLabel;
  options.pin = PinSource::FromFile(g_dir + "/user.pin");
  options.session_pool_size = 8;
  return options;
}

HsmClient& Client() {
  if (!g_client) {
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(Options());
    if (!client.ok()) {
      std::cerr << "bench: " << client.status() << "\n";
      std::exit(1);
    }
    g_client = *std::move(client);
  }
  return *g_client;
}

void CloseClient() {
  if (g_client) (void)g_client->Close();
  g_client.reset();
}

// Creates DWKs until the token holds `count` (4 threads: each create is ~9 ms in SoftHSM2).
void EnsureKeyCount(size_t count) {
  HsmClient& client = Client();
  size_t have = client.wrapping_keys().ListWrappingKeys()->size();
  if (have >= count) return;
  std::atomic<uint64_t> next{have};
  std::vector<std::thread> threads;
  threads.reserve(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (uint64_t i = next.fetch_add(1); i < count; i = next.fetch_add(1)) {
        absl::Status status = client.wrapping_keys().CreateWrappingKey({i + 1, 1});
        if (!status.ok()) std::cerr << "bench: " << status << "\n";
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
}

void BM_Startup(benchmark::State& state) {
  const auto count = static_cast<size_t>(state.range(0));
  const char* max_env = std::getenv("COFFER_BENCH_HSM_MAX_KEYS");
  const size_t max_keys = max_env != nullptr ? std::strtoull(max_env, nullptr, 10) : 1000;
  if (count > max_keys) {
    state.SkipWithError("set COFFER_BENCH_HSM_MAX_KEYS (scripts/bench-hsm) to run this size");
    return;
  }
  EnsureKeyCount(count);
  CloseClient();
  for (auto _ : state) {
    absl::StatusOr<std::unique_ptr<HsmClient>> client = HsmClient::Open(Options());
    if (!client.ok()) {
      state.SkipWithError(client.status().ToString().c_str());
      break;
    }
    state.PauseTiming();
    state.counters["keys_mapped"] =
        static_cast<double>((*client)->wrapping_keys().ListWrappingKeys()->size());
    (void)(*client)->Close();
    state.ResumeTiming();
  }
}

// The token's own cost of what BM_Startup does: load, log in, find every secret key.
// Returns the number of objects found, or -1 on a failure (reported through `state`).
int64_t LoginAndFind(benchmark::State& state, const std::string& pin) {
  absl::StatusOr<Module> module = Module::Load(kDefaultModulePath);
  if (!module.ok()) {
    state.SkipWithError(module.status().ToString().c_str());
    return -1;
  }
  CK_FUNCTION_LIST* f = module->functions();
  CK_ULONG slot_count = 0;
  f->C_GetSlotList(CK_TRUE, nullptr, &slot_count);
  std::vector<CK_SLOT_ID> slots(slot_count);
  f->C_GetSlotList(CK_TRUE, slots.data(), &slot_count);
  CK_SLOT_ID slot = 0;
  bool found_slot = false;
  for (CK_SLOT_ID candidate : slots) {
    CK_TOKEN_INFO info;
    if (f->C_GetTokenInfo(candidate, &info) != CKR_OK) continue;
    std::string label(reinterpret_cast<const char*>(info.label), sizeof(info.label));
    label.erase(label.find_last_not_of(' ') + 1);
    if (label == kLabel) {
      slot = candidate;
      found_slot = true;
      break;
    }
  }
  CK_SESSION_HANDLE session = 0;
  std::string pin_copy = pin;  // C_Login takes a non-const pointer
  if (!found_slot ||
      f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &session) !=
          CKR_OK ||
      f->C_Login(session, CKU_USER, reinterpret_cast<CK_UTF8CHAR*>(pin_copy.data()),
                 pin_copy.size()) != CKR_OK) {
    state.SkipWithError("token: slot, session or login failed");
    return -1;
  }
  CK_OBJECT_CLASS key_class = CKO_SECRET_KEY;
  CK_ATTRIBUTE query[] = {{CKA_CLASS, &key_class, sizeof(key_class)}};
  int64_t objects = 0;
  if (f->C_FindObjectsInit(session, query, 1) != CKR_OK) {
    state.SkipWithError("token: C_FindObjectsInit failed");
    return -1;
  }
  std::vector<CK_OBJECT_HANDLE> handles(1024);
  for (CK_ULONG count = 1; count > 0;) {
    if (f->C_FindObjects(session, handles.data(), handles.size(), &count) != CKR_OK) {
      state.SkipWithError("token: C_FindObjects failed");
      return -1;
    }
    objects += static_cast<int64_t>(count);
  }
  f->C_FindObjectsFinal(session);
  state.PauseTiming();
  f->C_Logout(session);
  f->C_CloseSession(session);
  (void)module->Close();
  std::memset(pin_copy.data(), 0, pin_copy.size());
  state.ResumeTiming();
  return objects;
}

void BM_TokenLoginFind(benchmark::State& state) {
  const auto count = static_cast<size_t>(state.range(0));
  const char* max_env = std::getenv("COFFER_BENCH_HSM_MAX_KEYS");
  const size_t max_keys = max_env != nullptr ? std::strtoull(max_env, nullptr, 10) : 1000;
  if (count > max_keys) {
    state.SkipWithError("set COFFER_BENCH_HSM_MAX_KEYS (scripts/bench-hsm) to run this size");
    return;
  }
  EnsureKeyCount(count);
  CloseClient();  // one C_Initialize per process: the anchor loads the module itself
  std::string pin;
  {
    std::ifstream file(g_dir + "/user.pin");
    std::getline(file, pin);
  }
  for (auto _ : state) {
    int64_t objects = LoginAndFind(state, pin);
    if (objects < 0) break;
    state.counters["objects_found"] = static_cast<double>(objects);
  }
  std::memset(pin.data(), 0, pin.size());
}
// Each size's start-up beside its anchor, before the next size adds keys to the token.
BENCHMARK(BM_Startup)->Arg(100)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenLoginFind)->Arg(100)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Startup)->Arg(1000)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenLoginFind)->Arg(1000)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Startup)->Arg(10000)->Iterations(5)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_TokenLoginFind)->Arg(10000)->Iterations(5)->Unit(benchmark::kMillisecond);

WrappingKeyId BenchKey() {
  WrappingKeyId id{kBenchDataset, 1};
  absl::Status status = Client().wrapping_keys().CreateWrappingKey(id);
  (void)status;  // ALREADY_EXISTS on a reused token is fine
  return id;
}

void BM_Wrap(benchmark::State& state) {
  WrappingKeyId id = BenchKey();
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  for (auto _ : state) {
    absl::StatusOr<WrappedKey> wrapped = Client().wrapping_keys().Wrap(id, dek);
    if (!wrapped.ok()) state.SkipWithError(wrapped.status().ToString().c_str());
    benchmark::DoNotOptimize(wrapped);
  }
  state.counters["ops/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Wrap)->Unit(benchmark::kMicrosecond)->UseRealTime();

void BM_Unwrap(benchmark::State& state) {
  WrappingKeyId id = BenchKey();
  crypto::SecretBytes dek = *crypto::RandomSecret(kDekBytes);
  WrappedKey wrapped = *Client().wrapping_keys().Wrap(id, dek);
  for (auto _ : state) {
    absl::StatusOr<crypto::SecretBytes> unwrapped = Client().wrapping_keys().Unwrap(wrapped);
    if (!unwrapped.ok()) state.SkipWithError(unwrapped.status().ToString().c_str());
    benchmark::DoNotOptimize(unwrapped);
  }
  state.counters["ops/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Unwrap)->Unit(benchmark::kMicrosecond)->UseRealTime();

// T threads, each unwrapping 200 times per iteration; ops/s counts every unwrap.
void BM_UnwrapThreads(benchmark::State& state) {
  const int threads_count = static_cast<int>(state.range(0));
  constexpr int kPerThread = 200;
  WrappingKeyId id = BenchKey();
  WrappedKey wrapped = *Client().wrapping_keys().Wrap(id, *crypto::RandomSecret(kDekBytes));
  std::atomic<int> failures{0};
  for (auto _ : state) {
    std::vector<std::thread> threads;
    threads.reserve(static_cast<size_t>(threads_count));
    for (int t = 0; t < threads_count; ++t) {
      threads.emplace_back([&] {
        for (int i = 0; i < kPerThread; ++i) {
          if (!Client().wrapping_keys().Unwrap(wrapped).ok()) failures.fetch_add(1);
        }
      });
    }
    for (std::thread& thread : threads) thread.join();
  }
  if (failures.load() != 0) state.SkipWithError("unwrap failed");
  state.counters["ops/s"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * threads_count * kPerThread,
                         benchmark::Counter::kIsRate);
}
BENCHMARK(BM_UnwrapThreads)->Arg(2)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

bool PrepareToken() {
  const char* dir = std::getenv("COFFER_BENCH_HSM_DIR");
  if (dir != nullptr && *dir != '\0') {
    g_dir = dir;
  } else {
    std::string pattern = (std::filesystem::temp_directory_path() / "coffer-bench-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) return false;
    g_dir = pattern;
    g_remove_dir = true;
  }
  pid_t child = ::fork();
  if (child == 0) {
    ::execl(COFFER_SOFTHSM_TOKEN_SCRIPT, COFFER_SOFTHSM_TOKEN_SCRIPT, g_dir.c_str(), kLabel,
            static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int rc = 0;
  if (child < 0 || ::waitpid(child, &rc, 0) != child || !WIFEXITED(rc) || WEXITSTATUS(rc) != 0) {
    return false;
  }
  ::setenv("SOFTHSM2_CONF", (g_dir + "/softhsm2.conf").c_str(), 1);
  return true;
}

}  // namespace
}  // namespace coffer::hsm

int main(int argc, char** argv) {
  if (!coffer::hsm::PrepareToken()) {
    std::cerr << "bench: could not create a SoftHSM2 token (scripts/softhsm-token)\n";
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  coffer::hsm::CloseClient();  // C_Finalize before exit
  if (coffer::hsm::g_remove_dir) {
    std::error_code ignored;
    std::filesystem::remove_all(coffer::hsm::g_dir, ignored);
  }
  return 0;
}
