#include "kms/ops/internal/wire.h"

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
#include "kms/ops/progress_stream.h"
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/dataset_erasure.h"

namespace coffer::daemon {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
using api::FillError;
using storage::KeyPurpose;

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
      return "a version to retire still protects data: run a re-encryption job first (records, "
             "attachments), or for lookup the re-index (keyctl reindex start)";
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
      return "the dataset's minimum retention (compliance lock) forbids overwriting or deleting "
             "this item yet";
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
    case ErrorCode::kQuotaExceeded:
      return "the dataset's quota (keyctl dataset describe) is reached: delete or purge data, "
             "or ask an admin to raise it";
    case ErrorCode::kBatchReplyFull:
      return "this batch's reply is full: ask for this record again";
    case ErrorCode::kRangeBeyondEnd:
      return "the requested range ends beyond the attachment";
    case ErrorCode::kBackupNotFound:
      return "no backup with this id (never made, or pruned)";
    case ErrorCode::kBackupCorrupt:
      return "the backup failed verification; do not restore from it";
    case ErrorCode::kRestoreTargetNotEmpty:
      return "a restore creates its target directory itself: name a path that does not exist "
             "yet (not even as an empty directory or a symlink)";
    case ErrorCode::kRestoreIncomplete:
      return "that directory holds an unfinished restore; delete it and restore again";
    case ErrorCode::kReplaySourceStale:
      return "the live audit log cannot replay purges and destructions since the backup";
    case ErrorCode::kPseudonymTranslateUnconfirmed:
      return "pseudonym versions retire only once the CRM's translate run moved every stored "
             "token; confirm that with --translate-done (key_retire.translate_done)";
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

absl::Status CheckBatchSize(int size, int max, const char* what) {
  if (size == 0) {
    return MakeError(ErrorCode::kMalformedRequest, absl::StrCat("the request names no ", what));
  }
  if (size > max) {
    return MakeError(ErrorCode::kMalformedRequest,
                     absl::StrCat("at most ", max, " ", what, " per request"));
  }
  return absl::OkStatus();
}

uint32_t RateCost(const coffer::v1::Request& request) {
  int items = 1;
  if (request.has_record_get_many()) items = request.record_get_many().ids_size();
  if (request.has_record_put_many()) items = request.record_put_many().items_size();
  if (request.has_pseudonymize()) items = request.pseudonymize().identifiers_size();
  if (request.has_pseudonym_reidentify()) items = request.pseudonym_reidentify().tokens_size();
  if (request.has_pseudonym_translate()) items = request.pseudonym_translate().tokens_size();
  return static_cast<uint32_t>(std::max(items, 1));
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
      return "daemon: operation not served on this socket";
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
    case ErrorCode::kResourceExhausted:
      return "daemon: disk space below limits.min_free_bytes";
    default:
      return "daemon: refused";
  }
}

// The operation's name, for ADMIN_REQUEST's detail.

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
  if (policy.reencrypt_versions_back.has_value()) {
    out->set_reencrypt_versions_back(static_cast<int32_t>(*policy.reencrypt_versions_back));
  }
  out->set_max_records(policy.max_records);
  out->set_max_stored_bytes(policy.max_stored_bytes);
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
  if (in.has_reencrypt_versions_back()) {
    if (in.reencrypt_versions_back() < -1) return bad("reencrypt_versions_back");
    if (in.reencrypt_versions_back() == -1) {
      policy->reencrypt_versions_back.reset();
    } else {
      policy->reencrypt_versions_back = static_cast<uint32_t>(in.reencrypt_versions_back());
    }
  }
  if (in.has_max_records()) policy->max_records = in.max_records();
  if (in.has_max_stored_bytes()) policy->max_stored_bytes = in.max_stored_bytes();
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

}  // namespace coffer::daemon
