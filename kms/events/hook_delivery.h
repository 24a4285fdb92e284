// HookDelivery: runs the configured hook (kms/events/hook_runner.h) for every event of the log,
// in order, from its own thread, with its own persisted cursor in the event log — so a restart
// resumes at the first event not yet delivered, and the key path never waits for a hook.
//
// An event counts as delivered when the hook exits with status 0. A hook that exits otherwise
// or is killed at its timeout is retried after 1 s, 2 s, 4 s ... (at most 60 s) up to `attempts`
// tries in all; then the failure is written to the daemon log (event sequence and kind, never
// its content) and the hook moves on to the next event. Every kill at the timeout is logged.
//
// Thread safety: Start/Stop from one thread. Ownership: `log` must outlive the delivery.

#ifndef COFFER_KMS_EVENTS_HOOK_DELIVERY_H_
#define COFFER_KMS_EVENTS_HOOK_DELIVERY_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "coffer/v1/events.pb.h"
#include "kms/events/event_log.h"

namespace coffer::events {

struct HookDeliveryOptions {
  EventLog* log = nullptr;
  std::vector<std::string> argv;  // non-empty
  std::chrono::milliseconds timeout{10000};
  uint32_t attempts = 3;
  std::function<void(const std::string&)> log_info;     // optional
  std::function<void(const std::string&)> log_warning;  // optional
};

struct HookDeliveryStats {
  uint64_t delivered = 0;
  uint64_t failed = 0;  // events given up on after every attempt
  uint64_t killed = 0;  // runs killed at the timeout
};

// The hook's input: the event as one JSON object (protobuf's JSON mapping, field names as in
// events.proto) and a newline.
std::string EventJsonLine(const coffer::v1::Event& event);

class HookDelivery {
 public:
  explicit HookDelivery(HookDeliveryOptions options);
  HookDelivery(const HookDelivery&) = delete;
  HookDelivery& operator=(const HookDelivery&) = delete;
  ~HookDelivery();

  void Start();
  // Stops after the current run (a running hook is waited for up to its timeout). Idempotent.
  void Stop();
  HookDeliveryStats stats() const;

 private:
  void Loop();
  // Sleeps up to `d` unless stopped; false when stopped.
  bool SleepUnlessStopped(std::chrono::milliseconds d);

  HookDeliveryOptions options_;
  std::atomic<uint64_t> delivered_{0};
  std::atomic<uint64_t> failed_{0};
  std::atomic<uint64_t> killed_{0};
  std::mutex mu_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace coffer::events

#endif  // COFFER_KMS_EVENTS_HOOK_DELIVERY_H_
