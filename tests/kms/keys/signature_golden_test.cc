// Golden signatures of every kind the token's signing key makes (kms/audit/signing_domain.h):
// a tombstone, a deletion receipt, an audit checkpoint and an export archive, each produced by
// the daemon's own code on a real SoftHSM2 token, real RocksDB key and data DBs and a real audit
// log, and kept with the token's public key in tests/kms/keys/golden/signatures_v<N>.json.
//
//  - signatures_v1.json was written by the code before domain labels (commit a222589): its
//    tombstone and receipt are signed unlabelled. Tombstones and receipts already stored or in
//    customers' hands look like this; they must keep verifying, and only as v1.
//  - signatures_v2.json is written by today's code: every signature covers
//    label ‖ 0x00 ‖ payload, so none verifies as any other kind, nor unlabelled.
//
// COFFER_REGENERATE_GOLDEN=1 rewrites the current version's file instead (by hand only, for a
// new signed format); v1 cannot be regenerated — today's code no longer signs unlabelled.

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "crypto/base/status.h"
#include "crypto/recipient_wrap.h"
#include "gtest/gtest.h"
#include "kms/audit/signer.h"
#include "kms/audit/signing_domain.h"
#include "kms/audit/verifier.h"
#include "kms/formats/export_archive.h"
#include "kms/formats/receipt_file.h"
#include "kms/keys/deletion_receipts.h"
#include "kms/keys/storage_bridge.h"
#include "kms/keys/tombstone.h"
#include "nlohmann/json.hpp"
#include "storage/record_store.h"
#include "tests/kms/audit/audit_test_util.h"
#include "tests/kms/formats/string_archive_sink.h"
#include "tests/kms/keys/kms_test_env.h"
#include "tests/testing/vectors.h"

namespace coffer::kms {
namespace {

using ::coffer::testing::BytesToHex;
using ::coffer::testing::HexToBytes;
using testing::TestAdmin;
using json = nlohmann::json;
using audit::SigningDomain;

constexpr int kCurrentVersion = 2;

// One signed artefact of each kind and the key that signed them.
struct GoldenSignatures {
  std::string public_key_pem;
  SignedTombstone tombstone;
  std::string receipt_file;
  audit::CheckpointEvidence checkpoint;
  std::string export_archive;
};

std::string GoldenPath(int version) {
  return std::string(COFFER_SIGNATURES_GOLDEN_DIR) + "/signatures_v" + std::to_string(version) +
         ".json";
}

bool Regenerating() {
  const char* flag = std::getenv("COFFER_REGENERATE_GOLDEN");
  return flag != nullptr && std::string(flag) == "1";
}

void Save(int version, const GoldenSignatures& golden) {
  json out;
  out["about"] =
      "signatures of each kind by one SoftHSM2 token key "
      "(tests/kms/keys/signature_golden_test.cc); a test key, never a customer's";
  out["version"] = version;
  out["public_key_pem"] = golden.public_key_pem;
  out["tombstone"] = {{"bytes", BytesToHex(golden.tombstone.tombstone)},
                      {"signature", BytesToHex(golden.tombstone.signature)}};
  out["deletion_receipt"] = golden.receipt_file;
  out["checkpoint"] = {{"sequence", golden.checkpoint.sequence},
                       {"message", BytesToHex(golden.checkpoint.message)},
                       {"signature", BytesToHex(golden.checkpoint.signature)}};
  out["export_archive"] = BytesToHex(golden.export_archive);
  std::ofstream file(GoldenPath(version), std::ios::trunc);
  file << out.dump(2) << "\n";
  ASSERT_TRUE(file.good()) << "cannot write " << GoldenPath(version);
}

GoldenSignatures Load(int version) {
  GoldenSignatures golden;
  std::ifstream in(GoldenPath(version));
  EXPECT_TRUE(in) << "missing golden file " << GoldenPath(version);
  if (!in) return golden;
  const json file = json::parse(in, nullptr, /*allow_exceptions=*/false);
  EXPECT_TRUE(file.is_object()) << GoldenPath(version) << " is not JSON";
  if (!file.is_object()) return golden;
  EXPECT_EQ(file.at("version").get<int>(), version);
  golden.public_key_pem = file.at("public_key_pem").get<std::string>();
  golden.tombstone.tombstone = HexToBytes(file.at("tombstone").at("bytes").get<std::string>());
  golden.tombstone.signature = HexToBytes(file.at("tombstone").at("signature").get<std::string>());
  golden.receipt_file = file.at("deletion_receipt").get<std::string>();
  golden.checkpoint.sequence = file.at("checkpoint").at("sequence").get<uint64_t>();
  golden.checkpoint.message = HexToBytes(file.at("checkpoint").at("message").get<std::string>());
  golden.checkpoint.signature =
      HexToBytes(file.at("checkpoint").at("signature").get<std::string>());
  golden.export_archive = HexToBytes(file.at("export_archive").get<std::string>());
  return golden;
}

// An X25519 recipient's public key (the archive's content is not what is golden here).
std::string RecipientPublicPem() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519");
  EXPECT_NE(key, nullptr);
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PUBKEY(bio, key);
  EVP_PKEY_free(key);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio, &data);  // NOLINT(google-runtime-int)
  std::string pem(data, static_cast<size_t>(size));
  BIO_free(bio);
  return pem;
}

// Produces one artefact of each kind through the daemon's code paths on a real token.
class SignatureProducer {
 public:
  explicit SignatureProducer(testing::SuiteToken& suite) : suite_(suite) {}

  void Produce(GoldenSignatures* golden) {
    audit::AuditLogOptions audit_options = suite_.AuditOptions(dir_.Sub("audit"), &clock_);
    auto log = audit::AuditLog::Open(std::move(audit_options));
    ASSERT_TRUE(log.ok()) << log.status();
    auto data = storage::DataDb::Open(dir_.Sub("data"), storage::DataDbOptions{});
    ASSERT_TRUE(data.ok()) << data.status();
    StoreDataCounter counter(data->get());
    KeyManagerOptions options;
    options.key_db_directory = dir_.Sub("keydb");
    options.modules = {{"softhsm", &suite_.client->wrapping_keys()}};
    options.default_module = "softhsm";
    options.row_authenticator = &suite_.client->row_authenticator();
    options.signer = &suite_.client->signer();
    options.audit_log = log->get();
    options.clock = &clock_;
    options.data_counter = &counter;
    auto manager = KeyManager::Open(std::move(options));
    ASSERT_TRUE(manager.ok()) << manager.status();

    // A destroyed dataset: its tombstone, then (after the erase) its receipt.
    auto handle = (*manager)->CreateDataset("golden/customer", std::nullopt, TestAdmin());
    ASSERT_TRUE(handle.ok()) << handle.status();
    ASSERT_TRUE((*manager)->Disable(*handle, TestAdmin(1)).ok());
    AdminApproval approval{TestAdmin(2), 7, 42};
    ASSERT_TRUE((*manager)->ScheduleDestruction(*handle, TestAdmin(1), approval).ok());
    clock_.Advance(std::chrono::hours(24 * 31));
    auto work = (*manager)->RunDueWork();
    ASSERT_TRUE(work.ok()) << work.status();
    ASSERT_EQ(work->destroyed, std::vector<uint64_t>{*handle});
    DestructionCompletion done = CompleteDestructions(**manager, **data, TestAdmin());
    ASSERT_TRUE(done.failures.empty()) << done.failures.front().second;
    auto tombstone = (*manager)->GetTombstone(*handle);
    ASSERT_TRUE(tombstone.ok()) << tombstone.status();
    golden->tombstone = *tombstone;
    auto receipt = (*manager)->GetDeletionReceipt(*handle);
    ASSERT_TRUE(receipt.ok()) << receipt.status();
    golden->receipt_file = *receipt;

    // An export archive signed by the same key (through the daemon's checkpoint adapter).
    auto recipient = crypto::RecipientPublicKey::FromPem(RecipientPublicPem());
    ASSERT_TRUE(recipient.ok()) << recipient.status();
    dataset_export::StringSink sink;
    dataset_export::ArchiveDescription description{"golden/export", 9, "DISABLED",
                                                   1'700'000'000'000'000, 3};
    auto writer =
        dataset_export::ArchiveWriter::Create(description, *recipient, suite_.signer.get(), &sink);
    ASSERT_TRUE(writer.ok()) << writer.status();
    ASSERT_TRUE((*writer)->AddRecord("customer-1", "golden value").ok());
    ASSERT_TRUE((*writer)->Finish().ok());
    golden->export_archive = sink.out;

    manager->reset();
    ASSERT_TRUE((*log)->Close().ok());
    auto checkpoints = audit::ExtractCheckpoints(dir_.Sub("audit"));
    ASSERT_TRUE(checkpoints.ok()) << checkpoints.status();
    ASSERT_FALSE(checkpoints->empty());
    golden->checkpoint = checkpoints->back();
    auto pem = suite_.client->signer().PublicKeyPem();
    ASSERT_TRUE(pem.ok()) << pem.status();
    golden->public_key_pem = *pem;
  }

 private:
  testing::SuiteToken& suite_;
  audit::testing::TempDir dir_;
  audit::testing::FakeClock clock_;
};

class SignatureGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::Status opened = suite_.Open("signature-golden");
    ASSERT_TRUE(opened.ok()) << opened;
  }
  static void TearDownTestSuite() { suite_.Reset(); }

  static inline testing::SuiteToken suite_;
};

// The export archive's signed message: its label, 0x00 and D = SHA-256 of everything before
// the signature block (signature ‖ length u16 BE ‖ "CFXSIGN1").
struct ExportSignature {
  std::string digest;
  std::string signature;
};
ExportSignature ExportSignatureOf(const std::string& archive) {
  ExportSignature out;
  const size_t trailer = dataset_export::kSignatureTrailerSize;
  EXPECT_GT(archive.size(), trailer);
  if (archive.size() <= trailer) return out;
  const size_t length = (static_cast<uint8_t>(archive[archive.size() - trailer]) << 8) |
                        static_cast<uint8_t>(archive[archive.size() - trailer + 1]);
  const size_t signed_end = archive.size() - trailer - length;
  out.signature = archive.substr(signed_end, length);
  uint8_t digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(archive.data()), signed_end, digest);
  out.digest.assign(reinterpret_cast<const char*>(digest), sizeof(digest));
  return out;
}

// One signature and the payload it signs, per domain.
struct Signed {
  SigningDomain domain;
  std::string payload;  // what follows label ‖ 0x00 in the signed message
  std::string signature;
};

std::vector<Signed> SignaturesOf(const GoldenSignatures& golden) {
  std::vector<Signed> all;
  all.push_back(
      {SigningDomain::kTombstone, golden.tombstone.tombstone, golden.tombstone.signature});
  const size_t first_end = golden.receipt_file.find('\n');
  std::string signature;
  EXPECT_TRUE(absl::Base64Unescape(
      golden.receipt_file.substr(first_end + 1, golden.receipt_file.size() - first_end - 2),
      &signature));
  all.push_back(
      {SigningDomain::kDeletionReceipt, golden.receipt_file.substr(0, first_end + 1), signature});
  const std::string_view label = audit::kAuditCheckpointLabel;
  all.push_back({SigningDomain::kAuditCheckpoint,
                 golden.checkpoint.message.substr(label.size() + 1), golden.checkpoint.signature});
  ExportSignature exported = ExportSignatureOf(golden.export_archive);
  all.push_back({SigningDomain::kExportArchive, exported.digest, exported.signature});
  return all;
}

TEST_F(SignatureGoldenTest, FirstVersionArtefactsStillVerifyAndOnlyAsTheFirstVersion) {
  const GoldenSignatures v1 = Load(1);
  ASSERT_FALSE(v1.public_key_pem.empty());
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(v1.public_key_pem);
  ASSERT_TRUE(verifier.ok()) << verifier.status();

  // The v1 tombstone and receipt are signed unlabelled, and still verify.
  ASSERT_TRUE(verifier->Verify(v1.tombstone.tombstone, v1.tombstone.signature).ok());
  auto tombstone = VerifyTombstone(v1.tombstone, v1.public_key_pem);
  ASSERT_TRUE(tombstone.ok()) << tombstone.status();
  EXPECT_EQ(tombstone->format_version(), 0u);
  EXPECT_EQ(tombstone->key_versions_destroyed(), 4u);
  auto receipt = receipt::VerifyFile(v1.receipt_file, v1.public_key_pem);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->format(), receipt::kReceiptFormatV1);
  EXPECT_EQ(receipt->tombstone_sha256(), receipt::Sha256Hex(v1.tombstone.tombstone));
  // Checkpoints and export archives were labelled from their first format: the v1 ones are the
  // bytes today's code signs.
  EXPECT_EQ(v1.checkpoint.message.substr(0, audit::kCheckpointDomain.size()),
            audit::kCheckpointDomain);
  for (const Signed& s : SignaturesOf(v1)) {
    if (s.domain == SigningDomain::kAuditCheckpoint || s.domain == SigningDomain::kExportArchive) {
      EXPECT_TRUE(audit::VerifyInDomain(*verifier, s.domain, s.payload, s.signature).ok())
          << audit::SigningDomainName(s.domain);
    } else {
      EXPECT_FALSE(audit::VerifyInDomain(*verifier, s.domain, s.payload, s.signature).ok())
          << audit::SigningDomainName(s.domain) << " verified as labelled";
    }
  }

  // A v1 signature over a body that claims v2 (or a tombstone claiming version 2) is refused:
  // the version lives inside the signed bytes, so it cannot be changed without breaking the
  // signature, and an unlabelled signature is accepted only for the first version.
  std::string claims_v2 = v1.receipt_file;
  const std::string v1_format = std::string(receipt::kReceiptFormatV1);
  claims_v2.replace(claims_v2.find(v1_format), v1_format.size(), receipt::kReceiptFormat);
  EXPECT_EQ(ErrorCodeOf(receipt::VerifyFile(claims_v2, v1.public_key_pem).status()),
            ErrorCode::kReceiptInvalid);
}

TEST_F(SignatureGoldenTest, CurrentArtefactsAreLabelledAndVerifyOnlyInTheirOwnDomain) {
  const GoldenSignatures v2 = Load(kCurrentVersion);
  ASSERT_FALSE(v2.public_key_pem.empty());
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(v2.public_key_pem);
  ASSERT_TRUE(verifier.ok()) << verifier.status();

  auto tombstone = VerifyTombstone(v2.tombstone, v2.public_key_pem);
  ASSERT_TRUE(tombstone.ok()) << tombstone.status();
  EXPECT_EQ(tombstone->format_version(), kTombstoneFormatVersion);
  auto receipt = receipt::VerifyFile(v2.receipt_file, v2.public_key_pem);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->format(), receipt::kReceiptFormat);

  const std::vector<Signed> all = SignaturesOf(v2);
  ASSERT_EQ(all.size(), audit::kAllSigningDomains.size());
  for (const Signed& s : all) {
    const std::string name(audit::SigningDomainName(s.domain));
    // Exactly label ‖ 0x00 ‖ payload is signed: plain ECDSA over those bytes verifies...
    EXPECT_TRUE(verifier->Verify(audit::DomainMessage(s.domain, s.payload), s.signature).ok())
        << name;
    // ...the payload alone (the unlabelled scheme) does not...
    EXPECT_FALSE(verifier->Verify(s.payload, s.signature).ok()) << name << " verifies unlabelled";
    // ...nor the labelled message presented as an unlabelled (first-version) one, though its
    // signature is genuine over exactly those bytes...
    EXPECT_FALSE(audit::VerifyUnlabelledLegacy(*verifier, audit::DomainMessage(s.domain, s.payload),
                                               s.signature)
                     .ok())
        << name;
    // ...and it verifies in its own domain only.
    for (SigningDomain other : audit::kAllSigningDomains) {
      EXPECT_EQ(audit::VerifyInDomain(*verifier, other, s.payload, s.signature).ok(),
                other == s.domain)
          << name << " checked as " << audit::SigningDomainName(other);
    }
  }

  // Spliced: the tombstone's signature on the receipt's body, and the receipt's on the
  // tombstone; the labelled tombstone message presented as a first-version tombstone.
  const std::string receipt_body = v2.receipt_file.substr(0, v2.receipt_file.find('\n') + 1);
  EXPECT_EQ(
      ErrorCodeOf(receipt::VerifyFile(receipt::AssembleFile(receipt_body, v2.tombstone.signature),
                                      v2.public_key_pem)
                      .status()),
      ErrorCode::kReceiptInvalid);
  SignedTombstone spliced{v2.tombstone.tombstone, all[1].signature};
  EXPECT_EQ(ErrorCodeOf(VerifyTombstone(spliced, v2.public_key_pem).status()),
            ErrorCode::kTombstoneInvalid);
  SignedTombstone relabelled{
      audit::DomainMessage(SigningDomain::kTombstone, v2.tombstone.tombstone),
      v2.tombstone.signature};
  EXPECT_EQ(ErrorCodeOf(VerifyTombstone(relabelled, v2.public_key_pem).status()),
            ErrorCode::kTombstoneInvalid);
}

TEST_F(SignatureGoldenTest, TodaysCodeWritesTheCurrentVersion) {
  GoldenSignatures fresh;
  SignatureProducer(suite_).Produce(&fresh);
  if (HasFatalFailure()) return;
  if (Regenerating()) {
    Save(kCurrentVersion, fresh);
    GTEST_SKIP() << "rewrote " << GoldenPath(kCurrentVersion);
  }
  // What the daemon's code writes today is the current version, labelled.
  auto tombstone = VerifyTombstone(fresh.tombstone, fresh.public_key_pem);
  ASSERT_TRUE(tombstone.ok()) << tombstone.status();
  EXPECT_EQ(tombstone->format_version(), kTombstoneFormatVersion);
  auto receipt = receipt::VerifyFile(fresh.receipt_file, fresh.public_key_pem);
  ASSERT_TRUE(receipt.ok()) << receipt.status();
  EXPECT_EQ(receipt->format(), receipt::kReceiptFormat);
  auto verifier = audit::CheckpointVerifier::FromPublicKeyPem(fresh.public_key_pem);
  ASSERT_TRUE(verifier.ok()) << verifier.status();
  for (const Signed& s : SignaturesOf(fresh)) {
    EXPECT_TRUE(audit::VerifyInDomain(*verifier, s.domain, s.payload, s.signature).ok())
        << audit::SigningDomainName(s.domain);
    EXPECT_FALSE(verifier->Verify(s.payload, s.signature).ok())
        << audit::SigningDomainName(s.domain) << " signed unlabelled";
  }
}

}  // namespace
}  // namespace coffer::kms
