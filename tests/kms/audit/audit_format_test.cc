// Format, anchors, signatures, the forward-secure MAC and the clock helper.

#include "kms/audit/audit_format.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>

#include "crypto/base/clock.h"
#include "gtest/gtest.h"
#include "kms/audit/anchor.h"
#include "kms/audit/internal/forward_mac.h"
#include "kms/audit/internal/segment_scan.h"
#include "kms/audit/signer.h"
#include "tests/kms/audit/audit_test_util.h"

namespace coffer::kms::audit {
namespace {

LogId CountingLogId() {
  LogId id{};
  for (size_t i = 0; i < id.size(); ++i) id[i] = static_cast<uint8_t>(i);
  return id;
}

TEST(AuditFormatTest, ChainHashMatchesTheDocumentedConstruction) {
  // SHA-256("coffer.audit.v1.chain\0" | 00..0f | 32 zero bytes | u64 BE 1 | u32 BE 3 | "abc"),
  // computed independently (Python hashlib) when docs/audit.md was written.
  auto hash = ComputeChainHash(CountingLogId(), ChainHash{}, 1, "abc");
  ASSERT_TRUE(hash.ok());
  EXPECT_EQ(ToHex(*hash), "65ef4ef8d0e2bc93290ccbb9041e09fc36150b3d4a99149ec5b14630d10cd0e2");
  auto other_sequence = ComputeChainHash(CountingLogId(), ChainHash{}, 2, "abc");
  ASSERT_TRUE(other_sequence.ok());
  EXPECT_NE(*hash, *other_sequence);
}

TEST(AuditFormatTest, CheckpointMessageLayout) {
  ChainHash head{};
  head.fill(0xab);
  const std::string message = CheckpointMessage(CountingLogId(), 0x0102, head, 0x0a0b);
  ASSERT_EQ(message.size(), kCheckpointMessageSize);
  EXPECT_EQ(message.substr(0, 27), std::string("coffer.audit.v1.checkpoint\0", 27));
  EXPECT_EQ(ToHex(message.substr(27, 16)), "000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(ToHex(message.substr(43, 8)), "0000000000000102");
  EXPECT_EQ(message.substr(51, 32), std::string(32, '\xab'));
  EXPECT_EQ(ToHex(message.substr(83, 8)), "0000000000000a0b");
}

TEST(AuditFormatTest, EpochKeyMessageLayout) {
  const std::string message = EpochKeyMessage(CountingLogId(), 0x0102030405060708);
  ASSERT_EQ(message.size(), kEpochKeyMessageSize);
  EXPECT_EQ(message.substr(0, 22), std::string("coffer.audit.v1.epoch\0", 22));
  EXPECT_EQ(ToHex(message.substr(22, 16)), "000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(ToHex(message.substr(38, 8)), "0102030405060708");
}

TEST(AuditFormatTest, SegmentHeaderRoundTripAndVersionCheck) {
  SegmentHeader header{CountingLogId(), 77, ChainHash{}};
  header.previous_hash[5] = 9;
  const std::string bytes = EncodeSegmentHeader(header);
  ASSERT_EQ(bytes.size(), kSegmentHeaderSize);
  EXPECT_EQ(bytes.substr(0, 8), "COFFAUD1");
  auto decoded = DecodeSegmentHeader(bytes);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->log_id, header.log_id);
  EXPECT_EQ(decoded->first_sequence, 77u);
  EXPECT_EQ(decoded->previous_hash, header.previous_hash);

  EXPECT_EQ(decoded->format_version, 2u);
  EXPECT_EQ(bytes[11], 2);  // written as format version 2 (u32 BE at bytes 8..11)

  // Version 1 segments (written before key-DB generations) are still read.
  std::string first = bytes;
  first[11] = 1;
  auto old = DecodeSegmentHeader(first);
  ASSERT_TRUE(old.ok()) << old.status();
  EXPECT_EQ(old->format_version, 1u);
  EXPECT_EQ(EncodeSegmentHeader(*old), first);

  std::string future = bytes;
  future[11] = 3;  // format version 3
  EXPECT_EQ(ErrorCodeOf(DecodeSegmentHeader(future).status()), ErrorCode::kUnsupportedFormat);
  std::string none = bytes;
  none[11] = 0;
  EXPECT_EQ(ErrorCodeOf(DecodeSegmentHeader(none).status()), ErrorCode::kUnsupportedFormat);
  std::string foreign = bytes;
  foreign[0] = 'X';
  EXPECT_EQ(ErrorCodeOf(DecodeSegmentHeader(foreign).status()), ErrorCode::kAuditLogCorrupt);
  // The reserved u32 (bytes 12..15) is written as zero; a header with anything else there is
  // refused, so every decoded header encodes back to its bytes (a fuzz_audit_log finding).
  for (size_t at : {12, 15}) {
    std::string reserved = bytes;
    reserved[at] = 0x74;
    EXPECT_EQ(ErrorCodeOf(DecodeSegmentHeader(reserved).status()), ErrorCode::kAuditLogCorrupt);
  }
}

TEST(AuditFormatTest, SegmentFileNames) {
  EXPECT_EQ(SegmentFileName(42), "audit-00000000000000000042.log");
  EXPECT_EQ(ParseSegmentFileName("audit-00000000000000000042.log"), 42u);
  EXPECT_FALSE(ParseSegmentFileName("audit-42.log").has_value());
  EXPECT_FALSE(ParseSegmentFileName("audit-0000000000000000004x.log").has_value());
  EXPECT_FALSE(ParseSegmentFileName("audit-00000000000000000042.log.tmp").has_value());
}

TEST(AuditFormatTest, ScanSeparatesTornFromDamaged) {
  std::string file = EncodeSegmentHeader({CountingLogId(), 0, ChainHash{}});
  const std::string frame = EncodeFrame("payload", ChainHash{}, MacTag{});
  file += frame;
  auto clean = internal::ScanSegment(file);
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(clean->tail, internal::SegmentTail::kClean);
  ASSERT_EQ(clean->frames.size(), 1u);
  EXPECT_EQ(clean->frames[0].payload, "payload");

  for (size_t cut = 1; cut < frame.size(); ++cut) {
    auto torn = internal::ScanSegment(file + frame.substr(0, cut));
    ASSERT_TRUE(torn.ok());
    EXPECT_EQ(torn->tail, internal::SegmentTail::kTorn) << cut;
    EXPECT_EQ(torn->valid_bytes, file.size()) << cut;
  }
  auto zeros = internal::ScanSegment(file + std::string(100, '\0'));
  EXPECT_EQ(zeros->tail, internal::SegmentTail::kTorn);
  auto huge = internal::ScanSegment(file + std::string("\x7f\0\0\0xxxx", 8));
  EXPECT_EQ(huge->tail, internal::SegmentTail::kDamaged);
  auto short_header = internal::ScanSegment(file.substr(0, 10));
  ASSERT_TRUE(short_header.ok());
  EXPECT_FALSE(short_header->header.has_value());
}

TEST(AuditAnchorTest, FormatAndParseFromAJournalLine) {
  CheckpointAnchor anchor{CountingLogId(), 1234, ChainHash{}, 1'800'000'000'000'000};
  anchor.head[31] = 0xfe;
  const std::string line = FormatAnchorLine(anchor);
  EXPECT_EQ(line.rfind("coffer-audit-anchor v1 log=000102030405060708090a0b0c0d0e0f seq=1234 ", 0),
            0u);
  auto parsed = ParseAnchorLine("Jan 15 08:00:00 host cofferd-audit[77]: " + line + "\n");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(*parsed, anchor);
  EXPECT_FALSE(ParseAnchorLine("cofferd-audit[77]: something else").ok());
  std::string bad = line;
  bad.replace(bad.find("seq=1234"), 8, "seq=12x4");
  EXPECT_FALSE(ParseAnchorLine(bad).ok());
}

TEST(AuditAnchorTest, SyslogSinkSendsARfc3164Datagram) {
  testing::TempDir dir;
  const std::string socket_path = dir.Sub("log.sock");
  const int listener = socket(AF_UNIX, SOCK_DGRAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, socket_path.c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);

  auto sink = SyslogAnchorSink::Create(LOG_AUTHPRIV, socket_path);
  ASSERT_TRUE(sink.ok());
  CheckpointAnchor anchor{CountingLogId(), 99, ChainHash{}, 5};
  ASSERT_TRUE((*sink)->Publish(anchor).ok());
  char buffer[1024];
  const ssize_t got = recv(listener, buffer, sizeof(buffer), 0);  // already queued: no wait
  ASSERT_GT(got, 0);
  const std::string datagram(buffer, static_cast<size_t>(got));
  EXPECT_EQ(datagram.rfind("<" + std::to_string(LOG_AUTHPRIV | LOG_NOTICE) + ">", 0), 0u);
  EXPECT_NE(datagram.find(" cofferd-audit["), std::string::npos);
  auto parsed = ParseAnchorLine(datagram);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, anchor);
  close(listener);

  auto nowhere = SyslogAnchorSink::Create(LOG_DAEMON, dir.Sub("missing.sock"));
  ASSERT_TRUE(nowhere.ok());
  EXPECT_EQ(ErrorCodeOf((*nowhere)->Publish(anchor)), ErrorCode::kIoError);
}

TEST(AuditSignerTest, SignVerifyAndRejectForgeries) {
  auto signer = SoftwareEcdsaSigner::Generate();
  ASSERT_TRUE(signer.ok());
  auto pem = (*signer)->PublicKeyPem();
  ASSERT_TRUE(pem.ok());
  auto verifier = CheckpointVerifier::FromPublicKeyPem(*pem);
  ASSERT_TRUE(verifier.ok());
  auto signature = (*signer)->Sign("message");
  ASSERT_TRUE(signature.ok());
  EXPECT_TRUE(verifier->Verify("message", *signature).ok());
  EXPECT_EQ(ErrorCodeOf(verifier->Verify("messagf", *signature)), ErrorCode::kAuditTampered);
  std::string flipped = *signature;
  flipped[flipped.size() - 1] ^= 1;
  EXPECT_FALSE(verifier->Verify("message", flipped).ok());
  EXPECT_FALSE(verifier->Verify("message", "").ok());
}

TEST(AuditSignerTest, OnlyP256KeysAreAccepted) {
  EVP_PKEY* p384 = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-384");
  ASSERT_NE(p384, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PUBKEY(bio, p384), 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  const std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  EVP_PKEY_free(p384);
  EXPECT_EQ(ErrorCodeOf(CheckpointVerifier::FromPublicKeyPem(pem).status()),
            ErrorCode::kInvalidArgument);
}

TEST(AuditSignerTest, LoadsAPrivateKeyPem) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  ASSERT_NE(key, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  ASSERT_EQ(PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr), 1);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  auto pem = crypto::SecretBytes::CopyFrom(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(size)));
  BIO_free(bio);
  EVP_PKEY_free(key);
  ASSERT_TRUE(pem.ok());
  auto signer = SoftwareEcdsaSigner::FromPrivateKeyPem(*pem);
  ASSERT_TRUE(signer.ok()) << signer.status();
  auto verifier = CheckpointVerifier::FromPublicKeyPem(*(*signer)->PublicKeyPem());
  ASSERT_TRUE(verifier.ok());
  EXPECT_TRUE(verifier->Verify("m", *(*signer)->Sign("m")).ok());
}

TEST(ForwardSecureMacTest, KeysEvolveAndVerifyInStep) {
  auto keys = testing::TestEpochKeys();
  auto writer = internal::ForwardSecureMac::Create(*keys({CountingLogId(), 3}));
  auto reader = internal::ForwardSecureMac::Create(*keys({CountingLogId(), 3}));
  ASSERT_TRUE(writer.ok() && reader.ok());
  ChainHash hash{};
  auto first = writer->MacAndEvolve(hash);
  auto second = writer->MacAndEvolve(hash);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_NE(*first, *second);  // same input, evolved key
  EXPECT_TRUE(reader->VerifyAndEvolve(hash, *first).ok());
  EXPECT_TRUE(reader->VerifyAndEvolve(hash, *second).ok());
  EXPECT_FALSE(reader->VerifyAndEvolve(hash, *second).ok());  // replayed tag, next key
  auto short_key = crypto::SecretBytes::Allocate(16);
  ASSERT_TRUE(short_key.ok());
  EXPECT_FALSE(internal::ForwardSecureMac::Create(*std::move(short_key)).ok());
}

TEST(ClockTest, UnixMicros) {
  using std::chrono::system_clock;
  EXPECT_EQ(ToUnixMicros(system_clock::time_point(std::chrono::milliseconds(1500))), 1'500'000);
  EXPECT_EQ(ToUnixMicros(system_clock::time_point(std::chrono::microseconds(-3))), -3);
}

}  // namespace
}  // namespace coffer::kms::audit
