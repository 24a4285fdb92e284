// HookDelivery: hands every event of the log, in order, to coffer-hook-runner over its Unix
// socket (coffer/v1/hooks.proto; docs/events.md, "The hook runner"), from its own thread, with
// its own persisted cursor in the event log — so a restart resumes at the first event not yet
// delivered, and the key path never waits for a hook. cofferd never starts the hook itself: the
// runner runs it under its own user with a minimal environment, away from the HSM PIN.
//
// Per event: one connection, one HookRunRequest, one HookRunResult.
//  - DELIVERED (the hook exited 0): done.
//  - FAILED (another exit status, killed at the timeout, could not start): retried after the
//    backoff (1 s, 2 s, 4 s ... at most 60 s) up to `attempts` tries in all; then the failure is
//    written to the daemon log (event sequence and kind, never its content) and delivery moves
//    on to the next event. Every kill at the timeout is logged.
//  - REJECTED (the runner cannot run this request at all): logged and skipped at once.
//  - No answer (the runner is not running, refuses cofferd's uid, or closes the connection):
//    no attempt is spent. The same event is tried again after the same backoff, for as long as
//    it takes; the outage is logged when it starts and when it ends.
//
// Thread safety: Start/Stop from one thread; stats from any. Ownership: `log` must outlive the
// delivery.

#ifndef COFFER_KMS_EVENTS_HOOK_DELIVERY_H_
#define COFFER_KMS_EVENTS_HOOK_DELIVERY_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "coffer/v1/events.pb.h"
#include "coffer/v1/hooks.pb.h"
#include "kms/events/event_log.h"

namespace coffer::events {

struct HookDeliveryOptions {
  EventLog* log = nullptr;
  std::string socket_path;                   // coffer-hook-runner's socket; non-empty
  std::chrono::milliseconds timeout{10000};  // the hook's, sent with every request
  uint32_t attempts = 3;
  // The first wait after a failed attempt or an unanswered one; doubles up to 60 s.
  std::chrono::milliseconds first_backoff{1000};
  std::function<void(const std::string&)> log_info;     // optional
  std::function<void(const std::string&)> log_warning;  // optional
};

struct HookDeliveryStats {
  uint64_t delivered = 0;
  uint64_t failed = 0;      // events given up on after every attempt
  uint64_t rejected = 0;    // events the runner rejected (skipped without retry)
  uint64_t killed = 0;      // runs killed at the timeout
  uint64_t unanswered = 0;  // tries the runner did not answer (no attempt spent)
};

class HookDelivery {
 public:
  explicit HookDelivery(HookDeliveryOptions options);
  HookDelivery(const HookDelivery&) = delete;
  HookDelivery& operator=(const HookDelivery&) = delete;
  ~HookDelivery();

  void Start();
  // Stops now: a request in flight is abandoned (its connection shut down) and its event is
  // not acknowledged, so it is delivered again after a restart. Idempotent.
  void Stop();
  HookDeliveryStats stats() const;

 private:
  enum class Outcome { kDelivered, kRejected, kGaveUp };

  void Loop();
  // Hands one event to the runner until it is delivered, rejected or out of attempts; nullopt
  // when stopping first (the event stays unacknowledged). *runner_down tracks whether the runner
  // answered, so that each outage is logged once.
  std::optional<Outcome> Deliver(const coffer::v1::Event& event, bool* runner_down);
  void Warn(const std::string& text) const;
  void Info(const std::string& text) const;
  // One request to the runner; an error when it did not answer.
  absl::StatusOr<coffer::v1::HookRunResult> Ask(const coffer::v1::Event& event);
  // Sleeps up to `d` unless stopped; false when stopped.
  bool SleepUnlessStopped(std::chrono::milliseconds d);

  HookDeliveryOptions options_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> rejected_{0};
  std::atomic<uint64_t> killed_{0};
  std::atomic<uint64_t> unanswered_{0};
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  int in_flight_fd_ = -1;  // guarded by mu_: the connection Stop shuts down
  std::thread thread_;
};

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_HOOK_DELIVERY_H_
