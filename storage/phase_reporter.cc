#include "storage/phase_reporter.h"

#include <algorithm>
#include <utility>

namespace coffer::storage {

PhaseReporter::PhaseReporter(const ProgressFn& fn, std::string phase, uint64_t total, uint64_t step)
    : fn_(&fn), step_(std::max<uint64_t>(step, 1)) {
  progress_.phase = std::move(phase);
  progress_.total = total;
  Report();
}

void PhaseReporter::Add(uint64_t units) {
  Raise(progress_.done + std::min(units, UINT64_MAX - progress_.done));
}

void PhaseReporter::Raise(uint64_t done) {
  if (finished_) return;
  if (progress_.total != 0) done = std::min(done, progress_.total);
  if (done <= progress_.done) return;
  progress_.done = done;
  if (progress_.done - reported_ >= step_) Report();
}

void PhaseReporter::Finish() {
  if (finished_) return;
  if (progress_.total != 0) progress_.done = progress_.total;
  if (progress_.done != reported_) Report();  // else the last report was already the end
  finished_ = true;
}

void PhaseReporter::Report() {
  reported_ = progress_.done;
  if (*fn_) (*fn_)(progress_);
}

}  // namespace coffer::storage
