// coffer-loadgen: load generator for cofferd's data socket, through the client library.
//
//   coffer-loadgen --socket PATH --dataset NAME [--clients 1,8,64] [--seconds 5]
//                  [--ids 100000] [--value_bytes 1024] [--warmup_seconds 1] [--batch 16]
//
// For each client count N: N threads share one coffer::client::Client whose pool holds N
// connections (one per thread in practice). Phase "put": each thread writes values of
// --value_bytes to ids drawn uniformly from [0, --ids) for --seconds; phase "get": each thread
// reads ids drawn uniformly from those written. The first --warmup_seconds of each phase are not
// measured. Then, with --batch N (default 16; 0: none), phases "mput" and "mget" do the same
// with record_put_many / record_get_many of N random ids per request (Client::PutRecords,
// GetRecords): their ops_per_s and ops count records, their latencies are per request. Every
// operation's latency (send to full answer) is kept, so p50/p99/p999 are exact
// percentiles of the samples, not bucket estimates. Each result is printed as one line
//   RESULT clients=N op=put ops_per_s=... p50_us=... p99_us=... p999_us=... ops=... errors=...
// which scripts/bench-daemon parses. Every result is checked: a get must return the bytes the
// last put of that id stored (values carry their id), every item of a batch too, and any error
// (of a request or of one item) is counted and the first one of each phase printed.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "crypto/base/status.h"
#include "kms/client/client.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Flags {
  std::string socket;
  std::string dataset;
  std::vector<int> clients{1, 8, 64};
  double seconds = 5;
  double warmup_seconds = 1;
  uint64_t ids = 100'000;
  size_t value_bytes = 1024;
  size_t batch = 16;  // records per mput / mget request; 0: no batch phases
};

bool ParseFlags(int argc, char** argv, Flags* flags) {
  if (const char* env = std::getenv("COFFER_DATA_SOCKET")) flags->socket = env;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&](const char* name) -> const char* {
      std::string prefix = std::string("--") + name + "=";
      if (arg.rfind(prefix, 0) == 0) return argv[i] + prefix.size();
      if (arg == std::string("--") + name && i + 1 < argc) return argv[++i];
      return nullptr;
    };
    if (const char* v = value("socket")) {
      flags->socket = v;
    } else if (const char* v2 = value("dataset")) {
      flags->dataset = v2;
    } else if (const char* v3 = value("clients")) {
      flags->clients.clear();
      for (const char* p = v3; *p != '\0';) {
        char* end = nullptr;
        long n = std::strtol(p, &end, 10);
        if (end == p || n <= 0) return false;
        flags->clients.push_back(static_cast<int>(n));
        p = *end == ',' ? end + 1 : end;
      }
    } else if (const char* v4 = value("seconds")) {
      flags->seconds = std::strtod(v4, nullptr);
    } else if (const char* v5 = value("warmup_seconds")) {
      flags->warmup_seconds = std::strtod(v5, nullptr);
    } else if (const char* v6 = value("ids")) {
      flags->ids = std::strtoull(v6, nullptr, 10);
    } else if (const char* v7 = value("value_bytes")) {
      flags->value_bytes = std::strtoull(v7, nullptr, 10);
    } else if (const char* v8 = value("batch")) {
      flags->batch = std::strtoull(v8, nullptr, 10);
    } else {
      return false;
    }
  }
  return !flags->socket.empty() && !flags->dataset.empty() && !flags->clients.empty() &&
         flags->seconds > 0 && flags->ids > 0 && flags->value_bytes >= 16 && flags->batch <= 1000;
}

std::string IdOf(uint64_t n) { return "loadgen/" + std::to_string(n); }

// A value of `size` bytes that names its id, so a get can check it got the right record.
std::string ValueFor(uint64_t n, size_t size, std::mt19937_64& rng) {
  std::string value(size, '\0');
  for (size_t i = 0; i + 8 <= size; i += 8) {
    uint64_t r = rng();
    std::memcpy(value.data() + i, &r, 8);
  }
  std::memcpy(value.data(), &n, sizeof(n));
  return value;
}

struct PhaseResult {
  std::vector<uint32_t> latencies_ns;  // measured operations only
  uint64_t errors = 0;
  double measured_seconds = 0;
};

double PercentileMicros(std::vector<uint32_t>& samples, double q) {
  if (samples.empty()) return 0;
  auto index = static_cast<size_t>(q * static_cast<double>(samples.size() - 1));
  std::nth_element(samples.begin(), samples.begin() + static_cast<ptrdiff_t>(index), samples.end());
  return samples[index] / 1000.0;
}

// Whether `value` is the value ValueFor(n, size, ...) made: its size, and the id it names.
bool NamesId(const std::string& value, uint64_t n, size_t size) {
  uint64_t named = 0;
  if (value.size() != size) return false;
  std::memcpy(&named, value.data(), sizeof(named));
  return named == n;
}

// Runs `op` (returns false on a failure) on `threads` threads; measures after the warm-up.
template <typename Op>
PhaseResult RunPhase(int threads, const Flags& flags, const char* name, Op op) {
  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration_cast<Clock::duration>(
                                        std::chrono::duration<double>(flags.warmup_seconds));
  const auto stop = measure_from + std::chrono::duration_cast<Clock::duration>(
                                       std::chrono::duration<double>(flags.seconds));
  std::vector<std::vector<uint32_t>> samples(static_cast<size_t>(threads));
  std::atomic<uint64_t> errors{0};
  std::mutex report_mu;
  bool reported = false;
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      std::mt19937_64 rng(0x5eed0000u + static_cast<uint64_t>(t));
      auto& mine = samples[static_cast<size_t>(t)];
      mine.reserve(1 << 16);
      for (;;) {
        auto begin = Clock::now();
        if (begin >= stop) break;
        absl::Status status = op(rng);
        auto end = Clock::now();
        if (!status.ok()) {
          ++errors;
          std::lock_guard<std::mutex> lock(report_mu);
          if (!reported) {
            reported = true;
            coffer::ErrorCode code = coffer::ErrorCodeOf(status);
            std::cerr << name << ": first error: " << coffer::ErrorCodeName(code) << " ("
                      << static_cast<int>(code) << "): " << status.message() << std::endl;
          }
          continue;
        }
        if (begin >= measure_from) {
          mine.push_back(static_cast<uint32_t>(std::min<int64_t>(
              std::chrono::duration_cast<std::chrono::nanoseconds>(end - begin).count(),
              UINT32_MAX)));
        }
      }
    });
  }
  for (std::thread& w : workers) w.join();
  PhaseResult result;
  for (auto& s : samples) result.latencies_ns.insert(result.latencies_ns.end(), s.begin(), s.end());
  result.errors = errors;
  result.measured_seconds = flags.seconds;
  return result;
}

// `records`: records per operation (a batch's size; 1 otherwise): ops_per_s and ops count records.
void Print(int clients, const char* op, PhaseResult& r, size_t records = 1) {
  const uint64_t count = r.latencies_ns.size() * records;
  double ops = static_cast<double>(count) / r.measured_seconds;
  double p50 = PercentileMicros(r.latencies_ns, 0.50);
  double p99 = PercentileMicros(r.latencies_ns, 0.99);
  double p999 = PercentileMicros(r.latencies_ns, 0.999);
  std::cout << std::fixed << "RESULT clients=" << clients << " op=" << op
            << " ops_per_s=" << std::setprecision(0) << ops << " p50_us=" << std::setprecision(1)
            << p50 << " p99_us=" << p99 << " p999_us=" << p999 << " ops=" << count
            << " errors=" << r.errors << std::endl;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (!ParseFlags(argc, argv, &flags)) {
    std::cerr << "usage: " << argv[0]
              << " --socket PATH --dataset NAME [--clients 1,8,64] [--seconds 5]\n"
                 "          [--warmup_seconds 1] [--ids 100000] [--value_bytes 1024]\n"
                 "          [--batch 16]\n"
                 "  (--socket defaults to $COFFER_DATA_SOCKET)\n";
    return 2;
  }
  for (int clients : flags.clients) {
    coffer::client::ClientOptions options;
    options.idle_connections = static_cast<size_t>(clients);
    options.max_connections = static_cast<size_t>(clients);
    options.request_timeout = std::chrono::seconds(30);
    auto client = coffer::client::Client::Connect(flags.socket, options);
    if (!client.ok()) {
      std::cerr << "connect: " << client.status().message() << "\n";
      return 1;
    }
    coffer::client::Client& c = **client;

    // Which ids hold a value, for the get phase. Values embed their id: a get checks it.
    std::vector<std::atomic<bool>> written(flags.ids);
    PhaseResult puts = RunPhase(clients, flags, "put", [&](std::mt19937_64& rng) {
      uint64_t n = rng() % flags.ids;
      absl::Status status =
          c.PutRecord(flags.dataset, IdOf(n), ValueFor(n, flags.value_bytes, rng));
      if (status.ok()) written[n].store(true, std::memory_order_relaxed);
      return status;
    });
    Print(clients, "put", puts);

    std::vector<uint64_t> present;
    for (uint64_t n = 0; n < flags.ids; ++n) {
      if (written[n].load(std::memory_order_relaxed)) present.push_back(n);
    }
    if (present.empty()) {
      std::cerr << "no put succeeded: nothing to get\n";
      return 1;
    }
    PhaseResult gets = RunPhase(clients, flags, "get", [&](std::mt19937_64& rng) -> absl::Status {
      uint64_t n = present[rng() % present.size()];
      auto value = c.GetRecord(flags.dataset, IdOf(n));
      if (!value.ok()) return value.status();
      if (!NamesId(*value, n, flags.value_bytes)) {
        return coffer::MakeError(coffer::ErrorCode::kDataLoss, "get returned another value");
      }
      return absl::OkStatus();
    });
    Print(clients, "get", gets);
    if (flags.batch == 0) continue;

    // Batches: the ids written by mput join those the mget draws from only after the phase.
    PhaseResult mputs = RunPhase(clients, flags, "mput", [&](std::mt19937_64& rng) {
      std::vector<coffer::client::Client::RecordWrite> items(flags.batch);
      for (auto& item : items) {
        uint64_t n = present[rng() % present.size()];  // overwrite: every id stays checkable
        item.id = IdOf(n);
        item.value = ValueFor(n, flags.value_bytes, rng);
      }
      auto results = c.PutRecords(flags.dataset, items);
      if (!results.ok()) return results.status();
      for (const absl::Status& result : *results) {
        if (!result.ok()) return result;
      }
      return absl::OkStatus();
    });
    Print(clients, "mput", mputs, flags.batch);
    PhaseResult mgets = RunPhase(clients, flags, "mget", [&](std::mt19937_64& rng) -> absl::Status {
      std::vector<uint64_t> ns(flags.batch);
      std::vector<std::string> ids(flags.batch);
      for (size_t i = 0; i < flags.batch; ++i) {
        ns[i] = present[rng() % present.size()];
        ids[i] = IdOf(ns[i]);
      }
      auto values = c.GetRecords(flags.dataset, ids);
      if (!values.ok()) return values.status();
      for (size_t i = 0; i < flags.batch; ++i) {
        if (!(*values)[i].ok()) return (*values)[i].status();
        if (!NamesId(*(*values)[i], ns[i], flags.value_bytes)) {
          return coffer::MakeError(coffer::ErrorCode::kDataLoss, "mget returned another value");
        }
      }
      return absl::OkStatus();
    });
    Print(clients, "mget", mgets, flags.batch);
  }
  return 0;
}
