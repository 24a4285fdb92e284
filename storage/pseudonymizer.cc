#include "storage/pseudonymizer.h"

#include <openssl/crypto.h>

#include <array>
#include <limits>
#include <utility>

#include "absl/strings/escaping.h"
#include "crypto/aes_siv.h"
#include "crypto/base/status.h"

namespace coffer::storage {
namespace {

// V ‖ C of a 1..kMaxIdentifierBytes identifier.
constexpr size_t kMinSealedBytes = crypto::kAesSivTagSize + 1;
constexpr size_t kMaxSealedBytes = crypto::kAesSivTagSize + kMaxIdentifierBytes;
constexpr size_t kMaxVersionDigits = 10;  // 4294967295

struct ParsedToken {
  uint32_t version = 0;
  std::string sealed;  // V ‖ C
};

absl::Status Malformed(std::string_view why) {
  return MakeError(
      ErrorCode::kPseudonymTokenMalformed,
      std::string("not a pseudonym token (cp1.<version>.<base64url>): ") + std::string(why));
}

absl::StatusOr<uint32_t> ParseVersion(std::string_view digits) {
  if (digits.empty() || digits.size() > kMaxVersionDigits) {
    return Malformed("the version is not 1 to 10 digits");
  }
  if (digits[0] == '0') return Malformed("the version is zero or has a leading zero");
  uint64_t value = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return Malformed("the version is not a decimal number");
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > std::numeric_limits<uint32_t>::max()) {
    return Malformed("the version is beyond 4294967295");
  }
  return static_cast<uint32_t>(value);
}

absl::StatusOr<ParsedToken> ParseToken(std::string_view token) {
  if (token.size() > kMaxPseudonymTokenBytes) return Malformed("longer than any token");
  if (token.substr(0, kPseudonymTokenPrefix.size()) != kPseudonymTokenPrefix) {
    return Malformed("unknown prefix");
  }
  std::string_view rest = token.substr(kPseudonymTokenPrefix.size());
  size_t dot = rest.find('.');
  if (dot == std::string_view::npos) return Malformed("no '.' after the version");
  ParsedToken parsed;
  COFFER_ASSIGN_OR_RETURN(parsed.version, ParseVersion(rest.substr(0, dot)));
  std::string_view encoded = rest.substr(dot + 1);
  // Debian builds abseil with its own absl::string_view, distinct from std::string_view.
  absl::string_view absl_encoded(encoded.data(), encoded.size());
  if (!absl::WebSafeBase64Unescape(absl_encoded, &parsed.sealed) ||
      absl::WebSafeBase64Escape(parsed.sealed) != absl_encoded) {
    // The round trip refuses padding, whitespace and non-zero unused bits, so that every
    // ciphertext has exactly one token.
    return Malformed("the ciphertext is not canonical unpadded base64url");
  }
  if (parsed.sealed.size() < kMinSealedBytes || parsed.sealed.size() > kMaxSealedBytes) {
    return Malformed("the ciphertext has a length no token has");
  }
  return parsed;
}

void StoreBigEndian(uint64_t value, size_t bytes, char* out) {
  for (size_t i = 0; i < bytes; ++i) {
    out[i] = static_cast<char>(value >> (8 * (bytes - 1 - i)));
  }
}

// The associated-data components of docs/formats.md#pseudonym-v1, kept alive for one call.
class AssociatedData {
 public:
  AssociatedData(uint64_t dataset_handle, uint32_t version) {
    StoreBigEndian(dataset_handle, handle_.size(), handle_.data());
    StoreBigEndian(version, version_.size(), version_.data());
  }
  std::array<std::string_view, 3> components() const {
    return {kPseudonymAssociatedDataLabel, std::string_view(handle_.data(), handle_.size()),
            std::string_view(version_.data(), version_.size())};
  }

 private:
  std::array<char, 8> handle_;
  std::array<char, 4> version_;
};

void Wipe(std::string& plaintext) { OPENSSL_cleanse(plaintext.data(), plaintext.size()); }

// Length in bytes of the well-formed UTF-8 character at the start of `text`; 0 if there is
// none (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF).
size_t Utf8CharLength(std::string_view text) {
  if (text.empty()) return 0;
  auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(0);
  size_t length = 0;
  uint8_t second_min = 0x80;
  uint8_t second_max = 0xBF;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) second_min = 0xA0;
    if (lead == 0xED) second_max = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) second_min = 0x90;
    if (lead == 0xF4) second_max = 0x8F;
  } else {
    return 0;
  }
  if (text.size() < length) return 0;
  if (byte(1) < second_min || byte(1) > second_max) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return length;
}

constexpr std::string_view kHidden = "***";

// The token of `identifier` under `key`.
absl::StatusOr<std::string> SealToken(uint64_t dataset_handle, const DataKey& key,
                                      std::string_view identifier) {
  COFFER_ASSIGN_OR_RETURN(const crypto::AesSiv* siv, key.aes_siv());
  AssociatedData ad(dataset_handle, key.version());
  COFFER_ASSIGN_OR_RETURN(std::string sealed, siv->Seal(identifier, ad.components()));
  std::string token(kPseudonymTokenPrefix);
  token += std::to_string(key.version());
  token += '.';
  token += absl::WebSafeBase64Escape(absl::string_view(sealed.data(), sealed.size()));
  return token;
}

// The identifier sealed in `sealed` (V ‖ C, decoded from a token) under `key`.
absl::StatusOr<std::string> OpenToken(uint64_t dataset_handle, const DataKey& key,
                                      std::string_view sealed) {
  COFFER_ASSIGN_OR_RETURN(const crypto::AesSiv* siv, key.aes_siv());
  AssociatedData ad(dataset_handle, key.version());
  absl::StatusOr<std::string> identifier = siv->Open(sealed, ad.components());
  if (ErrorCodeOf(identifier.status()) == ErrorCode::kCiphertextCorrupt) {
    return MakeError(ErrorCode::kPseudonymTokenMismatch,
                     "the token does not open under this dataset's pseudonym key of the version "
                     "it names: another dataset's token, or altered");
  }
  return identifier;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const DataKey>> Pseudonymizer::KeyForToken(uint64_t dataset_handle,
                                                                          uint32_t version) const {
  absl::StatusOr<std::shared_ptr<const DataKey>> key =
      keys_->KeyForVersion(dataset_handle, KeyPurpose::kPseudonym, version);
  if (ErrorCodeOf(key.status()) == ErrorCode::kKeyVersionNotFound) {
    // Another dataset's token, or an altered version: to the caller, a token that does not
    // open here.
    return MakeError(ErrorCode::kPseudonymTokenMismatch,
                     "the token names a pseudonym key version this dataset does not have");
  }
  return key;
}

absl::StatusOr<std::string> Pseudonymizer::Pseudonymize(uint64_t dataset_handle,
                                                        std::string_view identifier) const {
  if (identifier.empty() || identifier.size() > kMaxIdentifierBytes) {
    return MakeError(ErrorCode::kIdentifierInvalid,
                     "an identifier to pseudonymize is 1 to 1024 bytes, got " +
                         std::to_string(identifier.size()));
  }
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          keys_->PrimaryKey(dataset_handle, KeyPurpose::kPseudonym, 0));
  return SealToken(dataset_handle, *key, identifier);
}

absl::StatusOr<std::string> Pseudonymizer::Reidentify(uint64_t dataset_handle,
                                                      std::string_view token) const {
  COFFER_ASSIGN_OR_RETURN(ParsedToken parsed, ParseToken(token));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> key,
                          KeyForToken(dataset_handle, parsed.version));
  return OpenToken(dataset_handle, *key, parsed.sealed);
}

absl::StatusOr<std::string> Pseudonymizer::Translate(uint64_t dataset_handle,
                                                     std::string_view token) const {
  COFFER_ASSIGN_OR_RETURN(ParsedToken parsed, ParseToken(token));
  COFFER_ASSIGN_OR_RETURN(std::shared_ptr<const DataKey> primary,
                          keys_->PrimaryKey(dataset_handle, KeyPurpose::kPseudonym, 0));
  std::shared_ptr<const DataKey> key = primary;
  if (parsed.version != primary->version()) {
    COFFER_ASSIGN_OR_RETURN(key, KeyForToken(dataset_handle, parsed.version));
  }
  COFFER_ASSIGN_OR_RETURN(std::string identifier, OpenToken(dataset_handle, *key, parsed.sealed));
  absl::StatusOr<std::string> translated;
  if (key == primary) {
    translated = std::string(token);  // canonical (ParseToken), so resealing would give it back
  } else {
    translated = SealToken(dataset_handle, *primary, identifier);
  }
  Wipe(identifier);
  return translated;
}

absl::StatusOr<uint32_t> Pseudonymizer::TokenVersion(std::string_view token) {
  COFFER_ASSIGN_OR_RETURN(ParsedToken parsed, ParseToken(token));
  return parsed.version;
}

std::string MaskEmail(std::string_view email) {
  const size_t at = email.rfind('@');
  if (at == std::string_view::npos || at == 0 || at + 1 == email.size()) {
    return std::string(kHidden);
  }
  std::string_view local = email.substr(0, at);
  std::string_view domain = email.substr(at + 1);
  const size_t first = Utf8CharLength(local);
  std::string masked;
  if (first != 0 && first < local.size()) masked.append(local.substr(0, first));
  masked.append(kHidden);
  masked.push_back('@');
  masked.append(domain);
  return masked;
}

std::string MaskPhone(std::string_view phone) {
  std::string digits;
  for (char c : phone) {
    if (c >= '0' && c <= '9') digits.push_back(c);
  }
  std::string masked(kHidden);
  if (digits.size() >= kMinPhoneDigitsToShowAny) {
    masked.append("-***-");
    masked.append(digits.substr(digits.size() - 4));
  }
  OPENSSL_cleanse(digits.data(), digits.size());
  return masked;
}

}  // namespace coffer::storage
