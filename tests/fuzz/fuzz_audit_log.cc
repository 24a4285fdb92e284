// Fuzz target: audit log files as an offline verifier and the event source meet them.
//
// The input is one segment file (docs/audit.md). It goes through the segment scanner and the
// header decoder as bytes, then — written as the only segment of a directory — through
// VerifyAuditLog (checkpoint signatures under the fixed test key, and, online, every entry's
// forward-secure MAC under epoch keys from the fixed row key), ReadAuditEntries and the event
// source's AuditTail, read in small steps to the end. The seeds are real segments written by
// AuditLog with those keys (tests/fuzz/make_seeds.cc), so mutations reach the chain, MAC and
// checkpoint checks.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "kms/audit/audit_format.h"
#include "kms/audit/internal/segment_scan.h"
#include "kms/audit/verifier.h"
#include "kms/events/audit_tail.h"
#include "kms/keys/hsm_adapters.h"
#include "tests/fuzz/fuzz_keys.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

namespace audit = ::coffer::kms::audit;
using coffer::fuzz::Fail;

struct World {
  std::string directory = coffer::fuzz::MakeTemporaryDirectory("fuzz-audit");
  std::string public_key_pem = coffer::fuzz::Must(coffer::fuzz::FixedSigner()->PublicKeyPem());
  coffer::fuzz::FixedRowAuthenticator rows;
};

World& TheWorld() {
  static World* world = new World();
  return *world;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view file(reinterpret_cast<const char*>(data), size);
  World& world = TheWorld();

  auto scan = audit::internal::ScanSegment(file);
  if (scan.ok()) {
    if (scan->valid_bytes > file.size()) Fail("scan claims more bytes than the file has");
    for (const auto& frame : scan->frames) {
      if (frame.offset >= file.size() || frame.payload.data() < file.data() ||
          frame.payload.data() + frame.payload.size() > file.data() + file.size()) {
        Fail("a scanned frame lies outside the file");
      }
    }
  }
  if (size >= audit::kSegmentHeaderSize) {
    auto header = audit::DecodeSegmentHeader(file.substr(0, audit::kSegmentHeaderSize));
    if (header.ok() &&
        audit::EncodeSegmentHeader(*header) != file.substr(0, audit::kSegmentHeaderSize)) {
      Fail("a decoded segment header does not encode back to its bytes");
    }
  }

  coffer::fuzz::WriteFileOrDie(world.directory + "/" + audit::SegmentFileName(0), file);
  audit::VerifyOptions offline;
  offline.public_key_pem = world.public_key_pem;
  auto verified = audit::VerifyAuditLog(world.directory, offline);
  coffer::fuzz::Report("verify offline", verified.ok() ? verified->ToStatus() : verified.status());
  audit::VerifyOptions online = offline;
  online.epoch_keys = coffer::kms::HsmEpochKeyProvider(world.rows);
  verified = audit::VerifyAuditLog(world.directory, online);
  coffer::fuzz::Report("verify online", verified.ok() ? verified->ToStatus() : verified.status());
  audit::ReadAuditEntries(world.directory).IgnoreError();

  coffer::events::AuditTail tail(world.directory, 0);
  for (int step = 0; step < 64; ++step) {
    auto entries = tail.Next(3);
    coffer::fuzz::Report("tail", entries.status());
    if (!entries.ok() || entries->empty()) break;
  }
  return 0;
}
