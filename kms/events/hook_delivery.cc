#include "kms/events/hook_delivery.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "kms/api/framing.h"

namespace coffer::events {
namespace {

namespace pb = ::coffer::v1;

constexpr std::chrono::milliseconds kMaxBackoff{60000};
constexpr std::chrono::milliseconds kConnectTimeout{5000};
// How long past the hook's own timeout the runner may take to answer (killing and reaping the
// hook's process group, writing the answer).
constexpr std::chrono::milliseconds kAnswerGrace{10000};
constexpr size_t kMaxResultBytes = 4096;

// The runner's free text, fit for one line of cofferd's log.
std::string OneLine(const std::string& text) {
  std::string out = text.substr(0, 200);
  for (char& c : out) {
    if (std::iscntrl(static_cast<unsigned char>(c)) != 0) c = '?';
  }
  return out;
}

}  // namespace

HookDelivery::HookDelivery(HookDeliveryOptions options) : options_(std::move(options)) {}

HookDelivery::~HookDelivery() { Stop(); }

void HookDelivery::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stop_ || options_.socket_path.empty() || options_.log == nullptr) {
    return;
  }
  options_.log->set_hook_enabled(true);
  thread_ = std::thread([this] { Loop(); });
}

void HookDelivery::Stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    if (in_flight_fd_ >= 0) ::shutdown(in_flight_fd_, SHUT_RDWR);
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

HookDeliveryStats HookDelivery::stats() const {
  return HookDeliveryStats{delivered_.load(), failed_.load(), rejected_.load(), killed_.load(),
                           unanswered_.load()};
}

bool HookDelivery::SleepUnlessStopped(std::chrono::milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  stop_cv_.wait_for(lock, d, [this] { return stop_; });
  return !stop_;
}

absl::StatusOr<pb::HookRunResult> HookDelivery::Ask(const pb::Event& event) {
  int connect_errno = 0;
  COFFER_ASSIGN_OR_RETURN(
      int fd, api::DialUnixSocket(options_.socket_path, kConnectTimeout, &connect_errno));
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) {
      ::close(fd);
      return MakeError(ErrorCode::kDaemonUnavailable, "stopping");
    }
    in_flight_fd_ = fd;
  }
  auto ask = [&]() -> absl::StatusOr<pb::HookRunResult> {
    pb::HookRunRequest request;
    *request.mutable_event() = event;
    request.set_timeout_millis(static_cast<uint32_t>(options_.timeout.count()));
    COFFER_RETURN_IF_ERROR(
        api::WriteFrame(fd, request, std::chrono::steady_clock::now() + kConnectTimeout));
    api::FrameReader reader(fd, kMaxResultBytes);
    pb::HookRunResult result;
    bool end_of_stream = false;
    COFFER_RETURN_IF_ERROR(
        reader.Read(&result, std::chrono::steady_clock::now() + options_.timeout + kAnswerGrace,
                    &end_of_stream));
    if (end_of_stream) {
      return MakeError(ErrorCode::kDaemonUnavailable,
                       "the hook runner closed the connection without an answer (is cofferd's "
                       "uid its --allowed-uid?)");
    }
    return result;
  };
  absl::StatusOr<pb::HookRunResult> answer = ask();
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_fd_ = -1;
  }
  ::close(fd);
  return answer;
}

void HookDelivery::Warn(const std::string& text) const {
  if (options_.log_warning) options_.log_warning(text);
}

void HookDelivery::Info(const std::string& text) const {
  if (options_.log_info) options_.log_info(text);
}

std::optional<HookDelivery::Outcome> HookDelivery::Deliver(const pb::Event& event,
                                                           bool* runner_down) {
  const std::string name = pb::EventKind_Name(event.kind());
  uint32_t attempt = 1;
  auto backoff = options_.first_backoff;
  auto unanswered_backoff = options_.first_backoff;
  while (true) {
    absl::StatusOr<pb::HookRunResult> result = Ask(event);
    if (!result.ok()) {
      // Not an attempt: the hook did not run. The event waits for the runner.
      unanswered_.fetch_add(1);
      if (!*runner_down) {
        *runner_down = true;
        Warn(absl::StrCat("events: the hook runner at ", options_.socket_path, " does not answer (",
                          OneLine(std::string(result.status().message())), "); event ",
                          event.sequence(), " ", name, " and later ones wait for it"));
      }
      if (!SleepUnlessStopped(unanswered_backoff)) return std::nullopt;  // not acknowledged
      unanswered_backoff = std::min(unanswered_backoff * 2, kMaxBackoff);
      continue;
    }
    if (*runner_down) {
      *runner_down = false;
      Info(absl::StrCat("events: the hook runner at ", options_.socket_path, " answers again"));
    }
    unanswered_backoff = options_.first_backoff;
    if (result->outcome() == pb::HookRunResult::DELIVERED) return Outcome::kDelivered;
    if (result->outcome() == pb::HookRunResult::REJECTED) {
      Warn(absl::StrCat("events: the hook runner rejected event ", event.sequence(), " ", name,
                        ": ", OneLine(result->message())));
      return Outcome::kRejected;
    }
    if (result->killed()) {
      killed_.fetch_add(1);
      Warn(absl::StrCat("events: hook killed (SIGKILL to its process group, pid ", result->pid(),
                        ") at its timeout of ", options_.timeout.count(), " ms; event ",
                        event.sequence(), " ", name, ", attempt ", attempt));
    } else if (result->pid() != 0) {
      Warn(absl::StrCat("events: hook exited with status ", result->exit_status(), " for event ",
                        event.sequence(), " ", name, ", attempt ", attempt));
    } else {
      Warn(absl::StrCat("events: hook could not run for event ", event.sequence(), ": ",
                        OneLine(result->message())));
    }
    if (attempt >= options_.attempts) return Outcome::kGaveUp;
    ++attempt;
    if (!SleepUnlessStopped(backoff))
      return std::nullopt;  // not acknowledged: retried after restart
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

void HookDelivery::Loop() {
  bool runner_down = false;
  while (SleepUnlessStopped(std::chrono::milliseconds(0))) {
    absl::StatusOr<std::optional<pb::Event>> next =
        options_.log->NextForHook(std::chrono::milliseconds(500));
    if (!next.ok()) {
      Warn(absl::StrCat("events: hook cannot read the event log: ",
                        std::string(ErrorCodeName(ErrorCodeOf(next.status())))));
      if (!SleepUnlessStopped(std::chrono::seconds(1))) return;
      continue;
    }
    if (!next->has_value()) continue;
    const pb::Event& event = **next;
    std::optional<Outcome> outcome = Deliver(event, &runner_down);
    if (!outcome.has_value()) return;  // stopping
    const std::string name = pb::EventKind_Name(event.kind());
    switch (*outcome) {
      case Outcome::kDelivered:
        delivered_.fetch_add(1);
        break;
      case Outcome::kRejected:
        rejected_.fetch_add(1);
        break;
      case Outcome::kGaveUp:
        failed_.fetch_add(1);
        Warn(absl::StrCat("events: hook gave up on event ", event.sequence(), " ", name, " after ",
                          options_.attempts, " attempts"));
        break;
    }
    absl::Status acked = options_.log->AckHook(event.sequence());
    if (!acked.ok()) {
      Warn("events: cannot save the hook cursor; the event may be delivered again");
      if (!SleepUnlessStopped(std::chrono::seconds(1))) return;
    } else if (*outcome == Outcome::kDelivered) {
      Info(absl::StrCat("events: hook delivered event ", event.sequence(), " ", name));
    }
  }
}

}  // namespace coffer::events
