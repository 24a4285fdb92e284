// The audit log's on-disk format: segment headers, frames, the hash chain, the forward-secure
// MAC inputs, the signed checkpoint message. docs/audit.md describes every byte; the constants
// here are the source of truth and point there.
//
// Segment file "audit-<first sequence, 20 decimal digits>.log":
//   header (72 bytes): magic "COFFAUD1" (8) | format version u32 BE (4) | reserved u32 = 0 (4)
//                      | log id (16) | first sequence u64 BE (8) | previous chain hash (32)
//   then frames:       payload length u32 BE (4) | payload (AuditEntry protobuf)
//                      | chain hash (32) | MAC (32)
//
// Pure functions, no I/O. Thread-safe. Failures: ChainHash/CheckpointMessage cannot fail except
// for an OpenSSL allocation failure (CRYPTO_LIBRARY_ERROR); decoders return UNSUPPORTED_FORMAT or
// AUDIT_LOG_CORRUPT for bytes that are not a valid header.

#ifndef COFFER_KMS_AUDIT_AUDIT_FORMAT_H_
#define COFFER_KMS_AUDIT_AUDIT_FORMAT_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace coffer::kms::audit {

inline constexpr std::string_view kSegmentMagic = "COFFAUD1";
// Version written. 2: LOG_EPOCH and LOG_CHECKPOINT entries carry key_db_generation
// (docs/audit.md, "Key DB generation"); otherwise the bytes are those of version 1, which is
// still read and verified (a log written before keeps its version-1 segments; the first write
// of a newer build starts a new segment).
inline constexpr uint32_t kFormatVersion = 2;
inline constexpr uint32_t kOldestReadableFormatVersion = 1;
inline constexpr size_t kLogIdSize = 16;
inline constexpr size_t kChainHashSize = 32;
inline constexpr size_t kMacSize = 32;
inline constexpr size_t kSegmentHeaderSize = 8 + 4 + 4 + kLogIdSize + 8 + kChainHashSize;
inline constexpr size_t kFrameLengthSize = 4;
inline constexpr size_t kFrameOverhead = kFrameLengthSize + kChainHashSize + kMacSize;
// Entries are small (no free-form data); a larger length field is damage, not an entry.
inline constexpr size_t kMaxPayloadSize = 16 * 1024;
static_assert(kSegmentHeaderSize == 72);
static_assert(kFrameOverhead == 68);

// Domain separation prefixes (each ends in a NUL byte; docs/audit.md "Chain and MAC").
inline constexpr std::string_view kChainDomain{"coffer.audit.v1.chain\0", 22};
inline constexpr std::string_view kMacEvolveLabel{"coffer.audit.v1.evolve\0", 23};
inline constexpr std::string_view kCheckpointDomain{"coffer.audit.v1.checkpoint\0", 27};
inline constexpr size_t kCheckpointMessageSize =
    kCheckpointDomain.size() + kLogIdSize + 8 + kChainHashSize + 8;
static_assert(kCheckpointMessageSize == 91);
inline constexpr std::string_view kEpochKeyDomain{"coffer.audit.v1.epoch\0", 22};
inline constexpr size_t kEpochKeyMessageSize = kEpochKeyDomain.size() + kLogIdSize + 8;
static_assert(kEpochKeyMessageSize == 46);

using LogId = std::array<uint8_t, kLogIdSize>;
using ChainHash = std::array<uint8_t, kChainHashSize>;
using MacTag = std::array<uint8_t, kMacSize>;

struct SegmentHeader {
  LogId log_id{};
  uint64_t first_sequence = 0;
  ChainHash previous_hash{};  // chain hash of entry first_sequence - 1; zeros for sequence 0
  uint32_t format_version = kFormatVersion;  // kOldestReadableFormatVersion..kFormatVersion
};

std::string EncodeSegmentHeader(const SegmentHeader& header);

// Decodes exactly kSegmentHeaderSize bytes. UNSUPPORTED_FORMAT for a version outside
// kOldestReadableFormatVersion..kFormatVersion;
// AUDIT_LOG_CORRUPT for a wrong magic or size.
absl::StatusOr<SegmentHeader> DecodeSegmentHeader(std::string_view bytes);

// "audit-00000000000000000042.log" for first sequence 42.
std::string SegmentFileName(uint64_t first_sequence);

// The first sequence named by a segment file name, or nullopt if `name` is not one.
std::optional<uint64_t> ParseSegmentFileName(std::string_view name);

// h_seq = SHA-256(kChainDomain | log id | h_{seq-1} | seq u64 BE | payload length u32 BE | payload)
absl::StatusOr<ChainHash> ComputeChainHash(const LogId& log_id, const ChainHash& previous,
                                           uint64_t sequence, std::string_view payload);

// The 91 bytes a checkpoint signs:
// kCheckpointDomain | log id | covered sequence u64 BE | head hash | time micros i64 BE.
std::string CheckpointMessage(const LogId& log_id, uint64_t covered_sequence, const ChainHash& head,
                              int64_t time_micros);

// The 46 bytes the HSM MACs to derive an epoch's K_0 (docs/audit.md "Epochs"):
// kEpochKeyDomain | log id | epoch u64 BE.
std::string EpochKeyMessage(const LogId& log_id, uint64_t epoch);

// One frame: length | payload | chain hash | MAC.
std::string EncodeFrame(std::string_view payload, const ChainHash& hash, const MacTag& mac);

// Lower-case hex of `bytes`.
std::string ToHex(std::string_view bytes);
template <size_t N>
std::string ToHex(const std::array<uint8_t, N>& bytes) {
  return ToHex(std::string_view(reinterpret_cast<const char*>(bytes.data()), N));
}

// Decodes exactly N bytes of hex (either case); nullopt otherwise.
template <size_t N>
std::optional<std::array<uint8_t, N>> FromHex(std::string_view hex);

// Returns `bytes` as an array when it has exactly N bytes.
template <size_t N>
std::optional<std::array<uint8_t, N>> ToArray(std::string_view bytes) {
  if (bytes.size() != N) return std::nullopt;
  std::array<uint8_t, N> out{};
  for (size_t i = 0; i < N; ++i) out[i] = static_cast<uint8_t>(bytes[i]);
  return out;
}

template <size_t N>
std::string_view AsStringView(const std::array<uint8_t, N>& bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), N};
}

namespace internal {
std::optional<uint8_t> HexNibble(char c);
}  // namespace internal

template <size_t N>
std::optional<std::array<uint8_t, N>> FromHex(std::string_view hex) {
  if (hex.size() != 2 * N) return std::nullopt;
  std::array<uint8_t, N> out{};
  for (size_t i = 0; i < N; ++i) {
    std::optional<uint8_t> high = internal::HexNibble(hex[2 * i]);
    std::optional<uint8_t> low = internal::HexNibble(hex[2 * i + 1]);
    if (!high || !low) return std::nullopt;
    out[i] = static_cast<uint8_t>((*high << 4) | *low);
  }
  return out;
}

}  // namespace coffer::kms::audit

#endif  // COFFER_KMS_AUDIT_AUDIT_FORMAT_H_
