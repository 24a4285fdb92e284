// Internal to kms/ops: how the operation handlers speak coffer.v1 — the fixed public text of
// every error code (no component message reaches a client), conversions between the key
// manager's types and the wire's, policy updates, the audit actor of a peer, list limits.
// Pure functions; thread-compatible.

#ifndef COFFER_KMS_OPS_INTERNAL_WIRE_H_
#define COFFER_KMS_OPS_INTERNAL_WIRE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "kms/audit/audit_event.h"
#include "kms/keys/key_manager_types.h"
#include "kms/server/connection.h"
#include "storage/data_key.h"
#include "storage/pseudonymizer.h"

namespace coffer::daemon {

inline constexpr uint32_t kDefaultListIds = 1000;
inline constexpr uint32_t kMaxListIds = 10000;
inline constexpr uint32_t kDefaultAuditLimit = 1000;
inline constexpr uint32_t kMaxAuditLimit = 10000;
// Pseudonymization requests carry 1..kMaxPseudonymBatch items, record batches
// (record_get_many, record_put_many) 1..kMaxRecordBatch.
inline constexpr int kMaxPseudonymBatch = 1000;
inline constexpr int kMaxRecordBatch = 1000;

// The fixed public text of `code`.
std::string_view FixedText(ErrorCode code);
// MALFORMED_REQUEST unless 1 <= size <= max (kMaxPseudonymBatch, kMaxRecordBatch; `what` names
// the items).
absl::Status CheckBatchSize(int size, int max, const char* what);
// What `request` costs in the caller's rate limit: a record batch's items (at least 1), else 1.
uint32_t RateCost(const coffer::v1::Request& request);
// `status` with its code's fixed text instead of the component's message.
absl::Status Public(const absl::Status& status);
// Public text, except that a malformed request keeps the daemon's own message (it names the
// field at fault and never data).
absl::Status PublicOrMalformed(const absl::Status& status);
// A refusal's fixed audit detail.
kms::audit::AuditText RefusalDetail(ErrorCode code);
// SHA-256 of a PEM public key's DER SubjectPublicKeyInfo, as hex; empty if it does not parse.
std::string PublicKeyFingerprint(const std::string& pem);
kms::audit::AuditActor ActorOf(const PeerIdentity& peer);
std::string SocketName(kms::audit::v1::SocketKind socket);

coffer::v1::Purpose ToProto(storage::KeyPurpose purpose);
std::optional<storage::KeyPurpose> FromProto(coffer::v1::Purpose purpose);
coffer::v1::DatasetState ToProto(kms::DatasetState state);
coffer::v1::KeyVersionState ToProto(kms::KeyVersionState state);
int64_t Micros(kms::TimePoint time);
void ToProto(const kms::DatasetPolicy& policy, coffer::v1::Policy* out);
// Applies the fields set in `in` to `policy`; MALFORMED_REQUEST for an invalid value.
absl::Status ApplyPolicy(const coffer::v1::Policy& in, kms::DatasetPolicy* policy);
coffer::v1::KeyVersion ToProto(storage::KeyPurpose purpose, const kms::KeyVersionInfo& version);
void ToProto(const kms::DatasetInfo& info, coffer::v1::DatasetInfo* out);

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

}  // namespace coffer::daemon

#endif  // COFFER_KMS_OPS_INTERNAL_WIRE_H_
