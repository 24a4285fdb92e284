// Access control of cofferd's sockets: which peer may run which operation on which dataset, and
// how fast (design brief, "Lifecycle, retention, access"; docs/errors.md 502-504).
//
//  - GrantTable: the grants, admins and rate limits of one configuration, with every user and
//    group name resolved to its id at build time. Immutable once built; shared by pointer.
//  - Authorizer: the daemon's current GrantTable (swapped atomically by Reload, for SIGHUP;
//    requests in flight finish under the table they started with) and the per-uid token
//    buckets. The table it checks against is the configuration's grants plus the stored grants
//    (grants at run time, kms/ops/runtime_grants.h), which SetStoredGrants replaces and Reload
//    keeps: a grant change takes effect for the next request, and a SIGHUP keeps them. Check
//    answers OK, NOT_GRANTED (502) or WRONG_SOCKET (504); Admit answers whether a request may run
//    now or the peer must slow down (SLOW_DOWN, 503, with a retry delay).
//
// Rules (the operation's row in kms/ops/operation_table.h): on the data socket an operation
// needs its row's grant on the dataset (by exact name or "*") for the peer's uid, primary gid or a
// supplementary group; kRightMetadata is satisfied by any right there; dataset_list needs any
// grant at all (the services filter the list); an admin-socket-only row is WRONG_SOCKET. On the
// admin socket a content row (Sockets::kData: records, attachments, pseudonyms) is WRONG_SOCKET
// for everyone, and everything else needs the peer's uid among the admins. (That an enrolled
// admin's uid gets no content on the data socket either is checked by the services, which
// hold the admin registry.) An operation without a row is
// NOT_GRANTED on both sockets (default deny). uid 0 never gets anything implicitly.
// Grants name datasets, not handles, so a peer without a grant learns nothing about which datasets
// exist. A stored grant names one dataset by its handle: it matches a request's dataset name only
// while that name still belongs to that handle (a destroyed dataset's name, reused, gets nothing).
//
// Thread safety: GrantTable is immutable; every Authorizer method may be called from any
// thread. Ownership: the Authorizer shares its tables; the monotonic clock function must stay
// callable for its lifetime. Failures: GrantTable::FromConfig returns CONFIG_INVALID naming the
// field of an unknown user or group.

#ifndef COFFER_KMS_OPS_AUTHZ_H_
#define COFFER_KMS_OPS_AUTHZ_H_

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/config/config.h"
#include "kms/config/config.pb.h"
#include "kms/ops/operation_table.h"
#include "kms/server/connection.h"

namespace coffer::daemon {

// Name lookups, injectable for tests. The defaults use getpwnam_r / getgrnam_r.
struct NameResolver {
  std::function<std::optional<uid_t>(const std::string& user)> user;
  std::function<std::optional<gid_t>(const std::string& group)> group;
};
NameResolver SystemNameResolver();

struct TokenBucketLimit {
  double requests_per_second = 2000;
  double burst = 4000;
};

// A stored grant (kms/ops/runtime_grants.h) with its principal resolved.
struct StoredGrantEntry {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  std::string dataset;  // the dataset's current name, or "*"
  uint64_t handle = 0;  // the dataset's handle; 0 for "*"
  uint32_t rights = 0;  // Right bits
};

// Whether dataset name `name` still belongs to dataset `handle` (stored grants are by handle).
using DatasetHandleCheck = std::function<bool(std::string_view name, uint64_t handle)>;

// The Right bit of a configuration right number (coffer.daemon.v1.Grant.Right, the same numbers
// as coffer.v1.GrantInfo.Right); 0 for an unknown one.
uint32_t RightBitOf(int right);

class GrantTable {
 public:
  // Resolves every name of `config` (a finished Config, kms/config/config.h).
  static absl::StatusOr<std::shared_ptr<const GrantTable>> FromConfig(
      const Config& config, const NameResolver& resolver = SystemNameResolver());
  // `config_table`'s grants, admins and limits plus `stored` (checked by `check`).
  static std::shared_ptr<const GrantTable> WithStored(const GrantTable& config_table,
                                                      std::vector<StoredGrantEntry> stored,
                                                      DatasetHandleCheck check);

  // The configuration's grants as written (grant_list shows them).
  const std::vector<::coffer::daemon::v1::Grant>& config_grants() const { return config_grants_; }

  // The union of the rights `peer` holds on dataset `dataset` (0 = none).
  uint32_t RightsOn(const PeerIdentity& peer, std::string_view dataset) const;
  // Whether any grant names `peer` (dataset_list needs one; the list is then filtered).
  bool NamesPeer(const PeerIdentity& peer) const;
  bool IsAdmin(uid_t uid) const;
  TokenBucketLimit LimitFor(uid_t uid) const;

 private:
  struct Entry {
    std::vector<uid_t> uids;
    std::vector<gid_t> gids;
    std::vector<std::string> datasets;  // "*" matches every name
    uint32_t rights = 0;
    uint64_t handle = 0;  // a stored grant's dataset: the name must still be this handle's
  };
  GrantTable() = default;

  std::vector<Entry> entries_;
  std::vector<::coffer::daemon::v1::Grant> config_grants_;
  DatasetHandleCheck handle_check_;
  std::vector<uid_t> admins_;
  TokenBucketLimit default_limit_;
  std::map<uid_t, TokenBucketLimit> overrides_;
};

// What Admit decided.
struct Admission {
  bool admitted = true;
  uint32_t retry_after_ms = 0;  // when not admitted: until the bucket holds one token
};

class Authorizer {
 public:
  using MonotonicClock = std::function<std::chrono::steady_clock::time_point()>;

  // `now` defaults to std::chrono::steady_clock::now (tests pass a fake).
  explicit Authorizer(std::shared_ptr<const GrantTable> table, MonotonicClock now = {});
  Authorizer(const Authorizer&) = delete;
  Authorizer& operator=(const Authorizer&) = delete;

  // Installs `table` for every later call (SIGHUP). Token buckets keep their state; a changed
  // limit applies from the next Admit.
  // `table` is the configuration's (FromConfig); the stored grants stay as they are.
  void Reload(std::shared_ptr<const GrantTable> table);
  // Replaces the stored grants for every later call; the configuration's stay as they are.
  void SetStoredGrants(std::vector<StoredGrantEntry> stored, DatasetHandleCheck check);
  // The effective table: the configuration's grants plus the stored ones.
  std::shared_ptr<const GrantTable> table() const;

  // OK, NOT_GRANTED or WRONG_SOCKET for `peer` running `operation` on `dataset` (empty for
  // operations without one). Messages name the operation and the socket, never the dataset.
  absl::Status Check(const PeerIdentity& peer, const OperationRow& row,
                     std::string_view dataset) const;
  // The same for `operation`'s row in OperationTable::Default(); NOT_GRANTED without a row.
  absl::Status Check(const PeerIdentity& peer, Operation operation, std::string_view dataset) const;

  // Takes `cost` tokens (1, or a batch's items) from `uid`'s bucket. A request is admitted when
  // the bucket holds one token and is charged in full: a batch may take the bucket below zero,
  // and the caller's next request waits until it has refilled to one.
  Admission Admit(uid_t uid, uint32_t cost = 1);

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled;
    bool initialized = false;
  };

  std::atomic<std::shared_ptr<const GrantTable>> table_;  // effective: config + stored
  std::mutex compose_mu_;  // Reload and SetStoredGrants: one composition at a time
  std::shared_ptr<const GrantTable> config_table_;  // guarded by compose_mu_
  std::vector<StoredGrantEntry> stored_;            // guarded by compose_mu_
  DatasetHandleCheck handle_check_;                 // guarded by compose_mu_
  MonotonicClock now_;
  std::mutex buckets_mu_;
  std::unordered_map<uid_t, Bucket> buckets_;  // guarded by buckets_mu_
};

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_AUTHZ_H_
