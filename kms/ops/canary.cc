#include "kms/ops/canary.h"

#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using events::DecodeU64;
using events::EncodeU64;

constexpr std::string_view kCanaryTable = "canary";
constexpr std::string_view kMetaTable = "meta";
constexpr std::string_view kNextNumberKey = "canary_next_number";
constexpr size_t kMaxIdBytes = 1024;

// handle u64 BE | kind byte | id
std::string RegistryKey(uint64_t handle, pb::CanaryKind kind, std::string_view id) {
  std::string key = EncodeU64(handle);
  key += static_cast<char>(kind);
  key += id;
  return key;
}

// The kind and id a plant or remove request names, checked.
template <typename Request>
absl::StatusOr<std::pair<pb::CanaryKind, std::string>> Target(const Request& request,
                                                              std::string_view op) {
  std::string id;
  pb::CanaryKind kind;
  if (request.target_case() == Request::kRecordId) {
    kind = pb::CANARY_RECORD;
    id = request.record_id();
  } else if (request.target_case() == Request::kAttachmentName) {
    kind = pb::CANARY_ATTACHMENT;
    id = request.attachment_name();
  } else {
    return MakeError(
        ErrorCode::kMalformedRequest,
        absl::StrCat(std::string(op), " names neither a record_id nor an attachment_name"));
  }
  if (id.empty() || id.size() > kMaxIdBytes) {
    return MakeError(ErrorCode::kMalformedRequest,
                     absl::StrCat(std::string(op),
                                  ": the record id or attachment name must be 1 byte to 1 KiB"));
  }
  return std::make_pair(kind, std::move(id));
}

}  // namespace

absl::StatusOr<std::unique_ptr<CanaryRegistry>> CanaryRegistry::Open(CanaryDeps deps) {
  const std::pair<const void*, const char*> required[] = {
      {deps.log, "log"},         {deps.keys, "keys"},
      {deps.records, "records"}, {deps.attachments, "attachments"},
      {deps.bin, "bin"},         {deps.audit_log, "audit_log"},
      {deps.clock, "clock"}};
  for (const auto& [pointer, name] : required) {
    if (pointer == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument, absl::StrCat("CanaryDeps.", name, " is null"));
    }
  }
  std::unique_ptr<CanaryRegistry> registry(new CanaryRegistry(std::move(deps)));
  COFFER_RETURN_IF_ERROR(registry->Load());
  return registry;
}

CanaryRegistry::CanaryRegistry(CanaryDeps deps) : deps_(std::move(deps)) {}

absl::Status CanaryRegistry::Load() {
  COFFER_ASSIGN_OR_RETURN(std::optional<std::string> next,
                          deps_.log->GetRow(kMetaTable, kNextNumberKey));
  if (next.has_value()) next_number_ = DecodeU64(*next).value_or(1);
  COFFER_ASSIGN_OR_RETURN(std::vector<events::Row> rows, deps_.log->ScanTable(kCanaryTable));
  std::unique_lock<std::shared_mutex> lock(mu_);
  for (const events::Row& row : rows) {
    Entry entry;
    std::optional<uint64_t> handle = DecodeU64(std::string_view(row.key).substr(0, 8));
    if (!handle || !entry.info.ParseFromString(row.value)) {
      return MakeError(ErrorCode::kDataDbError, "event log: a canary row is damaged");
    }
    entry.handle = *handle;
    key_by_number_[entry.info.number()] = row.key;
    by_key_[row.key] = std::move(entry);
  }
  count_.store(by_key_.size());
  return absl::OkStatus();
}

absl::Status CanaryRegistry::Audit(audit::v1::EventKind kind, const audit::AuditActor& actor,
                                   uint64_t handle, uint64_t number) {
  audit::AuditEvent event;
  event.kind = kind;
  event.actor = actor;
  event.dataset_handle = handle;
  event.record_count = static_cast<uint32_t>(number);
  return deps_.audit_log->Append(event).status();
}

absl::Status CanaryRegistry::CheckRead(const audit::AuditActor& caller, uint64_t handle,
                                       pb::CanaryKind kind, std::string_view id) {
  if (count_.load(std::memory_order_relaxed) == 0) return absl::OkStatus();
  uint64_t number = 0;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = by_key_.find(RegistryKey(handle, kind, id));
    if (it == by_key_.end()) return absl::OkStatus();
    number = it->second.info.number();
  }
  absl::Status audited = Audit(audit::v1::CANARY_READ, caller, handle, number);
  if (deps_.on_read) deps_.on_read();
  return audited;
}

absl::StatusOr<bool> CanaryRegistry::Stored(uint64_t handle, pb::CanaryKind kind,
                                            std::string_view id) {
  if (kind == pb::CANARY_RECORD) return deps_.records->Exists(handle, id);
  absl::StatusOr<storage::AttachmentInfo> info = deps_.attachments->Metadata(handle, id);
  if (info.ok()) return true;
  if (absl::IsNotFound(info.status())) return false;
  return info.status();
}

absl::Status CanaryRegistry::Store(uint64_t handle, const pb::CanaryPlantRequest& request) {
  if (request.target_case() == pb::CanaryPlantRequest::kRecordId) {
    return deps_.records->Put(handle, request.record_id(), request.value());
  }
  COFFER_ASSIGN_OR_RETURN(
      std::unique_ptr<storage::AttachmentUpload> upload,
      deps_.attachments->BeginUpload(handle, request.attachment_name(), request.content_type()));
  absl::Status appended = upload->Append(request.value());
  if (!appended.ok()) {
    upload->Abort().IgnoreError();
    return appended;
  }
  return upload->Commit();
}

absl::StatusOr<pb::CanaryInfo> CanaryRegistry::Plant(const pb::CanaryPlantRequest& request,
                                                     const audit::AuditActor& actor) {
  if (request.dataset().empty()) {
    return MakeError(ErrorCode::kMalformedRequest, "canary_plant names no dataset");
  }
  COFFER_ASSIGN_OR_RETURN(auto target, Target(request, "canary_plant"));
  const auto& [kind, id] = target;
  std::lock_guard<std::mutex> admin(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(uint64_t handle, deps_.keys->FindDataset(request.dataset()));
  const std::string key = RegistryKey(handle, kind, id);
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    if (by_key_.contains(key)) {
      return MakeError(ErrorCode::kCanaryExists, "this id is already a canary in the dataset");
    }
  }
  COFFER_ASSIGN_OR_RETURN(bool exists, Stored(handle, kind, id));
  if (exists) {
    return MakeError(ErrorCode::kCanaryExists,
                     "an item with this id exists in the dataset; a canary never overwrites data");
  }

  Entry entry;
  entry.handle = handle;
  entry.info.set_dataset(request.dataset());
  entry.info.set_kind(kind);
  entry.info.set_id(id);
  entry.info.set_number(next_number_);
  entry.info.set_planted_micros(coffer::ToUnixMicros(deps_.clock->Now()));
  entry.info.set_planted_by_uid(actor.uid);
  // Registered first (a read right after the store must already count), stored second.
  COFFER_RETURN_IF_ERROR(deps_.log->PutRows(
      {events::Row{std::string(kCanaryTable), key, entry.info.SerializeAsString()},
       events::Row{std::string(kMetaTable), std::string(kNextNumberKey),
                   EncodeU64(next_number_ + 1)}}));
  ++next_number_;
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    key_by_number_[entry.info.number()] = key;
    by_key_[key] = entry;
    count_.store(by_key_.size());
  }
  auto unregister = [&] {
    deps_.log->DeleteRow(kCanaryTable, key).IgnoreError();
    std::unique_lock<std::shared_mutex> lock(mu_);
    key_by_number_.erase(entry.info.number());
    by_key_.erase(key);
    count_.store(by_key_.size());
  };
  absl::Status stored = Store(handle, request);
  if (!stored.ok()) {
    unregister();
    return stored;
  }
  absl::Status audited = Audit(audit::v1::CANARY_PLANT, actor, handle, entry.info.number());
  if (!audited.ok()) {
    // Fail closed: no unaudited canary stays.
    if (kind == pb::CANARY_RECORD) {
      deps_.bin->PurgeRecord(handle, id).IgnoreError();
    } else {
      deps_.bin->PurgeAttachment(handle, id).IgnoreError();
    }
    unregister();
    return audited;
  }
  pb::CanaryInfo out = entry.info;
  out.set_present(true);
  return out;
}

absl::StatusOr<pb::CanaryListResponse> CanaryRegistry::List(const pb::CanaryListRequest& request) {
  std::optional<uint64_t> only;
  if (!request.dataset().empty()) {
    COFFER_ASSIGN_OR_RETURN(only, deps_.keys->FindDataset(request.dataset()));
  }
  std::vector<Entry> entries;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    for (const auto& [number, key] : key_by_number_) {
      const Entry& entry = by_key_.at(key);
      if (!only || entry.handle == *only) entries.push_back(entry);
    }
  }
  pb::CanaryListResponse out;
  for (Entry& entry : entries) {
    absl::StatusOr<bool> stored = Stored(entry.handle, entry.info.kind(), entry.info.id());
    entry.info.set_present(stored.ok() && *stored);
    *out.add_canaries() = std::move(entry.info);
  }
  return out;
}

absl::StatusOr<pb::CanaryInfo> CanaryRegistry::Remove(const pb::CanaryRemoveRequest& request,
                                                      const audit::AuditActor& actor) {
  if (request.dataset().empty()) {
    return MakeError(ErrorCode::kMalformedRequest, "canary_remove names no dataset");
  }
  COFFER_ASSIGN_OR_RETURN(auto target, Target(request, "canary_remove"));
  const auto& [kind, id] = target;
  std::lock_guard<std::mutex> admin(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(uint64_t handle, deps_.keys->FindDataset(request.dataset()));
  const std::string key = RegistryKey(handle, kind, id);
  Entry entry;
  {
    std::shared_lock<std::shared_mutex> lock(mu_);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) {
      return MakeError(ErrorCode::kCanaryNotFound, "no canary with this id in the dataset");
    }
    entry = it->second;
  }
  // The item goes first (purged, not binned: a restored canary would be an unwatched decoy).
  // Live or in the recycle bin (a client may have deleted it): purged either way.
  absl::Status purged = kind == pb::CANARY_RECORD ? deps_.bin->PurgeRecord(handle, id)
                                                  : deps_.bin->PurgeAttachment(handle, id);
  if (!purged.ok() && !absl::IsNotFound(purged)) return purged;
  COFFER_RETURN_IF_ERROR(Audit(audit::v1::CANARY_REMOVE, actor, handle, entry.info.number()));
  COFFER_RETURN_IF_ERROR(deps_.log->DeleteRow(kCanaryTable, key));
  {
    std::unique_lock<std::shared_mutex> lock(mu_);
    key_by_number_.erase(entry.info.number());
    by_key_.erase(key);
    count_.store(by_key_.size());
  }
  entry.info.set_present(false);
  return entry.info;
}

std::optional<events::CanaryRef> CanaryRegistry::Lookup(uint64_t number) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  auto key = key_by_number_.find(number);
  if (key == key_by_number_.end()) return std::nullopt;
  const Entry& entry = by_key_.at(key->second);
  return events::CanaryRef{entry.info.dataset(), entry.info.kind(), entry.info.id()};
}

}  // namespace coffer::daemon
