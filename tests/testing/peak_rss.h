// Peak resident memory of this process, for the tests and benchmarks that prove memory stays
// bounded while gigabytes stream through (Linux /proc only).

#ifndef COFFER_TESTS_TESTING_PEAK_RSS_H_
#define COFFER_TESTS_TESTING_PEAK_RSS_H_

#include <cstddef>

namespace coffer::testing {

// Peak resident set size in bytes (VmHWM from /proc/self/status); 0 when it cannot be read.
size_t PeakRssBytes();

// Resets the peak to the current resident size (/proc/self/clear_refs); false when the kernel
// does not allow it, in which case PeakRssBytes keeps the process's earlier peak.
bool ResetPeakRss();

}  // namespace coffer::testing

#endif  // COFFER_TESTS_TESTING_PEAK_RSS_H_
