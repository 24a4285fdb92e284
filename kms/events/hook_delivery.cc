#include "kms/events/hook_delivery.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "google/protobuf/util/json_util.h"
#include "kms/events/hook_runner.h"

namespace coffer::events {

std::string EventJsonLine(const coffer::v1::Event& event) {
  std::string json;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(event, &json, options).ok()) {
    json = absl::StrCat("{\"sequence\":\"", event.sequence(), "\"}");
  }
  json += '\n';
  return json;
}

HookDelivery::HookDelivery(HookDeliveryOptions options) : options_(std::move(options)) {}

HookDelivery::~HookDelivery() { Stop(); }

void HookDelivery::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_ || options_.argv.empty() || options_.log == nullptr) return;
  options_.log->set_hook_enabled(true);
  thread_ = std::thread([this] { Loop(); });
}

void HookDelivery::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HookDeliveryStats HookDelivery::stats() const {
  return HookDeliveryStats{delivered_.load(), failed_.load(), killed_.load()};
}

bool HookDelivery::SleepUnlessStopped(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  stop_cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

void HookDelivery::Loop() {
  auto warn = [this](const std::string& text) {
    if (options_.log_warning) options_.log_warning(text);
  };
  while (SleepUnlessStopped(std::chrono::milliseconds(0))) {
    absl::StatusOr<std::optional<coffer::v1::Event>> next =
        options_.log->NextForHook(std::chrono::milliseconds(500));
    if (!next.ok()) {
      warn(absl::StrCat("events: hook cannot read the event log: ",
                        std::string(ErrorCodeName(ErrorCodeOf(next.status())))));
      if (!SleepUnlessStopped(std::chrono::seconds(1))) return;
      continue;
    }
    if (!next->has_value()) continue;
    const coffer::v1::Event& event = **next;
    const std::string input = EventJsonLine(event);
    const std::string name = coffer::v1::EventKind_Name(event.kind());
    bool delivered = false;
    auto backoff = std::chrono::milliseconds(1000);
    for (uint32_t attempt = 1; attempt <= options_.attempts && !delivered; ++attempt) {
      absl::StatusOr<HookResult> run = RunHook(options_.argv, input, options_.timeout);
      if (run.ok() && run->killed) {
        killed_.fetch_add(1);
        warn(absl::StrCat("events: hook killed (SIGKILL to its process group, pid ", run->pid,
                          ") at its timeout of ", options_.timeout.count(), " ms; event ",
                          event.sequence(), " ", name, ", attempt ", attempt));
      } else if (run.ok() && run->ok()) {
        delivered = true;
        break;
      } else if (run.ok()) {
        warn(absl::StrCat("events: hook exited with status ", run->exit_status, " for event ",
                          event.sequence(), " ", name, ", attempt ", attempt));
      } else {
        warn(absl::StrCat("events: hook could not run for event ", event.sequence(), ": ",
                          std::string(run.status().message())));
      }
      if (attempt < options_.attempts) {
        if (!SleepUnlessStopped(backoff)) return;  // not acknowledged: retried after restart
        backoff = std::min(backoff * 2, std::chrono::milliseconds(60000));
      }
    }
    if (delivered) {
      delivered_.fetch_add(1);
    } else {
      failed_.fetch_add(1);
      warn(absl::StrCat("events: hook gave up on event ", event.sequence(), " ", name, " after ",
                        options_.attempts, " attempts"));
    }
    absl::Status acked = options_.log->AckHook(event.sequence());
    if (!acked.ok()) {
      warn("events: cannot save the hook cursor; the event may be delivered again");
      if (!SleepUnlessStopped(std::chrono::seconds(1))) return;
    } else if (delivered && options_.log_info) {
      options_.log_info(absl::StrCat("events: hook delivered event ", event.sequence(), " ", name));
    }
  }
}

}  // namespace coffer::events
