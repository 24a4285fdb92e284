// Signing domains against a running cofferd (docs/threat-model.md, "Holder of signed
// artefacts"): one token key signs audit checkpoints, tombstones, deletion receipts and export
// archives, each over its own label (kms/audit/signing_domain.h). The daemon (test-cofferd on a
// fresh SoftHSM2 token, controlled clock) exports a dataset, destroys it and issues its receipt;
// the test then takes one genuine signature of every kind from what the daemon produced — the
// receipt file, the export archive, the audit log's checkpoints and the tombstone in the key DB
// — and shows that `keyctl receipt verify` refuses each of them spliced into the receipt, and
// refuses the exact bytes the daemon signed presented as an unlabelled (first-version) receipt
// although OpenSSL confirms the signature over them; and that every one verifies in its own
// domain only.

#include <openssl/sha.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/audit/signer.h"
#include "kms/audit/signing_domain.h"
#include "kms/audit/verifier.h"
#include "kms/client/client.h"
#include "kms/formats/export_archive.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/key_db.pb.h"
#include "kms/keys/tombstone.h"
#include "rocksdb/db.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"

namespace coffer::kms {
namespace {

using audit::SigningDomain;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::RunShell;
using ::coffer::testing::WriteKeyPair;
using Result = ::coffer::testing::KeyctlResult;

constexpr size_t kRowTagSize = 32;  // key-DB rows end in their HSM tag (docs/key-manager.md)

struct Signed {
  SigningDomain domain;
  std::string payload;  // what follows label ‖ 0x00
  std::string signature;
};

// The destroyed dataset's tombstone and signature, read from the stopped daemon's key DB.
SignedTombstone ReadTombstone(const std::string& key_db, uint64_t handle) {
  SignedTombstone found;
  std::vector<std::string> names;
  EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), key_db, &names).ok());
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const std::string& name : names) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  EXPECT_TRUE(
      rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), key_db, families, &handles, &raw).ok());
  if (raw == nullptr) return found;
  std::unique_ptr<rocksdb::DB> db(raw);
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == "datasets") {
      std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), handles[i]));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const std::string value = it->value().ToString();
        v1::DatasetRow row;
        if (value.size() < kRowTagSize ||
            !row.ParseFromString(value.substr(0, value.size() - kRowTagSize))) {
          continue;
        }
        if (row.handle() == handle && row.state() == v1::DESTROYED) {
          found = {row.tombstone(), row.tombstone_signature()};
        }
      }
    }
  }
  for (rocksdb::ColumnFamilyHandle* h : handles) EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
  return found;
}

// The export archive's signed payload (D) and signature (docs/formats.md#export-v1).
Signed ExportSignatureOf(const std::string& archive) {
  const size_t trailer = dataset_export::kSignatureTrailerSize;
  const size_t length = (static_cast<uint8_t>(archive[archive.size() - trailer]) << 8) |
                        static_cast<uint8_t>(archive[archive.size() - trailer + 1]);
  const size_t signed_end = archive.size() - trailer - length;
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(archive.data()), signed_end, digest);
  return {SigningDomain::kExportArchive,
          std::string(reinterpret_cast<const char*>(digest), sizeof(digest)),
          archive.substr(signed_end, length)};
}

class KeyctlSigningDomainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    CofferdOptions options;
    options.name = "keyctl-signing";
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
  }
  Result Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  std::string Write(const std::string& name, const std::string& bytes) {
    const std::string path = daemon_->dir() + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }

  std::unique_ptr<Cofferd> daemon_;
};

TEST_F(KeyctlSigningDomainTest, ASignatureOfOneKindIsRefusedAsAnother) {
  const std::string name = "sig/customer";
  ASSERT_EQ(Run("dataset create " + name + " --destruction-wait 1s").exit_code, 0);
  {
    auto client = client::Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    ASSERT_TRUE((*client)->PutRecord(name, "r1", "value").ok());
  }
  Result listed = Run("dataset describe " + name + " --json");
  ASSERT_EQ(listed.exit_code, 0) << listed.err;
  const uint64_t handle = listed.Json().at("handle").get<uint64_t>();
  ASSERT_EQ(Run("dataset disable " + name).exit_code, 0);
  WriteKeyPair(daemon_->dir(), "recipient", "X25519");
  const std::string archive = daemon_->dir() + "/export.cfx";
  Result exported = Run("dataset export " + name + " --recipient-key " + daemon_->dir() +
                        "/recipient.pub.pem --out " + archive);
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  ASSERT_EQ(Run("dataset destroy " + name).exit_code, 0);
  const std::string receipt_file = daemon_->dir() + "/receipt.txt";
  Result ran = daemon_->RunJobAfter(std::chrono::seconds(2), "rotation");  // past the wait
  ASSERT_EQ(ran.exit_code, 0) << ran.err;
  Result got = Run("receipt get " + name + " -o " + receipt_file);
  ASSERT_EQ(got.exit_code, 0) << got.err << daemon_->Logs();
  ASSERT_TRUE(daemon_->Stop());  // a closing checkpoint; the key DB can be read

  const std::string pem_file = daemon_->dir() + "/audit-public-key.pem";
  const std::string pem = ReadWholeFile(pem_file);
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(pem);
  ASSERT_TRUE(verifier.ok()) << verifier.status();

  // One genuine signature of each kind, from what the daemon produced.
  const std::string receipt = ReadWholeFile(receipt_file);
  const std::string body = receipt.substr(0, receipt.find('\n') + 1);
  std::string receipt_signature;
  ASSERT_TRUE(absl::Base64Unescape(receipt.substr(body.size(), receipt.size() - body.size() - 1),
                                   &receipt_signature));
  const SignedTombstone tombstone = ReadTombstone(daemon_->dir() + "/keys", handle);
  ASSERT_FALSE(tombstone.signature.empty()) << "no tombstone for handle " << handle;
  auto checkpoints = audit::ExtractCheckpoints(daemon_->dir() + "/audit");
  ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
  ASSERT_FALSE(checkpoints->empty());
  const audit::CheckpointEvidence& checkpoint = checkpoints->back();
  const std::vector<Signed> all = {
      {SigningDomain::kDeletionReceipt, body, receipt_signature},
      {SigningDomain::kTombstone, tombstone.tombstone, tombstone.signature},
      {SigningDomain::kAuditCheckpoint,
       checkpoint.message.substr(audit::kAuditCheckpointLabel.size() + 1), checkpoint.signature},
      ExportSignatureOf(ReadWholeFile(archive)),
  };

  // The genuine receipt verifies, as v2.
  Result genuine = Run("--json receipt verify " + receipt_file + " --public-key " + pem_file);
  ASSERT_EQ(genuine.exit_code, 0) << genuine.err;
  EXPECT_EQ(genuine.Json().at("receipt").at("format"), "coffer-deletion-receipt-v2");

  // Every other kind's signature spliced into the receipt: refused by keyctl.
  for (size_t i = 1; i < all.size(); ++i) {
    const std::string kind(audit::SigningDomainName(all[i].domain));
    const std::string spliced = Write("spliced.txt", receipt::AssembleFile(body, all[i].signature));
    Result r = Run("--json receipt verify " + spliced + " --public-key " + pem_file);
    EXPECT_EQ(r.exit_code, 1) << kind << ": " << r.out;
    EXPECT_EQ(r.CodeName(), "RECEIPT_INVALID") << kind << ": " << r.out << r.err;
  }

  // The exact bytes the daemon signed for the receipt (label, NUL, first line) presented as a
  // first-version, unlabelled receipt: OpenSSL confirms the signature over them, keyctl refuses.
  const std::string labelled = audit::DomainMessage(SigningDomain::kDeletionReceipt, body);
  const std::string message_file = Write("labelled.msg", labelled);
  const std::string signature_file = Write("receipt.sig", receipt_signature);
  EXPECT_EQ(RunShell("openssl dgst -sha256 -verify " + pem_file + " -signature " + signature_file +
                     " " + message_file + " >/dev/null"),
            0);
  const std::string downgraded =
      Write("downgraded.txt", receipt::AssembleFile(labelled, receipt_signature));
  Result refused = Run("--json receipt verify " + downgraded + " --public-key " + pem_file);
  EXPECT_EQ(refused.exit_code, 1) << refused.out;
  EXPECT_EQ(refused.CodeName(), "RECEIPT_INVALID") << refused.out << refused.err;

  // The tombstone verifies as a tombstone (version 2) and is refused with the receipt's
  // signature, or as its labelled bytes passed off as a first-version tombstone.
  auto content = VerifyTombstone(tombstone, pem);
  ASSERT_TRUE(content.ok()) << content.status();
  EXPECT_EQ(content->format_version(), kTombstoneFormatVersion);
  EXPECT_EQ(content->dataset_handle(), handle);
  EXPECT_EQ(ErrorCodeOf(VerifyTombstone({tombstone.tombstone, receipt_signature}, pem).status()),
            ErrorCode::kTombstoneInvalid);
  EXPECT_EQ(ErrorCodeOf(VerifyTombstone(
                            {audit::DomainMessage(SigningDomain::kTombstone, tombstone.tombstone),
                             tombstone.signature},
                            pem)
                            .status()),
            ErrorCode::kTombstoneInvalid);

  // Each of the daemon's signatures verifies in its own domain and in no other.
  for (const Signed& s : all) {
    for (SigningDomain other : audit::kAllSigningDomains) {
      EXPECT_EQ(audit::VerifyInDomain(*verifier, other, s.payload, s.signature).ok(),
                other == s.domain)
          << audit::SigningDomainName(s.domain) << " checked as "
          << audit::SigningDomainName(other);
    }
    EXPECT_FALSE(audit::VerifyUnlabelledLegacy(*verifier, audit::DomainMessage(s.domain, s.payload),
                                               s.signature)
                     .ok())
        << audit::SigningDomainName(s.domain);
  }
}

}  // namespace
}  // namespace coffer::kms
