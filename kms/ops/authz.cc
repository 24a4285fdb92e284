#include "kms/ops/authz.h"

#include <grp.h>
#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace cfg = ::coffer::daemon::v1;

std::optional<uid_t> LookupUser(const std::string& name) {
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  std::vector<char> buffer(size > 0 ? static_cast<size_t>(size) : 16384);
  passwd entry{};
  passwd* found = nullptr;
  if (getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return std::nullopt;
  }
  return found->pw_uid;
}

std::optional<gid_t> LookupGroup(const std::string& name) {
  long size = sysconf(_SC_GETGR_R_SIZE_MAX);
  std::vector<char> buffer(size > 0 ? static_cast<size_t>(size) : 65536);
  group entry{};
  group* found = nullptr;
  if (getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) != 0 ||
      found == nullptr) {
    return std::nullopt;
  }
  return found->gr_gid;
}

}  // namespace

uint32_t RightBitOf(int right) {
  switch (right) {
    case cfg::Grant::READ:
      return kRightRead;
    case cfg::Grant::WRITE:
      return kRightWrite;
    case cfg::Grant::DELETE:
      return kRightDelete;
    case cfg::Grant::METADATA:
      return kRightMetadata;
    case cfg::Grant::PSEUDONYMIZE:
      return kRightPseudonymize;
    case cfg::Grant::REIDENTIFY:
      return kRightReidentify;
    default:
      return 0;
  }
}

namespace {

// Adds the principal's id to *uids or *gids.
absl::Status ResolvePrincipal(const std::string& field, const cfg::Principal& principal,
                              const NameResolver& resolver, std::vector<uid_t>* uids,
                              std::vector<gid_t>* gids) {
  switch (principal.who_case()) {
    case cfg::Principal::kUid:
      uids->push_back(principal.uid());
      return absl::OkStatus();
    case cfg::Principal::kUser: {
      std::optional<uid_t> uid = resolver.user(principal.user());
      if (!uid) {
        return MakeError(ErrorCode::kConfigInvalid,
                         absl::StrCat(field, ".user: no such user on this system"));
      }
      uids->push_back(*uid);
      return absl::OkStatus();
    }
    case cfg::Principal::kGid:
      if (gids == nullptr) break;
      gids->push_back(principal.gid());
      return absl::OkStatus();
    case cfg::Principal::kGroup: {
      if (gids == nullptr) break;
      std::optional<gid_t> gid = resolver.group(principal.group());
      if (!gid) {
        return MakeError(ErrorCode::kConfigInvalid,
                         absl::StrCat(field, ".group: no such group on this system"));
      }
      gids->push_back(*gid);
      return absl::OkStatus();
    }
    case cfg::Principal::WHO_NOT_SET:
      break;
  }
  return MakeError(ErrorCode::kConfigInvalid, absl::StrCat(field, ": set uid or user"));
}

TokenBucketLimit ToLimit(const cfg::RateLimit& limit) {
  return TokenBucketLimit{limit.requests_per_second(), static_cast<double>(limit.burst())};
}

std::string_view SocketName(SocketKind socket) {
  return socket == SocketKind::kAdmin ? "admin" : "data";
}

}  // namespace

NameResolver SystemNameResolver() { return NameResolver{LookupUser, LookupGroup}; }

absl::StatusOr<std::shared_ptr<const GrantTable>> GrantTable::FromConfig(
    const Config& config, const NameResolver& resolver) {
  std::shared_ptr<GrantTable> table(new GrantTable());
  for (int g = 0; g < config.grants_size(); ++g) {
    const cfg::Grant& grant = config.grants(g);
    Entry entry;
    for (int p = 0; p < grant.principals_size(); ++p) {
      COFFER_RETURN_IF_ERROR(ResolvePrincipal(absl::StrCat("grants[", g, "].principals[", p, "]"),
                                              grant.principals(p), resolver, &entry.uids,
                                              &entry.gids));
    }
    entry.datasets.assign(grant.datasets().begin(), grant.datasets().end());
    for (int r = 0; r < grant.rights_size(); ++r) {
      entry.rights |= RightBitOf(grant.rights(r));
    }
    table->entries_.push_back(std::move(entry));
  }
  table->config_grants_.assign(config.grants().begin(), config.grants().end());
  for (int a = 0; a < config.admins_size(); ++a) {
    COFFER_RETURN_IF_ERROR(ResolvePrincipal(absl::StrCat("admins[", a, "]"), config.admins(a),
                                            resolver, &table->admins_, nullptr));
  }
  if (config.rate_limit().has_default_limit()) {
    table->default_limit_ = ToLimit(config.rate_limit().default_limit());
  }
  for (int o = 0; o < config.rate_limit().overrides_size(); ++o) {
    std::vector<uid_t> uids;
    const auto& override_limit = config.rate_limit().overrides(o);
    COFFER_RETURN_IF_ERROR(ResolvePrincipal(absl::StrCat("rate_limit.overrides[", o, "].principal"),
                                            override_limit.principal(), resolver, &uids, nullptr));
    for (uid_t uid : uids) table->overrides_[uid] = ToLimit(override_limit.limit());
  }
  return std::shared_ptr<const GrantTable>(std::move(table));
}

std::shared_ptr<const GrantTable> GrantTable::WithStored(const GrantTable& config_table,
                                                         std::vector<StoredGrantEntry> stored,
                                                         DatasetHandleCheck check) {
  std::shared_ptr<GrantTable> table(new GrantTable(config_table));
  for (StoredGrantEntry& grant : stored) {
    Entry entry;
    entry.uids = std::move(grant.uids);
    entry.gids = std::move(grant.gids);
    entry.datasets.push_back(std::move(grant.dataset));
    entry.rights = grant.rights;
    entry.handle = grant.handle;
    table->entries_.push_back(std::move(entry));
  }
  table->handle_check_ = std::move(check);
  return table;
}

namespace {
template <typename Entry>
bool EntryNames(const Entry& entry, const PeerIdentity& peer) {
  if (std::find(entry.uids.begin(), entry.uids.end(), peer.uid) != entry.uids.end()) return true;
  for (gid_t gid : entry.gids) {
    if (gid == peer.gid ||
        std::find(peer.groups.begin(), peer.groups.end(), gid) != peer.groups.end()) {
      return true;
    }
  }
  return false;
}
}  // namespace

bool GrantTable::NamesPeer(const PeerIdentity& peer) const {
  for (const Entry& entry : entries_) {
    if (EntryNames(entry, peer)) return true;
  }
  return false;
}

uint32_t GrantTable::RightsOn(const PeerIdentity& peer, std::string_view dataset) const {
  uint32_t rights = 0;
  for (const Entry& entry : entries_) {
    if (!EntryNames(entry, peer)) continue;
    for (const std::string& name : entry.datasets) {
      if (name == "*" || name == dataset) {
        // A stored grant is its dataset's, not its name's: a reused name gets nothing.
        if (entry.handle != 0 && (!handle_check_ || !handle_check_(dataset, entry.handle))) break;
        rights |= entry.rights;
        break;
      }
    }
  }
  return rights;
}

bool GrantTable::IsAdmin(uid_t uid) const {
  return std::find(admins_.begin(), admins_.end(), uid) != admins_.end();
}

TokenBucketLimit GrantTable::LimitFor(uid_t uid) const {
  auto it = overrides_.find(uid);
  return it == overrides_.end() ? default_limit_ : it->second;
}

Authorizer::Authorizer(std::shared_ptr<const GrantTable> table, MonotonicClock now)
    : table_(table), config_table_(std::move(table)), now_(std::move(now)) {
  if (!now_) now_ = [] { return std::chrono::steady_clock::now(); };
}

void Authorizer::Reload(std::shared_ptr<const GrantTable> table) {
  std::lock_guard<std::mutex> lock(compose_mu_);
  config_table_ = std::move(table);
  table_.store(stored_.empty() ? config_table_
                               : GrantTable::WithStored(*config_table_, stored_, handle_check_));
}

void Authorizer::SetStoredGrants(std::vector<StoredGrantEntry> stored, DatasetHandleCheck check) {
  std::lock_guard<std::mutex> lock(compose_mu_);
  stored_ = std::move(stored);
  handle_check_ = std::move(check);
  table_.store(stored_.empty() ? config_table_
                               : GrantTable::WithStored(*config_table_, stored_, handle_check_));
}

std::shared_ptr<const GrantTable> Authorizer::table() const { return table_.load(); }

absl::Status Authorizer::Check(const PeerIdentity& peer, Operation operation,
                               std::string_view dataset) const {
  const OperationRow* row = OperationTable::Default().Find(operation);
  if (row == nullptr) return NoOperationRow();
  return Check(peer, *row, dataset);
}

absl::Status Authorizer::Check(const PeerIdentity& peer, const OperationRow& row,
                               std::string_view dataset) const {
  std::shared_ptr<const GrantTable> table = table_.load();
  if (peer.socket == SocketKind::kAdmin) {
    if (row.sockets == Sockets::kData) {
      return MakeError(ErrorCode::kWrongSocket,
                       "records, attachments and pseudonyms are served on the data socket only, "
                       "to a grant: an admin role gives no content");
    }
    if (table->IsAdmin(peer.uid)) return absl::OkStatus();
    return MakeError(ErrorCode::kNotGranted,
                     "the caller's uid is not an admin of this daemon (admins in the config)");
  }
  if (row.sockets == Sockets::kAdmin || row.data_right == kRightNone) {
    return MakeError(ErrorCode::kWrongSocket,
                     "admin operations are served on the admin socket only");
  }
  bool granted = false;
  if (row.op == ::coffer::v1::Request::kDatasetList) {
    granted = table->NamesPeer(peer);
  } else {
    uint32_t held = table->RightsOn(peer, dataset);
    granted = row.data_right == kRightMetadata ? held != 0 : (held & row.data_right) != 0;
  }
  if (granted) return absl::OkStatus();
  return MakeError(ErrorCode::kNotGranted,
                   absl::StrCat("no grant for this operation on this dataset (",
                                std::string(SocketName(peer.socket)), " socket)"));
}

Admission Authorizer::Admit(uid_t uid, uint32_t cost) {
  TokenBucketLimit limit = table_.load()->LimitFor(uid);
  auto now = now_();
  std::lock_guard<std::mutex> lock(buckets_mu_);
  Bucket& bucket = buckets_[uid];
  if (!bucket.initialized) {
    bucket.tokens = limit.burst;
    bucket.refilled = now;
    bucket.initialized = true;
  } else if (now > bucket.refilled) {
    double elapsed = std::chrono::duration<double>(now - bucket.refilled).count();
    bucket.tokens = std::min(limit.burst, bucket.tokens + elapsed * limit.requests_per_second);
    bucket.refilled = now;
  }
  if (bucket.tokens >= 1) {
    bucket.tokens -= std::max<uint32_t>(cost, 1);
    return Admission{};
  }
  double wait_seconds = (1 - bucket.tokens) / limit.requests_per_second;
  auto ms = static_cast<uint32_t>(std::min(std::ceil(wait_seconds * 1000), 3600e3));
  return Admission{false, std::max<uint32_t>(ms, 1)};
}

}  // namespace coffer::daemon
