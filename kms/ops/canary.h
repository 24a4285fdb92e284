// CanaryRegistry: canary records and attachments (docs/events.md, "Canary records").
//
// A canary is a decoy an admin plants in a dataset: stored through the normal RecordStore or
// AttachmentStore (so it is encrypted, listed and counted like any other item and nothing on the
// data socket tells it apart), and registered here — which (dataset, kind, id) is a canary lives
// only in the daemon's event-log directory (table "canary") and in memory. Canary ids are
// invented by admins, never customer data; they are kept in plaintext there, readable only by
// cofferd's user, and never written to the audit log (entries carry the canary's number).
//
// Reads: Services asks CheckRead after every successful record_get, attachment_get and
// attachment_metadata on the data socket. For a non-canary that is one shared-lock hash lookup
// (nothing when no canary exists). For a canary it appends CANARY_READ (actor = the caller's
// uid and pid, record_count = the canary's number) to the audit log synchronously — the read is
// answered only after that entry is durable, otherwise it fails with the audit's code — and
// wakes the event source, which turns that entry into exactly one EVENT_CANARY_READ.
// record_exists and record_list do not count as reads of a canary: they return no content, and
// a list names every id anyway.
//
// Admin operations (admin socket): Plant refuses to overwrite anything (CANARY_EXISTS when an
// item with that id or name exists, canary or not); it registers first and stores second, and
// undoes the registration if storing fails, so nothing half-planted remains. Remove purges the
// item (not kept in the recycle bin) and forgets it. Plant and Remove are audited as
// CANARY_PLANT / CANARY_REMOVE with the canary's number; List shows whether each is still stored.
//
// Thread safety: all methods from any thread (a shared mutex guards the in-memory set; Plant and
// Remove are serialised). Ownership: every pointer in CanaryDeps is borrowed.

#ifndef COFFER_KMS_OPS_CANARY_H_
#define COFFER_KMS_OPS_CANARY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/events.pb.h"
#include "crypto/base/clock.h"
#include "kms/audit/audit_event.h"
#include "kms/audit/audit_log.h"
#include "kms/events/event_log.h"
#include "kms/events/event_source.h"
#include "kms/keys/key_manager.h"
#include "storage/attachment_store.h"
#include "storage/record_store.h"
#include "storage/recycle_bin.h"

namespace coffer::daemon {

struct CanaryDeps {
  events::EventLog* log = nullptr;
  kms::KeyManager* keys = nullptr;
  storage::RecordStore* records = nullptr;
  storage::AttachmentStore* attachments = nullptr;
  storage::RecycleBin* bin = nullptr;
  kms::audit::AuditLog* audit_log = nullptr;
  const coffer::Clock* clock = nullptr;  // required
  std::function<void()> on_read;         // optional: wakes the event source
};

class CanaryRegistry {
 public:
  // Loads the registered canaries. INVALID_ARGUMENT for a missing dependency.
  static absl::StatusOr<std::unique_ptr<CanaryRegistry>> Open(CanaryDeps deps);
  CanaryRegistry(const CanaryRegistry&) = delete;
  CanaryRegistry& operator=(const CanaryRegistry&) = delete;

  // After a successful data-socket read of (handle, kind, id): OK at once for a non-canary;
  // for a canary, the CANARY_READ audit entry's status.
  absl::Status CheckRead(const kms::audit::AuditActor& caller, uint64_t handle,
                         coffer::v1::CanaryKind kind, std::string_view id);

  absl::StatusOr<coffer::v1::CanaryInfo> Plant(const coffer::v1::CanaryPlantRequest& request,
                                               const kms::audit::AuditActor& actor);
  absl::StatusOr<coffer::v1::CanaryListResponse> List(const coffer::v1::CanaryListRequest& request);
  absl::StatusOr<coffer::v1::CanaryInfo> Remove(const coffer::v1::CanaryRemoveRequest& request,
                                                const kms::audit::AuditActor& actor);

  // The canary with `number` (for EVENT_CANARY_READ), if still registered.
  std::optional<events::CanaryRef> Lookup(uint64_t number) const;

 private:
  struct Entry {
    uint64_t handle = 0;
    coffer::v1::CanaryInfo info;  // dataset name, kind, id, number, planted_*
  };
  explicit CanaryRegistry(CanaryDeps deps);
  absl::Status Load();
  absl::Status Audit(kms::audit::v1::EventKind kind, const kms::audit::AuditActor& actor,
                     uint64_t handle, uint64_t number);
  // Stored? (record Exists / attachment Metadata).
  absl::StatusOr<bool> Stored(uint64_t handle, coffer::v1::CanaryKind kind, std::string_view id);
  absl::Status Store(uint64_t handle, const coffer::v1::CanaryPlantRequest& request);

  CanaryDeps deps_;
  std::mutex admin_mu_;  // Plant / Remove
  mutable std::shared_mutex mu_;
  absl::flat_hash_map<std::string, Entry> by_key_;  // RegistryKey(handle, kind, id)
  std::map<uint64_t, std::string> key_by_number_;
  uint64_t next_number_ = 1;
  std::atomic<size_t> count_{0};
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_CANARY_H_
