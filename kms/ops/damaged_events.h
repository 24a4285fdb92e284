// DamagedItemEvents: turns the damaged items that listings, jobs and exports meet
// (storage/damaged_item.h) into wire DamagedItems and raises one EVENT_DAMAGED_ITEM per
// reference, ever (docs/events.md).
//
// Each reference raised is remembered in the event log's table "damaged" (key: the ref, value:
// the dataset handle), written in the same synced batch as its event, so neither a second
// listing nor a daemon restart raises it again. Until the event log is attached (cofferd starts
// its jobs, which may resume and meet damage, before its event log), items are kept in memory
// and raised at Attach.
//
// Thread safety: every method from any thread (one mutex serialises the check-then-append, so
// two listings racing over one item raise it once). Ownership: borrows the log, which must
// outlive this object or be detached (Attach(nullptr)) first. Failures: the event log's, also
// passed to `log_warning`; the callers (a listing, a job) do not fail for them.

#ifndef COFFER_KMS_OPS_DAMAGED_EVENTS_H_
#define COFFER_KMS_OPS_DAMAGED_EVENTS_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "coffer/v1/common.pb.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "kms/events/event_log.h"
#include "storage/damaged_item.h"

namespace coffer::daemon {

// The wire form of `item`.
coffer::v1::DamagedItem ToWire(const storage::DamagedItem& item);
// Appends the wire form of each of `items` to `out`.
void AppendWire(const std::vector<storage::DamagedItem>& items,
                google::protobuf::RepeatedPtrField<coffer::v1::DamagedItem>* out);

class DamagedItemEvents {
 public:
  explicit DamagedItemEvents(std::function<void(const std::string&)> log_warning = {})
      : log_warning_(std::move(log_warning)) {}
  DamagedItemEvents(const DamagedItemEvents&) = delete;
  DamagedItemEvents& operator=(const DamagedItemEvents&) = delete;

  // Sets (or, with null, clears) the log events go to, raising what waited for it.
  absl::Status Attach(events::EventLog* log);

  // Raises EVENT_DAMAGED_ITEM for each of `items` (of dataset `handle`, named `dataset`) whose
  // reference was never raised.
  absl::Status Raise(uint64_t handle, std::string_view dataset,
                     const std::vector<storage::DamagedItem>& items);

 private:
  struct Pending {
    uint64_t handle = 0;
    std::string dataset;
    storage::DamagedItem item;
  };
  absl::Status RaiseLocked(const std::vector<Pending>& items);
  absl::Status Warned(absl::Status status) const;

  const std::function<void(const std::string&)> log_warning_;
  std::mutex mu_;
  events::EventLog* log_ = nullptr;  // guarded by mu_
  std::vector<Pending> waiting_;     // guarded by mu_; before Attach
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_DAMAGED_EVENTS_H_
