// JobProgress: what a dataset walk (ReencryptionJob, ReindexJob) reports while it runs and when
// it ends. Each job's progress type extends it with the count of entries it changed. A damaged
// entry never stops a walk: it is skipped, counted and listed here.

#ifndef COFFER_STORAGE_JOB_PROGRESS_H_
#define COFFER_STORAGE_JOB_PROGRESS_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include "storage/damaged_item.h"

namespace coffer::storage {

struct JobProgress {
  uint64_t done = 0;   // entries examined (changed or already current), across resumes
  uint64_t total = 0;  // entries in the dataset when this run started
  double items_per_second = 0;
  std::chrono::seconds eta{0};
  bool finished = false;
  // Entries skipped because their own bytes do not open (storage/damaged_item.h), this run;
  // `damaged_items` lists up to DamagedItems::kMaxListed of them.
  uint64_t damaged = 0;
  std::vector<DamagedItem> damaged_items;
};

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_JOB_PROGRESS_H_
