#include "kms/admin/otpauth.h"

#include "crypto/base/status.h"

namespace coffer::kms::admin {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

int Base32Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a';
  if (c >= '2' && c <= '7') return c - '2' + 26;
  return -1;
}

}  // namespace

std::string Base32Encode(std::string_view bytes) {
  std::string out;
  out.reserve((bytes.size() * 8 + 4) / 5);
  uint32_t buffer = 0;
  int bits = 0;
  for (unsigned char b : bytes) {
    buffer = (buffer << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out.push_back(kAlphabet[(buffer >> (bits - 5)) & 0x1f]);
      bits -= 5;
    }
  }
  if (bits > 0) out.push_back(kAlphabet[(buffer << (5 - bits)) & 0x1f]);
  return out;
}

absl::StatusOr<std::string> Base32Decode(std::string_view text) {
  while (!text.empty() && text.back() == '=') text.remove_suffix(1);
  // Lengths mod 8 of 1, 3 and 6 encode no whole number of bytes.
  const size_t rem = text.size() % 8;
  if (rem == 1 || rem == 3 || rem == 6) {
    return MakeError(ErrorCode::kInvalidArgument, "base32 text has an impossible length");
  }
  std::string out;
  out.reserve(text.size() * 5 / 8);
  uint32_t buffer = 0;
  int bits = 0;
  for (char c : text) {
    const int v = Base32Value(c);
    if (v < 0)
      return MakeError(ErrorCode::kInvalidArgument, "base32 text has an invalid character");
    buffer = (buffer << 5) | static_cast<uint32_t>(v);
    bits += 5;
    if (bits >= 8) {
      out.push_back(static_cast<char>((buffer >> (bits - 8)) & 0xff));
      bits -= 8;
    }
  }
  if ((buffer & ((1u << bits) - 1)) != 0) {
    return MakeError(ErrorCode::kInvalidArgument, "base32 text has non-zero trailing bits");
  }
  return out;
}

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    }
  }
  return out;
}

std::string OtpauthUri(std::string_view issuer, std::string_view name, std::string_view secret,
                       uint32_t step_seconds) {
  const std::string enc_issuer = PercentEncode(issuer);
  std::string uri = "otpauth://totp/" + enc_issuer + ":" + PercentEncode(name);
  uri += "?secret=" + Base32Encode(secret);
  uri += "&issuer=" + enc_issuer;
  uri += "&algorithm=SHA1&digits=6&period=" + std::to_string(step_seconds);
  return uri;
}

}  // namespace coffer::kms::admin
