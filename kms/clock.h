// Clock: the key manager's names for the project's one clock (storage/clock.h).
//
// Every piece of kms/ logic that depends on the time of day (audit timestamps and checkpoint
// intervals, rotation clocks, destruction waiting periods) reads it through a `const Clock*`
// passed in by the caller, so tests can drive time explicitly. The daemon passes SystemClock();
// fake clocks exist only in test binaries (tests/), never as a daemon flag or API. The interface
// is storage's (the layering is storage → kms), so one fake drives both layers.
//
// Thread safety, ownership and failure: as in storage/clock.h (Now() from any thread, the caller
// keeps the clock alive, Now() cannot fail).

#ifndef COFFER_KMS_CLOCK_H_
#define COFFER_KMS_CLOCK_H_

#include "storage/clock.h"

namespace coffer::kms {

using Clock = storage::Clock;
using storage::FromUnixMicros;
using storage::SystemClock;
using storage::ToUnixMicros;

}  // namespace coffer::kms

#endif  // COFFER_KMS_CLOCK_H_
