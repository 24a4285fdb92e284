#include "kms/ops/access_anomalies.h"

#include <algorithm>
#include <cmath>
#include <utility>
#include <vector>

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;

// docs/events.md, "Tables": the (uid, dataset) pairs that have read, ever.
constexpr std::string_view kReadersTable = "readers";

// tau = half-life / ln 2, in microseconds.
double TimeConstantMicros(std::chrono::seconds half_life) {
  return std::chrono::duration<double, std::micro>(half_life).count() / std::log(2.0);
}

// `count` decayed from `since` to `now`.
double Decayed(double count, int64_t since, int64_t now, double tau_micros) {
  if (now <= since || count == 0) return count;
  return count * std::exp(-static_cast<double>(now - since) / tau_micros);
}

// Events per second from a decayed count with time constant tau over a history of `age`: at a
// steady rate r the count tends to r * tau * (1 - e^(-age/tau)). At least a second of history
// is assumed, so a first burst is a rate, not an infinity.
double RatePerSecond(double count, int64_t age_micros, double tau_micros) {
  const double age = std::max<double>(static_cast<double>(age_micros), 1e6);
  return count / (tau_micros * (1 - std::exp(-age / tau_micros))) * 1e6;
}

std::string PairRowKey(uint32_t uid, uint64_t handle) {
  std::string key(12, '\0');
  for (int i = 0; i < 4; ++i) key[i] = static_cast<char>(uid >> (24 - 8 * i));
  for (int i = 0; i < 8; ++i) key[4 + i] = static_cast<char>(handle >> (56 - 8 * i));
  return key;
}

}  // namespace

AccessAnomalies::AccessAnomalies(AccessAnomalyOptions options, events::EventLog* log,
                                 const Clock* clock,
                                 std::function<void(const std::string&)> log_warning)
    : options_(std::move(options)),
      log_(log),
      clock_(clock),
      log_warning_(std::move(log_warning)),
      max_pairs_per_shard_(std::max<size_t>(1, options_.max_pairs / kShards)) {}

uint64_t AccessAnomalies::PairKey(uint32_t uid, uint64_t handle) {
  // Handles are small counters and uids small numbers: a mix keeps the shards even.
  uint64_t key = handle * 0x9E3779B97F4A7C15ULL ^ uid;
  return key ^ (key >> 29);
}

AccessAnomalies::Pair& AccessAnomalies::Touch(Shard& shard, uint64_t key, int64_t now) {
  auto [it, inserted] = shard.pairs.try_emplace(key);
  Pair& pair = it->second;
  if (inserted) {
    pair.first_micros = pair.last_micros = now;
    shard.lru.push_front(key);
    pair.lru = shard.lru.begin();
    if (shard.pairs.size() > max_pairs_per_shard_) {
      shard.pairs.erase(shard.lru.back());
      shard.lru.pop_back();
    }
  } else {
    shard.lru.splice(shard.lru.begin(), shard.lru, pair.lru);
  }
  return pair;
}

void AccessAnomalies::Observe(uint32_t uid, uint32_t pid, uint64_t handle, std::string_view dataset,
                              uint32_t reads, ErrorCode result) {
  const bool locked = result == ErrorCode::kDatasetStateForbids;
  if (handle == 0 || (result != ErrorCode::kOk && !locked)) return;
  const int64_t now =
      std::chrono::duration_cast<std::chrono::microseconds>(clock_->Now().time_since_epoch())
          .count();
  const double recent_tau = TimeConstantMicros(options_.recent_half_life);
  const double baseline_tau = TimeConstantMicros(options_.baseline_half_life);
  const double cooldown = std::chrono::duration<double, std::micro>(options_.cooldown).count();
  const double count = std::max<uint32_t>(reads, 1);
  const uint64_t key = PairKey(uid, handle);

  bool check_first_read = false;
  std::optional<pb::Event> raise;
  {
    Shard& shard = shards_[key % kShards];
    std::lock_guard<std::mutex> lock(shard.mu);
    Pair& pair = Touch(shard, key, now);
    const int64_t since = pair.last_micros;
    pair.last_micros = std::max(now, since);
    pair.recent = Decayed(pair.recent, since, now, recent_tau);
    pair.baseline = Decayed(pair.baseline, since, now, baseline_tau);
    pair.locked = Decayed(pair.locked, since, now, recent_tau);
    const int64_t age = now - pair.first_micros;
    const auto cooled = [&](int64_t last) { return last == 0 || now - last >= cooldown; };
    if (locked) {
      pair.locked += count;
      if (options_.locked_reads > 0 && pair.locked > options_.locked_reads &&
          cooled(pair.locked_event_micros)) {
        pair.locked_event_micros = now;
        raise.emplace();
        raise->set_kind(pb::EVENT_LOCKED_DATASET_READS);
        raise->set_recent_reads_per_second(RatePerSecond(pair.locked, age, recent_tau));
        raise->set_detail(
            "read attempts on a dataset that is disabled, pending destruction or destroyed");
      }
    } else {
      const double baseline = RatePerSecond(pair.baseline, age, baseline_tau);
      pair.recent += count;
      pair.baseline += count;
      const double recent = RatePerSecond(pair.recent, age, recent_tau);
      if (options_.rate_factor > 0 && age >= options_.warm_up.count() * 1e6 &&
          recent > options_.min_reads_per_second && recent > options_.rate_factor * baseline &&
          cooled(pair.rate_event_micros)) {
        pair.rate_event_micros = now;
        raise.emplace();
        raise->set_kind(pb::EVENT_READ_RATE_ANOMALY);
        raise->set_recent_reads_per_second(recent);
        raise->set_baseline_reads_per_second(baseline);
        raise->set_detail("a uid reads this dataset far above its own baseline");
      }
      check_first_read = options_.first_read && !pair.first_read_checked;
      pair.first_read_checked = true;
    }
  }
  if (check_first_read) CheckFirstRead(uid, pid, handle, dataset, now);
  if (raise.has_value()) {
    raise->set_time_micros(now);
    raise->set_dataset(std::string(dataset));
    raise->set_dataset_handle(handle);
    raise->set_uid(uid);
    raise->set_pid(pid);
    Raise(*std::move(raise));
  }
}

void AccessAnomalies::CheckFirstRead(uint32_t uid, uint32_t pid, uint64_t handle,
                                     std::string_view dataset, int64_t now) {
  const std::string row_key = PairRowKey(uid, handle);
  std::lock_guard<std::mutex> lock(first_read_mu_);
  absl::StatusOr<std::optional<std::string>> known = log_->GetRow(kReadersTable, row_key);
  if (!known.ok()) {
    if (log_warning_) {
      log_warning_("events: cannot look up a dataset's readers: " +
                   std::string(known.status().message()));
    }
    return;
  }
  if (known->has_value()) return;
  pb::Event event;
  event.set_kind(pb::EVENT_FIRST_READ);
  event.set_time_micros(now);
  event.set_dataset(std::string(dataset));
  event.set_dataset_handle(handle);
  event.set_uid(uid);
  event.set_pid(pid);
  event.set_detail("a uid read this dataset for the first time");
  Raise(std::move(event), {events::Row{std::string(kReadersTable), row_key,
                                       events::EncodeU64(static_cast<uint64_t>(now))}});
}

void AccessAnomalies::Raise(pb::Event event, std::vector<events::Row> rows) {
  absl::Status appended = log_->Append({std::move(event)}, rows).status();
  if (!appended.ok() && log_warning_) {
    log_warning_("events: cannot raise an access anomaly event: " +
                 std::string(appended.message()));
  }
}

}  // namespace coffer::daemon
