// make_seeds OUT_DIR: writes the fuzz targets' seed corpora, OUT_DIR/<target>/<target>-<what>,
// from real objects made by the real writers with the fixed test keys (tests/fuzz/fuzz_keys.h):
// request frames, an audit segment, export archives, stored entries and streams, a backup
// MANIFEST, deletion receipts, pseudonym tokens and the example config. Run by hand when a
// format changes (README.md, "Fuzzing"); the output is checked in under tests/fuzz/corpus.
// Exit status 0 when every seed was written; set-up failures abort with the step's message.

#include <openssl/sha.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "crypto/record_aead.h"
#include "crypto/streaming_io.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/audit_log.h"
#include "kms/formats/export_archive.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/hsm_adapters.h"
#include "kms/keys/internal/backup_manifest.h"
#include "storage/internal/layout.h"
#include "storage/pseudonymizer.h"
#include "storage/testing/fakes.h"
#include "tests/fuzz/fuzz_keys.h"
#include "tests/fuzz/fuzz_support.h"
#include "tests/fuzz/stored_data_keys.h"
#include "tests/fuzz/text_format_keys.h"
#include "tests/kms/formats/string_archive_sink.h"

namespace coffer::fuzz {
namespace {

namespace pb = ::coffer::v1;
namespace audit = ::coffer::kms::audit;
namespace dataset_export = ::coffer::kms::dataset_export;

std::string out_dir;

void Seed(std::string_view target, std::string_view what, std::string_view bytes) {
  const std::string dir = out_dir + "/" + std::string(target);
  std::filesystem::create_directories(dir);
  WriteFileOrDie(dir + "/" + std::string(target) + "-" + std::string(what), bytes);
}

std::string Frames(char selector, const std::vector<pb::Request>& requests) {
  std::string out(1, selector);
  uint64_t id = 0;
  for (pb::Request request : requests) {
    request.set_request_id(++id);
    api::AppendFrame(request, &out);
  }
  return out;
}

pb::Request Put(std::string id, std::string value) {
  pb::Request r;
  r.mutable_record_put()->set_dataset("fuzz/records");
  r.mutable_record_put()->set_id(std::move(id));
  r.mutable_record_put()->set_value(std::move(value));
  return r;
}

void RequestSeeds() {
  const char kWriter = 0, kAdmin = 1, kStranger = 2;
  std::vector<pb::Request> records = {Put("alice", "value one"), Put("bob", "value two")};
  pb::Request get;
  get.mutable_record_get()->set_dataset("fuzz/records");
  get.mutable_record_get()->set_id("alice");
  records.push_back(get);
  pb::Request exists;
  exists.mutable_record_exists()->set_dataset("fuzz/records");
  exists.mutable_record_exists()->set_id("bob");
  records.push_back(exists);
  pb::Request list;
  list.mutable_record_list()->set_dataset("fuzz/records");
  list.mutable_record_list()->set_max_ids(1);
  records.push_back(list);
  list.mutable_record_list()->set_page_token("$");  // the previous page's token
  records.push_back(list);
  list.mutable_record_list()->set_page_token("cGFnZS10b2tlbg");
  records.push_back(list);
  pb::Request del;
  del.mutable_record_delete()->set_dataset("fuzz/records");
  del.mutable_record_delete()->set_id("bob");
  records.push_back(del);
  pb::Request restore;
  restore.mutable_record_restore()->set_dataset("fuzz/records");
  restore.mutable_record_restore()->set_id("bob");
  records.push_back(restore);

  std::vector<pb::Request> upload;
  pb::Request begin;
  begin.mutable_attachment_put_begin()->set_dataset("fuzz/files");
  begin.mutable_attachment_put_begin()->set_name("scan.pdf");
  begin.mutable_attachment_put_begin()->set_content_type("application/pdf");
  upload.push_back(begin);
  pb::Request chunk;
  chunk.mutable_attachment_chunk()->set_data(std::string(300, 'a'));
  upload.push_back(chunk);
  upload.push_back(chunk);
  pb::Request commit;
  commit.mutable_attachment_put_commit();
  upload.push_back(commit);
  pb::Request attachment_get;
  attachment_get.mutable_attachment_get()->set_dataset("fuzz/files");
  attachment_get.mutable_attachment_get()->set_name("scan.pdf");
  attachment_get.mutable_attachment_get()->set_offset(100);
  upload.push_back(attachment_get);
  pb::Request metadata;
  metadata.mutable_attachment_metadata()->set_dataset("fuzz/files");
  metadata.mutable_attachment_metadata()->set_name("scan.pdf");
  upload.push_back(metadata);
  // An upload left open: Closed() must abort it.
  std::vector<pb::Request> abandoned = {begin, chunk};
  std::vector<pb::Request> aborted = {begin, chunk};
  pb::Request abort;
  abort.mutable_attachment_put_abort();
  aborted.push_back(abort);

  std::vector<pb::Request> pseudonyms;
  pb::Request pseudonymize;
  pseudonymize.mutable_pseudonymize()->set_dataset("fuzz/records");
  pseudonymize.mutable_pseudonymize()->add_identifiers("jane@example.com");
  pseudonyms.push_back(pseudonymize);
  pb::Request reidentify;
  reidentify.mutable_pseudonym_reidentify()->set_dataset("fuzz/records");
  reidentify.mutable_pseudonym_reidentify()->add_tokens("cp1.AAAA");
  pseudonyms.push_back(reidentify);

  std::vector<pb::Request> admin;
  pb::Request dataset_list;
  dataset_list.mutable_dataset_list();
  admin.push_back(dataset_list);
  pb::Request describe;
  describe.mutable_dataset_describe()->set_name("fuzz/records");
  admin.push_back(describe);
  pb::Request status;
  status.mutable_status();
  admin.push_back(status);
  pb::Request rotate;
  rotate.mutable_key_rotate()->set_dataset("fuzz/records");
  rotate.mutable_key_rotate()->add_purposes(pb::PURPOSE_RECORDS);
  admin.push_back(rotate);
  pb::Request bin_list;
  bin_list.mutable_bin_list()->set_dataset("fuzz/records");
  bin_list.mutable_bin_list()->set_max_items(1);
  admin.push_back(bin_list);
  bin_list.mutable_bin_list()->set_page_token("$");
  admin.push_back(bin_list);
  pb::Request audit_query;
  audit_query.mutable_audit_query()->set_limit(2);
  admin.push_back(audit_query);
  pb::Request create;
  create.mutable_dataset_create()->set_name("fuzz/more");
  admin.push_back(create);

  for (const auto& [what, selector, requests] :
       std::vector<std::tuple<std::string, char, std::vector<pb::Request>>>{
           {"records", kWriter, records},
           {"upload", kWriter, upload},
           {"upload-abandoned", kWriter, abandoned},
           {"upload-aborted", kWriter, aborted},
           {"pseudonyms", kWriter, pseudonyms},
           {"admin", kAdmin, admin},
           {"stranger", kStranger, records}}) {
    Seed("request", what, Frames(selector, requests));
    if (what != "upload") Seed("frame_reader", what, Frames(what.size() % 7, requests));
  }
}

void AuditSeeds() {
  const std::string dir = MakeTemporaryDirectory("make-seeds-audit");
  auto signer = FixedSigner();
  FixedRowAuthenticator rows;
  storage::testing::FakeClock clock;
  audit::AuditLogOptions options;
  options.directory = dir;
  options.signer = signer.get();
  options.epoch_keys = kms::HsmEpochKeyProvider(rows);
  options.clock = &clock;
  auto log = Must(audit::AuditLog::Open(std::move(options)));
  audit::AuditEvent event;
  event.kind = audit::v1::DATASET_CREATE;
  event.actor.uid = 2000;
  event.dataset_handle = 1;
  Must(log->Append(event));
  event.kind = audit::v1::KEY_ROTATE;
  event.purpose = audit::v1::PURPOSE_RECORDS;
  event.key_version = 2;
  Must(log->Append(event));
  Must(log->Checkpoint());
  event.kind = audit::v1::ACCESS_READ;
  event.record_ref = std::array<uint8_t, audit::kRecordRefSize>{};
  event.record_count = 1;
  Must(log->Append(event));
  Must(log->Close());
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Seed("audit_log", "segment", bytes);
    Seed("audit_log", "segment-torn", bytes.substr(0, bytes.size() - 7));
    Seed("audit_log", "header-only", bytes.substr(0, audit::kSegmentHeaderSize));
  }
}

void ExportSeeds() {
  auto signer = FixedSigner();
  dataset_export::ArchiveDescription description;
  description.dataset = "fuzz/records";
  description.dataset_handle = 1;
  description.dataset_state = "ACTIVE";
  description.exported_micros = 1'700'000'000'000'000;
  dataset_export::StringSink sink;
  auto writer = Must(dataset_export::ArchiveWriter::Create(description, FixedRecipientPublicKey(),
                                                           signer.get(), &sink));
  Must(writer->AddRecord("alice", "value one"));
  Must(writer->AddRecord("bob", "value two"));
  Must(writer->BeginAttachment("scan.pdf", 5, "application/pdf", 1'700'000'000'000'000));
  Must(writer->AppendAttachmentData("%PDF-"));
  Must(writer->Finish());
  Seed("export_archive", "signed", std::string(1, '\0') + sink.out);
  // Without its signature block: the target signs it (odd selector).
  const size_t trailer = dataset_export::kSignatureTrailerSize;
  const size_t signature = (static_cast<uint8_t>(sink.out[sink.out.size() - trailer]) << 8) |
                           static_cast<uint8_t>(sink.out[sink.out.size() - trailer + 1]);
  Seed("export_archive", "unsigned",
       std::string(1, '\1') + sink.out.substr(0, sink.out.size() - trailer - signature));

  // The content's plaintext: entries, each u32 BE length ‖ ExportEntry (selector 2).
  std::string content(1, '\2');
  auto append_entry = [&content](const dataset_export::v1::ExportEntry& entry) {
    std::string bytes = entry.SerializeAsString();
    for (int shift = 24; shift >= 0; shift -= 8) {
      content.push_back(static_cast<char>((bytes.size() >> shift) & 0xff));
    }
    content += bytes;
  };
  dataset_export::v1::ExportEntry record;
  record.mutable_record()->set_id("alice");
  record.mutable_record()->set_value("value one");
  append_entry(record);
  dataset_export::v1::ExportEntry attachment;
  attachment.mutable_attachment()->set_name("scan.pdf");
  attachment.mutable_attachment()->set_size(5);
  attachment.mutable_attachment()->set_content_type("application/pdf");
  append_entry(attachment);
  content += "%PDF-";
  dataset_export::v1::ExportEntry trailer_entry;
  trailer_entry.mutable_trailer()->set_records(1);
  trailer_entry.mutable_trailer()->set_attachments(1);
  trailer_entry.mutable_trailer()->set_attachment_bytes(5);
  append_entry(trailer_entry);
  Seed("export_archive", "content", content);
}

void StoredDataSeeds() {
  namespace internal = ::coffer::storage::internal;
  auto aead = Must(crypto::RecordAead::Create(StoredDataKey(), 3));
  std::string sealed = Must(aead.Seal("a stored value", kStoredDataContext));
  Seed("stored_data", "record", sealed);
  std::string entry = internal::EncodeEntry(1'700'000'000'000'000, "", sealed);
  Seed("stored_data", "entry", entry);
  std::string pointer = internal::EncodeEntry(1'700'000'000'000'000, std::string(16, 'u'), sealed);
  Seed("stored_data", "pointer-entry", pointer);
  Seed("stored_data", "bin-value", internal::EncodeBinValue(1'700'000'000'000'001, entry));
  crypto::HmacSha256Tag mac{};
  mac.fill(0x5a);
  Seed("stored_data", "bin-key",
       internal::BinKey(internal::Cf::kRecords, internal::StoredKey(7, mac)));
  std::string stream_bytes;
  crypto::StringCiphertextSink sink(&stream_bytes);
  auto stream = Must(crypto::StreamEncryptingWriter::Create(StoredDataKey(), 2, kStoredDataContext,
                                                            &sink, crypto::kMinStreamSegmentSize));
  Must(stream->Write(std::string(2500, 's')));
  Must(stream->Close());
  Seed("stored_data", "stream", stream_bytes);
}

void TextSeeds() {
  kms::internal::Manifest manifest;
  manifest.id = 1;
  manifest.created_micros = 1'700'000'000'000'000;
  manifest.audit_sequence = 42;
  manifest.files = {{"keys/CURRENT", 16, kms::internal::Sha256Hex("MANIFEST-000001\n")},
                    {"audit/" + audit::SegmentFileName(0), 3, kms::internal::Sha256Hex("abc")}};
  const std::string manifest_text = kms::internal::EncodeManifest(manifest);
  Seed("text_formats", "manifest", std::string(1, '\0') + manifest_text);
  Seed("text_formats", "manifest-body",
       std::string(1, '\4') + manifest_text.substr(0, manifest_text.rfind("sha256 ")));
  // Version 2: the key DB sealed (its files named <name>.sealed, a salt line).
  manifest.key_db_seal_salt.emplace();
  manifest.key_db_seal_salt->fill(0x5a);
  manifest.files[0].path = "keys/CURRENT.sealed";
  const std::string manifest_v2 = kms::internal::EncodeManifest(manifest);
  Seed("text_formats", "manifest-v2", std::string(1, '\0') + manifest_v2);
  Seed("text_formats", "manifest-v2-body",
       std::string(1, '\4') + manifest_v2.substr(0, manifest_v2.rfind("sha256 ")));

  pb::DeletionReceipt receipt;
  receipt.set_format("coffer-deletion-receipt-v2");
  receipt.set_dataset_handle(1);
  receipt.set_key_versions_destroyed(3);
  receipt.set_records_purged(2);
  std::string body = Must(kms::receipt::BodyLine(receipt));
  auto signer = FixedSigner();
  std::string signature = Must(signer->Sign(kms::receipt::SignedMessage(body)));
  Seed("text_formats", "receipt",
       std::string(1, '\1') + kms::receipt::AssembleFile(body, signature));
  Seed("text_formats", "receipt-body", std::string(1, '\5') + body);

  storage::testing::FakeKeyProvider keys(kPseudonymKeySeed);
  Must(keys.CreateDataset(kPseudonymDataset));
  storage::Pseudonymizer pseudonymizer(&keys);
  Seed("text_formats", "token-v1",
       std::string(1, '\2') +
           Must(pseudonymizer.Pseudonymize(kPseudonymDataset, "jane@example.com")));
  Must(keys.Rotate(kPseudonymDataset, storage::KeyPurpose::kPseudonym));
  Seed(
      "text_formats", "token-v2",
      std::string(1, '\2') + Must(pseudonymizer.Pseudonymize(kPseudonymDataset, "+1 555 1234567")));

  std::ifstream example(std::string(COFFER_SOURCE_DIR) + "/kms/config/cofferd.example.conf");
  std::string config((std::istreambuf_iterator<char>(example)), std::istreambuf_iterator<char>());
  if (config.empty()) Fail("kms/config/cofferd.example.conf");
  Seed("text_formats", "config-example", std::string(1, '\3') + config);
}

}  // namespace
}  // namespace coffer::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: make_seeds OUT_DIR\n");
    return 2;
  }
  coffer::fuzz::out_dir = argv[1];
  coffer::fuzz::RequestSeeds();
  coffer::fuzz::AuditSeeds();
  coffer::fuzz::ExportSeeds();
  coffer::fuzz::StoredDataSeeds();
  coffer::fuzz::TextSeeds();
  std::printf("seeds written to %s\n", argv[1]);
  return 0;
}
