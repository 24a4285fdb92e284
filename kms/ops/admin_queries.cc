// The read-only admin queries of Services::ConnectionSession: dataset describe and list, the
// audit query, the recycle-bin list and the key inventory.

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kms/api/error_response.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/verifier.h"
#include "kms/ops/canary.h"
#include "kms/ops/internal/connection_session.h"
#include "kms/ops/progress_stream.h"
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/dataset_erasure.h"
#include "storage/quota_meter.h"

namespace coffer::daemon {

absl::StatusOr<pb::DatasetInfo> Services::ConnectionSession::Describe(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, deps_.keys->DescribeDataset(handle));
  pb::DatasetInfo out;
  ToProto(info, &out);
  // The name-commitment salt is for admins to give the dataset's customer, never for the data
  // socket (docs/formats.md, deletion-receipt-v2).
  if (peer_.socket == SocketKind::kAdmin) out.set_name_salt(audit::ToHex(info.name_salt));
  COFFER_ASSIGN_OR_RETURN(storage::DatasetDataCounts counts,
                          storage::CountDatasetData(*deps_.data_db, handle));
  out.set_records(counts.records);
  out.set_attachments(counts.attachments);
  out.set_recycle_bin_items(counts.bin_records + counts.bin_attachments);
  if (info.policy.max_stored_bytes > 0) {
    COFFER_ASSIGN_OR_RETURN(storage::DatasetUsage usage,
                            storage::CountDatasetUsage(*deps_.data_db, handle));
    out.set_stored_bytes(usage.stored_bytes);
  }
  return out;
}

absl::Status Services::ConnectionSession::ListDatasets(pb::DatasetListResponse* out) const {
  std::shared_ptr<const GrantTable> table = deps_.authorizer->table();
  for (const kms::DatasetSummary& summary : deps_.keys->ListDatasets()) {
    if (peer_.socket == SocketKind::kData &&
        (summary.name.empty() || table->RightsOn(peer_, summary.name) == 0)) {
      continue;  // a data-socket peer sees only the datasets it holds a grant on
    }
    auto* info = out->add_datasets();
    info->set_name(summary.name);
    info->set_handle(summary.handle);
    info->set_state(ToProto(summary.state));
  }
  return absl::OkStatus();
}

absl::Status Services::ConnectionSession::AuditQuery(const pb::AuditQueryRequest& query,
                                                     pb::AuditQueryResponse* out) const {
  // Refusals are coalesced off the request path, and with a crash-loss window above 0 access
  // entries wait up to the window for their batch; a query must see those made before it.
  services_->FlushRefusalAudit().IgnoreError();
  services_->FlushUnaudited().IgnoreError();  // accesses served while the log was failing
  if (deps_.access_audit != nullptr) deps_.access_audit->Flush().IgnoreError();
  std::optional<uint64_t> dataset_filter;
  if (!query.dataset().empty()) {
    COFFER_ASSIGN_OR_RETURN(dataset_filter, deps_.keys->FindDataset(query.dataset()));
  }
  std::map<uint64_t, std::string> names;
  for (const kms::DatasetSummary& summary : deps_.keys->ListDatasets()) {
    names[summary.handle] = summary.name;
  }
  COFFER_ASSIGN_OR_RETURN(auto entries, audit::ReadAuditEntries(deps_.audit_directory));
  const uint32_t limit =
      query.limit() == 0 ? kDefaultAuditLimit : std::min(query.limit(), kMaxAuditLimit);
  for (const audit::v1::AuditEntry& entry : entries) {
    if (query.after_sequence() != 0 && entry.sequence() <= query.after_sequence()) continue;
    if (query.since_micros() != 0 && entry.time_micros() < query.since_micros()) continue;
    if (query.until_micros() != 0 && entry.time_micros() > query.until_micros()) continue;
    if (dataset_filter && entry.dataset_handle() != *dataset_filter) continue;
    if (query.has_caller_uid() && entry.actor().uid() != query.caller_uid()) continue;
    if (static_cast<uint32_t>(out->entries_size()) == limit) {
      out->set_more(true);
      break;
    }
    auto* record = out->add_entries();
    record->set_sequence(entry.sequence());
    record->set_time_micros(entry.time_micros());
    record->set_kind(audit::v1::EventKind_Name(entry.kind()));
    record->set_uid(entry.actor().uid());
    record->set_pid(entry.actor().pid());
    record->set_socket(SocketName(entry.actor().socket()));
    record->set_dataset_handle(entry.dataset_handle());
    if (auto it = names.find(entry.dataset_handle());
        entry.dataset_handle() != 0 && it != names.end()) {
      record->set_dataset(it->second);
    }
    record->set_purpose(static_cast<pb::Purpose>(entry.purpose()));
    record->set_key_version(entry.key_version());
    record->set_result_code(entry.result_code());
    record->set_detail(entry.detail());
    record->set_record_count(entry.record_count());
    if (entry.stage() == audit::v1::STAGE_REQUESTED) record->set_stage("REQUESTED");
    if (entry.stage() == audit::v1::STAGE_COMPLETED) record->set_stage("COMPLETED");
    if (entry.has_approver()) record->set_approver_uid(entry.approver().uid());
  }
  return absl::OkStatus();
}

absl::Status Services::ConnectionSession::BinList(const pb::BinListRequest& query, uint64_t handle,
                                                  pb::BinListResponse* out) const {
  // The store's page token is binary; the proto field is a string, so it travels web-safe base64
  // encoded, as record_list's does.
  std::string token;
  if (!absl::WebSafeBase64Unescape(query.page_token(), &token)) {
    return MakeError(ErrorCode::kInvalidArgument, "bin_list.page_token is not valid");
  }
  COFFER_ASSIGN_OR_RETURN(storage::BinPage page, deps_.bin->List(handle, token, query.max_items()));
  for (storage::BinEntry& entry : page.items) {
    auto* item = out->add_items();
    item->set_kind(entry.kind == storage::BinEntry::Kind::kRecord ? pb::BinItem::RECORD
                                                                  : pb::BinItem::ATTACHMENT);
    item->set_id(std::move(entry.id));
    item->set_deleted_micros(entry.deleted_micros);
    item->set_purge_after_micros(entry.purge_after_micros);
  }
  out->set_next_page_token(absl::WebSafeBase64Escape(page.next_page_token));
  return absl::OkStatus();
}

namespace {

// The inventory rows of one dataset: its data keys by purpose and version, and its wrapping
// keys (one DESTROYED row when the dataset is destroyed).
void AddDatasetKeys(const kms::DatasetInfo& info, pb::KeyInventoryResponse* out) {
  const bool destroyed = info.state == kms::DatasetState::kDestroyed;
  for (const kms::PurposeInfo& purpose : info.purposes) {
    for (const kms::KeyVersionInfo& version : purpose.versions) {
      auto* key = out->add_keys();
      key->set_kind("data-key");
      key->set_dataset(info.name);
      key->set_dataset_handle(info.handle);
      key->set_purpose(std::string(storage::KeyPurposeName(purpose.purpose)));
      key->set_version(version.version);
      key->set_state(destroyed ? "DESTROYED" : pb::KeyVersionState_Name(ToProto(version.state)));
      key->set_created_micros(Micros(version.created));
      key->set_algorithm(
          purpose.purpose == storage::KeyPurpose::kLookup      ? "HMAC-SHA256 (256-bit key)"
          : purpose.purpose == storage::KeyPurpose::kPseudonym ? "AES-256 (pseudonym key)"
                                                               : "AES-256-GCM");
      key->set_location("key DB (wrapped)");
      key->set_wrapped_by(absl::StrCat("wrapping-key v", version.wrapping_key.version,
                                       " in module ", version.wrapping_key.module));
      key->set_encryptions(version.usage_count);
    }
  }
  std::vector<kms::WrappingKeyRef> wrapping = info.live_wrapping_keys;
  if (wrapping.empty() && !destroyed) wrapping.push_back(info.current_wrapping_key);
  for (const kms::WrappingKeyRef& ref : wrapping) {
    auto* key = out->add_keys();
    key->set_kind("wrapping-key");
    key->set_dataset(info.name);
    key->set_dataset_handle(info.handle);
    key->set_version(ref.version);
    key->set_state(destroyed                          ? "DESTROYED"
                   : ref == info.current_wrapping_key ? "ACTIVE (current)"
                                                      : "ACTIVE");
    key->set_algorithm("AES-256 (CKM_AES_KEY_WRAP, sensitive, non-extractable)");
    key->set_location(absl::StrCat("token (module ", ref.module, ")"));
  }
  if (destroyed) {
    auto* key = out->add_keys();
    key->set_kind("wrapping-key");
    key->set_dataset(info.name);
    key->set_dataset_handle(info.handle);
    key->set_state("DESTROYED");
    key->set_algorithm("AES-256 (CKM_AES_KEY_WRAP)");
    key->set_location("token: destroyed (signed tombstone)");
  }
}

}  // namespace

absl::Status Services::ConnectionSession::KeyInventory(const pb::KeyInventoryRequest& query,
                                                       pb::KeyInventoryResponse* out) const {
  std::vector<kms::DatasetSummary> datasets;
  if (query.dataset().empty()) {
    datasets = deps_.keys->ListDatasets();
  } else {
    COFFER_ASSIGN_OR_RETURN(uint64_t handle, deps_.keys->FindDataset(query.dataset()));
    datasets.push_back({handle, query.dataset(), kms::DatasetState::kActive});
  }
  for (const kms::DatasetSummary& summary : datasets) {
    COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, deps_.keys->DescribeDataset(summary.handle));
    AddDatasetKeys(info, out);
  }
  if (query.dataset().empty()) {
    auto* signing = out->add_keys();
    signing->set_kind("audit-signing-key");
    signing->set_state("ACTIVE");
    signing->set_algorithm("ECDSA P-256 (audit checkpoints, tombstones)");
    signing->set_location("token");
    signing->set_fingerprint(PublicKeyFingerprint(deps_.audit_public_key_pem));
    auto* rows = out->add_keys();
    rows->set_kind("row-mac-key");
    rows->set_state("ACTIVE");
    rows->set_algorithm("HMAC-SHA256 (key-DB and admin-DB rows)");
    rows->set_location("token");
    if (deps_.admin_registry != nullptr) {
      COFFER_ASSIGN_OR_RETURN(std::vector<kms::admin::AdminRecord> admins,
                              deps_.admin_registry->ListAdmins());
      for (const auto& admin : admins) {
        auto* totp = out->add_keys();
        totp->set_kind("admin-totp-secret");
        totp->set_state("ACTIVE");
        totp->set_created_micros(admin.enrolled_micros);
        totp->set_algorithm("HMAC-SHA1 (RFC 6238 TOTP, 160-bit secret)");
        totp->set_location("token");
        totp->set_admin_uid(admin.uid);
      }
    }
  }
  out->set_generated_micros(coffer::ToUnixMicros(services_->clock_->Now()));
  return absl::OkStatus();
}

}  // namespace coffer::daemon
