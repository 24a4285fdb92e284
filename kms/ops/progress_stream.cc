#include "kms/ops/progress_stream.h"

#include <cmath>

namespace coffer::daemon {

ProgressStream::ProgressStream(const coffer::v1::Request& request, ResponseSink* sink,
                               std::chrono::milliseconds min_interval)
    : wanted_(request.progress()),
      request_id_(request.request_id()),
      sink_(sink),
      min_interval_(min_interval) {}

coffer::ProgressFn ProgressStream::Function() {
  if (!wanted_) return {};
  return [this](const coffer::Progress& progress) { Report(progress); };
}

absl::Status ProgressStream::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void ProgressStream::Report(const coffer::Progress& progress) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!status_.ok()) return;
  const SteadyClock::time_point now = SteadyClock::now();
  const bool new_phase = !in_phase_ || progress.phase != phase_;
  if (new_phase) {
    phase_ = progress.phase;
    in_phase_ = true;
    phase_start_ = now;
  }
  const bool phase_done = progress.total > 0 && progress.done >= progress.total;
  if (!new_phase && !phase_done && now - last_sent_ < min_interval_) return;
  last_sent_ = now;

  const double elapsed_s = std::chrono::duration<double>(now - phase_start_).count();
  const double rate = elapsed_s > 0 ? static_cast<double>(progress.done) / elapsed_s : 0.0;
  int64_t eta = -1;
  if (phase_done) {
    eta = 0;
  } else if (progress.total > 0 && rate > 0) {
    eta =
        static_cast<int64_t>(std::ceil(static_cast<double>(progress.total - progress.done) / rate));
  }
  coffer::v1::Response frame;
  frame.set_request_id(request_id_);
  auto* out = frame.mutable_progress();
  out->set_phase(progress.phase);
  out->set_done(progress.done);
  out->set_total(progress.total);
  out->set_rate_per_second(rate);
  out->set_eta_seconds(eta);
  out->set_elapsed_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(now - phase_start_).count());
  status_ = sink_->Send(frame);
}

}  // namespace coffer::daemon
