// Signing domains: the one list of everything the token's signing key signs, and the label each
// kind's signed message starts with (docs/formats.md, "Signing domains").
//
// One ECDSA P-256 key in the token signs audit checkpoints, tombstones, deletion receipts and
// export archives. Without a label, a signature made for one kind could be presented as another
// wherever the same bytes parse as both. Every signature therefore covers
//
//     label ‖ 0x00 ‖ payload
//
// where no label contains 0x00, so the labels are prefix-free and a message belongs to exactly
// one domain. Checkpoints and export archives have been labelled since their first format (their
// labels below are the bytes those formats always signed); tombstones (format_version 2) and
// deletion receipts (coffer-deletion-receipt-v2) are labelled from their second version. Their
// first versions were signed unlabelled; VerifyUnlabelledLegacy accepts such a signature only
// for those old versions (the callers check the version inside the signed bytes) and never for
// a message that starts with a label.
//
// Adding a signed kind: add a domain and a label here, never reuse one, and sign only through
// DomainMessage. Pure functions; thread-safe. Verification fails with AUDIT_TAMPERED (the
// callers map it to their own code).

#ifndef COFFER_KMS_AUDIT_SIGNING_DOMAIN_H_
#define COFFER_KMS_AUDIT_SIGNING_DOMAIN_H_

#include <array>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "kms/audit/signer.h"

namespace coffer::kms::audit {

enum class SigningDomain {
  kAuditCheckpoint,  // kms/audit/audit_format.h CheckpointMessage (docs/audit.md)
  kExportArchive,    // kms/formats/export_archive.h SignedMessage (docs/formats.md#export-v1)
  kTombstone,        // kms/keys/tombstone.h, format_version 2 (docs/key-manager.md)
  kDeletionReceipt,  // kms/formats/receipt_file.h, coffer-deletion-receipt-v2
};

inline constexpr std::string_view kAuditCheckpointLabel = "coffer.audit.v1.checkpoint";
inline constexpr std::string_view kExportArchiveLabel = "coffer-export-v1 signature";
inline constexpr std::string_view kTombstoneLabel = "coffer.kms.tombstone.v2";
inline constexpr std::string_view kDeletionReceiptLabel = "coffer-deletion-receipt-v2";

inline constexpr std::array<SigningDomain, 4> kAllSigningDomains = {
    SigningDomain::kAuditCheckpoint, SigningDomain::kExportArchive, SigningDomain::kTombstone,
    SigningDomain::kDeletionReceipt};

// The label of `domain` (without the 0x00 that follows it in a message).
std::string_view SigningLabel(SigningDomain domain);

// A short name for messages: "audit checkpoint", "export archive", "tombstone",
// "deletion receipt".
std::string_view SigningDomainName(SigningDomain domain);

// label ‖ 0x00 ‖ payload: the exact bytes a signature of `domain` covers.
std::string DomainMessage(SigningDomain domain, std::string_view payload);

// True when `message` starts with some domain's label and its 0x00.
bool StartsWithSigningLabel(std::string_view message);

// OK when `der_signature` signs DomainMessage(domain, payload) under `verifier`'s key.
absl::Status VerifyInDomain(const CheckpointVerifier& verifier, SigningDomain domain,
                            std::string_view payload, std::string_view der_signature);

// For the first, unlabelled versions of tombstones and receipts only: OK when `der_signature`
// signs `message` itself and `message` does not start with a label (a labelled signature is
// never accepted as an unlabelled one).
absl::Status VerifyUnlabelledLegacy(const CheckpointVerifier& verifier, std::string_view message,
                                    std::string_view der_signature);

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_SIGNING_DOMAIN_H_
