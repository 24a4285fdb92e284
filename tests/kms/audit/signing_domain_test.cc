// Signing domains (kms/audit/signing_domain.h): the labels are distinct and prefix-free, the
// message layout is label ‖ 0x00 ‖ payload, the checkpoint and export labels are the bytes those
// formats always signed, and a signature verifies in its own domain only — never in another,
// never as an unlabelled (first-version) signature.

#include "kms/audit/signing_domain.h"

#include <string>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/signer.h"

namespace coffer::kms::audit {
namespace {

TEST(SigningDomainTest, LabelsAreDistinctNulFreeAndNoneIsAPrefixOfAnother) {
  for (SigningDomain a : kAllSigningDomains) {
    const std::string_view label = SigningLabel(a);
    EXPECT_FALSE(label.empty());
    EXPECT_EQ(label.find('\0'), std::string_view::npos) << label;
    for (SigningDomain b : kAllSigningDomains) {
      if (a == b) continue;
      EXPECT_NE(label, SigningLabel(b));
      // With the 0x00 after it, no message of one domain starts like another's.
      const std::string message = DomainMessage(a, "payload");
      const std::string other = std::string(SigningLabel(b)) + '\0';
      EXPECT_NE(message.substr(0, other.size()), other) << label << " vs " << SigningLabel(b);
    }
  }
}

TEST(SigningDomainTest, TheMessageIsLabelNulPayload) {
  EXPECT_EQ(DomainMessage(SigningDomain::kTombstone, std::string("\x08\x01", 2)),
            std::string("coffer.kms.tombstone.v2\0\x08\x01", 26));
  EXPECT_EQ(DomainMessage(SigningDomain::kDeletionReceipt, "{}\n"),
            std::string("coffer-deletion-receipt-v2\0{}\n", 30));
  EXPECT_EQ(DomainMessage(SigningDomain::kExportArchive, ""),
            std::string("coffer-export-v1 signature\0", 27));
  // The checkpoint message has always started with its label and a NUL.
  const std::string checkpoint = CheckpointMessage(LogId{}, 5, ChainHash{}, 7);
  EXPECT_EQ(checkpoint.size(), kCheckpointMessageSize);
  EXPECT_EQ(checkpoint.substr(0, kCheckpointDomain.size()), kCheckpointDomain);
  EXPECT_TRUE(StartsWithSigningLabel(checkpoint));
  EXPECT_FALSE(StartsWithSigningLabel("{\"format\":\"coffer-deletion-receipt-v1\"}\n"));
  EXPECT_FALSE(StartsWithSigningLabel("coffer.kms.tombstone.v2"));  // no NUL: not a message
}

TEST(SigningDomainTest, ASignatureVerifiesInItsOwnDomainOnly) {
  auto signer = SoftwareEcdsaSigner::Generate();
  ASSERT_TRUE(signer.ok()) << signer.status();
  auto verifier = CheckpointVerifier::FromPublicKeyPem(*(*signer)->PublicKeyPem());
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  const std::string payload = "the same payload bytes";
  for (SigningDomain domain : kAllSigningDomains) {
    auto signature = (*signer)->Sign(DomainMessage(domain, payload));
    ASSERT_TRUE(signature.ok());
    for (SigningDomain other : kAllSigningDomains) {
      const absl::Status status = VerifyInDomain(*verifier, other, payload, *signature);
      EXPECT_EQ(status.ok(), other == domain)
          << SigningDomainName(domain) << " as " << SigningDomainName(other);
      if (!status.ok()) {
        EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kAuditTampered);
      }
    }
    EXPECT_FALSE(VerifyUnlabelledLegacy(*verifier, payload, *signature).ok());
    // The whole labelled message is exactly what was signed, yet it is refused as unlabelled.
    ASSERT_TRUE(verifier->Verify(DomainMessage(domain, payload), *signature).ok());
    EXPECT_FALSE(
        VerifyUnlabelledLegacy(*verifier, DomainMessage(domain, payload), *signature).ok());
  }
}

TEST(SigningDomainTest, AnUnlabelledSignatureVerifiesOnlyAsLegacy) {
  auto signer = SoftwareEcdsaSigner::Generate();
  ASSERT_TRUE(signer.ok()) << signer.status();
  auto verifier = CheckpointVerifier::FromPublicKeyPem(*(*signer)->PublicKeyPem());
  ASSERT_TRUE(verifier.ok());
  const std::string payload = "{\"format\":\"coffer-deletion-receipt-v1\"}\n";
  auto signature = (*signer)->Sign(payload);
  ASSERT_TRUE(signature.ok());
  EXPECT_TRUE(VerifyUnlabelledLegacy(*verifier, payload, *signature).ok());
  for (SigningDomain domain : kAllSigningDomains) {
    EXPECT_FALSE(VerifyInDomain(*verifier, domain, payload, *signature).ok());
  }
  std::string flipped = payload;
  flipped[3] ^= 1;
  EXPECT_FALSE(VerifyUnlabelledLegacy(*verifier, flipped, *signature).ok());
}

}  // namespace
}  // namespace coffer::kms::audit
