// Pseudonymizer: deterministic, reversible pseudonyms of identifiers (e-mail addresses, phone
// numbers, customer numbers) under a dataset's `pseudonym` key, and display masking.
//
// A token stands for one identifier in one dataset under one pseudonym key version. The same
// identifier gives the same token within a dataset and version, so the CRM can store, compare
// and join tokens instead of identifiers; another dataset gives an unrelated token. The key
// changes only by an explicit re-key (design brief, "Key hierarchy"): Translate moves a token
// to the current primary version, and Reidentify opens a token of any version that still
// decrypts.
//
// Token format pseudonym-v1 (docs/formats.md#pseudonym-v1), ASCII:
//   cp1.<version>.<base64url(V ‖ C)>
//   <version>  the pseudonym key version, decimal, 1..4294967295, no sign, no leading zeros
//   V ‖ C      AES-256-SIV (crypto/aes_siv.h) of the identifier under the key DataKey derives
//              from the DEK (HKDF-SHA256, info "coffer pseudonym aes-256-siv v1", no salt), with
//              the associated-data components
//                "coffer pseudonym v1" ‖ dataset handle (u64 BE) ‖ version (u32 BE)
//              (three components, not one concatenation)
//   base64url  RFC 4648 section 5, no padding, canonical (the unused low bits of the last
//              character are zero), so one identifier has exactly one token per dataset and
//              version
// Equal tokens mean equal identifiers, and the token's length reveals the identifier's length
// (base64 of 16 + n bytes): this is what deterministic pseudonyms are for, and all they leak.
//
// Thread safety: const methods may run concurrently (the KeyProvider is thread-safe).
// Ownership: the KeyProvider is borrowed and must outlive the Pseudonymizer.
//
// Failures (stable codes, docs/errors.md); messages never contain the identifier or token:
//   IDENTIFIER_INVALID          the identifier is empty or longer than kMaxIdentifierBytes
//   PSEUDONYM_TOKEN_MALFORMED   not a pseudonym-v1 token: prefix, version, base64url or length
//   PSEUDONYM_TOKEN_MISMATCH    a well-formed token that does not open under this dataset's key
//                               of the version it names (another dataset's, altered, or a
//                               version the dataset does not have)
//   the KeyProvider's codes     unknown dataset, destroyed keys, a retired version, a state
//                               that forbids the use
// Pseudonymize counts no encryptions against the key's budget: AES-SIV draws no nonce, so
// there is nothing to wear out.

#ifndef COFFER_STORAGE_PSEUDONYMIZER_H_
#define COFFER_STORAGE_PSEUDONYMIZER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "storage/data_key.h"
#include "storage/key_provider.h"

namespace coffer::storage {

// docs/formats.md#pseudonym-v1
inline constexpr size_t kMaxIdentifierBytes = 1024;
inline constexpr std::string_view kPseudonymTokenPrefix = "cp1.";
inline constexpr std::string_view kPseudonymAssociatedDataLabel = "coffer pseudonym v1";
// Anything longer is refused before parsing. The longest token is 1,402 characters: "cp1.",
// ten digits, ".", and 1,387 base64url characters of 16 + 1024 bytes.
inline constexpr size_t kMaxPseudonymTokenBytes = 4096;

class Pseudonymizer {
 public:
  explicit Pseudonymizer(KeyProvider* keys) : keys_(keys) {}

  Pseudonymizer(const Pseudonymizer&) = delete;
  Pseudonymizer& operator=(const Pseudonymizer&) = delete;

  // The token of `identifier` (1..kMaxIdentifierBytes bytes, any bytes) under the dataset's
  // primary pseudonym key (counts 0 encryptions).
  absl::StatusOr<std::string> Pseudonymize(uint64_t dataset_handle,
                                           std::string_view identifier) const;

  // The identifier a token stands for (any version that still decrypts).
  absl::StatusOr<std::string> Reidentify(uint64_t dataset_handle, std::string_view token) const;

  // The token of the same identifier under the current primary pseudonym version: the token
  // itself if it is already under the primary version (after checking that it opens).
  absl::StatusOr<std::string> Translate(uint64_t dataset_handle, std::string_view token) const;

  // The version a token names, without opening it (PSEUDONYM_TOKEN_MALFORMED if the input is
  // not a well-formed token; a well-formed one may still fail to open).
  static absl::StatusOr<uint32_t> TokenVersion(std::string_view token);

 private:
  // KeyForVersion, with an unknown version reported as PSEUDONYM_TOKEN_MISMATCH.
  absl::StatusOr<std::shared_ptr<const DataKey>> KeyForToken(uint64_t dataset_handle,
                                                             uint32_t version) const;

  KeyProvider* keys_;
};

// Display masking, for showing a re-identified value to a person. NOT a security boundary (the
// caller already holds the identifier) and no substitute for access control. The output is
// built only from "***", '@', '-' and the pieces each rule names, so it never shows more; it
// does not reveal the length of what it hides. Inputs are bytes; nothing is trimmed.

// "jane@example.com" -> "j***@example.com": the first character (one UTF-8 code point) of the
// local part, "***", '@' and the domain (everything after the last '@'). A local part of a
// single character is not shown at all ("j@example.com" -> "***@example.com"), nor one whose
// first byte does not start a well-formed UTF-8 character. No '@', nothing before it or nothing
// after it (not an address), or empty: "***".
std::string MaskEmail(std::string_view email);

// "+1 (555) 123-4567" -> "***-***-4567": the last 4 ASCII digits, everything else dropped.
// Fewer than kMinPhoneDigitsToShowAny digits (not a phone number, or one so short that 4
// digits would be most of it) and empty: "***".
inline constexpr size_t kMinPhoneDigitsToShowAny = 7;
std::string MaskPhone(std::string_view phone);

}  // namespace coffer::storage

#endif  // COFFER_STORAGE_PSEUDONYMIZER_H_
