// Deletion-receipt files (docs/formats.md, "deletion-receipt-v2"; the message is
// coffer.v1.DeletionReceipt in kms/api/proto/coffer/v1/receipt.proto).
//
// A receipt file is two lines: the receipt in protobuf's JSON mapping on one line, then the
// base64 of the DER ECDSA-P256-SHA256 signature over the signed message. The token's key also
// signs checkpoints, tombstones and export archives, so the message is domain-labelled
// (kms/audit/signing_domain.h):
//   coffer-deletion-receipt-v2 (issued today): "coffer-deletion-receipt-v2" 0x00 || first line
//   coffer-deletion-receipt-v1 (issued before): the first line alone, newline included
// A signature is accepted only as the version the signed first line itself declares in its
// "format": a v2 receipt never verifies unlabelled, a v1 receipt never labelled.
// Signing happens in the token (the key manager calls hsm::Signer over SignedMessage); this file
// only lays the bytes out and checks them, so that keyctl and tests verify receipts offline with
// the public key alone — as `openssl dgst -sha256 -verify` does.
//
// Pure; thread-safe. Failure: RECEIPT_INVALID for a file that is not a well-formed receipt, whose
// signature does not verify, or whose body is not a receipt of the version its signature is;
// INVALID_ARGUMENT for a public key that is not a P-256 PEM.

#ifndef COFFER_KMS_FORMATS_RECEIPT_FILE_H_
#define COFFER_KMS_FORMATS_RECEIPT_FILE_H_

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "coffer/v1/receipt.pb.h"

namespace coffer::kms::receipt {

// The format issued today, and the first one (still verified).
inline constexpr std::string_view kReceiptFormat = "coffer-deletion-receipt-v2";
inline constexpr std::string_view kReceiptFormatV1 = "coffer-deletion-receipt-v1";

// The signed first line: `receipt` as one-line JSON (every field printed, zeros included) and
// "\n". INTERNAL if protobuf cannot print it.
absl::StatusOr<std::string> BodyLine(const coffer::v1::DeletionReceipt& receipt);

// The bytes the token signs for a v2 receipt whose first line is `body_line`.
std::string SignedMessage(std::string_view body_line);

// The whole file: `body_line` (from BodyLine) followed by base64(`der_signature`) and "\n".
std::string AssembleFile(std::string_view body_line, std::string_view der_signature);

// Checks `file` against `public_key_pem` and returns the receipt it carries.
absl::StatusOr<coffer::v1::DeletionReceipt> VerifyFile(std::string_view file,
                                                       std::string_view public_key_pem);

// The commitment of a v2 tombstone and receipt to a dataset's name: HMAC-SHA256(key = `salt`,
// "coffer-dataset-name-commitment-v2" 0x00 || name), 32 bytes. The salt (32 random bytes drawn
// when the dataset is created) is given to the dataset's customer; without it the commitment
// checks no guess of the name. NameCommitmentHex: the same in lower-case hex, as receipts carry
// it.
inline constexpr std::string_view kNameCommitmentLabel = "coffer-dataset-name-commitment-v2";
inline constexpr size_t kNameSaltBytes = 32;
std::string NameCommitment(std::string_view salt, std::string_view name);
std::string NameCommitmentHex(std::string_view salt, std::string_view name);

// Lower-case hex SHA-256 of `bytes` (v1 receipts' name hash, the tombstone and key fingerprints).
std::string Sha256Hex(std::string_view bytes);

}  // namespace coffer::kms::receipt

#endif  // COFFER_KMS_FORMATS_RECEIPT_FILE_H_
