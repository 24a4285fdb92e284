// AccessAnomalies: events for reads that do not look like a caller's usual ones (issue 20 item
// 8; docs/events.md, "Access anomalies"). Services reports every read on the data socket
// (record_get, record_exists, record_list, attachment_get, attachment_metadata, pseudonym
// reads — the ACCESS_READ entries of the access audit) with its result; three rules raise
// events through the event log (and so its subscribers and hook):
//
//  - EVENT_FIRST_READ: a uid reads a dataset for the first time ever. Remembered in the event
//    log's table "readers" (key: uid u32 BE, dataset handle u64 BE), written in the same synced
//    batch as the event, so a restart does not raise it again; in memory after the first look.
//  - EVENT_READ_RATE_ANOMALY: a uid's recent read rate of a dataset is more than `rate_factor`
//    times its own baseline and above `min_reads_per_second`. Both rates are exponentially
//    decayed counts (half-lives `recent_half_life` and `baseline_half_life`) divided by their
//    time constant — corrected for a history shorter than that constant, so a young pair is not
//    measured against an empty baseline — and the rule holds fire until the pair has been seen
//    for `warm_up`. The baseline is taken before the read is added, so a burst's earlier reads
//    count in it (a burst raises the event a little later than against the pure history). Rates
//    live in memory only: a restart begins a new warm-up for every pair (a detection gap after a
//    restart, never a false alarm from it).
//  - EVENT_LOCKED_DATASET_READS: read attempts on a dataset whose state forbids them (disabled,
//    that is locked, pending destruction, or destroyed: DATASET_STATE_FORBIDS) exceed
//    `locked_reads` as a decayed count with the recent half-life — something still reads an
//    account in its grace period.
// Each (uid, dataset, rule) raises at most one event per `cooldown`. Events name the dataset,
// the uid and pid, and the two rates (never an id or a value).
//
// Cost: a read takes one shard's mutex and a hash lookup; the first read of a pair in a process
// also reads the event log once, and an event is one synced event-log append, made outside the
// shard's lock. At most `max_pairs` pairs are tracked; beyond that the least recently read
// pair of a shard is forgotten (it warms up again when it returns).
//
// Thread safety: Observe from any thread. Ownership: borrows the log and the clock, which must
// outlive this object. Failures: an event-log error is passed to `log_warning` and otherwise
// ignored: a read is never refused for its anomaly bookkeeping.

#ifndef COFFER_KMS_OPS_ACCESS_ANOMALIES_H_
#define COFFER_KMS_OPS_ACCESS_ANOMALIES_H_

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "crypto/base/clock.h"
#include "crypto/base/status.h"
#include "kms/events/event_log.h"

namespace coffer::daemon {

struct AccessAnomalyOptions {
  bool first_read = true;  // EVENT_FIRST_READ on or off
  std::chrono::seconds recent_half_life{300};
  std::chrono::seconds baseline_half_life{7 * 86400};
  std::chrono::seconds warm_up{86400};
  double rate_factor = 10;  // 0: EVENT_READ_RATE_ANOMALY off
  double min_reads_per_second = 1;
  double locked_reads = 20;  // 0: EVENT_LOCKED_DATASET_READS off
  std::chrono::seconds cooldown{3600};
  size_t max_pairs = 100000;
};

class AccessAnomalies {
 public:
  // `log` and `clock` are borrowed.
  AccessAnomalies(AccessAnomalyOptions options, events::EventLog* log, const Clock* clock,
                  std::function<void(const std::string&)> log_warning = {});
  AccessAnomalies(const AccessAnomalies&) = delete;
  AccessAnomalies& operator=(const AccessAnomalies&) = delete;

  // `reads` items were read (or refused with `result`) from dataset `handle` (`dataset` its
  // name) by `uid`/`pid`. Other results than OK and DATASET_STATE_FORBIDS are ignored.
  void Observe(uint32_t uid, uint32_t pid, uint64_t handle, std::string_view dataset,
               uint32_t reads, ErrorCode result);

 private:
  // Decayed counts of one (uid, dataset) pair.
  struct Pair {
    int64_t first_micros = 0;
    int64_t last_micros = 0;
    double recent = 0;    // reads, recent half-life
    double baseline = 0;  // reads, baseline half-life
    double locked = 0;    // refused reads of a locked dataset, recent half-life
    bool first_read_checked = false;
    int64_t rate_event_micros = 0;    // last EVENT_READ_RATE_ANOMALY (0: none)
    int64_t locked_event_micros = 0;  // last EVENT_LOCKED_DATASET_READS (0: none)
    std::list<uint64_t>::iterator lru;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<uint64_t, Pair> pairs;  // key: PairKey
    std::list<uint64_t> lru;                   // most recently read first
  };
  static constexpr size_t kShards = 16;

  static uint64_t PairKey(uint32_t uid, uint64_t handle);
  // The shard's pair for `key`, created (and the shard trimmed) if new. Requires shard.mu.
  Pair& Touch(Shard& shard, uint64_t key, int64_t now);
  // Raises EVENT_FIRST_READ unless the log's table knows the pair (serialised by first_read_mu_).
  void CheckFirstRead(uint32_t uid, uint32_t pid, uint64_t handle, std::string_view dataset,
                      int64_t now);
  void Raise(coffer::v1::Event event, std::vector<events::Row> rows = {});

  const AccessAnomalyOptions options_;
  events::EventLog* const log_;
  const Clock* const clock_;
  const std::function<void(const std::string&)> log_warning_;
  const size_t max_pairs_per_shard_;
  std::array<Shard, kShards> shards_;
  std::mutex first_read_mu_;
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_ACCESS_ANOMALIES_H_
