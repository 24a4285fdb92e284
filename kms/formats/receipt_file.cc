#include "kms/formats/receipt_file.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <cstdint>

#include "absl/strings/escaping.h"
#include "crypto/base/status.h"
#include "google/protobuf/util/json_util.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/signer.h"
#include "kms/audit/signing_domain.h"

namespace coffer::kms::receipt {
namespace {

absl::Status Invalid(std::string message) {
  return MakeError(ErrorCode::kReceiptInvalid, std::move(message));
}

}  // namespace

absl::StatusOr<std::string> BodyLine(const coffer::v1::DeletionReceipt& receipt) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = false;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(receipt, &json, options).ok()) {
    return MakeError(ErrorCode::kInternal, "cannot print the deletion receipt as JSON");
  }
  json.push_back('\n');
  return json;
}

std::string SignedMessage(std::string_view body_line) {
  return audit::DomainMessage(audit::SigningDomain::kDeletionReceipt, body_line);
}

std::string AssembleFile(std::string_view body_line, std::string_view der_signature) {
  std::string file(body_line);
  file += absl::Base64Escape(absl::string_view(der_signature.data(), der_signature.size()));
  file.push_back('\n');
  return file;
}

absl::StatusOr<coffer::v1::DeletionReceipt> VerifyFile(std::string_view file,
                                                       std::string_view public_key_pem) {
  COFFER_ASSIGN_OR_RETURN(audit::CheckpointVerifier verifier,
                          audit::CheckpointVerifier::FromPublicKeyPem(public_key_pem));
  const size_t first_end = file.find('\n');
  if (first_end == std::string_view::npos) {
    return Invalid("not a deletion receipt: expected two lines (body, signature)");
  }
  const std::string_view body_line = file.substr(0, first_end + 1);
  std::string_view rest = file.substr(first_end + 1);
  if (rest.empty() || rest.back() != '\n' || rest.find('\n') != rest.size() - 1) {
    return Invalid("not a deletion receipt: expected two lines (body, signature)");
  }
  rest.remove_suffix(1);
  std::string signature;
  const absl::string_view encoded(rest.data(), rest.size());
  if (!absl::Base64Unescape(encoded, &signature) || absl::Base64Escape(signature) != encoded) {
    return Invalid("the receipt's signature line is not canonical base64");
  }
  // Only authenticated bytes are parsed: the signature decides which version to expect.
  const bool labelled =
      audit::VerifyInDomain(verifier, audit::SigningDomain::kDeletionReceipt, body_line, signature)
          .ok();
  if (!labelled && !audit::VerifyUnlabelledLegacy(verifier, body_line, signature).ok()) {
    return Invalid(
        "the receipt's signature does not verify under this public key as a deletion receipt: "
        "altered, signed by another token, or a signature of something else");
  }
  coffer::v1::DeletionReceipt receipt;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  const std::string body(body_line.substr(0, body_line.size() - 1));
  if (!google::protobuf::util::JsonStringToMessage(body, &receipt, options).ok()) {
    return Invalid("the receipt's body is not a deletion receipt");
  }
  const std::string_view expected = labelled ? kReceiptFormat : kReceiptFormatV1;
  if (receipt.format() != expected) {
    return Invalid("the receipt's format is not " + std::string(expected) +
                   ", the version its signature is");
  }
  return receipt;
}

std::string NameCommitment(std::string_view salt, std::string_view name) {
  std::string input(kNameCommitmentLabel);
  input.push_back('\0');
  input.append(name.data(), name.size());
  uint8_t tag[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (HMAC(EVP_sha256(), salt.data(), static_cast<int>(salt.size()),
           reinterpret_cast<const uint8_t*>(input.data()), input.size(), tag, &size) == nullptr) {
    return "";  // OpenSSL out of memory: an empty commitment matches nothing
  }
  return std::string(reinterpret_cast<const char*>(tag), size);
}

std::string NameCommitmentHex(std::string_view salt, std::string_view name) {
  return audit::ToHex(NameCommitment(salt, name));
}

std::string Sha256Hex(std::string_view bytes) {
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), digest);
  return audit::ToHex(std::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

}  // namespace coffer::kms::receipt
