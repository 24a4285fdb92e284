// `keyctl dataset export` and `keyctl export open` against a real cofferd (fresh SoftHSM2 token,
// real RocksDB, real sockets; run as root the daemon runs as `nobody`), in development mode:
// archives for RSA and X25519 recipients open with the right private key and match the dataset
// byte for byte (records and attachments, a multi-MiB attachment, an empty value); another
// private key, a flipped byte and a truncation are refused with nothing left behind; an ACTIVE
// dataset and missing, unreadable or unsuitable recipient keys are refused before anything is
// written. The dual-control flow (file, approve, redeem once) is KeyctlExportDualControlTest in
// keyctl_export_dual_control_test.cc.

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/keyctl/admin_client.h"
#include "kms/keyctl/export_commands.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/testing/process.h"
#include "tests/testing/text.h"

namespace coffer::keyctl {
namespace {

namespace fs = std::filesystem;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::Pattern;
using ::coffer::testing::ReadWholeFile;
using ::coffer::testing::WriteKeyPair;
using nlohmann::json;
using Result = ::coffer::testing::KeyctlResult;

std::string Unbase64(const std::string& text) {
  std::string out;
  EXPECT_TRUE(absl::Base64Unescape(text, &out)) << text;
  return out;
}

// Files and directories directly in `dir` whose name starts with `prefix`.
std::vector<std::string> EntriesStartingWith(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> found;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) found.push_back(name);
  }
  return found;
}

class KeyctlExportTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "keyctl-export";
    daemon_ = Cofferd::Create(std::move(options)).release();
    if (daemon_ == nullptr) return;
    keys_ = daemon_->dir() + "/keys";
    fs::create_directories(keys_);
    WriteKeyPair(keys_, "rsa", "RSA");
    WriteKeyPair(keys_, "rsa-other", "RSA");
    WriteKeyPair(keys_, "x25519", "X25519");
    WriteKeyPair(keys_, "rsa1024", "RSA1024");
    WriteKeyPair(keys_, "ec", "EC");
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(daemon_, nullptr) << "cofferd did not start";
    char tmpl[] = "/tmp/keyctl-export-work-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    work_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(work_, ec);
  }

  static Result Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }

  // Creates `name` and fills it: three records (one with an empty value, one with a binary
  // id) and three attachments (3 MiB + 5 bytes, an empty one, one with a name that needs
  // escaping).
  void Populate(const std::string& name) {
    Result created = Run("dataset create " + name);
    ASSERT_EQ(created.exit_code, 0) << created.err;
    auto client = client::Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(client.ok()) << client.status();
    records_ = {{"customer-1", "alice@example.com"},
                {"empty-value", ""},
                {std::string("\x00\xfe id", 5), Pattern(1000, 3)}};
    for (const auto& [id, value] : records_) {
      ASSERT_TRUE((*client)->PutRecord(name, id, value).ok());
    }
    attachments_ = {{"big.bin", Pattern((size_t{3} << 20) + 5, 7)},
                    {"empty.txt", ""},
                    {"../dir/contract (v2).pdf", Pattern(70'000, 9)}};
    for (const auto& [attachment, data] : attachments_) {
      auto writer = (*client)->BeginAttachment(name, attachment, "application/octet-stream");
      ASSERT_TRUE(writer.ok()) << writer.status();
      for (size_t off = 0; off < data.size(); off += 200'000) {
        ASSERT_TRUE((*writer)->Append(std::string_view(data).substr(off, 200'000)).ok());
      }
      ASSERT_TRUE((*writer)->Commit().ok());
    }
  }

  // Checks that `dir` (from export open) holds exactly the records and attachments written.
  void ExpectMatchesDataset(const std::string& dir) {
    std::map<std::string, std::string> records;
    std::ifstream lines(dir + "/records.jsonl");
    for (std::string line; std::getline(lines, line);) {
      json j = json::parse(line);
      records[Unbase64(j.at("id"))] = Unbase64(j.at("value"));
    }
    EXPECT_EQ(records, records_);
    std::map<std::string, std::string> attachments;
    std::ifstream index(dir + "/attachments.jsonl");
    for (std::string line; std::getline(index, line);) {
      json j = json::parse(line);
      const std::string name = Unbase64(j.at("name"));
      const std::string file = j.at("file");
      EXPECT_EQ(file, "attachments/" + AttachmentFileName(name));
      EXPECT_EQ(file.find('/', 12), std::string::npos) << "escaped into a subdirectory: " << file;
      attachments[name] = ReadWholeFile(dir + "/" + file);
      EXPECT_EQ(j.at("size").get<uint64_t>(), attachments[name].size());
    }
    ASSERT_EQ(attachments.size(), attachments_.size());
    for (const auto& [name, data] : attachments_) {
      EXPECT_TRUE(attachments[name] == data) << "attachment " << name << " differs";
    }
    json manifest = json::parse(ReadWholeFile(dir + "/manifest.json"));
    EXPECT_EQ(manifest.at("records").get<uint64_t>(), records_.size());
    EXPECT_EQ(manifest.at("attachments").get<uint64_t>(), attachments_.size());
    struct stat st {};
    ASSERT_EQ(stat((dir + "/records.jsonl").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0077, 0u) << "plaintext readable by others";
  }

  static Cofferd* daemon_;
  static std::string keys_;
  std::string work_;
  std::map<std::string, std::string> records_;
  std::map<std::string, std::string> attachments_;
};
Cofferd* KeyctlExportTest::daemon_ = nullptr;
std::string KeyctlExportTest::keys_;

TEST_F(KeyctlExportTest, ArchivesOpenWithTheRightKeyAndMatchTheDataset) {
  ASSERT_NO_FATAL_FAILURE(Populate("exp/match"));
  ASSERT_EQ(Run("dataset disable exp/match").exit_code, 0);
  const std::string token_key = daemon_->dir() + "/audit-public-key.pem";
  // RSA while DISABLED; X25519 once destruction is scheduled (PENDING_DESTRUCTION).
  for (const std::string key : {"rsa", "x25519"}) {
    const std::string state = key == "rsa" ? "DISABLED" : "PENDING_DESTRUCTION";
    if (key == "x25519") {
      ASSERT_EQ(Run("dataset destroy exp/match").exit_code, 0);
    }
    const std::string archive = work_ + "/" + key + ".cfx";
    Result exported = Run("--json dataset export exp/match --recipient-key " + keys_ + "/" + key +
                          ".pub.pem --out " + archive);
    ASSERT_EQ(exported.exit_code, 0) << exported.err << exported.out;
    json summary = exported.JsonOrEmpty();
    EXPECT_EQ(summary.value("records", 0), 3) << exported.out;
    EXPECT_EQ(summary.value("attachments", 0), 3) << exported.out;
    EXPECT_EQ(summary.value("recipient_key", ""), key == "rsa" ? "RSA-2048" : "X25519");
    EXPECT_EQ(fs::file_size(archive), summary.value("archive_bytes", uint64_t{0}));
    EXPECT_TRUE(EntriesStartingWith(work_, key + ".cfx.partial").empty());

    // With the published public key (no daemon needed), and with the daemon's status.
    const std::string out = work_ + "/" + key + "-open";
    Result opened = Run("export open " + archive + " --private-key " + keys_ + "/" + key +
                        ".pem --out-dir " + out + " --public-key " + token_key);
    ASSERT_EQ(opened.exit_code, 0) << opened.err << opened.out;
    ExpectMatchesDataset(out);
    EXPECT_EQ(json::parse(ReadWholeFile(out + "/manifest.json")).value("dataset_state", ""), state);
    const std::string out2 = work_ + "/" + key + "-open2";
    fs::create_directory(out2);  // an empty directory is accepted
    Result via_status = Run("export open " + archive + " --private-key " + keys_ + "/" + key +
                            ".pem --out-dir " + out2);
    ASSERT_EQ(via_status.exit_code, 0) << via_status.err;
    ExpectMatchesDataset(out2);
  }
  // The export is audited: requested (no count yet) and completed with the item count, each
  // export once (the query shows no stage: the count tells them apart).
  Result audit = Run("--json audit search --dataset exp/match");
  ASSERT_EQ(audit.exit_code, 0) << audit.err;
  int requested = 0, completed = 0;
  const json entries = audit.JsonOrEmpty().at("entries");
  for (const json& entry : entries) {
    if (entry.value("kind", "") != "DATASET_EXPORT") continue;
    EXPECT_EQ(entry.value("result_code", -1), 0) << entry.dump();
    if (entry.value("record_count", -1) == 0) ++requested;
    if (entry.value("record_count", -1) == 6) ++completed;
  }
  EXPECT_EQ(requested, 2) << audit.out;
  EXPECT_EQ(completed, 2) << audit.out;
}

TEST_F(KeyctlExportTest, AnotherKeyATamperedOrTruncatedArchiveLeaveNothing) {
  ASSERT_NO_FATAL_FAILURE(Populate("exp/tamper"));
  ASSERT_EQ(Run("dataset disable exp/tamper").exit_code, 0);
  const std::string archive = work_ + "/a.cfx";
  Result exported =
      Run("dataset export exp/tamper --recipient-key " + keys_ + "/rsa.pub.pem --out " + archive);
  ASSERT_EQ(exported.exit_code, 0) << exported.err;
  const std::string bytes = ReadWholeFile(archive);
  auto open = [&](const std::string& file, const std::string& key) {
    return Run("--json export open " + file + " --private-key " + keys_ + "/" + key +
               ".pem --out-dir " + work_ + "/out --public-key " + daemon_->dir() +
               "/audit-public-key.pem");
  };
  Result wrong = open(archive, "rsa-other");
  EXPECT_NE(wrong.exit_code, 0);
  EXPECT_EQ(wrong.CodeName(), "EXPORT_WRONG_RECIPIENT") << wrong.out << wrong.err;
  Result wrong_type = open(archive, "x25519");
  EXPECT_EQ(wrong_type.CodeName(), "EXPORT_WRONG_RECIPIENT") << wrong_type.out;

  // A flipped byte in the header, in the middle of the big attachment and in the signature; a
  // truncation in the middle and of the last byte.
  const std::vector<size_t> flips = {20, bytes.size() / 2, bytes.size() - 12};
  for (size_t at : flips) {
    std::string bad = bytes;
    bad[at] = static_cast<char>(bad[at] ^ 0x01);
    std::ofstream(work_ + "/bad.cfx", std::ios::binary | std::ios::trunc) << bad;
    Result r = open(work_ + "/bad.cfx", "rsa");
    EXPECT_NE(r.exit_code, 0) << "byte " << at;
    EXPECT_EQ(r.CodeName(), "EXPORT_ARCHIVE_CORRUPT") << "byte " << at << ": " << r.out;
  }
  for (size_t length : {bytes.size() / 2, bytes.size() - 1}) {
    std::ofstream(work_ + "/short.cfx", std::ios::binary | std::ios::trunc)
        << bytes.substr(0, length);
    Result r = open(work_ + "/short.cfx", "rsa");
    EXPECT_EQ(r.CodeName(), "EXPORT_ARCHIVE_CORRUPT") << length << ": " << r.out;
  }
  // Nothing of any failed open is left: no output directory, no partial one.
  EXPECT_FALSE(fs::exists(work_ + "/out"));
  EXPECT_TRUE(EntriesStartingWith(work_, "out.partial").empty());
  // An existing non-empty directory is refused too, untouched.
  fs::create_directory(work_ + "/out");
  std::ofstream(work_ + "/out/keep") << "mine";
  Result busy = open(archive, "rsa");
  EXPECT_NE(busy.exit_code, 0);
  EXPECT_EQ(ReadWholeFile(work_ + "/out/keep"), "mine");
}

TEST_F(KeyctlExportTest, AnActiveDatasetIsRefusedWithNothingWritten) {
  ASSERT_NO_FATAL_FAILURE(Populate("exp/active"));
  Result r = Run("--json dataset export exp/active --recipient-key " + keys_ +
                 "/x25519.pub.pem --out " + work_ + "/active.cfx");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_EQ(r.CodeName(), "DATASET_STATE_FORBIDS") << r.out << r.err;
  EXPECT_FALSE(fs::exists(work_ + "/active.cfx"));
  EXPECT_TRUE(EntriesStartingWith(work_, "active.cfx").empty());
  // Unknown dataset: not found, nothing written.
  Result unknown = Run("--json dataset export exp/none --recipient-key " + keys_ +
                       "/x25519.pub.pem --out " + work_ + "/none.cfx");
  EXPECT_EQ(unknown.exit_code, 4) << unknown.err;
  EXPECT_TRUE(EntriesStartingWith(work_, "none.cfx").empty());
  // The data path still refuses the disabled dataset: export did not unlock it.
  ASSERT_EQ(Run("dataset disable exp/active").exit_code, 0);
  auto client = client::Client::Connect(daemon_->data_socket());
  ASSERT_TRUE(client.ok());
  EXPECT_FALSE((*client)->GetRecord("exp/active", "customer-1").ok());
}

TEST_F(KeyctlExportTest, BadRecipientKeysAreRefusedBeforeAnythingIsWritten) {
  ASSERT_NO_FATAL_FAILURE(Populate("exp/keys"));
  ASSERT_EQ(Run("dataset disable exp/keys").exit_code, 0);
  std::ofstream(work_ + "/garbage.pem") << "-----BEGIN PUBLIC KEY-----\nnot base64\n";
  const std::vector<std::string> bad = {
      work_ + "/missing.pem",      // missing
      work_,                       // unreadable (a directory)
      work_ + "/garbage.pem",      // not PEM
      keys_ + "/ec.pub.pem",       // wrong type
      keys_ + "/rsa1024.pub.pem",  // too small
      keys_ + "/x25519.pem",       // a private key
  };
  for (const std::string& key : bad) {
    Result r =
        Run("--json dataset export exp/keys --recipient-key " + key + " --out " + work_ + "/k.cfx");
    EXPECT_NE(r.exit_code, 0) << key;
    EXPECT_EQ(r.CodeName(), "EXPORT_RECIPIENT_KEY_INVALID") << key << ": " << r.out << r.err;
    EXPECT_TRUE(EntriesStartingWith(work_, "k.cfx").empty()) << key;
  }
  // The daemon refuses them too (a client that skips keyctl's check).
  auto admin = AdminClient::Connect(daemon_->admin_socket());
  ASSERT_TRUE(admin.ok());
  coffer::v1::Request request;
  request.mutable_dataset_export()->set_dataset("exp/keys");
  request.mutable_dataset_export()->set_recipient_public_key_pem(
      ReadWholeFile(keys_ + "/ec.pub.pem"));
  auto response = (*admin)->Call(request);
  ASSERT_FALSE(response.ok());
  EXPECT_EQ(ErrorCodeOf(response.status()), ErrorCode::kExportRecipientKeyInvalid);
  // An existing --out file is never overwritten.
  std::ofstream(work_ + "/exists.cfx") << "mine";
  Result exists = Run("dataset export exp/keys --recipient-key " + keys_ + "/rsa.pub.pem --out " +
                      work_ + "/exists.cfx");
  EXPECT_NE(exists.exit_code, 0);
  EXPECT_EQ(ReadWholeFile(work_ + "/exists.cfx"), "mine");
}

}  // namespace
}  // namespace coffer::keyctl
