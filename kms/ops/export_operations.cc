#include "kms/ops/export_operations.h"

#include <algorithm>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "crypto/recipient_wrap.h"
#include "kms/api/error_response.h"
#include "kms/api/framing.h"
#include "kms/formats/export_archive.h"
#include "kms/ops/progress_stream.h"
#include "storage/dataset_erasure.h"

namespace coffer::kms::dataset_export {
namespace {

namespace pb = ::coffer::v1;

constexpr size_t kPageSize = 256;

// Archive bytes as DatasetExportResponse frames of at most api::kDefaultChunkBytes.
class FrameSink final : public ArchiveSink {
 public:
  FrameSink(uint64_t request_id, daemon::ResponseSink* sink)
      : request_id_(request_id), sink_(sink) {}

  absl::Status Write(std::string_view bytes) override {
    COFFER_RETURN_IF_ERROR(status_);
    while (!bytes.empty()) {
      const size_t n = std::min(bytes.size(), api::kDefaultChunkBytes - buffer_.size());
      buffer_.append(bytes.substr(0, n));
      bytes.remove_prefix(n);
      if (buffer_.size() == api::kDefaultChunkBytes) COFFER_RETURN_IF_ERROR(Flush());
    }
    return absl::OkStatus();
  }
  absl::Status Flush() {
    COFFER_RETURN_IF_ERROR(status_);
    if (buffer_.empty()) return absl::OkStatus();
    pb::Response response;
    response.set_request_id(request_id_);
    response.mutable_dataset_export()->set_data(std::move(buffer_));
    buffer_.clear();
    status_ = sink_->Send(response);
    return status_;
  }
  // A failure to send: the peer is gone, the connection must close.
  const absl::Status& send_status() const { return status_; }

 private:
  const uint64_t request_id_;
  daemon::ResponseSink* sink_;
  std::string buffer_;
  absl::Status status_;
};

std::string_view FixedText(ErrorCode code) {
  switch (code) {
    case ErrorCode::kDatasetNotFound:
      return "no dataset by that name";
    case ErrorCode::kDatasetNameInvalid:
      return "a dataset name is 1-128 characters of [a-z0-9._/-]";
    case ErrorCode::kKeyDestroyed:
      return "the dataset's keys are destroyed (destruction began): nothing can be exported";
    case ErrorCode::kCiphertextCorrupt:
    case ErrorCode::kKeyCommitmentMismatch:
      return "stored data failed authentication during the export; run a scrub";
    case ErrorCode::kAuditNotDurable:
    case ErrorCode::kAuditLogClosed:
      return "the audit log cannot record the export, so it was not served; check the daemon";
    default:
      return "the export failed; nothing usable was sent (see the code)";
  }
}

// The client sees the code and a fixed text: no id, name or value can leak through a message.
absl::Status Public(const absl::Status& status) {
  const ErrorCode code = ErrorCodeOf(status);
  return MakeError(code, FixedText(code));
}

absl::Status SendError(daemon::ResponseSink* sink, const pb::Request& request,
                       const absl::Status& status) {
  pb::Response response;
  response.set_request_id(request.request_id());
  api::FillError(&response, status);
  return sink->Send(response);
}

// The dataset an export names and the key it is for, once the request is known to be
// exportable.
struct ExportTarget {
  crypto::RecipientPublicKey recipient;
  uint64_t handle = 0;
  DatasetInfo info;
};

// The request's target, or the error to answer (its public form): a malformed request, a
// recipient key that does not parse, an unknown dataset, or one that is neither DISABLED nor
// PENDING_DESTRUCTION.
absl::StatusOr<ExportTarget> CheckExport(const pb::DatasetExportRequest& r, KeyManager* keys) {
  if (r.dataset().empty()) {
    return MakeError(ErrorCode::kMalformedRequest, "dataset_export.dataset is empty");
  }
  absl::StatusOr<crypto::RecipientPublicKey> recipient =
      crypto::RecipientPublicKey::FromPem(r.recipient_public_key_pem());
  if (!recipient.ok()) return recipient.status();
  absl::StatusOr<uint64_t> handle = keys->FindDataset(r.dataset());
  if (!handle.ok()) return Public(handle.status());
  absl::StatusOr<DatasetInfo> info = keys->DescribeDataset(*handle);
  if (!info.ok()) return Public(info.status());
  if (info->state != DatasetState::kDisabled && info->state != DatasetState::kPendingDestruction) {
    return MakeError(
        ErrorCode::kDatasetStateForbids,
        absl::StrCat(
            "dataset ", r.dataset(), " is ", std::string(DatasetStateName(info->state)),
            ": only a DISABLED or PENDING_DESTRUCTION dataset can be exported",
            info->state == DatasetState::kActive ? " (keyctl dataset disable NAME first)" : ""));
  }
  return ExportTarget{*std::move(recipient), *handle, *std::move(info)};
}

// Redeems approval r.approval_id() for this export — it must be an export of the same dataset
// filed for the same recipient key — and audits DATASET_EXPORT_REDEEMED. Returns the approving
// admin, or the error to answer.
absl::StatusOr<audit::AuditActor> RedeemApproval(const ExportServiceOptions& options,
                                                 const pb::DatasetExportRequest& r,
                                                 const crypto::RecipientPublicKey& recipient,
                                                 uint64_t handle, const audit::AuditActor& actor) {
  if (options.registry == nullptr) {
    return MakeError(ErrorCode::kApprovalNotFound,
                     "this daemon runs without dual control: export without --approval");
  }
  COFFER_ASSIGN_OR_RETURN(admin::ApprovalRecord filed,
                          options.registry->GetApproval(r.approval_id()));
  pb::Request filed_request;
  if (!filed_request.ParseFromString(filed.payload) || !filed_request.has_dataset_export() ||
      filed_request.dataset_export().dataset() != r.dataset()) {
    return MakeError(ErrorCode::kApprovalForbidden,
                     absl::StrCat("approval request ", r.approval_id(),
                                  " is not an export of dataset ", r.dataset()));
  }
  absl::StatusOr<crypto::RecipientPublicKey> filed_recipient = crypto::RecipientPublicKey::FromPem(
      filed_request.dataset_export().recipient_public_key_pem());
  if (!filed_recipient.ok() || filed_recipient->fingerprint() != recipient.fingerprint()) {
    return MakeError(
        ErrorCode::kApprovalForbidden,
        absl::StrCat("approval request ", r.approval_id(), " was filed for another recipient key"));
  }
  COFFER_ASSIGN_OR_RETURN(admin::ApprovalRecord redeemed,
                          options.registry->Redeem(r.approval_id(), actor.uid));
  audit::AuditActor approver;
  approver.uid = redeemed.approver_uid;
  approver.admin_id = uint64_t{redeemed.approver_uid} + 1;
  approver.admin_name = redeemed.approver_name;
  approver.socket = audit::v1::SOCKET_ADMIN;
  audit::AuditEvent event;
  event.kind = audit::v1::DATASET_EXPORT_REDEEMED;
  event.actor = actor;
  event.approver = approver;
  event.dataset_handle = handle;
  event.record_count = static_cast<uint32_t>(r.approval_id());
  absl::StatusOr<uint64_t> audited = options.audit_log->Append(event);
  if (!audited.ok()) return Public(audited.status());
  return approver;
}

// One export's walk over its dataset into the archive. Records and attachments whose stored
// bytes no longer open are left out of the archive and counted in `damaged` (docs/daemon.md,
// "Damaged items").
struct ArchiveWalk {
  storage::RecordStore* records = nullptr;
  storage::AttachmentStore* attachments = nullptr;
  uint64_t handle = 0;
  coffer::ProgressFn report;  // empty: no progress asked for
  ArchiveWriter* writer = nullptr;
  uint64_t total = 0;
  uint64_t done = 0;
  storage::DamagedItems damaged;

  void Step() {
    if (report) report({"export", ++done, std::max(total, done)});
  }
};

absl::Status AddRecords(ArchiveWalk& walk) {
  std::string token;
  do {
    COFFER_ASSIGN_OR_RETURN(storage::RecordStore::IdPage page,
                            walk.records->ListIds(walk.handle, token, kPageSize));
    walk.damaged.Merge(page.damaged);
    for (const std::string& id : page.ids) {
      absl::StatusOr<std::string> value = walk.records->Get(walk.handle, id);
      if (ErrorCodeOf(value.status()) == ErrorCode::kRecordNotFound) continue;  // purged since
      if (!value.ok()) return value.status();
      COFFER_RETURN_IF_ERROR(walk.writer->AddRecord(id, *value));
      walk.Step();
    }
    token = std::move(page.next_page_token);
  } while (!token.empty());
  return absl::OkStatus();
}

// One attachment, or none when it is damaged: an archive entry cannot be taken back once begun,
// so every segment is authenticated before it begins, and a damaged attachment is left out and
// reported like a damaged pointer, not found half-way through. It costs a second decryption of
// each attachment.
absl::Status AddAttachment(ArchiveWalk& walk, const std::string& name,
                           storage::AttachmentReader& reader) {
  absl::Status whole = reader.Verify();
  if (storage::IsItemDamage(whole)) {
    reader.AddDamageTo(&walk.damaged, whole);
    return absl::OkStatus();
  }
  COFFER_RETURN_IF_ERROR(whole);
  const storage::AttachmentInfo& a = reader.info();
  COFFER_RETURN_IF_ERROR(
      walk.writer->BeginAttachment(name, a.size, a.content_type, coffer::ToUnixMicros(a.created)));
  std::string data;
  for (uint64_t offset = 0; offset < a.size;) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(a.size - offset, api::kDefaultChunkBytes));
    COFFER_RETURN_IF_ERROR(reader.Read(offset, n, &data));
    if (data.size() != n) {
      return MakeError(ErrorCode::kCiphertextCorrupt, "attachment shorter than its size");
    }
    COFFER_RETURN_IF_ERROR(walk.writer->AppendAttachmentData(data));
    offset += n;
  }
  OPENSSL_cleanse(data.data(), data.size());
  walk.Step();
  return absl::OkStatus();
}

absl::Status AddAttachments(ArchiveWalk& walk) {
  std::string token;
  do {
    COFFER_ASSIGN_OR_RETURN(storage::AttachmentStore::NamePage page,
                            walk.attachments->ListNames(walk.handle, token, kPageSize));
    walk.damaged.Merge(page.damaged);
    for (const std::string& name : page.names) {
      absl::StatusOr<std::unique_ptr<storage::AttachmentReader>> reader =
          walk.attachments->Open(walk.handle, name);
      if (ErrorCodeOf(reader.status()) == ErrorCode::kAttachmentNotFound) continue;
      if (!reader.ok()) return reader.status();
      COFFER_RETURN_IF_ERROR(AddAttachment(walk, name, **reader));
    }
    token = std::move(page.next_page_token);
  } while (!token.empty());
  return absl::OkStatus();
}

void FillSummary(const std::string& dataset, uint64_t handle, const ArchiveCounts& counts,
                 const crypto::RecipientPublicKey& recipient, int64_t exported_micros,
                 const storage::DamagedItems& damaged, pb::DatasetExportSummary* summary) {
  summary->set_dataset(dataset);
  summary->set_dataset_handle(handle);
  summary->set_records(counts.records);
  summary->set_attachments(counts.attachments);
  summary->set_attachment_bytes(counts.attachment_bytes);
  summary->set_archive_bytes(counts.archive_bytes);
  summary->set_archive_sha256(
      std::string(reinterpret_cast<const char*>(counts.archive_sha256.data()), 32));
  summary->set_recipient_key(recipient.description());
  summary->set_recipient_fingerprint(
      std::string(reinterpret_cast<const char*>(recipient.fingerprint().data()), 32));
  summary->set_exported_micros(exported_micros);
  summary->set_damaged(damaged.count());
  daemon::AppendWire(damaged.listed(), summary->mutable_damaged_items());
}

}  // namespace

// The stores' key provider for one export: KeyManager::ExportKey, opening only. It keeps what
// it unwrapped (one HSM unwrap per key version, not per item) until the export ends; the keys
// are wiped when it is destroyed.
class ExportService::ExportKeys final : public storage::KeyProvider {
 public:
  explicit ExportKeys(KeyManager* keys) : keys_(keys) {}
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> PrimaryKey(
      uint64_t dataset_handle, storage::KeyPurpose purpose, uint64_t encryptions) override {
    if (encryptions != 0) {
      return MakeError(ErrorCode::kFailedPrecondition,
                       "export never encrypts under a dataset's keys");
    }
    return Get(dataset_handle, purpose, std::nullopt);
  }
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> KeyForVersion(uint64_t dataset_handle,
                                                                        storage::KeyPurpose purpose,
                                                                        uint32_t version) override {
    return Get(dataset_handle, purpose, version);
  }
  absl::StatusOr<std::vector<uint32_t>> LiveVersions(uint64_t dataset_handle,
                                                     storage::KeyPurpose purpose) override {
    return keys_->LiveVersions(dataset_handle, purpose);
  }

 private:
  absl::StatusOr<std::shared_ptr<const storage::DataKey>> Get(uint64_t handle,
                                                              storage::KeyPurpose purpose,
                                                              std::optional<uint32_t> version) {
    const auto slot = std::make_tuple(handle, static_cast<int>(purpose), version);
    std::lock_guard<std::mutex> lock(mu_);
    auto found = keys_by_version_.find(slot);
    if (found != keys_by_version_.end()) return found->second;
    COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const storage::DataKey> key,
                            keys_->ExportKey(handle, purpose, version));
    keys_by_version_.emplace(slot, key);
    return key;
  }

  KeyManager* keys_;
  std::mutex mu_;
  std::map<std::tuple<uint64_t, int, std::optional<uint32_t>>,
           std::shared_ptr<const storage::DataKey>>
      keys_by_version_;  // guarded by mu_
};

absl::StatusOr<std::unique_ptr<ExportService>> ExportService::Create(ExportServiceOptions options) {
  const std::pair<const void*, const char*> required[] = {{options.keys, "keys"},
                                                          {options.data_db, "data_db"},
                                                          {options.signer, "signer"},
                                                          {options.audit_log, "audit_log"}};
  for (const auto& [pointer, name] : required) {
    if (pointer == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument,
                       absl::StrCat("ExportServiceOptions.", name, " is null"));
    }
  }
  if (options.dual_control && options.registry == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument,
                     "ExportServiceOptions.registry is null but dual control is on");
  }
  if (options.clock == nullptr) {
    return MakeError(ErrorCode::kInvalidArgument, "ExportServiceOptions.clock is null");
  }
  return std::unique_ptr<ExportService>(new ExportService(std::move(options)));
}

namespace {

// Writes the archive of walk->handle (report: walk->report) into `frames` through stores over
// `export_keys` (this export's own key provider, so that nothing of it outlives the export):
// records, then attachments. Fills `counts`; walk->damaged gathers the damaged items met.
absl::Status WriteArchive(const ExportServiceOptions& options, storage::KeyProvider* export_keys,
                          storage::DatasetPolicySource* policies,
                          const ArchiveDescription& description,
                          const crypto::RecipientPublicKey& recipient, FrameSink* frames,
                          ArchiveWalk* walk, ArchiveCounts* counts) {
  storage::RecordStore records(options.data_db, export_keys, policies, options.clock);
  storage::AttachmentStore attachments(options.data_db, export_keys, policies, options.clock);
  walk->records = &records;
  walk->attachments = &attachments;
  absl::Status result = [&]() -> absl::Status {
    if (walk->report) {
      COFFER_ASSIGN_OR_RETURN(storage::DatasetDataCounts items,
                              storage::CountDatasetData(*options.data_db, walk->handle));
      walk->total = items.records + items.attachments;
      walk->report({"export", 0, walk->total});
    }
    COFFER_ASSIGN_OR_RETURN(std::unique_ptr<ArchiveWriter> writer,
                            ArchiveWriter::Create(description, recipient, options.signer, frames));
    walk->writer = writer.get();
    COFFER_RETURN_IF_ERROR(AddRecords(*walk));
    COFFER_RETURN_IF_ERROR(AddAttachments(*walk));
    COFFER_ASSIGN_OR_RETURN(*counts, writer->Finish());
    return frames->Flush();
  }();
  walk->records = nullptr;  // the stores end here
  walk->attachments = nullptr;
  walk->writer = nullptr;
  return result;
}

}  // namespace

ExportService::ExportService(ExportServiceOptions options)
    : options_(std::move(options)),
      policies_(std::make_unique<KeyManagerPolicySource>(options_.keys)) {}

ExportService::~ExportService() = default;

absl::Status ExportService::Serve(const pb::Request& request, const audit::AuditActor& actor,
                                  daemon::ResponseSink* sink) {
  const pb::DatasetExportRequest& r = request.dataset_export();
  absl::StatusOr<ExportTarget> target = CheckExport(r, options_.keys);
  if (!target.ok()) return SendError(sink, request, target.status());
  const uint64_t handle = target->handle;

  // Dual control: the approval's run only marks the request redeemable.
  if (r.approval_id() == 0 && options_.dual_control) {
    pb::Response response;
    response.set_request_id(request.request_id());
    response.mutable_dataset_export()->set_last(true);
    response.mutable_dataset_export()->set_approved_for_redemption(true);
    return sink->Send(response);
  }
  std::optional<audit::AuditActor> approver;
  if (r.approval_id() != 0) {
    absl::StatusOr<audit::AuditActor> redeemed =
        RedeemApproval(options_, r, target->recipient, handle, actor);
    if (!redeemed.ok()) return SendError(sink, request, redeemed.status());
    approver = *redeemed;
  }

  audit::AuditEvent event;
  event.kind = audit::v1::DATASET_EXPORT;
  event.actor = actor;
  event.approver = approver;
  event.dataset_handle = handle;
  event.stage = audit::v1::STAGE_REQUESTED;
  absl::StatusOr<uint64_t> audited = options_.audit_log->Append(event);
  if (!audited.ok()) return SendError(sink, request, Public(audited.status()));

  daemon::ProgressStream progress(request, sink);
  FrameSink frames(request.request_id(), sink);
  ArchiveDescription description;
  description.dataset = r.dataset();
  description.dataset_handle = handle;
  description.dataset_state = std::string(DatasetStateName(target->info.state));
  description.exported_micros = coffer::ToUnixMicros(options_.clock->Now());
  description.approval_id = r.approval_id();

  ArchiveWalk walk;
  walk.handle = handle;
  walk.report = progress.Function();
  ArchiveCounts counts;
  ExportKeys export_keys(options_.keys);
  absl::Status result = WriteArchive(options_, &export_keys, policies_.get(), description,
                                     target->recipient, &frames, &walk, &counts);
  const std::vector<storage::DamagedItem> damaged_items = walk.damaged.listed();
  if (options_.damaged_events != nullptr) {
    options_.damaged_events->Raise(handle, r.dataset(), damaged_items).IgnoreError();  // logged
  }
  COFFER_RETURN_IF_ERROR(frames.send_status());  // the peer is gone
  COFFER_RETURN_IF_ERROR(progress.status());

  event.stage = audit::v1::STAGE_COMPLETED;
  event.result = ErrorCodeOf(result);
  event.record_count =
      static_cast<uint32_t>(std::min<uint64_t>(counts.records + counts.attachments, UINT32_MAX));
  audited = options_.audit_log->Append(event);
  if (!result.ok()) return SendError(sink, request, Public(result));
  // The archive is complete but unusable without its summary: fail closed on the audit.
  if (!audited.ok()) return SendError(sink, request, Public(audited.status()));

  pb::Response response;
  response.set_request_id(request.request_id());
  pb::DatasetExportResponse* out = response.mutable_dataset_export();
  out->set_last(true);
  FillSummary(r.dataset(), handle, counts, target->recipient, description.exported_micros,
              walk.damaged, out->mutable_summary());
  return sink->Send(response);
}

}  // namespace coffer::kms::dataset_export
