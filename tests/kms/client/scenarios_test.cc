// The C++ client library against a real cofferd (the shipped daemon on the system clock, a fresh
// SoftHSM2 token, real RocksDB, real sockets; tests/kms/cofferd/cofferd_harness.h): the
// scenarios of scenarios.txt, which the Python client passes too (python_client_test.py), one
// TEST_F each, named after the scenario in CamelCase; and a check that every listed scenario has
// its test here. One daemon serves the whole suite; each test uses ids of its own.

#include <unistd.h>

#include <cctype>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/keyctl/admin_client.h"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer::client {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::KeyctlResult;

constexpr char kGranted[] = "crm";
constexpr char kUngranted[] = "hr";  // exists; the caller holds no grant on it
constexpr size_t kChunk = size_t{1} << 20;
constexpr char kSuite[] = "ClientScenarioTest";

std::string RandomBytes(size_t size) {
  std::string out(size, '\0');
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  urandom.read(out.data(), static_cast<std::streamsize>(size));
  return out;
}

std::string Hex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out;
}

// snake_case to CamelCase: record_round_trip -> RecordRoundTrip.
std::string CamelCase(const std::string& name) {
  std::string out;
  bool upper = true;
  for (char c : name) {
    if (c == '_') {
      upper = true;
      continue;
    }
    out += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(c))) : c;
    upper = false;
  }
  return out;
}

class ClientScenarioTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    CofferdOptions options;
    options.name = "coffer-client-scenarios";
    options.controlled_clock = false;
    options.config_body = [](const std::string&, const std::string&) {
      const std::string me = std::to_string(geteuid());
      return "grants { principals { uid: " + me + " } datasets: \"" + kGranted +
             "\" rights: READ rights: WRITE rights: DELETE rights: PSEUDONYMIZE "
             "rights: REIDENTIFY }\n"
             "admins { uid: " +
             me + " }\nmfa { required: false }\n";
    };
    daemon_ = Cofferd::Create(std::move(options)).release();
    ASSERT_NE(daemon_, nullptr);
    for (const char* dataset : {kGranted, kUngranted}) {
      KeyctlResult created = coffer::testing::Keyctl(daemon_->admin_socket(),
                                                     std::string("dataset create ") + dataset);
      ASSERT_EQ(created.exit_code, 0) << created.err;
    }
  }
  static void TearDownTestSuite() {
    delete daemon_;
    daemon_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(daemon_, nullptr);
    if (daemon_->pid() <= 0) {  // a failed DaemonGone left it stopped
      ASSERT_TRUE(daemon_->Start());
    }
    auto connected = Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(connected.ok()) << connected.status();
    client_ = *std::move(connected);
    tag_ = Hex(RandomBytes(4));
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }

  // The daemon's connections_total, asked over a connection of its own to the admin socket.
  static uint64_t ConnectionsTotal() {
    auto admin = keyctl::AdminClient::Connect(daemon_->admin_socket());
    EXPECT_TRUE(admin.ok()) << admin.status();
    if (!admin.ok()) return 0;
    coffer::v1::Request request;
    request.mutable_status();
    auto response = (*admin)->Call(request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->status().connections_total() : 0;
  }

  static Cofferd* daemon_;
  std::unique_ptr<Client> client_;
  std::string tag_;
};

Cofferd* ClientScenarioTest::daemon_ = nullptr;

TEST_F(ClientScenarioTest, RecordRoundTrip) {
  const std::string id = "cc/" + tag_ + std::string("/\0contact", 9);
  std::string value;
  for (int i = 0; i < 100; ++i) value += std::string("\0\xffvalue ", 8);
  ASSERT_TRUE(client_->PutRecord(kGranted, id, value).ok());
  EXPECT_EQ(client_->GetRecord(kGranted, id).value_or(""), value);
  EXPECT_TRUE(client_->RecordExists(kGranted, id).value_or(false));
  ASSERT_TRUE(client_->DeleteRecord(kGranted, id).ok());
  EXPECT_FALSE(client_->RecordExists(kGranted, id).value_or(true));
  EXPECT_EQ(ErrorCodeOf(client_->GetRecord(kGranted, id).status()), ErrorCode::kRecordNotFound);
}

TEST_F(ClientScenarioTest, RecordNotFound) {
  absl::StatusOr<std::string> got = client_->GetRecord(kGranted, "cc/" + tag_ + "/never-written");
  EXPECT_EQ(ErrorCodeOf(got.status()), ErrorCode::kRecordNotFound) << got.status();
  EXPECT_EQ(ErrorCodeName(ErrorCodeOf(got.status())), "RECORD_NOT_FOUND");
  EXPECT_FALSE(got.status().message().empty());
  EXPECT_EQ(got.status().message().find(tag_), std::string::npos) << got.status();
}

TEST_F(ClientScenarioTest, RecordBatch) {
  std::vector<Client::RecordWrite> items;
  for (int n = 0; n < 12; ++n) {
    items.push_back({"cc/" + tag_ + "/batch/" + std::to_string(100 + n),
                     "value " + std::to_string(n) + " value " + std::to_string(n)});
  }
  auto put = client_->PutRecords(kGranted, items);
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), items.size());
  for (const absl::Status& result : *put) EXPECT_TRUE(result.ok()) << result;
  std::vector<std::string> ids;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i == 6) ids.push_back("cc/" + tag_ + "/batch/missing");
    ids.push_back(items[i].id);
  }
  auto got = client_->GetRecords(kGranted, ids);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), ids.size());
  for (size_t i = 0, item = 0; i < ids.size(); ++i) {
    if (i == 6) {
      EXPECT_EQ(ErrorCodeOf((*got)[i].status()), ErrorCode::kRecordNotFound) << (*got)[i].status();
      EXPECT_EQ((*got)[i].status().message().find(tag_), std::string::npos);
      continue;
    }
    EXPECT_EQ((*got)[i].value_or(""), items[item++].value) << i;
  }

  // Values beyond one reply frame (4 MiB): served from the first, BATCH_REPLY_FULL from the
  // first that would not fit; asked again, the rest come.
  std::map<std::string, std::string> big;
  for (int n = 0; n < 4; ++n) {
    big["cc/" + tag_ + "/big/" + std::to_string(n)] =
        std::string(1536 << 10, static_cast<char>(n + 1));
  }
  std::vector<std::string> pending;
  for (const auto& [id, value] : big) {
    ASSERT_TRUE(client_->PutRecord(kGranted, id, value).ok());  // one per request
    pending.push_back(id);
  }
  bool saw_full = false;
  for (int round = 1; !pending.empty(); ++round) {
    ASSERT_LE(round, 4) << "no progress";
    auto answered = client_->GetRecords(kGranted, pending);
    ASSERT_TRUE(answered.ok()) << answered.status();
    ASSERT_EQ(answered->size(), pending.size());
    size_t served = 0;
    while (served < answered->size() && (*answered)[served].ok()) {
      EXPECT_EQ(*(*answered)[served], big[pending[served]]);
      ++served;
    }
    ASSERT_GT(served, 0u);
    for (size_t i = served; i < answered->size(); ++i) {
      EXPECT_EQ(ErrorCodeOf((*answered)[i].status()), ErrorCode::kBatchReplyFull)
          << (*answered)[i].status();
      saw_full = true;
    }
    pending.erase(pending.begin(), pending.begin() + static_cast<long>(served));
  }
  EXPECT_TRUE(saw_full);
}

TEST_F(ClientScenarioTest, RecordList) {
  std::set<std::string> mine;
  for (int n = 0; n < 23; ++n) mine.insert("cc/" + tag_ + "/list/" + std::to_string(100 + n));
  for (const std::string& id : mine) ASSERT_TRUE(client_->PutRecord(kGranted, id, "v").ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = client_->ListRecords(kGranted, token, 7);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->ids.size(), 7u);
    EXPECT_EQ(page->damaged, 0u);
    seen.insert(seen.end(), page->ids.begin(), page->ids.end());
    token = page->next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_GE(pages, 4);
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size()) << "an id listed twice";
  for (const std::string& id : mine) EXPECT_EQ(unique.count(id), 1u) << "not listed: " << id;
}

TEST_F(ClientScenarioTest, AttachmentStreamed) {
  const std::string name = "cc/" + tag_ + "/scan.bin";
  const std::string contents = RandomBytes(5 * kChunk + 12'345);  // above max_frame_bytes
  auto writer = client_->BeginAttachment(kGranted, name, "application/pdf");
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (size_t at = 0; at < contents.size(); at += 300'000) {  // unaligned with the chunks
    ASSERT_TRUE((*writer)->Append(std::string_view(contents).substr(at, 300'000)).ok());
  }
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, contents.size());
  EXPECT_EQ(info->content_type, "application/pdf");

  // Read returns at most what one response frame carried: count the frames that way.
  auto reader = client_->OpenAttachment(kGranted, name);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().size, contents.size());
  std::string got;
  std::string buffer(8 * kChunk, '\0');
  int reads = 0;
  for (;;) {
    auto n = (*reader)->Read(buffer.data(), buffer.size());
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
    got.append(buffer.data(), *n);
    ++reads;
  }
  EXPECT_GT(reads, 1);
  EXPECT_TRUE(got == contents) << "downloaded " << got.size() << " bytes differ";

  auto range = client_->OpenAttachment(kGranted, name, kChunk - 10, kChunk + 20);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ((*range)->range_bytes(), kChunk + 20);
  EXPECT_TRUE((*range)->ReadAll().value_or("") == contents.substr(kChunk - 10, kChunk + 20));

  ASSERT_TRUE(client_->DeleteAttachment(kGranted, name).ok());
  EXPECT_EQ(ErrorCodeOf(client_->AttachmentMetadata(kGranted, name).status()),
            ErrorCode::kAttachmentNotFound);
}

TEST_F(ClientScenarioTest, NotGranted) {
  const std::string id = "cc/" + tag_ + "/refused";
  absl::Status put = client_->PutRecord(kUngranted, id, "value");
  EXPECT_EQ(ErrorCodeOf(put), ErrorCode::kNotGranted) << put;
  EXPECT_EQ(ErrorCodeOf(client_->GetRecord(kUngranted, id).status()), ErrorCode::kNotGranted);
  ASSERT_TRUE(client_->PutRecord(kGranted, id, "value").ok());  // the client carries on
  EXPECT_EQ(client_->GetRecord(kGranted, id).value_or(""), "value");
}

TEST_F(ClientScenarioTest, Pseudonymize) {
  const std::vector<std::string> identifiers = {"jane@example.com", tag_ + "@example.org"};
  auto first = client_->Pseudonymize(kGranted, identifiers);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_EQ(first->tokens.size(), 2u);
  for (const std::string& token : first->tokens) EXPECT_EQ(token.rfind("cp1.", 0), 0u) << token;
  EXPECT_NE(first->tokens[0], first->tokens[1]);
  auto again = client_->Pseudonymize(kGranted, identifiers);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->tokens, first->tokens);
  EXPECT_EQ(again->key_version, first->key_version);
  auto plain = client_->Reidentify(kGranted, first->tokens);
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_EQ(*plain, identifiers);
  auto masked = client_->Reidentify(kGranted, {first->tokens[0]}, coffer::v1::MASK_EMAIL);
  ASSERT_TRUE(masked.ok()) << masked.status();
  EXPECT_EQ(*masked, std::vector<std::string>{"j***@example.com"});
}

TEST_F(ClientScenarioTest, RecordPipeline) {
  constexpr int kRecords = 40;
  auto id_of = [&](int i) { return absl::StrCat("cc/", tag_, "/pipe/", i); };
  auto value_of = [](int i) { return absl::StrCat("value ", i, std::string("\0\xff", 2)); };
  const std::string big(size_t{3} << 19, 'b');      // 1.5 MiB: alone in its group
  const std::string too_big(size_t{5} << 20, 't');  // over the 4 MiB + 64 KiB frame
  RecordPipeline pipeline;
  for (int i = 0; i < kRecords; ++i) pipeline.Put(kGranted, id_of(i), value_of(i));
  pipeline.Put(kGranted, id_of(kRecords), big);
  for (int i = 0; i <= kRecords; ++i) pipeline.Get(kGranted, id_of(i));
  pipeline.Exists(kGranted, id_of(0));
  pipeline.Delete(kGranted, id_of(0));
  pipeline.Get(kGranted, id_of(0));
  pipeline.Get(kUngranted, id_of(0));
  pipeline.Put(kGranted, id_of(kRecords + 1), too_big);
  pipeline.Exists(kGranted, id_of(1));
  ASSERT_EQ(pipeline.size(), size_t{2 * (kRecords + 1) + 6});
  const uint64_t before = ConnectionsTotal();

  auto results = client_->Run(std::move(pipeline));
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), size_t{2 * (kRecords + 1) + 6});
  size_t at = 0;
  for (int i = 0; i <= kRecords; ++i) EXPECT_TRUE((*results)[at++].status.ok()) << "put " << i;
  for (int i = 0; i <= kRecords; ++i) {
    const PipelinedResult& got = (*results)[at++];
    ASSERT_TRUE(got.status.ok()) << "get " << i << ": " << got.status;
    EXPECT_TRUE(got.value == (i == kRecords ? big : value_of(i))) << "get " << i;
  }
  EXPECT_TRUE((*results)[at].status.ok());
  EXPECT_TRUE((*results)[at++].exists);
  EXPECT_TRUE((*results)[at++].status.ok());  // the delete
  EXPECT_EQ(ErrorCodeOf((*results)[at++].status), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf((*results)[at++].status), ErrorCode::kNotGranted);
  EXPECT_EQ(ErrorCodeOf((*results)[at++].status), ErrorCode::kFrameTooLarge);
  EXPECT_TRUE((*results)[at].status.ok()) << (*results)[at].status;  // after the unsent one
  EXPECT_TRUE((*results)[at++].exists);
  // The status request after the run is one new (admin) connection; the run added none.
  EXPECT_EQ(ConnectionsTotal() - before, 1u);
  EXPECT_EQ(ErrorCodeOf(client_->GetRecord(kGranted, id_of(kRecords + 1)).status()),
            ErrorCode::kRecordNotFound);  // the unsent put stored nothing
}

TEST_F(ClientScenarioTest, ConnectionReuse) {
  const std::string id = "cc/" + tag_ + "/reuse";
  uint64_t before = ConnectionsTotal();
  for (int n = 0; n < 10; ++n) {
    ASSERT_TRUE(client_->PutRecord(kGranted, id, std::to_string(n)).ok());
    EXPECT_EQ(client_->GetRecord(kGranted, id).value_or(""), std::to_string(n));
  }
  // The status request after the calls is one new (admin) connection; the calls add none.
  EXPECT_EQ(ConnectionsTotal() - before, 1u);
}

TEST_F(ClientScenarioTest, DaemonGone) {
  const std::string id = "cc/" + tag_ + "/gone";
  ASSERT_TRUE(client_->PutRecord(kGranted, id, "before").ok());
  ASSERT_TRUE(daemon_->Stop());
  absl::Status gone = client_->GetRecord(kGranted, id).status();
  EXPECT_EQ(ErrorCodeOf(gone), ErrorCode::kDaemonUnavailable) << gone;
  EXPECT_NE(gone.message().find(daemon_->data_socket()), std::string::npos) << gone;
  EXPECT_EQ(ErrorCodeOf(Client::Connect(daemon_->data_socket()).status()),
            ErrorCode::kDaemonUnavailable);
  ASSERT_TRUE(daemon_->Start());
  EXPECT_EQ(client_->GetRecord(kGranted, id).value_or(""), "before");
}

TEST(ClientScenarioListTest, EveryListedScenarioIsImplemented) {
  std::ifstream listing(COFFER_CLIENT_SCENARIOS);
  ASSERT_TRUE(listing) << "cannot read " << COFFER_CLIENT_SCENARIOS;
  std::set<std::string> listed;
  for (std::string line; std::getline(listing, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string name;
    words >> name;
    listed.insert(CamelCase(name));
  }
  EXPECT_GE(listed.size(), 8u);
  std::set<std::string> implemented;
  const ::testing::UnitTest& tests = *::testing::UnitTest::GetInstance();
  for (int s = 0; s < tests.total_test_suite_count(); ++s) {
    const ::testing::TestSuite& suite = *tests.GetTestSuite(s);
    if (std::string(suite.name()) != kSuite) continue;
    for (int t = 0; t < suite.total_test_count(); ++t) {
      implemented.insert(suite.GetTestInfo(t)->name());
    }
  }
  for (const std::string& name : listed) {
    EXPECT_EQ(implemented.count(name), 1u)
        << "scenario without a TEST_F(" << kSuite << ", " << name << ")";
  }
  for (const std::string& name : implemented) {
    EXPECT_EQ(listed.count(name), 1u) << kSuite << "." << name << " is not in scenarios.txt";
  }
}

}  // namespace
}  // namespace coffer::client
