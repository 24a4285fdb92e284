#include "kms/audit/audit_format.h"

#include <openssl/evp.h>

#include <charconv>
#include <memory>

#include "crypto/base/status.h"
#include "kms/audit/signing_domain.h"

namespace coffer::kms::audit {
namespace {

void PutU32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

void PutU64(std::string& out, uint64_t value) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>(value >> shift));
}

uint64_t GetBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

template <size_t N>
void PutArray(std::string& out, const std::array<uint8_t, N>& bytes) {
  out.append(AsStringView(bytes));
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

constexpr std::string_view kSegmentPrefix = "audit-";
constexpr std::string_view kSegmentSuffix = ".log";
constexpr size_t kSegmentDigits = 20;

}  // namespace

std::string EncodeSegmentHeader(const SegmentHeader& header) {
  std::string out;
  out.reserve(kSegmentHeaderSize);
  out.append(kSegmentMagic);
  PutU32(out, header.format_version);
  PutU32(out, 0);
  PutArray(out, header.log_id);
  PutU64(out, header.first_sequence);
  PutArray(out, header.previous_hash);
  return out;
}

absl::StatusOr<SegmentHeader> DecodeSegmentHeader(std::string_view bytes) {
  if (bytes.size() != kSegmentHeaderSize ||
      bytes.substr(0, kSegmentMagic.size()) != kSegmentMagic) {
    return MakeError(ErrorCode::kAuditLogCorrupt, "not an audit segment header");
  }
  size_t at = kSegmentMagic.size();
  const uint64_t version = GetBigEndian(bytes.substr(at, 4));
  if (version < kOldestReadableFormatVersion || version > kFormatVersion) {
    return MakeError(ErrorCode::kUnsupportedFormat,
                     "audit segment format version " + std::to_string(version) +
                         " (this build reads versions " +
                         std::to_string(kOldestReadableFormatVersion) + " to " +
                         std::to_string(kFormatVersion) + ")");
  }
  if (GetBigEndian(bytes.substr(at + 4, 4)) != 0) {
    // Written as zero: anything else is a header no writer made (found by fuzz_audit_log).
    return MakeError(ErrorCode::kAuditLogCorrupt, "audit segment header: reserved bytes not zero");
  }
  at += 8;  // version and reserved
  SegmentHeader header;
  header.format_version = static_cast<uint32_t>(version);
  header.log_id = *ToArray<kLogIdSize>(bytes.substr(at, kLogIdSize));
  at += kLogIdSize;
  header.first_sequence = GetBigEndian(bytes.substr(at, 8));
  at += 8;
  header.previous_hash = *ToArray<kChainHashSize>(bytes.substr(at, kChainHashSize));
  return header;
}

std::string SegmentFileName(uint64_t first_sequence) {
  const std::string digits = std::to_string(first_sequence);
  std::string name(kSegmentPrefix);
  name.append(kSegmentDigits - digits.size(), '0').append(digits).append(kSegmentSuffix);
  return name;
}

std::optional<uint64_t> ParseSegmentFileName(std::string_view name) {
  if (name.size() != kSegmentPrefix.size() + kSegmentDigits + kSegmentSuffix.size() ||
      name.substr(0, kSegmentPrefix.size()) != kSegmentPrefix ||
      name.substr(name.size() - kSegmentSuffix.size()) != kSegmentSuffix) {
    return std::nullopt;
  }
  std::string_view digits = name.substr(kSegmentPrefix.size(), kSegmentDigits);
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

absl::StatusOr<ChainHash> ComputeChainHash(const LogId& log_id, const ChainHash& previous,
                                           uint64_t sequence, std::string_view payload) {
  std::string prefix;
  prefix.reserve(kChainDomain.size() + kLogIdSize + kChainHashSize + 12);
  prefix.append(kChainDomain);
  PutArray(prefix, log_id);
  PutArray(prefix, previous);
  PutU64(prefix, sequence);
  PutU32(prefix, static_cast<uint32_t>(payload.size()));

  std::unique_ptr<EVP_MD_CTX, MdCtxDeleter> ctx(EVP_MD_CTX_new());
  ChainHash hash{};
  unsigned int written = 0;
  if (ctx == nullptr || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(ctx.get(), prefix.data(), prefix.size()) != 1 ||
      EVP_DigestUpdate(ctx.get(), payload.data(), payload.size()) != 1 ||
      EVP_DigestFinal_ex(ctx.get(), hash.data(), &written) != 1 || written != hash.size()) {
    return MakeError(ErrorCode::kCryptoLibraryError, "SHA-256 of an audit entry failed");
  }
  return hash;
}

// The checkpoint has signed its domain's label since its first format (signing_domain.h).
static_assert(kCheckpointDomain.substr(0, kCheckpointDomain.size() - 1) == kAuditCheckpointLabel &&
              kCheckpointDomain.back() == '\0');

std::string CheckpointMessage(const LogId& log_id, uint64_t covered_sequence, const ChainHash& head,
                              int64_t time_micros) {
  std::string fields;
  fields.reserve(kCheckpointMessageSize - kCheckpointDomain.size());
  PutArray(fields, log_id);
  PutU64(fields, covered_sequence);
  PutArray(fields, head);
  PutU64(fields, static_cast<uint64_t>(time_micros));
  return DomainMessage(SigningDomain::kAuditCheckpoint, fields);
}

std::string EpochKeyMessage(const LogId& log_id, uint64_t epoch) {
  std::string out;
  out.reserve(kEpochKeyMessageSize);
  out.append(kEpochKeyDomain);
  PutArray(out, log_id);
  PutU64(out, epoch);
  return out;
}

std::string EncodeFrame(std::string_view payload, const ChainHash& hash, const MacTag& mac) {
  std::string out;
  out.reserve(kFrameOverhead + payload.size());
  PutU32(out, static_cast<uint32_t>(payload.size()));
  out.append(payload);
  PutArray(out, hash);
  PutArray(out, mac);
  return out;
}

std::string ToHex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto byte = static_cast<uint8_t>(c);
    out.push_back(kDigits[byte >> 4]);
    out.push_back(kDigits[byte & 0xf]);
  }
  return out;
}

namespace internal {
std::optional<uint8_t> HexNibble(char c) {
  if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
  if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
  if (c >= 'A' && c <= 'F') return static_cast<uint8_t>(c - 'A' + 10);
  return std::nullopt;
}
}  // namespace internal

}  // namespace coffer::kms::audit
