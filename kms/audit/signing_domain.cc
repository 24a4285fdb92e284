#include "kms/audit/signing_domain.h"

#include "crypto/base/status.h"

namespace coffer::kms::audit {

std::string_view SigningLabel(SigningDomain domain) {
  switch (domain) {
    case SigningDomain::kAuditCheckpoint:
      return kAuditCheckpointLabel;
    case SigningDomain::kExportArchive:
      return kExportArchiveLabel;
    case SigningDomain::kTombstone:
      return kTombstoneLabel;
    case SigningDomain::kDeletionReceipt:
      return kDeletionReceiptLabel;
  }
  return {};
}

std::string_view SigningDomainName(SigningDomain domain) {
  switch (domain) {
    case SigningDomain::kAuditCheckpoint:
      return "audit checkpoint";
    case SigningDomain::kExportArchive:
      return "export archive";
    case SigningDomain::kTombstone:
      return "tombstone";
    case SigningDomain::kDeletionReceipt:
      return "deletion receipt";
  }
  return {};
}

std::string DomainMessage(SigningDomain domain, std::string_view payload) {
  const std::string_view label = SigningLabel(domain);
  std::string message;
  message.reserve(label.size() + 1 + payload.size());
  message.append(label);
  message.push_back('\0');
  message.append(payload);
  return message;
}

bool StartsWithSigningLabel(std::string_view message) {
  for (SigningDomain domain : kAllSigningDomains) {
    const std::string_view label = SigningLabel(domain);
    if (message.size() > label.size() && message.substr(0, label.size()) == label &&
        message[label.size()] == '\0') {
      return true;
    }
  }
  return false;
}

absl::Status VerifyInDomain(const CheckpointVerifier& verifier, SigningDomain domain,
                            std::string_view payload, std::string_view der_signature) {
  if (!verifier.Verify(DomainMessage(domain, payload), der_signature).ok()) {
    return MakeError(
        ErrorCode::kAuditTampered,
        std::string("not a valid ") + std::string(SigningDomainName(domain)) + " signature");
  }
  return absl::OkStatus();
}

absl::Status VerifyUnlabelledLegacy(const CheckpointVerifier& verifier, std::string_view message,
                                    std::string_view der_signature) {
  if (StartsWithSigningLabel(message)) {
    return MakeError(ErrorCode::kAuditTampered,
                     "a labelled message is never accepted as an unlabelled one");
  }
  if (!verifier.Verify(message, der_signature).ok()) {
    return MakeError(ErrorCode::kAuditTampered, "not a valid unlabelled signature");
  }
  return absl::OkStatus();
}

}  // namespace coffer::kms::audit
