#include "kms/ops/services.h"

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/verifier.h"
#include "kms/ops/canary.h"
#include "kms/ops/progress_stream.h"
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/internal/layout.h"

namespace coffer::daemon {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using storage::KeyPurpose;

constexpr uint32_t kDefaultListIds = 1000;
constexpr uint32_t kMaxListIds = 10000;
constexpr uint32_t kDefaultAuditLimit = 1000;
constexpr uint32_t kMaxAuditLimit = 10000;

// ---------------------------------------------------------------------------------------------
// Errors: every component error reaches the client with a fixed text chosen from its code, so
// no id, value, name or key a component may have put in its message can leak.

std::string_view FixedText(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument:
      return "a field of the request is invalid (empty id or name, bad page token, bad policy)";
    case ErrorCode::kAlreadyExists:
      return "the item already exists (a live record or attachment has this id or name)";
    case ErrorCode::kFailedPrecondition:
      return "the current state does not allow this operation";
    case ErrorCode::kNotFound:
      return "not found";
    case ErrorCode::kCancelled:
      return "cancelled";
    case ErrorCode::kCiphertextCorrupt:
      return "stored data failed authentication; run a scrub and restore from a backup";
    case ErrorCode::kKeyCommitmentMismatch:
      return "stored attachment data failed its key commitment; run a scrub";
    case ErrorCode::kKeyDestroyed:
      return "the dataset's keys are destroyed: its data is unreadable";
    case ErrorCode::kAuditNotDurable:
    case ErrorCode::kAuditLogClosed:
      return "the audit log cannot record this operation, so it was not served; check the "
             "daemon";
    case ErrorCode::kDatasetNotFound:
      return "no dataset by that name";
    case ErrorCode::kDatasetNameInvalid:
      return "a dataset name is 1-128 characters of [a-z0-9._/-]";
    case ErrorCode::kDatasetExists:
      return "a dataset with that name exists";
    case ErrorCode::kDatasetStateForbids:
      return "the dataset's lifecycle state forbids this operation (disabled, pending "
             "destruction or destroyed)";
    case ErrorCode::kKeyVersionNotFound:
      return "no such key version";
    case ErrorCode::kKeyVersionRetired:
      return "data under a retired key version";
    case ErrorCode::kKeyVersionInUse:
      return "a version to retire still protects data; run a re-encryption job first";
    case ErrorCode::kLegalHoldActive:
    case ErrorCode::kLegalHold:
      return "a legal hold on the dataset blocks this; lift the hold first";
    case ErrorCode::kDestructionStarted:
      return "destruction has started and cannot be cancelled";
    case ErrorCode::kClockWentBackwards:
      return "the system clock is behind the key DB's high-water mark; fix the clock";
    case ErrorCode::kUsageLimitReached:
      return "the primary key reached its usage limit and could not rotate";
    case ErrorCode::kIdTooLong:
      return "a record id or attachment name is longer than 1 KiB";
    case ErrorCode::kValueTooLarge:
      return "the record value exceeds the daemon's max_value_bytes; store it as an attachment";
    case ErrorCode::kRecordNotFound:
      return "no live record with this id in the dataset";
    case ErrorCode::kAttachmentNotFound:
      return "no live attachment with this name in the dataset";
    case ErrorCode::kNotInRecycleBin:
      return "nothing with this id or name is in the dataset's recycle bin";
    case ErrorCode::kComplianceLocked:
      return "the dataset's minimum retention (compliance lock) forbids deleting this yet";
    case ErrorCode::kEventSubscriberInvalid:
      return "a subscriber name is 1-64 characters of [a-z0-9._-]";
    case ErrorCode::kEventCursorInvalid:
      return "ack_through is beyond the newest event; acknowledge only events you read";
    case ErrorCode::kCanaryExists:
      return "an item with this id or name already exists in the dataset (canary or not)";
    case ErrorCode::kCanaryNotFound:
      return "no canary with this id or name in the dataset";
    case ErrorCode::kUploadClosed:
      return "the upload was already committed, aborted or failed; start a new one";
    case ErrorCode::kIdentifierInvalid:
      return "an identifier to pseudonymize is empty or longer than 1 KiB";
    case ErrorCode::kPseudonymTokenMalformed:
      return "not a coffer pseudonym token (cp1.<version>.<base64url>)";
    case ErrorCode::kPseudonymTokenMismatch:
      return "the token does not belong to this dataset (another dataset's token, or altered)";
    case ErrorCode::kRangeBeyondEnd:
      return "the requested range ends beyond the attachment";
    case ErrorCode::kBackupNotFound:
      return "no backup with this id (never made, or pruned)";
    case ErrorCode::kBackupCorrupt:
      return "the backup failed verification; do not restore from it";
    case ErrorCode::kRestoreTargetNotEmpty:
      return "a restore writes only into a new or empty directory";
    case ErrorCode::kRestoreIncomplete:
      return "that directory holds an unfinished restore; delete it and restore again";
    case ErrorCode::kReplaySourceStale:
      return "the live audit log cannot replay purges and destructions since the backup";
    case ErrorCode::kReceiptInvalid:
      return "the deletion receipt does not verify";
    case ErrorCode::kAuditTampered:
      return "audit verification failed";
    case ErrorCode::kMalformedRequest:
      return "the request lacks a required field (a dataset, id or name)";
    case ErrorCode::kDataDbError:
      return "the data DB reported a failure; see the daemon's log";
    default:
      return "the operation failed; see docs/errors.md for the code";
  }
}

// Pseudonymization requests carry 1..kMaxPseudonymBatch items.
constexpr int kMaxPseudonymBatch = 1000;

absl::Status CheckPseudonymBatch(int size, const char* what) {
  if (size == 0) {
    return MakeError(ErrorCode::kMalformedRequest, absl::StrCat("the request names no ", what));
  }
  if (size > kMaxPseudonymBatch) {
    return MakeError(ErrorCode::kMalformedRequest,
                     absl::StrCat("at most ", kMaxPseudonymBatch, " ", what, " per request"));
  }
  return absl::OkStatus();
}

// Maps `items` through `one` (Pseudonymize or Translate) into out->tokens, and sets
// out->key_version. Each item fetches the primary key, so a rotation racing the batch could mix
// versions: then the batch runs once more (a second rotation within one batch is an error).
template <typename Items, typename Response, typename One>
absl::Status PseudonymBatch(const Items& items, Response* out, const One& one) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    out->clear_tokens();
    for (const std::string& item : items) {
      COFFER_ASSIGN_OR_RETURN(std::string token, one(item));
      out->add_tokens(std::move(token));
    }
    COFFER_ASSIGN_OR_RETURN(uint32_t version, storage::Pseudonymizer::TokenVersion(out->tokens(0)));
    bool uniform = true;
    for (const std::string& token : out->tokens()) {
      COFFER_ASSIGN_OR_RETURN(uint32_t v, storage::Pseudonymizer::TokenVersion(token));
      uniform = uniform && v == version;
    }
    if (uniform) {
      out->set_key_version(version);
      return absl::OkStatus();
    }
  }
  return MakeError(ErrorCode::kFailedPrecondition,
                   "the pseudonym key rotated twice during one request; retry");
}

absl::Status Public(const absl::Status& status) {
  if (status.ok()) return status;
  ErrorCode code = ErrorCodeOf(status);
  return MakeError(code, FixedText(code));
}

// Public text, except that a malformed request keeps the daemon's own message (it names the
// field at fault and never data).
absl::Status PublicOrMalformed(const absl::Status& status) {
  return ErrorCodeOf(status) == ErrorCode::kMalformedRequest ? status : Public(status);
}

// A refusal's fixed audit detail.
audit::AuditText RefusalDetail(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNotGranted:
      return "daemon: no grant";
    case ErrorCode::kWrongSocket:
      return "daemon: admin operation on the data socket";
    case ErrorCode::kSlowDown:
      return "daemon: rate limit";
    case ErrorCode::kUnexpectedFrame:
      return "daemon: unexpected frame";
    case ErrorCode::kMalformedRequest:
      return "daemon: malformed request";
    case ErrorCode::kFrameTooLarge:
      return "transport: frame too large";
    case ErrorCode::kRequestTimeout:
      return "transport: timeout";
    case ErrorCode::kServerBusy:
      return "transport: server busy";
    case ErrorCode::kShuttingDown:
      return "transport: shutting down";
    default:
      return "daemon: refused";
  }
}

// The operation's name, for ADMIN_REQUEST's detail.
audit::AuditText OperationText(pb::Request::OpCase op) {
  switch (op) {
    case pb::Request::kRecordPut:
      return "record_put";
    case pb::Request::kRecordGet:
      return "record_get";
    case pb::Request::kRecordExists:
      return "record_exists";
    case pb::Request::kRecordDelete:
      return "record_delete";
    case pb::Request::kRecordRestore:
      return "record_restore";
    case pb::Request::kRecordList:
      return "record_list";
    case pb::Request::kAttachmentPutBegin:
      return "attachment_put_begin";
    case pb::Request::kAttachmentChunk:
      return "attachment_chunk";
    case pb::Request::kAttachmentPutCommit:
      return "attachment_put_commit";
    case pb::Request::kAttachmentPutAbort:
      return "attachment_put_abort";
    case pb::Request::kAttachmentGet:
      return "attachment_get";
    case pb::Request::kAttachmentMetadata:
      return "attachment_metadata";
    case pb::Request::kAttachmentDelete:
      return "attachment_delete";
    case pb::Request::kAttachmentRestore:
      return "attachment_restore";
    case pb::Request::kDatasetCreate:
      return "dataset_create";
    case pb::Request::kDatasetList:
      return "dataset_list";
    case pb::Request::kDatasetDescribe:
      return "dataset_describe";
    case pb::Request::kDatasetLifecycle:
      return "dataset_lifecycle";
    case pb::Request::kKeyRotate:
      return "key_rotate";
    case pb::Request::kKeyRetire:
      return "key_retire";
    case pb::Request::kKeyRewrap:
      return "key_rewrap";
    case pb::Request::kPolicySet:
      return "policy_set";
    case pb::Request::kHoldSet:
      return "hold_set";
    case pb::Request::kPurge:
      return "purge";
    case pb::Request::kJobStart:
      return "job_start";
    case pb::Request::kJobStatus:
      return "job_status";
    case pb::Request::kBackupCreate:
      return "backup_create";
    case pb::Request::kBackupList:
      return "backup_list";
    case pb::Request::kBackupVerify:
      return "backup_verify";
    case pb::Request::kBackupRestore:
      return "backup_restore";
    case pb::Request::kBackupPrune:
      return "backup_prune";
    case pb::Request::kAuditQuery:
      return "audit_query";
    case pb::Request::kAuditVerify:
      return "audit_verify";
    case pb::Request::kStatus:
      return "status";
    case pb::Request::kKeyInventory:
      return "key_inventory";
    case pb::Request::kReceiptGet:
      return "receipt_get";
    case pb::Request::kBinList:
      return "bin_list";
    case pb::Request::kAdminEnroll:
      return "admin_enroll";
    case pb::Request::kAdminList:
      return "admin_list";
    case pb::Request::kAdminRemove:
      return "admin_remove";
    case pb::Request::kApprovalList:
      return "approval_list";
    case pb::Request::kApprovalDecide:
      return "approval_decide";
    case pb::Request::kEventsRead:
      return "events_read";
    case pb::Request::kCanaryPlant:
      return "canary_plant";
    case pb::Request::kCanaryList:
      return "canary_list";
    case pb::Request::kCanaryRemove:
      return "canary_remove";
    case pb::Request::kDatasetExport:
      return "dataset_export";
    default:
      return "unknown";
  }
}

// SHA-256 of a PEM public key's DER SubjectPublicKeyInfo, as hex; empty if it does not parse.
std::string PublicKeyFingerprint(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return "";
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (key == nullptr) return "";
  unsigned char* der = nullptr;
  int size = i2d_PUBKEY(key, &der);
  EVP_PKEY_free(key);
  if (size <= 0) return "";
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<size_t>(size), digest);
  OPENSSL_free(der);
  return audit::ToHex(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

audit::AuditActor ActorOf(const PeerIdentity& peer) {
  audit::AuditActor actor;
  actor.uid = peer.uid;
  actor.pid = static_cast<uint32_t>(peer.pid);
  actor.socket =
      peer.socket == SocketKind::kAdmin ? audit::v1::SOCKET_ADMIN : audit::v1::SOCKET_DATA;
  return actor;
}

// ---------------------------------------------------------------------------------------------
// Conversions.

pb::Purpose ToProto(KeyPurpose purpose) { return static_cast<pb::Purpose>(purpose); }

std::optional<KeyPurpose> FromProto(pb::Purpose purpose) {
  switch (purpose) {
    case pb::PURPOSE_RECORDS:
      return KeyPurpose::kRecords;
    case pb::PURPOSE_ATTACHMENTS:
      return KeyPurpose::kAttachments;
    case pb::PURPOSE_LOOKUP:
      return KeyPurpose::kLookup;
    case pb::PURPOSE_PSEUDONYM:
      return KeyPurpose::kPseudonym;
    default:
      return std::nullopt;
  }
}

pb::DatasetState ToProto(kms::DatasetState state) {
  switch (state) {
    case kms::DatasetState::kActive:
      return pb::DATASET_ACTIVE;
    case kms::DatasetState::kDisabled:
      return pb::DATASET_DISABLED;
    case kms::DatasetState::kPendingDestruction:
      return pb::DATASET_PENDING_DESTRUCTION;
    case kms::DatasetState::kDestroying:
      return pb::DATASET_DESTROYING;
    case kms::DatasetState::kDestroyed:
      return pb::DATASET_DESTROYED;
  }
  return pb::DATASET_STATE_UNSPECIFIED;
}

pb::KeyVersionState ToProto(kms::KeyVersionState state) {
  switch (state) {
    case kms::KeyVersionState::kPrimary:
      return pb::KEY_PRIMARY;
    case kms::KeyVersionState::kDecryptOnly:
      return pb::KEY_DECRYPT_ONLY;
    case kms::KeyVersionState::kCompromised:
      return pb::KEY_COMPROMISED;
    case kms::KeyVersionState::kRetired:
      return pb::KEY_RETIRED;
  }
  return pb::KEY_VERSION_STATE_UNSPECIFIED;
}

int64_t Micros(kms::TimePoint time) { return coffer::ToUnixMicros(time); }

void ToProto(const kms::DatasetPolicy& policy, pb::Policy* out) {
  out->set_records_rotation_seconds(policy.records_rotation.count());
  out->set_attachments_rotation_seconds(policy.attachments_rotation.count());
  out->set_usage_limit(policy.usage_limit);
  out->set_bin_days(policy.bin_days);
  out->set_retention_max_age_seconds(policy.retention_max_age.count());
  out->set_minimum_retention_seconds(policy.minimum_retention.count());
  out->set_destruction_wait_seconds(policy.destruction_wait.count());
  out->set_auto_destroy_after_disabled_seconds(policy.auto_destroy_after_disabled.count());
}

absl::Status ApplyPolicy(const pb::Policy& in, kms::DatasetPolicy* policy) {
  auto bad = [](std::string_view field) {
    return MakeError(ErrorCode::kInvalidArgument,
                     absl::StrCat("policy.", std::string(field), " is out of range"));
  };
  if (in.has_records_rotation_seconds()) {
    if (in.records_rotation_seconds() <= 0) return bad("records_rotation_seconds");
    policy->records_rotation = kms::Seconds(in.records_rotation_seconds());
  }
  if (in.has_attachments_rotation_seconds()) {
    if (in.attachments_rotation_seconds() <= 0) return bad("attachments_rotation_seconds");
    policy->attachments_rotation = kms::Seconds(in.attachments_rotation_seconds());
  }
  if (in.has_usage_limit()) {
    if (in.usage_limit() == 0) return bad("usage_limit");
    policy->usage_limit = in.usage_limit();
  }
  if (in.has_bin_days()) policy->bin_days = in.bin_days();
  if (in.has_retention_max_age_seconds()) {
    if (in.retention_max_age_seconds() < 0) return bad("retention_max_age_seconds");
    policy->retention_max_age = kms::Seconds(in.retention_max_age_seconds());
  }
  if (in.has_minimum_retention_seconds()) {
    if (in.minimum_retention_seconds() < 0) return bad("minimum_retention_seconds");
    policy->minimum_retention = kms::Seconds(in.minimum_retention_seconds());
  }
  if (in.has_destruction_wait_seconds()) {
    if (in.destruction_wait_seconds() < 0) return bad("destruction_wait_seconds");
    policy->destruction_wait = kms::Seconds(in.destruction_wait_seconds());
  }
  if (in.has_auto_destroy_after_disabled_seconds()) {
    if (in.auto_destroy_after_disabled_seconds() < 0) {
      return bad("auto_destroy_after_disabled_seconds");
    }
    policy->auto_destroy_after_disabled = kms::Seconds(in.auto_destroy_after_disabled_seconds());
  }
  return absl::OkStatus();
}

pb::KeyVersion ToProto(KeyPurpose purpose, const kms::KeyVersionInfo& version) {
  pb::KeyVersion out;
  out.set_purpose(ToProto(purpose));
  out.set_version(version.version);
  out.set_state(ToProto(version.state));
  out.set_created_micros(Micros(version.created));
  out.set_encryptions(version.usage_count);
  out.set_wrapping_module(version.wrapping_key.module);
  out.set_wrapping_version(version.wrapping_key.version);
  return out;
}

void ToProto(const kms::DatasetInfo& info, pb::DatasetInfo* out) {
  out->set_name(info.name);
  out->set_handle(info.handle);
  out->set_state(ToProto(info.state));
  ToProto(info.policy, out->mutable_policy());
  out->set_legal_hold(info.policy.legal_hold);
  out->set_created_micros(Micros(info.created));
  if (info.destroy_after) out->set_destruction_due_micros(Micros(*info.destroy_after));
  for (const kms::PurposeInfo& purpose : info.purposes) {
    for (const kms::KeyVersionInfo& version : purpose.versions) {
      *out->add_versions() = ToProto(purpose.purpose, version);
    }
  }
}

// Live records, live attachments and bin entries of a dataset: a key count over its range in
// each column family (keys are handle-prefixed: docs/formats.md#data-db).
absl::Status CountItems(storage::DataDb* db, uint64_t handle, pb::DatasetInfo* out) {
  const std::string begin = storage::internal::DatasetBegin(handle);
  const std::string end = storage::internal::DatasetEnd(handle);
  auto count = [&](storage::internal::Cf cf) -> absl::StatusOr<uint64_t> {
    rocksdb::ReadOptions options;
    rocksdb::Slice upper(end);
    options.iterate_upper_bound = &upper;
    storage::ScopedIterator it = db->NewIterator(cf, options);
    uint64_t n = 0;
    for (it->Seek(begin); it->Valid(); it->Next()) ++n;
    if (!it->status().ok()) return storage::FromRocks(it->status(), "counting a dataset's items");
    return n;
  };
  COFFER_ASSIGN_OR_RETURN(uint64_t records, count(storage::internal::Cf::kRecords));
  COFFER_ASSIGN_OR_RETURN(uint64_t attachments, count(storage::internal::Cf::kAttachmentPointers));
  COFFER_ASSIGN_OR_RETURN(uint64_t bin, count(storage::internal::Cf::kRecycleBin));
  out->set_records(records);
  out->set_attachments(attachments);
  out->set_recycle_bin_items(bin);
  return absl::OkStatus();
}

// The dataset a request names ("" for none).

std::string SocketName(audit::v1::SocketKind socket) {
  switch (socket) {
    case audit::v1::SOCKET_DATA:
      return "data";
    case audit::v1::SOCKET_ADMIN:
      return "admin";
    case audit::v1::SOCKET_INTERNAL:
      return "internal";
    default:
      return "";
  }
}

}  // namespace

void FillError(pb::Response* response, const absl::Status& status, uint32_t retry_after_ms) {
  ErrorCode code = ErrorCodeOf(status);
  response->clear_result();
  pb::Error* error = response->mutable_error();
  error->set_code(static_cast<int32_t>(code));
  error->set_code_name(std::string(ErrorCodeName(code)));
  error->set_message(std::string(status.message()));
  if (retry_after_ms != 0) error->set_retry_after_ms(retry_after_ms);
}

// ---------------------------------------------------------------------------------------------

class Services::ConnectionSession final : public Session {
 public:
  ConnectionSession(Services* services, PeerIdentity peer)
      : services_(services),
        deps_(services->deps_),
        peer_(std::move(peer)),
        actor_(ActorOf(peer_)) {}
  ~ConnectionSession() override {
    Closed();
    services_->connections_open_.fetch_sub(1);
  }

  absl::Status Handle(const pb::Request& request, ResponseSink* sink) override;
  void Closed() override {
    if (upload_) {
      upload_->upload->Abort().IgnoreError();  // nothing of it becomes visible
      upload_.reset();
    }
  }

 private:
  struct OpenUpload {
    std::unique_ptr<storage::AttachmentUpload> upload;
    uint64_t handle = 0;
    std::string name;
    absl::Status first_error;
  };

  // Sends `response` (request id set here).
  absl::Status Send(ResponseSink* sink, const pb::Request& request, pb::Response response) {
    response.set_request_id(request.request_id());
    return sink->Send(response);
  }
  absl::Status SendError(ResponseSink* sink, const pb::Request& request, const absl::Status& status,
                         uint32_t retry_after_ms = 0) {
    pb::Response response;
    FillError(&response, status, retry_after_ms);
    return Send(sink, request, std::move(response));
  }
  // Audits a refusal (REQUEST_REFUSED, synchronously) and answers it.
  absl::Status Refuse(ResponseSink* sink, const pb::Request& request, const absl::Status& why,
                      uint32_t retry_after_ms = 0) {
    services_->requests_refused_.fetch_add(1);
    uint64_t handle = 0;
    std::string_view dataset = DatasetNamedBy(request);
    if (!dataset.empty()) handle = deps_.keys->FindDataset(dataset).value_or(0);
    services_->AuditRefusal(peer_, ErrorCodeOf(why), handle);
    return SendError(sink, request, why, retry_after_ms);
  }
  // Audits a data access through the batching writer; its error when the audit refused it.
  absl::Status AuditAccess(audit::v1::EventKind kind, uint64_t handle, const absl::Status& result,
                           uint32_t count) {
    audit::AuditEvent event;
    event.kind = kind;
    event.actor = actor_;
    event.dataset_handle = handle;
    event.result = ErrorCodeOf(result);
    event.record_count = count;
    return deps_.access_audit->Append(event);
  }
  // Finishes a data operation: audits it, then answers its error (public text) or `response`.
  absl::Status Finish(ResponseSink* sink, const pb::Request& request, audit::v1::EventKind kind,
                      uint64_t handle, const absl::Status& result, uint32_t count,
                      pb::Response response) {
    absl::Status audited = AuditAccess(kind, handle, result, count);
    if (!audited.ok()) return SendError(sink, request, Public(audited));
    if (!result.ok()) {
      return SendError(
          sink, request,
          kind == audit::v1::ACCESS_PSEUDONYMIZE ? PublicOrMalformed(result) : Public(result));
    }
    return Send(sink, request, std::move(response));
  }

  absl::Status HandleData(const pb::Request& request, ResponseSink* sink);
  absl::Status HandleUpload(const pb::Request& request, ResponseSink* sink);
  absl::Status HandleDownload(const pb::Request& request, uint64_t handle, ResponseSink* sink);
  // `approval`: the second admin's, when a dual-controlled operation runs on approval.
  absl::Status HandleAdmin(const pb::Request& request, ResponseSink* sink,
                           const audit::AuditActor& actor,
                           const std::optional<kms::AdminApproval>& approval = std::nullopt);
  // The admin socket: MFA and dual control (AdminControl), then the operation, then its
  // ADMIN_REQUEST audit entry.
  absl::Status HandleAdminSocket(const pb::Request& request, ResponseSink* sink);
  // Runs an admitted admin-socket operation as `actor`.
  absl::Status Dispatch(const pb::Request& request, ResponseSink* sink,
                        const audit::AuditActor& actor,
                        const std::optional<kms::AdminApproval>& approval = std::nullopt);
  absl::Status KeyInventory(const pb::KeyInventoryRequest& query,
                            pb::KeyInventoryResponse* out) const;
  absl::Status BinList(const pb::BinListRequest& query, uint64_t handle,
                       pb::BinListResponse* out) const;
  absl::Status ListDatasets(pb::DatasetListResponse* out) const;
  absl::StatusOr<pb::DatasetInfo> Describe(uint64_t handle) const;
  absl::Status AuditQuery(const pb::AuditQueryRequest& query, pb::AuditQueryResponse* out) const;

  // Forwards frames and remembers the first error answered (for ADMIN_REQUEST).
  class RecordingSink final : public ResponseSink {
   public:
    explicit RecordingSink(ResponseSink* inner) : inner_(inner) {}
    absl::Status Send(const pb::Response& response) override {
      if (response.has_error() && first_error.ok()) {
        first_error = MakeError(static_cast<ErrorCode>(response.error().code()), "answered");
      }
      return inner_->Send(response);
    }
    absl::Status first_error;

   private:
    ResponseSink* inner_;
  };
  // Keeps the frames (an approved operation run on behalf of its requester).
  class CollectingSink final : public ResponseSink {
   public:
    absl::Status Send(const pb::Response& response) override {
      responses.push_back(response);
      return absl::OkStatus();
    }
    std::vector<pb::Response> responses;
  };
  // ADMIN_REQUEST for an admin-socket request, synchronously.
  absl::Status AuditAdminRequest(const pb::Request& request, const audit::AuditActor& actor,
                                 const absl::Status& result) {
    audit::AuditEvent event;
    event.kind = audit::v1::ADMIN_REQUEST;
    event.actor = actor;
    std::string_view dataset = DatasetNamedBy(request);
    if (!dataset.empty()) event.dataset_handle = deps_.keys->FindDataset(dataset).value_or(0);
    event.result = ErrorCodeOf(result);
    event.detail = OperationText(request.op_case());
    return deps_.audit_log->Append(event).status();
  }

  Services* services_;
  const ServicesDeps& deps_;
  const PeerIdentity peer_;
  const audit::AuditActor actor_;
  std::optional<OpenUpload> upload_;
};

absl::Status Services::ConnectionSession::Handle(const pb::Request& request, ResponseSink* sink) {
  services_->requests_total_.fetch_add(1);
  const auto op = request.op_case();
  const bool upload_frame = op == pb::Request::kAttachmentChunk ||
                            op == pb::Request::kAttachmentPutCommit ||
                            op == pb::Request::kAttachmentPutAbort;
  if (upload_) {
    if (upload_frame) return HandleUpload(request, sink);
    return Refuse(sink, request,
                  MakeError(ErrorCode::kUnexpectedFrame,
                            "an upload is open on this connection: only chunks, commit or abort"));
  }
  if (upload_frame) {
    return Refuse(sink, request,
                  MakeError(ErrorCode::kUnexpectedFrame,
                            "a chunk, commit or abort with no upload open on this connection"));
  }
  if (op == pb::Request::OP_NOT_SET) {
    return Refuse(sink, request,
                  MakeError(ErrorCode::kMalformedRequest, "the request names no operation"));
  }

  Admission admission = deps_.authorizer->Admit(peer_.uid);
  if (!admission.admitted) {
    services_->requests_slowed_.fetch_add(1);
    return Refuse(sink, request,
                  MakeError(ErrorCode::kSlowDown, "rate limit exceeded; retry after the delay"),
                  admission.retry_after_ms);
  }
  absl::Status allowed = deps_.authorizer->Check(peer_, op, DatasetNamedBy(request));
  if (!allowed.ok()) return Refuse(sink, request, allowed);

  if (peer_.socket == SocketKind::kAdmin) return HandleAdminSocket(request, sink);
  if (IsAdminOperation(op) || op == pb::Request::kDatasetList ||
      op == pb::Request::kDatasetDescribe) {
    return HandleAdmin(request, sink, actor_);
  }
  return HandleData(request, sink);
}

absl::Status Services::ConnectionSession::Dispatch(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  const auto op = request.op_case();
  if (deps_.admin_control != nullptr && AdminControl::Serves(op)) {
    pb::Response response;
    AdminControl::Executor execute = [this](const pb::Request& filed, const audit::AuditActor& as,
                                            const kms::AdminApproval& approved) {
      CollectingSink collect;
      absl::Status sent = Dispatch(filed, &collect, as, approved);
      if (!sent.ok() || collect.responses.empty()) {
        pb::Response failed;
        FillError(&failed, sent.ok() ? MakeError(ErrorCode::kInternal, "no response") : sent);
        return failed;
      }
      return std::move(collect.responses.back());  // the final response follows any progress
    };
    absl::Status result = deps_.admin_control->Serve(peer_, actor, request, execute, &response);
    if (!result.ok()) return SendError(sink, request, result);
    return Send(sink, request, std::move(response));
  }
  if (IsAdminOperation(op) || op == pb::Request::kDatasetList ||
      op == pb::Request::kDatasetDescribe) {
    return HandleAdmin(request, sink, actor, approval);
  }
  return HandleData(request, sink);
}

absl::Status Services::ConnectionSession::HandleAdminSocket(const pb::Request& request,
                                                            ResponseSink* sink) {
  audit::AuditActor actor = actor_;
  if (deps_.admin_control != nullptr) {
    AdminControl::DatasetLookup lookup =
        [this](std::string_view name) -> absl::StatusOr<kms::DatasetInfo> {
      COFFER_ASSIGN_OR_RETURN(uint64_t handle, deps_.keys->FindDataset(name));
      return deps_.keys->DescribeDataset(handle);
    };
    AdminDecision decision = deps_.admin_control->Admit(peer_, request, lookup);
    if (decision.pending.has_value()) {
      pb::Response response;
      FillError(&response, decision.status);
      *response.mutable_approval() = std::move(*decision.pending);
      absl::Status audited = AuditAdminRequest(request, decision.actor, decision.status);
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      return Send(sink, request, std::move(response));
    }
    if (!decision.status.ok())
      return Refuse(sink, request, decision.status, decision.retry_after_ms);
    actor = decision.actor;
  }
  RecordingSink recording(sink);
  absl::Status sent = Dispatch(request, &recording, actor);
  // job_status and events_read are polled (keyctl progress, keyctl events --follow): not
  // audited one by one. events_read reads no data; its cursor moves persist in the event log.
  if (request.op_case() != pb::Request::kJobStatus &&
      request.op_case() != pb::Request::kEventsRead) {
    absl::Status audited = AuditAdminRequest(request, actor, recording.first_error);
    if (!audited.ok()) return audited;  // fail closed: the connection is closed
  }
  return sent;
}

absl::Status Services::ConnectionSession::HandleData(const pb::Request& request,
                                                     ResponseSink* sink) {
  auto resolve = [&](std::string_view dataset) -> absl::StatusOr<uint64_t> {
    if (dataset.empty()) {
      return MakeError(ErrorCode::kMalformedRequest, "the request names no dataset");
    }
    return deps_.keys->FindDataset(dataset);
  };
  const std::string_view dataset = DatasetNamedBy(request);
  absl::StatusOr<uint64_t> handle = resolve(dataset);
  const uint64_t h = handle.value_or(0);
  pb::Response response;

  switch (request.op_case()) {
    case pb::Request::kRecordPut: {
      const auto& r = request.record_put();
      absl::Status result = handle.status();
      if (result.ok()) result = deps_.records->Put(h, r.id(), r.value());
      if (result.ok()) response.mutable_record_put();
      return Finish(sink, request, audit::v1::ACCESS_WRITE, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordGet: {
      const auto& r = request.record_get();
      absl::Status result = handle.status();
      if (result.ok()) {
        absl::StatusOr<std::string> value = deps_.records->Get(h, r.id());
        result = value.status();
        if (value.ok()) response.mutable_record_get()->set_value(*std::move(value));
        // A canary's read is audited (CANARY_READ) before its value leaves (canary.h).
        if (result.ok() && deps_.canaries != nullptr) {
          result = deps_.canaries->CheckRead(actor_, h, pb::CANARY_RECORD, r.id());
          if (!result.ok()) response.clear_result();
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordExists: {
      absl::Status result = handle.status();
      if (result.ok()) {
        absl::StatusOr<bool> exists = deps_.records->Exists(h, request.record_exists().id());
        result = exists.status();
        if (exists.ok()) response.mutable_record_exists()->set_exists(*exists);
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordDelete: {
      absl::Status result = handle.status();
      if (result.ok()) result = deps_.records->Delete(h, request.record_delete().id());
      if (result.ok()) response.mutable_record_delete();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordRestore: {
      absl::Status result = handle.status();
      if (result.ok()) result = deps_.records->Restore(h, request.record_restore().id());
      if (result.ok()) response.mutable_record_restore();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordList: {
      const auto& r = request.record_list();
      uint32_t max_ids = r.max_ids() == 0 ? kDefaultListIds : r.max_ids();
      absl::Status result = handle.status();
      if (result.ok() && max_ids > kMaxListIds) {
        result = MakeError(ErrorCode::kInvalidArgument, "record_list.max_ids must be 1-10,000");
      }
      uint32_t count = 0;
      // Storage's page tokens are bytes; the API's are strings (proto3 strings must be UTF-8),
      // so they travel as unpadded web-safe base64.
      std::string token;
      if (result.ok() && !absl::WebSafeBase64Unescape(r.page_token(), &token)) {
        result = MakeError(ErrorCode::kInvalidArgument, "record_list.page_token is not valid");
      }
      if (result.ok()) {
        auto page = deps_.records->ListIds(h, token, max_ids);
        result = page.status();
        if (page.ok()) {
          auto* out = response.mutable_record_list();
          count = static_cast<uint32_t>(page->ids.size());
          for (std::string& id : page->ids) out->add_ids(std::move(id));
          out->set_next_page_token(absl::WebSafeBase64Escape(page->next_page_token));
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, count, std::move(response));
    }
    case pb::Request::kAttachmentPutBegin: {
      const auto& r = request.attachment_put_begin();
      absl::Status result = handle.status();
      if (result.ok()) {
        auto upload = deps_.attachments->BeginUpload(h, r.name(), r.content_type());
        result = upload.status();
        if (upload.ok()) {
          upload_ = OpenUpload{*std::move(upload), h, r.name(), absl::OkStatus()};
          response.mutable_attachment_put_begin();
          return Send(sink, request, std::move(response));  // audited at commit or abort
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_WRITE, h, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentGet: {
      if (!handle.ok()) {
        return Finish(sink, request, audit::v1::ACCESS_READ, h, handle.status(), 1,
                      std::move(response));
      }
      return HandleDownload(request, h, sink);
    }
    case pb::Request::kAttachmentMetadata: {
      absl::Status result = handle.status();
      if (result.ok()) {
        auto info = deps_.attachments->Metadata(h, request.attachment_metadata().name());
        result = info.status();
        if (info.ok()) {
          auto* out = response.mutable_attachment_metadata();
          out->set_size(info->size);
          out->set_content_type(info->content_type);
          out->set_created_micros(coffer::ToUnixMicros(info->created));
        }
        if (result.ok() && deps_.canaries != nullptr) {
          result = deps_.canaries->CheckRead(actor_, h, pb::CANARY_ATTACHMENT,
                                             request.attachment_metadata().name());
          if (!result.ok()) response.clear_result();
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentDelete: {
      absl::Status result = handle.status();
      if (result.ok()) result = deps_.attachments->Delete(h, request.attachment_delete().name());
      if (result.ok()) response.mutable_attachment_delete();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentRestore: {
      absl::Status result = handle.status();
      if (result.ok()) result = deps_.attachments->Restore(h, request.attachment_restore().name());
      if (result.ok()) response.mutable_attachment_restore();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response));
    }
    case pb::Request::kPseudonymize: {
      const auto& r = request.pseudonymize();
      absl::Status result = handle.status();
      if (result.ok()) result = CheckPseudonymBatch(r.identifiers_size(), "identifiers");
      if (result.ok()) {
        result = PseudonymBatch(r.identifiers(), response.mutable_pseudonymize(),
                                [&](const std::string& identifier) {
                                  return services_->pseudonymizer_->Pseudonymize(h, identifier);
                                });
      }
      return Finish(sink, request, audit::v1::ACCESS_PSEUDONYMIZE, h, result,
                    static_cast<uint32_t>(r.identifiers_size()), std::move(response));
    }
    case pb::Request::kPseudonymTranslate: {
      const auto& r = request.pseudonym_translate();
      absl::Status result = handle.status();
      if (result.ok()) result = CheckPseudonymBatch(r.tokens_size(), "tokens");
      if (result.ok()) {
        result = PseudonymBatch(r.tokens(), response.mutable_pseudonym_translate(),
                                [&](const std::string& token) {
                                  return services_->pseudonymizer_->Translate(h, token);
                                });
      }
      return Finish(sink, request, audit::v1::ACCESS_PSEUDONYMIZE, h, result,
                    static_cast<uint32_t>(r.tokens_size()), std::move(response));
    }
    case pb::Request::kPseudonymReidentify: {
      const auto& r = request.pseudonym_reidentify();
      absl::Status result = handle.status();
      if (result.ok()) result = CheckPseudonymBatch(r.tokens_size(), "tokens");
      if (result.ok() && !pb::Mask_IsValid(r.mask())) {
        result = MakeError(ErrorCode::kMalformedRequest, "pseudonym_reidentify.mask is unknown");
      }
      auto* out = response.mutable_pseudonym_reidentify();
      for (const std::string& token : r.tokens()) {
        if (!result.ok()) break;
        absl::StatusOr<std::string> identifier = services_->pseudonymizer_->Reidentify(h, token);
        if (!identifier.ok()) {
          result = identifier.status();
          break;
        }
        switch (r.mask()) {
          case pb::MASK_EMAIL:
            out->add_identifiers(storage::MaskEmail(*identifier));
            break;
          case pb::MASK_PHONE:
            out->add_identifiers(storage::MaskPhone(*identifier));
            break;
          default:
            out->add_identifiers(*std::move(identifier));
        }
      }
      // Re-identification is audited synchronously, before any identifier leaves: without a
      // durable entry nothing is answered.
      audit::AuditEvent event;
      event.kind = audit::v1::ACCESS_REIDENTIFY;
      event.actor = actor_;
      event.dataset_handle = h;
      event.result = ErrorCodeOf(result);
      event.record_count = static_cast<uint32_t>(r.tokens_size());
      absl::Status audited = deps_.audit_log->Append(event).status();
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      if (!result.ok()) return SendError(sink, request, PublicOrMalformed(result));
      return Send(sink, request, std::move(response));
    }
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kMalformedRequest, "unknown data operation"));
  }
}

absl::Status Services::ConnectionSession::HandleUpload(const pb::Request& request,
                                                       ResponseSink* sink) {
  OpenUpload& open = *upload_;
  switch (request.op_case()) {
    case pb::Request::kAttachmentChunk:
      // No response; the first failure is answered at commit.
      if (open.first_error.ok())
        open.first_error = open.upload->Append(request.attachment_chunk().data());
      return absl::OkStatus();
    case pb::Request::kAttachmentPutCommit: {
      absl::Status result = open.first_error;
      if (result.ok()) {
        result = open.upload->Commit();
      } else {
        open.upload->Abort().IgnoreError();
      }
      pb::Response response;
      if (result.ok()) {
        auto* info = response.mutable_attachment_put_commit();
        info->set_size(open.upload->bytes_appended());
        auto stored = deps_.attachments->Metadata(open.handle, open.name);
        if (stored.ok()) {
          info->set_content_type(stored->content_type);
          info->set_created_micros(coffer::ToUnixMicros(stored->created));
        }
      }
      uint64_t handle = open.handle;
      upload_.reset();
      return Finish(sink, request, audit::v1::ACCESS_WRITE, handle, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentPutAbort: {
      absl::Status aborted = open.upload->Abort();
      uint64_t handle = open.handle;
      upload_.reset();
      pb::Response response;
      response.mutable_attachment_put_abort();
      // Audited as a write that did not happen.
      absl::Status audited = AuditAccess(audit::v1::ACCESS_WRITE, handle,
                                         MakeError(ErrorCode::kCancelled, "abort"), 1);
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      if (!aborted.ok() && ErrorCodeOf(aborted) != ErrorCode::kUploadClosed) {
        return SendError(sink, request, Public(aborted));
      }
      return Send(sink, request, std::move(response));
    }
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kUnexpectedFrame, "not an upload frame"));
  }
}

absl::Status Services::ConnectionSession::HandleDownload(const pb::Request& request,
                                                         uint64_t handle, ResponseSink* sink) {
  const auto& r = request.attachment_get();
  auto reader = deps_.attachments->Open(handle, r.name());
  absl::Status result = reader.status();
  uint64_t length = 0;
  if (result.ok()) {
    uint64_t size = (*reader)->info().size;
    if (r.offset() > size || r.length() > size - r.offset()) {
      result = MakeError(ErrorCode::kRangeBeyondEnd, "range beyond end");
    } else {
      length = r.length() == 0 ? size - r.offset() : r.length();
    }
  }
  if (result.ok() && deps_.canaries != nullptr) {
    result = deps_.canaries->CheckRead(actor_, handle, pb::CANARY_ATTACHMENT, r.name());
  }
  // The read is audited before any byte leaves.
  absl::Status audited = AuditAccess(audit::v1::ACCESS_READ, handle, result, 1);
  if (!audited.ok()) return SendError(sink, request, Public(audited));
  if (!result.ok()) return SendError(sink, request, Public(result));

  const storage::AttachmentInfo& info = (*reader)->info();
  uint64_t offset = r.offset();
  uint64_t remaining = length;
  bool first = true;
  std::string data;
  do {
    size_t n = static_cast<size_t>(std::min<uint64_t>(remaining, api::kDefaultChunkBytes));
    absl::Status read = (*reader)->Read(offset, n, &data);
    if (!read.ok()) return SendError(sink, request, Public(read));
    pb::Response response;
    auto* out = response.mutable_attachment_get();
    if (first) {
      out->mutable_info()->set_size(info.size);
      out->mutable_info()->set_content_type(info.content_type);
      out->mutable_info()->set_created_micros(coffer::ToUnixMicros(info.created));
      first = false;
    }
    out->set_data(std::move(data));
    data.clear();
    offset += n;
    remaining -= n;
    out->set_last(remaining == 0);
    COFFER_RETURN_IF_ERROR(Send(sink, request, std::move(response)));
  } while (remaining > 0);
  return absl::OkStatus();
}

absl::StatusOr<pb::DatasetInfo> Services::ConnectionSession::Describe(uint64_t handle) const {
  COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, deps_.keys->DescribeDataset(handle));
  pb::DatasetInfo out;
  ToProto(info, &out);
  COFFER_RETURN_IF_ERROR(CountItems(deps_.data_db, handle, &out));
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
  // Refusals are coalesced off the request path; a query must see those made before it.
  services_->FlushRefusalAudit().IgnoreError();
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

absl::Status Services::ConnectionSession::HandleAdmin(
    const pb::Request& request, ResponseSink* sink, const audit::AuditActor& actor,
    const std::optional<kms::AdminApproval>& approval) {
  pb::Response response;
  const std::string_view dataset = DatasetNamedBy(request);
  auto find = [&]() -> absl::StatusOr<uint64_t> {
    if (dataset.empty()) {
      return MakeError(ErrorCode::kMalformedRequest, "the request names no dataset");
    }
    return deps_.keys->FindDataset(dataset);
  };
  // Runs `body`; answers its error (public text unless `own`) or `response`.
  auto reply = [&](const absl::Status& result) {
    if (result.ok()) return Send(sink, request, std::move(response));
    ErrorCode code = ErrorCodeOf(result);
    bool own = code == ErrorCode::kMalformedRequest || code == ErrorCode::kAuditTampered;
    return SendError(sink, request, own ? result : Public(result));
  };
  auto describe_into = [&](uint64_t handle, pb::DatasetInfo* out) -> absl::Status {
    COFFER_ASSIGN_OR_RETURN(*out, Describe(handle));
    return absl::OkStatus();
  };

  switch (request.op_case()) {
    case pb::Request::kDatasetList:
      return reply(ListDatasets(response.mutable_dataset_list()));

    case pb::Request::kDatasetDescribe: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      return reply(describe_into(*handle, response.mutable_dataset_describe()));
    }

    case pb::Request::kDatasetCreate: {
      const auto& r = request.dataset_create();
      kms::DatasetPolicy policy = deps_.default_policy;
      absl::Status result = ApplyPolicy(r.policy(), &policy);
      if (!result.ok()) return SendError(sink, request, result);
      auto handle = deps_.keys->CreateDataset(r.name(), policy, actor);
      if (!handle.ok()) return reply(handle.status());
      return reply(describe_into(*handle, response.mutable_dataset_create()));
    }

    case pb::Request::kDatasetLifecycle: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result;
      switch (request.dataset_lifecycle().action()) {
        case pb::DatasetLifecycleRequest::DISABLE:
          result = deps_.keys->Disable(*handle, actor);
          break;
        case pb::DatasetLifecycleRequest::ENABLE:
          result = deps_.keys->Enable(*handle, actor);
          break;
        case pb::DatasetLifecycleRequest::SCHEDULE_DESTRUCTION:
          result = deps_.keys->ScheduleDestruction(*handle, actor, approval);
          break;
        case pb::DatasetLifecycleRequest::CANCEL_DESTRUCTION:
          result = deps_.keys->CancelDestruction(*handle, actor);
          break;
        default:
          return SendError(sink, request,
                           MakeError(ErrorCode::kMalformedRequest,
                                     "dataset_lifecycle.action is missing or unknown"));
      }
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_dataset_lifecycle()));
    }

    case pb::Request::kKeyRotate: {
      const auto& r = request.key_rotate();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      std::vector<KeyPurpose> purposes;
      if (r.emergency()) {
        absl::Status result = deps_.keys->EmergencyRotate(*handle, actor);
        if (!result.ok()) return reply(result);
        purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments};
      } else {
        for (int p : r.purposes()) {
          std::optional<KeyPurpose> purpose = FromProto(static_cast<pb::Purpose>(p));
          if (!purpose) {
            return SendError(sink, request,
                             MakeError(ErrorCode::kMalformedRequest,
                                       "key_rotate.purposes holds an unknown purpose"));
          }
          purposes.push_back(*purpose);
        }
        if (purposes.empty()) purposes = {KeyPurpose::kRecords, KeyPurpose::kAttachments};
        for (KeyPurpose purpose : purposes) {
          kms::RotationCause cause = purpose == KeyPurpose::kLookup ? kms::RotationCause::kReindex
                                     : purpose == KeyPurpose::kPseudonym
                                         ? kms::RotationCause::kRekey
                                         : kms::RotationCause::kManual;
          auto rotated = deps_.keys->Rotate(*handle, purpose, cause, actor);
          if (!rotated.ok()) return reply(rotated.status());
        }
      }
      auto info = deps_.keys->DescribeDataset(*handle);
      if (!info.ok()) return reply(info.status());
      auto* out = response.mutable_key_rotate();
      for (const kms::PurposeInfo& purpose : info->purposes) {
        if (std::find(purposes.begin(), purposes.end(), purpose.purpose) == purposes.end())
          continue;
        for (const kms::KeyVersionInfo& version : purpose.versions) {
          if (version.version == purpose.primary_version) {
            *out->add_new_primaries() = ToProto(purpose.purpose, version);
          }
        }
      }
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyRetire: {
      const auto& r = request.key_retire();
      std::optional<KeyPurpose> purpose = FromProto(r.purpose());
      if (!purpose) {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest, "key_retire.purpose is missing"));
      }
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      auto retired_versions = [&]() -> absl::StatusOr<std::set<uint32_t>> {
        COFFER_ASSIGN_OR_RETURN(kms::DatasetInfo info, deps_.keys->DescribeDataset(*handle));
        std::set<uint32_t> retired;
        for (const kms::PurposeInfo& p : info.purposes) {
          if (p.purpose != *purpose) continue;
          for (const kms::KeyVersionInfo& v : p.versions) {
            if (v.state == kms::KeyVersionState::kRetired) retired.insert(v.version);
          }
        }
        return retired;
      };
      auto before = retired_versions();
      if (!before.ok()) return reply(before.status());
      absl::Status result = deps_.keys->RetireBelow(*handle, *purpose, r.below(), actor);
      if (!result.ok()) return reply(result);
      auto after = retired_versions();
      if (!after.ok()) return reply(after.status());
      auto* out = response.mutable_key_retire();
      for (uint32_t version : *after) {
        if (before->count(version) == 0) out->add_retired(version);
      }
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyRewrap: {
      const auto& r = request.key_rewrap();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      ProgressStream progress(request, sink);
      absl::Status result =
          deps_.keys->Rewrap(*handle, r.module(), r.destroy_old(), actor, progress.Function());
      COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_key_rewrap()->mutable_dataset()));
    }

    case pb::Request::kPolicySet: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      auto info = deps_.keys->DescribeDataset(*handle);
      if (!info.ok()) return reply(info.status());
      kms::DatasetPolicy policy = info->policy;
      absl::Status result = ApplyPolicy(request.policy_set().policy(), &policy);
      if (!result.ok()) return SendError(sink, request, result);
      result = deps_.keys->SetPolicy(*handle, policy, actor);
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_policy_set()));
    }

    case pb::Request::kHoldSet: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result = deps_.keys->SetLegalHold(*handle, request.hold_set().hold(), actor);
      if (!result.ok()) return reply(result);
      return reply(describe_into(*handle, response.mutable_hold_set()));
    }

    case pb::Request::kPurge: {
      const auto& r = request.purge();
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      auto* out = response.mutable_purge();
      switch (r.target_case()) {
        case pb::PurgeRequest::kRecordId: {
          absl::Status result = deps_.bin->PurgeRecord(*handle, r.record_id());
          if (result.ok()) out->set_records(1);
          return reply(result);
        }
        case pb::PurgeRequest::kAttachmentName: {
          absl::Status result = deps_.bin->PurgeAttachment(*handle, r.attachment_name());
          if (result.ok()) out->set_attachments(1);
          return reply(result);
        }
        case pb::PurgeRequest::TARGET_NOT_SET: {
          auto report = deps_.bin->EmptyBin(*handle);
          if (report.ok()) {
            out->set_records(report->records);
            out->set_attachments(report->attachments);
          }
          return reply(report.status());
        }
      }
      return reply(MakeError(ErrorCode::kMalformedRequest, "purge target unknown"));
    }

    case pb::Request::kJobStart: {
      const auto& r = request.job_start();
      absl::StatusOr<pb::JobStatus> started;
      if (r.kind() == pb::JOB_REENCRYPT) {
        auto handle = find();
        if (!handle.ok()) return reply(handle.status());
        started =
            deps_.jobs->StartReencryption(*handle, std::string(dataset), r.max_items_per_second());
      } else if (r.kind() == pb::JOB_SCRUB) {
        std::optional<uint64_t> handle;
        if (!dataset.empty()) {
          auto found = find();
          if (!found.ok()) return reply(found.status());
          handle = *found;
        }
        started = deps_.jobs->StartScrub(handle, std::string(dataset));
      } else {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "job_start.kind must be JOB_REENCRYPT or JOB_SCRUB"));
      }
      if (!started.ok()) {
        // ALREADY_EXISTS here means a busy dataset: say so.
        if (ErrorCodeOf(started.status()) == ErrorCode::kAlreadyExists) {
          return SendError(sink, request,
                           MakeError(ErrorCode::kAlreadyExists,
                                     "a job is already running on this dataset; see job_status"));
        }
        return reply(started.status());
      }
      *response.mutable_job_start() = *std::move(started);
      return reply(absl::OkStatus());
    }

    case pb::Request::kJobStatus: {
      auto* out = response.mutable_job_status();
      if (request.job_status().id() == 0) {
        for (pb::JobStatus& status : deps_.jobs->AllStatus()) *out->add_jobs() = std::move(status);
        return reply(absl::OkStatus());
      }
      auto status = deps_.jobs->Status(request.job_status().id());
      if (!status.ok()) {
        return SendError(sink, request, MakeError(ErrorCode::kNotFound, "no job with this id"));
      }
      *out->add_jobs() = *std::move(status);
      return reply(absl::OkStatus());
    }

    case pb::Request::kAuditQuery:
      return reply(AuditQuery(request.audit_query(), response.mutable_audit_query()));

    case pb::Request::kAuditVerify: {
      audit::VerifyOptions options;
      options.public_key_pem = deps_.audit_public_key_pem;
      options.epoch_keys = deps_.audit_epoch_keys;
      auto report = audit::VerifyAuditLog(deps_.audit_directory, options);
      if (!report.ok()) return reply(report.status());
      if (!report->ok()) return reply(report->ToStatus());
      auto* out = response.mutable_audit_verify();
      out->set_entries(report->entries);
      out->set_checkpoints(report->checkpoints_verified);
      out->set_last_sequence(report->last_sequence.value_or(0));
      return reply(absl::OkStatus());
    }

    case pb::Request::kStatus: {
      auto* out = response.mutable_status();
      ServicesMetrics metrics = services_->metrics();
      out->set_version(deps_.version);
      out->set_started_micros(services_->started_micros_);
      out->set_datasets(deps_.keys->ListDatasets().size());
      for (pb::JobStatus& status : deps_.jobs->AllStatus()) *out->add_jobs() = std::move(status);
      out->set_connections_open(metrics.connections_open);
      out->set_connections_total(metrics.connections_total);
      out->set_requests_total(metrics.requests_total);
      out->set_requests_refused(metrics.requests_refused);
      out->set_requests_slowed(metrics.requests_slowed);
      out->set_audit_entries(deps_.audit_log->stats().next_sequence);
      out->set_durability(deps_.durability);
      out->set_data_socket(deps_.data_socket);
      out->set_admin_socket(deps_.admin_socket);
      out->set_audit_public_key_pem(deps_.audit_public_key_pem);
      out->set_mfa_required(deps_.admin_control != nullptr && deps_.admin_control->mfa_required());
      return reply(absl::OkStatus());
    }

    case pb::Request::kKeyInventory:
      return reply(KeyInventory(request.key_inventory(), response.mutable_key_inventory()));

    case pb::Request::kReceiptGet: {
      // The daemon's own messages: they name states and handles, never data.
      const pb::ReceiptGetRequest& query = request.receipt_get();
      uint64_t handle = 0;
      if (query.dataset_case() == pb::ReceiptGetRequest::kHandle) {
        handle = query.handle();
      } else if (query.dataset_case() == pb::ReceiptGetRequest::kName && !query.name().empty()) {
        std::vector<uint64_t> destroyed = deps_.keys->FindDestroyed(query.name());
        if (destroyed.empty()) {
          return SendError(sink, request,
                           MakeError(ErrorCode::kDatasetNotFound,
                                     "no destroyed dataset had that name (a receipt exists only "
                                     "once a dataset is destroyed)"));
        }
        handle = destroyed.front();
      } else {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "receipt_get names no dataset (a name or a handle)"));
      }
      absl::StatusOr<std::string> receipt = deps_.keys->GetDeletionReceipt(handle);
      if (!receipt.ok()) return SendError(sink, request, receipt.status());
      response.mutable_receipt_get()->set_dataset_handle(handle);
      response.mutable_receipt_get()->set_receipt(*std::move(receipt));
      return reply(absl::OkStatus());
    }

    case pb::Request::kBinList: {
      auto handle = find();
      if (!handle.ok()) return reply(handle.status());
      absl::Status result = BinList(request.bin_list(), *handle, response.mutable_bin_list());
      if (ErrorCodeOf(result) == ErrorCode::kInvalidArgument) {
        return SendError(sink, request,
                         MakeError(ErrorCode::kMalformedRequest,
                                   "bin_list.page_token or bin_list.max_items is invalid"));
      }
      return reply(result);
    }

    default: {
      auto streaming = deps_.streaming_admin_ops.find(request.op_case());
      if (streaming != deps_.streaming_admin_ops.end()) {
        return streaming->second(request, actor, sink);
      }
      auto extra = deps_.extra_admin_ops.find(request.op_case());
      if (extra == deps_.extra_admin_ops.end()) {
        return SendError(
            sink, request,
            MakeError(ErrorCode::kMalformedRequest, "this operation is not served by this daemon"));
      }
      ProgressStream progress(request, sink);
      absl::Status result = extra->second(request, actor, progress.Function(), &response);
      COFFER_RETURN_IF_ERROR(progress.status());  // the peer is gone
      return reply(result);
    }
  }
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<Services>> Services::Create(ServicesDeps deps) {
  const std::pair<const void*, const char*> required[] = {{deps.keys, "keys"},
                                                          {deps.data_db, "data_db"},
                                                          {deps.records, "records"},
                                                          {deps.attachments, "attachments"},
                                                          {deps.bin, "bin"},
                                                          {deps.audit_log, "audit_log"},
                                                          {deps.access_audit, "access_audit"},
                                                          {deps.jobs, "jobs"},
                                                          {deps.authorizer, "authorizer"},
                                                          {deps.clock, "clock"}};
  for (const auto& [pointer, name] : required) {
    if (pointer == nullptr) {
      return MakeError(ErrorCode::kInvalidArgument,
                       absl::StrCat("ServicesDeps.", name, " is null"));
    }
  }
  return std::unique_ptr<Services>(new Services(std::move(deps)));
}

Services::Services(ServicesDeps deps)
    : deps_(std::move(deps)),
      clock_(deps_.clock),
      started_micros_(coffer::ToUnixMicros(clock_->Now())),
      refusals_(std::make_unique<RefusalAudit>(deps_.audit_log)),
      pseudonymizer_(std::make_unique<const storage::Pseudonymizer>(deps_.keys)) {}

Services::~Services() { refusals_->Stop(); }

std::unique_ptr<Session> Services::Open(const PeerIdentity& peer) {
  connections_open_.fetch_add(1);
  connections_total_.fetch_add(1);
  return std::make_unique<ConnectionSession>(this, peer);
}

void Services::AuditRefusal(const PeerIdentity& peer, ErrorCode code, uint64_t dataset_handle) {
  refusals_->Record(ActorOf(peer), code, dataset_handle, RefusalDetail(code));
}

absl::Status Services::FlushRefusalAudit() { return refusals_->Flush(); }

void Services::TransportRefused(const PeerIdentity& peer, ErrorCode code) {
  requests_refused_.fetch_add(1);
  AuditRefusal(peer, code, 0);
}

ServicesMetrics Services::metrics() const {
  return ServicesMetrics{connections_open_.load(), connections_total_.load(),
                         requests_total_.load(), requests_refused_.load(), requests_slowed_.load()};
}

}  // namespace coffer::daemon
