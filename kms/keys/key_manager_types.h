// Plain types of the key manager's API: policies, states, descriptions, reports, and the two
// small interfaces a caller plugs in (ProtectedDataCounter, CrashPoint).
//
// Plain data; thread-compatible. The interfaces' implementations must be thread-safe.

#ifndef COFFER_KMS_KEYS_KEY_MANAGER_TYPES_H_
#define COFFER_KMS_KEYS_KEY_MANAGER_TYPES_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "hsm/key_wrapper.h"
#include "kms/audit/audit_event.h"
#include "storage/data_key.h"

namespace coffer::kms {

using Seconds = std::chrono::seconds;
using TimePoint = std::chrono::system_clock::time_point;

// What a data request does when the audit log cannot take its access entry (docs/audit.md,
// "Failure policy"), stored in the key DB (v1::AccessAuditPolicyRow). The numbers are
// coffer.v1.AccessAuditFailure's.
enum class AccessAuditFailure : uint8_t {
  kFailClosed = 1,     // refused with the audit's error (the default)
  kServeAndCount = 2,  // served, counted, written as entries once the log takes them again
};

inline constexpr Seconds kDefaultRotationPeriod{90LL * 24 * 3600};
inline constexpr Seconds kDefaultDestructionWait{30LL * 24 * 3600};
inline constexpr uint64_t kDefaultUsageLimit = uint64_t{1} << 31;
inline constexpr size_t kMaxDatasetNameSize = 128;

// A dataset's policies (docs/key-manager.md, "Policies"). Periods of seconds are allowed so
// that demos and daemon tests can watch rotation happen.
struct DatasetPolicy {
  Seconds records_rotation = kDefaultRotationPeriod;
  Seconds attachments_rotation = kDefaultRotationPeriod;
  uint64_t usage_limit = kDefaultUsageLimit;  // encryptions per version; never exceeded
  uint32_t bin_days = 30;
  Seconds retention_max_age{0};  // 0 = none
  Seconds minimum_retention{0};  // 0 = none
  Seconds destruction_wait = kDefaultDestructionWait;
  bool legal_hold = false;
  // Lifecycle automation: a dataset DISABLED this long (since its last state change) and not
  // under a legal hold is scheduled for destruction by RunDueWork. 0 = never.
  Seconds auto_destroy_after_disabled{0};
  // Scheduled re-encryption (jobs.reencrypt_versions_back, docs/daemon.md): data under a records
  // or attachments version more than this many versions behind the primary is moved; 0 = never
  // for this dataset; none = the daemon's setting.
  std::optional<uint32_t> reencrypt_versions_back;
  // Quotas (storage/quota_meter.h): live records and stored bytes; 0 = none.
  uint64_t max_records = 0;
  uint64_t max_stored_bytes = 0;

  bool operator==(const DatasetPolicy&) const = default;
};

enum class DatasetState { kActive, kDisabled, kPendingDestruction, kDestroying, kDestroyed };
enum class KeyVersionState { kPrimary, kDecryptOnly, kCompromised, kRetired };

std::string_view DatasetStateName(DatasetState state);        // "ACTIVE", ...
std::string_view KeyVersionStateName(KeyVersionState state);  // "PRIMARY", ...

// Why a rotation happens. lookup rotates only for kReindex, pseudonym only for kRekey; records
// and attachments for any of the first four.
enum class RotationCause { kManual, kScheduled, kUsage, kEmergency, kReindex, kRekey };

struct WrappingKeyRef {
  std::string module;
  uint32_t version = 0;
  bool operator==(const WrappingKeyRef&) const = default;
};

struct KeyVersionInfo {
  uint32_t version = 0;
  KeyVersionState state = KeyVersionState::kDecryptOnly;
  TimePoint created;
  uint64_t usage_count = 0;  // encryptions counted (after a restart: the whole reservation)
  bool primary = false;
  WrappingKeyRef wrapping_key;
};

struct PurposeInfo {
  storage::KeyPurpose purpose = storage::KeyPurpose::kRecords;
  uint32_t primary_version = 0;
  uint32_t min_decrypt_version = 1;
  std::vector<KeyVersionInfo> versions;  // ascending
};

struct DatasetSummary {
  uint64_t handle = 0;
  std::string name;  // empty once destroyed
  DatasetState state = DatasetState::kActive;
};

struct DatasetInfo {
  uint64_t handle = 0;
  std::string name;
  // The name-commitment salt (kms/formats/receipt_file.h, NameCommitment): for admins to give
  // the dataset's customer, never for the data socket.
  std::string name_salt;
  DatasetState state = DatasetState::kActive;
  TimePoint created;
  TimePoint state_changed;
  std::optional<TimePoint> destroy_after;  // PENDING_DESTRUCTION only
  DatasetPolicy policy;
  std::vector<PurposeInfo> purposes;  // records, attachments, lookup, pseudonym
  WrappingKeyRef current_wrapping_key;
  std::vector<WrappingKeyRef> live_wrapping_keys;
  bool wrapping_key_missing = false;
};

// What storage may read about a dataset (retention and purge decisions).
struct DatasetStorageView {
  DatasetState state = DatasetState::kActive;
  uint32_t bin_days = 30;
  Seconds retention_max_age{0};
  Seconds minimum_retention{0};
  bool legal_hold = false;
  uint64_t max_records = 0;       // quota; 0 = none
  uint64_t max_stored_bytes = 0;  // quota; 0 = none
};

// A destroyed dataset's tombstone: the serialised coffer.kms.v1.Tombstone and its DER
// ECDSA-P256-SHA256 signature by the token's signing key (docs/key-manager.md, "Tombstone").
struct SignedTombstone {
  std::string tombstone;
  std::string signature;
};

// A second admin's approval under dual control (kms/ops/admin_control.h): who approved, the
// approval request's id and its APPROVAL_GRANTED audit sequence. A destruction keeps it for
// its tombstone and deletion receipt.
struct AdminApproval {
  audit::AuditActor approver;
  uint64_t request_id = 0;
  uint64_t audit_sequence = 0;
};

// Counts the data still protected by a key version. storage implements it over the data DB;
// the key manager refuses to retire a version while the count is above zero, and to destroy a
// dataset while its newest item is inside the minimum retention. Thread-safe.
//
// AwaitWritesUnderWay is the retirement's barrier (storage/key_provider.h, AcceptsWrites):
// it returns once every write that was past its AcceptsWrites check when it was called has
// landed or given up, so the count that follows sees it.
class ProtectedDataCounter {
 public:
  ProtectedDataCounter() = default;
  ProtectedDataCounter(const ProtectedDataCounter&) = delete;
  ProtectedDataCounter& operator=(const ProtectedDataCounter&) = delete;
  virtual ~ProtectedDataCounter() = default;
  virtual absl::StatusOr<uint64_t> CountProtectedBy(uint64_t dataset_handle,
                                                    storage::KeyPurpose purpose,
                                                    uint32_t version) = 0;
  virtual void AwaitWritesUnderWay() = 0;
  // The newest write time (Unix micros) of any item of the dataset, live or in the recycle bin;
  // nullopt when it holds none. A destruction waits for it to leave the minimum retention
  // (compliance lock).
  virtual absl::StatusOr<std::optional<int64_t>> NewestItemWrite(uint64_t dataset_handle) = 0;
};

// Test seam: called with the name of each step of a multi-step operation just after that step
// is durable (docs/key-manager.md lists them). Crash tests kill the process there; the daemon
// leaves it empty.
using CrashPoint = std::function<void(std::string_view step)>;

// What start-up recovery and reconciliation found and did.
struct RecoveryReport {
  std::vector<uint64_t> creates_rolled_back;        // CREATING intents undone
  std::vector<uint64_t> destroys_completed;         // DESTROYING intents finished
  std::vector<uint64_t> rewraps_completed;          // REWRAPPING intents finished
  std::vector<hsm::WrappingKeyId> orphans_removed;  // token DWKs of rolled-back creates
  // Restored key DBs only (KeyManagerOptions::restored_copy): DESTROYING datasets left so
  // because the token still holds a DWK of theirs, and REWRAPPING intents dropped because the
  // token lacks their old or new DWK (the dataset stays under its old one).
  std::vector<uint64_t> destroys_deferred;
  std::vector<uint64_t> rewraps_dropped;
  // Live DWKs the key DB names that no token holds: reported and the dataset marked, never
  // silently fixed.
  std::vector<std::pair<std::string, hsm::WrappingKeyId>> missing_wrapping_keys;
  // Token DWKs with no key-DB row and no intent (perhaps another instance's): left alone.
  std::vector<std::pair<std::string, hsm::WrappingKeyId>> unknown_wrapping_keys;
  bool clock_went_backwards = false;
};

// What one RunDueWork tick did.
struct DueWorkReport {
  bool clock_went_backwards = false;  // nothing time-based ran
  std::vector<std::pair<uint64_t, storage::KeyPurpose>> rotated;
  std::vector<uint64_t> destroyed;
  std::vector<uint64_t> auto_scheduled;  // DISABLED -> PENDING_DESTRUCTION by lifecycle automation
  std::vector<std::pair<uint64_t, storage::KeyPurpose>> compromised_retired;
  std::vector<std::pair<uint64_t, absl::Status>> failures;
  size_t keys_expired = 0;  // cached keys past the cache's time-to-live, dropped from memory
};

}  // namespace coffer::kms

#endif  // COFFER_KMS_KEYS_KEY_MANAGER_TYPES_H_
