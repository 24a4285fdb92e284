#include "kms/clock.h"

namespace coffer::kms {
namespace {

class RealClock final : public Clock {
 public:
  std::chrono::system_clock::time_point Now() const override {
    return std::chrono::system_clock::now();
  }
};

}  // namespace

Clock& SystemClock() {
  static auto* const clock = new RealClock();  // never destroyed: usable during exit
  return *clock;
}

int64_t ToUnixMicros(std::chrono::system_clock::time_point time) {
  return std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
}

}  // namespace coffer::kms
