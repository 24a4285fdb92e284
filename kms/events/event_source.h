// EventSource: the background thread that fills the event log (kms/events/event_log.h) —
// docs/events.md lists each kind and where it comes from:
//  - from the audit log, read incrementally (kms/events/audit_tail.h): DATASET_DISABLE/ENABLE,
//    DESTRUCTION_SCHEDULE/CANCEL, DATASET_DESTROY (completed), KEY_ROTATE (completed; an
//    emergency rotation is its own kind) and CANARY_READ. Only successful, completed entries
//    count. The next audit sequence to read is saved in the same batch as the events derived,
//    so a restart (or crash) resumes exactly there: no event lost, none twice;
//  - on the daemon's clock: EVENT_DESTRUCTION_DUE_SOON once per scheduled destruction (a
//    marker row per dataset and due time), when it is due within `destruction_warning`;
//  - health: EVENT_AUDIT_WRITE_FAILURE when the audit log reports a failed write (it then
//    refuses appends until the daemon restarts), EVENT_HSM_UNAVAILABLE / EVENT_HSM_AVAILABLE on
//    each change of the HSM probe's answer (checked every `hsm_check_interval`; the state is
//    persisted, so a restart with the HSM still down does not raise it again).
// Every cycle (poll_interval, or at once after Wake) also applies retention every
// compaction_interval. The key path never waits for this thread.
//
// Thread safety: Start/Stop from one thread; Wake and RunOnce from any (RunOnce is serialised).
// Ownership: the options' pointers and functions must outlive the source.

#ifndef COFFER_KMS_EVENTS_EVENT_SOURCE_H_
#define COFFER_KMS_EVENTS_EVENT_SOURCE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/events.pb.h"
#include "crypto/base/clock.h"
#include "kms/audit/audit.pb.h"
#include "kms/events/audit_tail.h"
#include "kms/events/event_log.h"

namespace coffer::events {

// What the source needs to know of a dataset.
struct DatasetView {
  uint64_t handle = 0;
  std::string name;  // empty once destroyed
  bool pending_destruction = false;
  int64_t destruction_due_micros = 0;  // when pending_destruction
};

// A canary, as the source names it in EVENT_CANARY_READ.
struct CanaryRef {
  std::string dataset;
  coffer::v1::CanaryKind kind = coffer::v1::CANARY_KIND_UNSPECIFIED;
  std::string id;
};

struct EventSourceOptions {
  EventLog* log = nullptr;      // required
  std::string audit_directory;  // required
  // Where derivation starts when the log has no saved audit cursor yet (a new events directory):
  // the audit log's next sequence at start-up, so history is not replayed as news.
  uint64_t audit_start = 0;
  const coffer::Clock* clock = nullptr;                                    // required
  std::function<std::vector<DatasetView>()> datasets;                      // required
  std::function<bool()> audit_failed;                                      // optional
  std::function<absl::Status()> hsm_probe;                                 // optional
  std::function<std::optional<CanaryRef>(uint64_t number)> canary_lookup;  // optional
  std::function<void(const std::string&)> log_warning;                     // optional
  std::chrono::seconds hsm_check_interval{60};
  std::chrono::seconds destruction_warning{7 * 86400};  // 0: never
  std::chrono::seconds retention{30 * 86400};
  std::chrono::seconds max_age{365 * 86400};
  std::chrono::seconds compaction_interval{600};
  std::chrono::milliseconds poll_interval{250};
};

// The event an audit entry becomes, if any (names: dataset handle -> name).
std::optional<coffer::v1::Event> EventFromAudit(
    const ::coffer::audit::v1::AuditEntry& entry, const std::map<uint64_t, std::string>& names,
    const std::map<uint64_t, int64_t>& destruction_due,
    const std::function<std::optional<CanaryRef>(uint64_t)>& canary_lookup);

class EventSource {
 public:
  static absl::StatusOr<std::unique_ptr<EventSource>> Create(EventSourceOptions options);
  EventSource(const EventSource&) = delete;
  EventSource& operator=(const EventSource&) = delete;
  ~EventSource();

  void Start();
  // Stops the thread (after its current cycle). Idempotent.
  void Stop();
  // Runs a cycle soon (after a canary read, say).
  void Wake();
  // Runs a cycle soon that checks the HSM whatever hsm_check_interval says: the token's
  // connection changed (cofferd wires hsm::Token's health observer here), so its event need not
  // wait for the next scheduled check.
  void CheckHsmSoon();
  // One cycle, now (tests; the thread calls it too).
  absl::Status RunOnce();

 private:
  explicit EventSource(EventSourceOptions options);
  absl::Status DeriveFromAudit(const std::vector<DatasetView>& datasets);
  absl::Status CheckDestructionWarnings(const std::vector<DatasetView>& datasets);
  absl::Status CheckHealth();
  void Loop();

  EventSourceOptions options_;
  const coffer::Clock* clock_;
  std::mutex run_mu_;  // serialises RunOnce
  std::unique_ptr<AuditTail> tail_;
  std::map<uint64_t, std::string> names_;  // every dataset name seen (persisted in table "name")
  bool audit_failure_reported_ = false;
  std::chrono::steady_clock::time_point next_hsm_check_{};
  std::atomic<bool> hsm_check_requested_{false};
  std::chrono::steady_clock::time_point next_compaction_{};

  std::mutex mu_;
  std::condition_variable wake_;
  bool wake_requested_ = false;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_EVENT_SOURCE_H_
