// Fixed keys of the fuzz targets and their seed generator (tests/fuzz/make_seeds.cc): the seeds
// must be signed, MACed and wrapped with the keys the targets check against, run after run.
// They are public test keys, generated for this purpose and never used anywhere else.

#ifndef COFFER_TESTS_FUZZ_FUZZ_KEYS_H_
#define COFFER_TESTS_FUZZ_FUZZ_KEYS_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "crypto/hmac.h"
#include "crypto/recipient_wrap.h"
#include "hsm/service_keys.h"
#include "kms/audit/signer.h"

namespace coffer::fuzz {

// P-256: audit checkpoints, export archive signatures, receipts.
inline constexpr std::string_view kSigningKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghaTwRwGFBABismBH\n"
    "bUyQyXptbSbgVFH9h6zOx54B6cChRANCAASAXF3AZ5DSFc5fs/dGnigZ9thyzrPp\n"
    "GC80hFkQqChDjGgnzMUzVKr9SjTiJYZ1QMeIo0DPEr4suVbBJuHQIZkw\n"
    "-----END PRIVATE KEY-----\n";

// X25519: the export archives' recipient.
inline constexpr std::string_view kRecipientKeyPem =
    "-----BEGIN PRIVATE KEY-----\n"
    "MC4CAQAwBQYDK2VuBCIEIJCbkjknEOzY9d+h6ET1WIrDmNv9k+3dLgtst2cyy9BN\n"
    "-----END PRIVATE KEY-----\n";
inline constexpr std::string_view kRecipientPublicKeyPem =
    "-----BEGIN PUBLIC KEY-----\n"
    "MCowBQYDK2VuAyEAPFV2kcasYtGybVU+wuOzFWod4h8mlOkKHR7+4XtKLD8=\n"
    "-----END PUBLIC KEY-----\n";

std::unique_ptr<kms::audit::SoftwareEcdsaSigner> FixedSigner();
crypto::RecipientPrivateKey FixedRecipientPrivateKey();
crypto::RecipientPublicKey FixedRecipientPublicKey();

// HMAC-SHA256 under a fixed key (bytes 0x00..0x1f): the token's row key in this process only.
class FixedRowAuthenticator final : public hsm::RowAuthenticator {
 public:
  FixedRowAuthenticator();
  absl::StatusOr<std::array<uint8_t, 32>> HmacRowKey(std::string_view data) override;

 private:
  std::unique_ptr<crypto::HmacSha256> hmac_;
};

}  // namespace coffer::fuzz

#endif  // COFFER_TESTS_FUZZ_FUZZ_KEYS_H_
