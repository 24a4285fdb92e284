// KeyManager: deletion receipts — the erase bookkeeping of a DESTROYED dataset and its signed
// receipt (docs/key-manager.md, "Deletion receipt"; kms/keys/deletion_receipts.h drives the steps).

#include <openssl/sha.h>

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "crypto/base/status.h"
#include "google/protobuf/util/time_util.h"
#include "kms/audit/audit_format.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/internal/audit_text.h"
#include "kms/keys/internal/convert.h"
#include "kms/keys/internal/dataset_state.h"
#include "kms/keys/internal/manager_util.h"
#include "kms/keys/key_manager.h"

namespace coffer::kms {

using google::protobuf::util::TimeUtil;
using internal::DatasetSnapshot;

namespace {

absl::Status NotDestroyed() {
  return MakeError(ErrorCode::kDatasetStateForbids,
                   "the dataset is not destroyed; deletion receipts exist for destroyed datasets "
                   "only");
}

void ToReceipt(const v1::Actor& actor, coffer::v1::ReceiptActor* out) {
  out->set_uid(actor.uid());
  out->set_admin_id(actor.admin_id());
  out->set_admin_name(actor.admin_name());
}

// The receipt body of a destroyed dataset: what its tombstone and erasure record, the hashes
// binding it to the tombstone and the signing key, and when it was issued. (The order of the
// fields is the order of the signed body line, deletion-receipt-v1.)
coffer::v1::DeletionReceipt ReceiptBody(uint64_t handle, const v1::DatasetRow& row,
                                        const v1::Tombstone& tombstone,
                                        const std::string& public_key, int64_t issued_micros) {
  const v1::DataErasure& erasure = row.erasure();
  coffer::v1::DeletionReceipt receipt;
  receipt.set_format(std::string(receipt::kReceiptFormat));
  receipt.set_dataset_handle(handle);
  if (!tombstone.name_commitment().empty()) {
    receipt.set_dataset_name_commitment(audit::ToHex(tombstone.name_commitment()));
  } else {  // a version-1 tombstone (destroyed before name commitments): its bare hash
    receipt.set_dataset_name_sha256(audit::ToHex(tombstone.name_sha256()));
  }
  *receipt.mutable_dataset_created_at() =
      TimeUtil::MicrosecondsToTimestamp(tombstone.created_micros());
  auto* requester = receipt.mutable_destruction_requested_by();
  requester->set_uid(tombstone.actor_uid());
  requester->set_admin_id(tombstone.actor_admin_id());
  requester->set_admin_name(tombstone.actor_admin_name());
  *receipt.mutable_destruction_requested_at() =
      TimeUtil::MicrosecondsToTimestamp(tombstone.destruction_requested_micros());
  receipt.set_scheduled_by_lifecycle_automation(tombstone.scheduled_by_lifecycle_automation());
  for (const v1::Approval& approval : tombstone.destruction_approvals()) {
    coffer::v1::ReceiptApproval* out = receipt.add_approvals();
    ToReceipt(approval.approver(), out->mutable_approver());
    out->set_request_id(approval.request_id());
    out->set_audit_sequence(approval.audit_sequence());
  }
  *receipt.mutable_destroyed_at() = TimeUtil::MicrosecondsToTimestamp(tombstone.destroyed_micros());
  for (int i = 0; i < tombstone.destroyed_wrapping_keys_size(); ++i) {
    coffer::v1::ReceiptWrappingKey* key = receipt.add_wrapping_keys();
    key->set_module(tombstone.destroyed_wrapping_keys(i).module());
    key->set_version(tombstone.destroyed_wrapping_keys(i).version());
    // Tombstones written before per-key times existed carry the destruction's time.
    const int64_t at = i < tombstone.wrapping_key_destroyed_micros_size()
                           ? tombstone.wrapping_key_destroyed_micros(i)
                           : tombstone.destroyed_micros();
    *key->mutable_destroyed_at() = TimeUtil::MicrosecondsToTimestamp(at);
    key->set_already_absent(i < tombstone.wrapping_key_already_absent_size() &&
                            tombstone.wrapping_key_already_absent(i));
  }
  receipt.set_key_versions_destroyed(tombstone.key_versions_destroyed());
  receipt.set_records_purged(erasure.records());
  receipt.set_attachments_purged(erasure.attachments());
  receipt.set_bin_records_purged(erasure.bin_records());
  receipt.set_bin_attachments_purged(erasure.bin_attachments());
  receipt.set_uploads_discarded(erasure.uploads());
  receipt.set_purge_compaction_finished(true);
  *receipt.mutable_purge_compaction_finished_at() =
      TimeUtil::MicrosecondsToTimestamp(erasure.compaction_finished_micros());
  auto* sequences = receipt.mutable_audit_sequences();
  sequences->set_destruction_scheduled(tombstone.schedule_audit_sequence());
  sequences->set_destruction_started(tombstone.destroy_audit_sequence());
  sequences->set_destruction_completed(row.destroy_completed_audit_sequence());
  sequences->set_erasure_started(erasure.started_audit_sequence());
  sequences->set_erasure_completed(erasure.finished_audit_sequence());
  receipt.set_tombstone_sha256(receipt::Sha256Hex(row.tombstone()));
  receipt.set_signing_key_sha256(receipt::Sha256Hex(public_key));
  *receipt.mutable_issued_at() = TimeUtil::MicrosecondsToTimestamp(issued_micros);

  return receipt;
}

}  // namespace

absl::Status KeyManager::UpdateDestroyedRow(const EntryPtr& entry,
                                            const std::function<void(v1::DatasetRow&)>& change) {
  std::lock_guard<std::mutex> lock(entry->mu);
  auto next = std::make_shared<DatasetSnapshot>(*entry->snapshot.load());
  if (next->row.state() != v1::DESTROYED) return NotDestroyed();
  change(next->row);
  KeyDb::Batch batch(*db_);
  COFFER_RETURN_IF_ERROR(PutDatasetRow(batch, next->row));
  COFFER_RETURN_IF_ERROR(db_->Write(batch));
  Publish(entry, std::move(next));
  return absl::OkStatus();
}

std::vector<uint64_t> KeyManager::DestroyedAwaitingReceipt() const {
  std::vector<uint64_t> handles;
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() == v1::DESTROYED && snap->row.deletion_receipt().empty()) {
      handles.push_back(handle);
    }
  }
  return handles;
}

absl::StatusOr<v1::DataErasure> KeyManager::Erasure(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::DESTROYED) return NotDestroyed();
  return snap->row.erasure();
}

absl::StatusOr<v1::DataErasure> KeyManager::BeginErasure(uint64_t handle,
                                                         const storage::DatasetDataCounts& counts,
                                                         const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::DESTROYED) return NotDestroyed();
  if (snap->row.erasure().started_audit_sequence() != 0) return snap->row.erasure();
  audit::AuditEvent event =
      internal::MakeEvent(audit::v1::DATASET_ERASE, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                          0, audit::v1::STAGE_REQUESTED);
  const uint64_t items = counts.records + counts.attachments;
  event.record_count =
      static_cast<uint32_t>(std::min<uint64_t>(items, std::numeric_limits<uint32_t>::max()));
  COFFER_ASSIGN_OR_RETURN(const uint64_t sequence, AuditAt(event));
  v1::DataErasure erasure;
  erasure.set_records(counts.records);
  erasure.set_attachments(counts.attachments);
  erasure.set_bin_records(counts.bin_records);
  erasure.set_bin_attachments(counts.bin_attachments);
  erasure.set_uploads(counts.uploads);
  erasure.set_started_micros(NowMicros());
  erasure.set_started_audit_sequence(sequence);
  COFFER_RETURN_IF_ERROR(
      UpdateDestroyedRow(entry, [&](v1::DatasetRow& row) { *row.mutable_erasure() = erasure; }));
  return erasure;
}

absl::Status KeyManager::FinishErasure(uint64_t handle, const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::DESTROYED) return NotDestroyed();
  const v1::DataErasure& erasure = snap->row.erasure();
  if (erasure.started_audit_sequence() == 0) {
    return MakeError(ErrorCode::kDatasetStateForbids, "the dataset's data erase has not begun");
  }
  if (erasure.compaction_finished_micros() != 0) return absl::OkStatus();
  audit::AuditEvent event =
      internal::MakeEvent(audit::v1::DATASET_ERASE, actor, handle, audit::v1::PURPOSE_UNSPECIFIED,
                          0, audit::v1::STAGE_COMPLETED);
  COFFER_ASSIGN_OR_RETURN(const uint64_t sequence, AuditAt(event));
  const int64_t now = NowMicros();
  return UpdateDestroyedRow(entry, [&](v1::DatasetRow& row) {
    row.mutable_erasure()->set_compaction_finished_micros(now);
    row.mutable_erasure()->set_finished_audit_sequence(sequence);
  });
}

absl::StatusOr<std::string> KeyManager::IssueDeletionReceipt(uint64_t handle,
                                                             const audit::AuditActor& actor) {
  std::lock_guard<std::mutex> lock(admin_mu_);
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  const v1::DatasetRow& row = snap->row;
  if (row.state() != v1::DESTROYED) return NotDestroyed();
  if (!row.deletion_receipt().empty()) return row.deletion_receipt();
  const v1::DataErasure& erasure = row.erasure();
  if (erasure.compaction_finished_micros() == 0) {
    return MakeError(ErrorCode::kDatasetStateForbids,
                     "the dataset's data erase has not finished; the receipt follows it");
  }
  v1::Tombstone tombstone;
  if (!tombstone.ParseFromString(row.tombstone())) {
    return MakeError(ErrorCode::kTombstoneInvalid, "the tombstone does not parse");
  }
  COFFER_ASSIGN_OR_RETURN(const std::string public_key, options_.signer->PublicKeyPem());

  coffer::v1::DeletionReceipt receipt =
      ReceiptBody(handle, row, tombstone, public_key, NowMicros());
  COFFER_ASSIGN_OR_RETURN(const std::string body, receipt::BodyLine(receipt));
  COFFER_ASSIGN_OR_RETURN(const std::string signature,
                          options_.signer->Sign(receipt::SignedMessage(body)));
  std::string file = receipt::AssembleFile(body, signature);
  // Audited before it is stored: a receipt that exists is always in the log.
  COFFER_RETURN_IF_ERROR(
      Audit(internal::MakeEvent(audit::v1::DELETION_RECEIPT, actor, handle,
                                audit::v1::PURPOSE_UNSPECIFIED, 0, audit::v1::STAGE_COMPLETED)));
  COFFER_RETURN_IF_ERROR(UpdateDestroyedRow(
      entry, [&](v1::DatasetRow& stored) { stored.set_deletion_receipt(file); }));
  return file;
}

absl::StatusOr<std::string> KeyManager::GetDeletionReceipt(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(EntryPtr entry, RequireEntry(handle));
  Snapshot snap = entry->snapshot.load();
  if (snap->row.state() != v1::DESTROYED) return NotDestroyed();
  if (snap->row.deletion_receipt().empty()) {
    return MakeError(ErrorCode::kDatasetStateForbids,
                     "the deletion receipt is not issued yet: the data erase runs on the daemon's "
                     "clock after destruction; try again shortly");
  }
  return snap->row.deletion_receipt();
}

std::vector<uint64_t> KeyManager::FindDestroyed(std::string_view name) const {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(name.data()), name.size(), digest);
  const std::string_view wanted(reinterpret_cast<const char*>(digest), sizeof(digest));
  std::vector<std::pair<int64_t, uint64_t>> found;  // (destroyed_micros, handle)
  // Named: a temporary in a range-for's range expression dies before the loop runs
  // (before C++23), and a writer may publish a new map and free this one meanwhile.
  const std::shared_ptr<const DatasetMap> dataset_map = datasets_.load();
  for (const auto& [handle, entry] : *dataset_map) {
    Snapshot snap = entry->snapshot.load();
    if (snap->row.state() != v1::DESTROYED) continue;
    v1::Tombstone tombstone;
    if (!tombstone.ParseFromString(snap->row.tombstone())) continue;
    const bool named = tombstone.name_commitment().empty()
                           ? tombstone.name_sha256() == wanted
                           : !snap->row.name_salt().empty() &&
                                 tombstone.name_commitment() ==
                                     receipt::NameCommitment(snap->row.name_salt(), name);
    if (named) found.emplace_back(tombstone.destroyed_micros(), handle);
  }
  std::sort(found.begin(), found.end(), std::greater<>());
  std::vector<uint64_t> handles;
  for (const auto& [unused, handle] : found) handles.push_back(handle);
  return handles;
}

}  // namespace coffer::kms
