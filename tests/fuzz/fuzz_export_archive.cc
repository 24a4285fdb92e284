// Fuzz target: export archives opened by keyctl (`keyctl export open`), untrusted files.
//
// The first input byte chooses how the rest is used (its value modulo 3):
//  0: the rest is the archive file as it arrives: ReadArchiveHeader and OpenArchive face the
//     preamble, the header length and header, and the signature trailer;
//  1: the rest is an archive without its signature block, which the target signs with the
//     fixed test token key before opening it, so that mutations of the preamble, the header
//     (recipient, wrapped key, fingerprints) and the content stream's framing get past the
//     signature check the fuzzer could never forge;
//  2: the rest is the content's plaintext — the entries, each u32 BE length ‖ ExportEntry —
//     which the target encrypts as an archive's content stream under a real header's export
//     key and signs, so that the entry lengths, entries, attachment sizes and trailer reach the
//     reader past the stream's authentication.
// OpenArchive runs with the fixed test recipient key and token public key the seeds were made
// with (tests/fuzz/make_seeds.cc).

#include <openssl/sha.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "crypto/streaming_io.h"
#include "kms/formats/export_archive.h"
#include "tests/fuzz/fuzz_keys.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/kms/formats/string_archive_sink.h"

namespace {

namespace dataset_export = ::coffer::kms::dataset_export;
using coffer::fuzz::Fail;
using coffer::fuzz::Must;

class CountingVisitor final : public dataset_export::ArchiveVisitor {
 public:
  absl::Status Record(std::string_view, std::string_view) override { return absl::OkStatus(); }
  absl::Status BeginAttachment(const dataset_export::v1::ExportEntry::Attachment&) override {
    if (open_) Fail("an attachment began inside another");
    open_ = true;
    return absl::OkStatus();
  }
  absl::Status AttachmentData(std::string_view) override {
    if (!open_) Fail("attachment data outside an attachment");
    return absl::OkStatus();
  }
  absl::Status EndAttachment() override {
    if (!open_) Fail("an attachment ended that never began");
    open_ = false;
    return absl::OkStatus();
  }

 private:
  bool open_ = false;
};

struct World {
  World() {
    // A real archive's preamble and header, and the export key its header wraps (mode 2).
    dataset_export::StringSink sink;
    dataset_export::ArchiveDescription description;
    description.dataset = "fuzz/records";
    description.dataset_handle = 1;
    auto writer = Must(dataset_export::ArchiveWriter::Create(
        description, coffer::fuzz::FixedRecipientPublicKey(), signer.get(), &sink));
    Must(writer->Finish());
    const std::string_view archive = sink.out;
    size_t header_size = 0;
    for (size_t i = 9; i < dataset_export::kPreambleSize; ++i) {
      header_size = (header_size << 8) | static_cast<uint8_t>(archive[i]);
    }
    head = std::string(archive.substr(0, dataset_export::kPreambleSize + header_size));
    dataset_export::v1::ExportHeader header;
    if (!header.ParseFromString(
            std::string(archive.substr(dataset_export::kPreambleSize, header_size)))) {
      Fail("the writer's header does not parse");
    }
    segment_size = header.segment_size();
    export_key =
        std::make_unique<coffer::crypto::SecretBytes>(Must(recipient.Unwrap(header.wrapped_key())));
    dataset_export::Sha256Digest head_digest{};
    SHA256(reinterpret_cast<const uint8_t*>(head.data()), head.size(), head_digest.data());
    content_context = std::string(dataset_export::kContentContextLabel);
    content_context.append(reinterpret_cast<const char*>(head_digest.data()), head_digest.size());
  }

  std::string path = coffer::fuzz::MakeTemporaryDirectory("fuzz-export") + "/archive.cfx";
  std::unique_ptr<coffer::kms::audit::SoftwareEcdsaSigner> signer = coffer::fuzz::FixedSigner();
  std::string token_public_key_pem = Must(signer->PublicKeyPem());
  coffer::crypto::RecipientPrivateKey recipient = coffer::fuzz::FixedRecipientPrivateKey();
  std::string head;  // preamble ‖ header
  uint32_t segment_size = 0;
  std::unique_ptr<coffer::crypto::SecretBytes> export_key;
  std::string content_context;  // docs/formats.md#export-v1: label ‖ SHA-256(preamble ‖ header)
};

World& TheWorld() {
  static World* world = new World();
  return *world;
}

// `body` ‖ the export-v1 signature block over it (docs/formats.md#export-v1).
std::string Signed(std::string_view body, coffer::kms::audit::CheckpointSigner& signer) {
  dataset_export::Sha256Digest digest{};
  SHA256(reinterpret_cast<const uint8_t*>(body.data()), body.size(), digest.data());
  std::string signature = Must(signer.Sign(dataset_export::SignedMessage(digest)));
  std::string out(body);
  out += signature;
  out.push_back(static_cast<char>(signature.size() >> 8));
  out.push_back(static_cast<char>(signature.size() & 0xff));
  out += dataset_export::kSignatureMagic;
  return out;
}

// The world's head ‖ `plaintext` as its content stream (docs/formats.md#export-v1).
std::string WithContent(const World& world, std::string_view plaintext) {
  std::string archive = world.head;
  coffer::crypto::StringCiphertextSink sink(&archive);
  auto content = Must(coffer::crypto::StreamEncryptingWriter::Create(
      *world.export_key, dataset_export::kContentKeyVersion, world.content_context, &sink,
      world.segment_size));
  Must(content->Write(plaintext));
  Must(content->Close());
  return archive;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  World& world = TheWorld();
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0:
      coffer::fuzz::WriteFileOrDie(world.path, rest);
      break;
    case 1:
      coffer::fuzz::WriteFileOrDie(world.path, Signed(rest, *world.signer));
      break;
    default:
      coffer::fuzz::WriteFileOrDie(world.path, Signed(WithContent(world, rest), *world.signer));
      break;
  }
  coffer::fuzz::Report("header", dataset_export::ReadArchiveHeader(world.path).status());
  CountingVisitor visitor;
  coffer::fuzz::Report("open", dataset_export::OpenArchive(world.path, world.recipient,
                                                           world.token_public_key_pem, &visitor)
                                   .status());
  return 0;
}
