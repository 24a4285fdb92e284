// export-v1 archives (kms/formats/export_archive.h) written with a software P-256 signer and read
// back from files: contents survive byte for byte; any flipped byte, any truncation, appended
// bytes, another recipient key and another signer key are refused with their codes.

#include "kms/formats/export_archive.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "tests/kms/formats/string_archive_sink.h"
#include "tests/testing/peak_rss.h"
#include "tests/testing/text.h"

namespace coffer::kms::dataset_export {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Pattern;

struct Pem {
  std::string private_pem;
  std::string public_pem;
};

Pem Generate(const char* type) {
  EVP_PKEY* key = std::string(type) == "RSA"
                      ? EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048})
                      : EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  EXPECT_NE(key, nullptr);
  auto text = [](BIO* bio) {
    char* data = nullptr;
    long n = BIO_get_mem_data(bio, &data);
    std::string out(data, static_cast<size_t>(n));
    BIO_free(bio);
    return out;
  };
  BIO* priv = BIO_new(BIO_s_mem());
  BIO* pub = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(priv, key, nullptr, nullptr, 0, nullptr, nullptr);
  PEM_write_bio_PUBKEY(pub, key);
  EVP_PKEY_free(key);
  return {text(priv), text(pub)};
}

crypto::SecretBytes Secret(const std::string& text) {
  return *crypto::SecretBytes::CopyFrom(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(text.data()), text.size()));
}

// What a reader saw, in order.
class Collector final : public ArchiveVisitor {
 public:
  absl::Status Record(std::string_view id, std::string_view value) override {
    records.emplace_back(id, value);
    return absl::OkStatus();
  }
  absl::Status BeginAttachment(const v1::ExportEntry::Attachment& a) override {
    attachments.push_back({a.name(), a.content_type(), ""});
    return absl::OkStatus();
  }
  absl::Status AttachmentData(std::string_view data) override {
    attachments.back().data.append(data);
    return absl::OkStatus();
  }
  absl::Status EndAttachment() override { return absl::OkStatus(); }

  struct Attachment {
    std::string name, content_type, data;
  };
  std::vector<std::pair<std::string, std::string>> records;
  std::vector<Attachment> attachments;
};

class ArchiveTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    rsa_ = new Pem(Generate("RSA"));
    x25519_ = new Pem(Generate("X25519"));
    x25519_other_ = new Pem(Generate("X25519"));
  }
  static void TearDownTestSuite() {
    delete rsa_;
    delete x25519_;
    delete x25519_other_;
  }
  void SetUp() override {
    signer_ = *audit::SoftwareEcdsaSigner::Generate();
    token_pem_ = *signer_->PublicKeyPem();
    char tmpl[] = "/tmp/export-archive-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // An archive of two records (one with an empty value) and two attachments (one empty).
  std::string Write(const Pem& recipient, const std::string& big) {
    auto key = crypto::RecipientPublicKey::FromPem(recipient.public_pem);
    EXPECT_TRUE(key.ok()) << key.status();
    StringSink sink;
    ArchiveDescription description{"crm/contacts", 42, "DISABLED", 1'700'000'000'000'000, 7};
    auto writer = ArchiveWriter::Create(description, *key, signer_.get(), &sink);
    EXPECT_TRUE(writer.ok()) << writer.status();
    EXPECT_TRUE((*writer)->AddRecord("customer-1", "value one").ok());
    EXPECT_TRUE((*writer)->AddRecord(std::string("\x00\xff", 2), "").ok());
    EXPECT_TRUE((*writer)->BeginAttachment("contract.pdf", big.size(), "application/pdf", 5).ok());
    for (size_t off = 0; off < big.size(); off += 100'000) {
      EXPECT_TRUE((*writer)->AppendAttachmentData(std::string_view(big).substr(off, 100'000)).ok());
    }
    EXPECT_TRUE((*writer)->BeginAttachment("empty", 0, "", 6).ok());
    auto counts = (*writer)->Finish();
    EXPECT_TRUE(counts.ok()) << counts.status();
    EXPECT_EQ(counts->records, 2u);
    EXPECT_EQ(counts->attachments, 2u);
    EXPECT_EQ(counts->attachment_bytes, big.size());
    EXPECT_EQ(counts->archive_bytes, sink.out.size());
    return sink.out;
  }
  std::string Save(const std::string& bytes, const std::string& name = "a.cfx") {
    const std::string path = dir_ + "/" + name;
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  }
  absl::StatusOr<OpenedArchive> Open(const std::string& path, const Pem& recipient,
                                     Collector* collector) {
    auto key = crypto::RecipientPrivateKey::FromPem(Secret(recipient.private_pem));
    EXPECT_TRUE(key.ok()) << key.status();
    return OpenArchive(path, *key, token_pem_, collector);
  }

  static Pem* rsa_;
  static Pem* x25519_;
  static Pem* x25519_other_;
  std::unique_ptr<audit::SoftwareEcdsaSigner> signer_;
  std::string token_pem_;
  std::string dir_;
};
Pem* ArchiveTest::rsa_ = nullptr;
Pem* ArchiveTest::x25519_ = nullptr;
Pem* ArchiveTest::x25519_other_ = nullptr;

TEST_F(ArchiveTest, RoundTripsByteForByteForBothRecipientTypes) {
  const std::string big = Pattern(3 * 1024 * 1024 + 17, 1);  // several segments, a ragged end
  for (const Pem* recipient : {rsa_, x25519_}) {
    const std::string path = Save(Write(*recipient, big));
    Collector got;
    auto opened = Open(path, *recipient, &got);
    ASSERT_TRUE(opened.ok()) << opened.status();
    EXPECT_EQ(opened->header.dataset(), "crm/contacts");
    EXPECT_EQ(opened->header.dataset_handle(), 42u);
    EXPECT_EQ(opened->header.approval_id(), 7u);
    EXPECT_EQ(opened->trailer.records(), 2u);
    ASSERT_EQ(got.records.size(), 2u);
    EXPECT_EQ(got.records[0], std::make_pair(std::string("customer-1"), std::string("value one")));
    EXPECT_EQ(got.records[1], std::make_pair(std::string("\x00\xff", 2), std::string()));
    ASSERT_EQ(got.attachments.size(), 2u);
    EXPECT_EQ(got.attachments[0].name, "contract.pdf");
    EXPECT_EQ(got.attachments[0].content_type, "application/pdf");
    EXPECT_TRUE(got.attachments[0].data == big) << "attachment differs";
    EXPECT_EQ(got.attachments[1].data, "");
    // Nothing readable in clear: the record value and attachment bytes are encrypted.
    std::ifstream in(path, std::ios::binary);
    const std::string archive((std::istreambuf_iterator<char>(in)),
                              std::istreambuf_iterator<char>());
    EXPECT_EQ(archive.find("value one"), std::string::npos);
    EXPECT_EQ(archive.find(big.substr(1000, 64)), std::string::npos);
  }
}

TEST_F(ArchiveTest, EveryFlippedByteAndEveryTruncationIsDetected) {
  const std::string archive = Write(*x25519_, Pattern(300, 2));
  for (size_t i = 0; i < archive.size(); ++i) {
    std::string bad = archive;
    bad[i] = static_cast<char>(bad[i] ^ 0x40);
    Collector got;
    auto opened = Open(Save(bad), *x25519_, &got);
    ASSERT_FALSE(opened.ok()) << "flipped byte " << i << " of " << archive.size();
    EXPECT_EQ(ErrorCodeOf(opened.status()), ErrorCode::kExportArchiveCorrupt) << "byte " << i;
    EXPECT_TRUE(got.records.empty() && got.attachments.empty()) << "byte " << i;
  }
  for (size_t length = 0; length < archive.size(); ++length) {
    Collector got;
    auto opened = Open(Save(archive.substr(0, length)), *x25519_, &got);
    ASSERT_FALSE(opened.ok()) << "truncated to " << length;
    EXPECT_EQ(ErrorCodeOf(opened.status()), ErrorCode::kExportArchiveCorrupt) << length;
  }
  Collector got;
  auto extended = Open(Save(archive + "x"), *x25519_, &got);
  EXPECT_EQ(ErrorCodeOf(extended.status()), ErrorCode::kExportArchiveCorrupt);
  auto intact = Open(Save(archive), *x25519_, &got);
  EXPECT_TRUE(intact.ok()) << intact.status();  // the loop's base case is a valid archive
}

TEST_F(ArchiveTest, AnotherRecipientKeyIsTheWrongRecipient) {
  const std::string path = Save(Write(*x25519_, "data"));
  for (const Pem* wrong : {x25519_other_, rsa_}) {
    Collector got;
    auto opened = Open(path, *wrong, &got);
    ASSERT_FALSE(opened.ok());
    EXPECT_EQ(ErrorCodeOf(opened.status()), ErrorCode::kExportWrongRecipient);
    EXPECT_TRUE(got.records.empty());
  }
}

TEST_F(ArchiveTest, AnotherSignerKeyIsRefused) {
  const std::string path = Save(Write(*rsa_, "data"));
  token_pem_ = *(*audit::SoftwareEcdsaSigner::Generate())->PublicKeyPem();
  Collector got;
  auto opened = Open(path, *rsa_, &got);
  ASSERT_FALSE(opened.ok());
  EXPECT_EQ(ErrorCodeOf(opened.status()), ErrorCode::kExportArchiveCorrupt);
}

TEST_F(ArchiveTest, TheSignatureVerifiesWithPlainOpenSslOverTheDocumentedMessage) {
  const std::string archive = Write(*rsa_, "data");
  const size_t signature_size =
      (static_cast<size_t>(static_cast<uint8_t>(archive[archive.size() - 10])) << 8) |
      static_cast<uint8_t>(archive[archive.size() - 9]);
  const size_t signed_end = archive.size() - 10 - signature_size;
  Sha256Digest digest{};
  unsigned int n = 0;
  EVP_Digest(archive.data(), signed_end, digest.data(), &n, EVP_sha256(), nullptr);
  std::string message = "coffer-export-v1 signature";
  message.push_back('\0');
  message.append(reinterpret_cast<const char*>(digest.data()), digest.size());
  BIO* bio = BIO_new_mem_buf(token_pem_.data(), static_cast<int>(token_pem_.size()));
  EVP_PKEY* key = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  ASSERT_NE(key, nullptr);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ASSERT_EQ(EVP_DigestVerifyInit(ctx, nullptr, EVP_sha256(), nullptr, key), 1);
  EXPECT_EQ(
      EVP_DigestVerify(ctx, reinterpret_cast<const unsigned char*>(archive.data() + signed_end),
                       signature_size, reinterpret_cast<const unsigned char*>(message.data()),
                       message.size()),
      1);
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(key);
}

// Writes the archive to a file descriptor as it is produced.
class FileSink final : public ArchiveSink {
 public:
  explicit FileSink(int fd) : fd_(fd) {}
  absl::Status Write(std::string_view bytes) override {
    while (!bytes.empty()) {
      ssize_t n = ::write(fd_, bytes.data(), bytes.size());
      if (n <= 0) return absl::InternalError("write");
      bytes.remove_prefix(static_cast<size_t>(n));
    }
    return absl::OkStatus();
  }

 private:
  int fd_;
};

// Counts attachment bytes and checks them against the pattern, keeping nothing.
class PatternChecker final : public ArchiveVisitor {
 public:
  absl::Status Record(std::string_view, std::string_view) override { return absl::OkStatus(); }
  absl::Status BeginAttachment(const v1::ExportEntry::Attachment&) override {
    return absl::OkStatus();
  }
  absl::Status AttachmentData(std::string_view data) override {
    for (char c : data) mismatches += c != static_cast<char>(seen++ % 251);
    return absl::OkStatus();
  }
  absl::Status EndAttachment() override { return absl::OkStatus(); }
  uint64_t seen = 0;
  uint64_t mismatches = 0;
};

TEST_F(ArchiveTest, WritingAndOpeningAHundredMebibytesHoldsASegmentNotTheArchive) {
  constexpr uint64_t kTotal = uint64_t{100} << 20;
  const std::string path = dir_ + "/big.cfx";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  coffer::testing::ResetPeakRss();
  const size_t rss_before = coffer::testing::PeakRssBytes();
  {
    auto key = crypto::RecipientPublicKey::FromPem(x25519_->public_pem);
    ASSERT_TRUE(key.ok());
    FileSink sink(fd);
    auto writer = ArchiveWriter::Create({"big", 1, "DISABLED", 0, 0}, *key, signer_.get(), &sink);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->BeginAttachment("big", kTotal, "", 0).ok());
    std::string chunk(1 << 20, '\0');
    for (uint64_t done = 0; done < kTotal; done += chunk.size()) {
      for (size_t i = 0; i < chunk.size(); ++i) chunk[i] = static_cast<char>((done + i) % 251);
      ASSERT_TRUE((*writer)->AppendAttachmentData(chunk).ok());
    }
    ASSERT_TRUE((*writer)->Finish().ok());
  }
  ::close(fd);
  PatternChecker checker;
  auto key = crypto::RecipientPrivateKey::FromPem(Secret(x25519_->private_pem));
  ASSERT_TRUE(key.ok());
  auto opened = OpenArchive(path, *key, token_pem_, &checker);
  ASSERT_TRUE(opened.ok()) << opened.status();
  [[maybe_unused]] const size_t rss_after =
      coffer::testing::PeakRssBytes();  // unchecked under ASan
  EXPECT_EQ(checker.seen, kTotal);
  EXPECT_EQ(checker.mismatches, 0u);
  // A segment, a 1 MiB chunk and read buffers on each side; 100 MiB if either side buffered
  // the archive. Generous on purpose (allocator slack).
  ASSERT_GT(rss_before, 0u);
#if !defined(__SANITIZE_ADDRESS__)
  EXPECT_LT(rss_after - rss_before, size_t{24} << 20);
#endif
}

// The shell recipe of docs/formats.md#export-v1, run as written with the openssl command.
TEST_F(ArchiveTest, TheDocumentedOpenSslRecipeVerifiesAndRejectsATamperedArchive) {
  if (std::system("command -v openssl >/dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl";
  const std::string archive = Write(*rsa_, "data");
  Save(archive, "a.cfx");
  std::ofstream(dir_ + "/audit-public-key.pem") << token_pem_;
  const std::string recipe =
      "cd " + dir_ +
      " && size=$(stat -c %s a.cfx)"
      " && tail -c 10 a.cfx | head -c 2 | od -An -tu1 | { read hi lo; echo $((hi * 256 + lo)); }"
      " > siglen"
      " && siglen=$(cat siglen) && body=$((size - 10 - siglen))"
      " && head -c $body a.cfx | openssl dgst -sha256 -binary > d"
      " && { printf 'coffer-export-v1 signature\\0'; cat d; } > m"
      " && tail -c $((siglen + 10)) a.cfx | head -c $siglen > sig"
      " && openssl dgst -sha256 -verify audit-public-key.pem -signature sig m > verdict 2>&1";
  EXPECT_EQ(std::system(recipe.c_str()), 0);
  std::ifstream verdict(dir_ + "/verdict");
  std::string line;
  std::getline(verdict, line);
  EXPECT_EQ(line, "Verified OK");
  std::string bad = archive;
  bad[40] = static_cast<char>(bad[40] ^ 1);
  Save(bad, "a.cfx");
  EXPECT_NE(std::system(recipe.c_str()), 0);
}

TEST_F(ArchiveTest, TheWriterRefusesAttachmentDataBeyondItsSizeAndShortAttachments) {
  auto key = crypto::RecipientPublicKey::FromPem(x25519_->public_pem);
  ASSERT_TRUE(key.ok());
  StringSink sink;
  auto writer = ArchiveWriter::Create({"d", 1, "DISABLED", 0, 0}, *key, signer_.get(), &sink);
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->BeginAttachment("a", 3, "", 0).ok());
  EXPECT_FALSE((*writer)->AppendAttachmentData("four").ok());
  auto other = ArchiveWriter::Create({"d", 1, "DISABLED", 0, 0}, *key, signer_.get(), &sink);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->BeginAttachment("a", 3, "", 0).ok());
  ASSERT_TRUE((*other)->AppendAttachmentData("ab").ok());
  EXPECT_FALSE((*other)->Finish().ok());
}

}  // namespace
}  // namespace coffer::kms::dataset_export
