// Issue 18 item 1, batches, against a running cofferd (test-cofferd, fresh SoftHSM2 token, real
// RocksDB, real sockets): record_put_many and record_get_many serve each item as record_put and
// record_get would, with a result per item in request order, one access audit entry per item,
// and fail as a whole only for what concerns the whole batch (its size, its dataset); a reply
// that would pass the frame limit answers the rest BATCH_REPLY_FULL; quotas hold per item; the
// rate limit charges a batch (records or pseudonyms) one request per item.

#include <unistd.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "nlohmann/json.hpp"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/one_dataset_daemon.h"

namespace coffer {
namespace {

using ::coffer::client::Client;
using ::coffer::testing::KeyctlResult;
using json = nlohmann::json;

constexpr char kDataset[] = "crm/batch";

class BatchTest : public coffer::testing::OneDatasetDaemonTest {
 protected:
  // Batches run on the reactor (window 50 ms); the access entries are checked through
  // `keyctl audit search`, which writes what is queued first (without it, entries younger
  // than the window would be missing).
  BatchTest() : OneDatasetDaemonTest("cofferd-batch", kDataset, testing::kReactorRequestsConfig) {}

  // (kind, result code) -> access entries of the dataset, each checked to name one record.
  std::map<std::pair<std::string, int>, int> AccessEntries() {
    KeyctlResult trail =
        Run("--json audit search --dataset " + std::string(kDataset) + " --limit 10000");
    EXPECT_EQ(trail.exit_code, 0) << trail.err;
    std::map<std::pair<std::string, int>, int> counted;
    for (const json& e : trail.JsonOrEmpty().value("entries", json::array())) {
      const std::string kind = e.value("kind", "");
      if (kind.rfind("ACCESS_", 0) != 0) continue;
      EXPECT_EQ(e.value("record_count", 0), 1) << e.dump();
      ++counted[{kind, e.value("result_code", 0)}];
    }
    return counted;
  }
};

TEST_F(BatchTest, EachItemIsServedAndAuditedOnItsOwnInRequestOrder) {
  std::unique_ptr<Client> c = Connect();
  ASSERT_NE(c, nullptr);
  auto put = c->PutRecords(kDataset, {{"contact-a", "alice"},
                                      {"contact-b", "bob"},
                                      {std::string(1025, 'x'), "too long an id"},
                                      {"contact-c", "carol"}});
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), 4u);
  EXPECT_TRUE((*put)[0].ok()) << (*put)[0];
  EXPECT_TRUE((*put)[1].ok()) << (*put)[1];
  EXPECT_EQ(ErrorCodeOf((*put)[2]), ErrorCode::kIdTooLong);
  EXPECT_TRUE((*put)[3].ok()) << (*put)[3];
  // A failed item does not stop the rest, and what was written reads back singly.
  EXPECT_EQ(c->GetRecord(kDataset, "contact-c").value_or(""), "carol");

  auto got = c->GetRecords(kDataset, {"contact-c", "contact-missing", "contact-a", "contact-a"});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 4u);
  EXPECT_EQ((*got)[0].value_or(""), "carol");
  EXPECT_EQ(ErrorCodeOf((*got)[1].status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ((*got)[2].value_or(""), "alice");
  EXPECT_EQ((*got)[3].value_or(""), "alice");

  // One access entry per item, with the item's own result.
  std::map<std::pair<std::string, int>, int> entries = AccessEntries();
  const int id_too_long = static_cast<int>(ErrorCode::kIdTooLong);
  const int not_found = static_cast<int>(ErrorCode::kRecordNotFound);
  EXPECT_EQ((entries[{"ACCESS_WRITE", 0}]), 3);
  EXPECT_EQ((entries[{"ACCESS_WRITE", id_too_long}]), 1);
  EXPECT_EQ((entries[{"ACCESS_READ", 0}]), 1 + 3);  // the single get and three batch items
  EXPECT_EQ((entries[{"ACCESS_READ", not_found}]), 1);
}

TEST_F(BatchTest, AnEmptyOrOversizedBatchIsRefusedWholeAndWritesNothing) {
  std::unique_ptr<Client> c = Connect();
  ASSERT_NE(c, nullptr);
  std::vector<Client::RecordWrite> items;
  for (int i = 0; i < 1001; ++i) items.push_back({"id-" + std::to_string(i), "v"});
  auto refused = c->PutRecords(kDataset, items);
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kMalformedRequest) << refused.status();
  EXPECT_NE(refused.status().message().find("1000"), std::string::npos) << refused.status();
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, "id-0").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(ErrorCodeOf(c->PutRecords(kDataset, {}).status()), ErrorCode::kMalformedRequest);
  EXPECT_EQ(ErrorCodeOf(c->GetRecords(kDataset, {}).status()), ErrorCode::kMalformedRequest);
  // 1,000 is allowed.
  items.pop_back();
  auto written = c->PutRecords(kDataset, items);
  ASSERT_TRUE(written.ok()) << written.status();
  for (const absl::Status& item : *written) EXPECT_TRUE(item.ok()) << item;
  // A dataset that does not exist fails the whole batch (this uid's grant names every dataset).
  EXPECT_EQ(ErrorCodeOf(c->GetRecords("crm/no-such", {"id-0"}).status()),
            ErrorCode::kDatasetNotFound);
}

TEST_F(BatchTest, AReplyThatWouldPassTheFrameLimitAnswersTheRestBatchReplyFull) {
  std::unique_ptr<Client> c = Connect();
  ASSERT_NE(c, nullptr);
  // Six values of 1 MiB: the 4 MiB + 64 KiB frame holds four of them.
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    ids.push_back("scan-" + std::to_string(i));
    ASSERT_TRUE(
        c->PutRecord(kDataset, ids.back(), std::string(1 << 20, static_cast<char>('a' + i))).ok());
  }
  auto got = c->GetRecords(kDataset, ids);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 6u);
  size_t served = 0;
  while (served < got->size() && (*got)[served].ok()) ++served;
  EXPECT_EQ(served, 4u);
  for (size_t i = 0; i < served; ++i) {
    EXPECT_EQ((*got)[i].value_or(""), std::string(1 << 20, static_cast<char>('a' + i)));
  }
  for (size_t i = served; i < got->size(); ++i) {
    EXPECT_EQ(ErrorCodeOf((*got)[i].status()), ErrorCode::kBatchReplyFull) << i;
  }
  // Asked again, the rest come.
  ASSERT_EQ(ids.size() - served, 2u);
  auto rest = c->GetRecords(kDataset, std::vector<std::string>(ids.begin() + 4, ids.end()));
  ASSERT_TRUE(rest.ok()) << rest.status();
  for (size_t i = 0; i < rest->size(); ++i) {
    EXPECT_EQ((*rest)[i].value_or(""), std::string(1 << 20, static_cast<char>('e' + i)));
  }
}

TEST_F(BatchTest, AQuotaRefusesTheItemsBeyondItAndKeepsTheOnesBefore) {
  KeyctlResult set = Run("policy set " + std::string(kDataset) + " --max-records 2");
  ASSERT_EQ(set.exit_code, 0) << set.err << set.out;
  std::unique_ptr<Client> c = Connect();
  ASSERT_NE(c, nullptr);
  auto put = c->PutRecords(kDataset, {{"a", "1"}, {"b", "2"}, {"c", "3"}, {"a", "changed"}});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_TRUE((*put)[0].ok());
  EXPECT_TRUE((*put)[1].ok());
  EXPECT_EQ(ErrorCodeOf((*put)[2]), ErrorCode::kQuotaExceeded);
  EXPECT_TRUE((*put)[3].ok()) << "an overwrite adds no record";
  EXPECT_EQ(c->GetRecord(kDataset, "a").value_or(""), "changed");
  EXPECT_EQ(ErrorCodeOf(c->GetRecord(kDataset, "c").status()), ErrorCode::kRecordNotFound);
}

// A cofferd whose rate limit allows 100 requests in a burst and then (in effect) none — no
// refill during a test — with dataset kDataset, and a client of its data socket.
class BatchRateLimit : public ::testing::Test {
 protected:
  // `grants`: configuration text added to the harness's (which grants READ, WRITE, DELETE).
  void Start(const std::string& name, const std::string& grants = "") {
    coffer::testing::CofferdOptions options;
    options.name = name;
    options.extra_config = [grants](const std::string&) {
      return "rate_limit { default_limit { requests_per_second: 0.001 burst: 100 } }\n" + grants;
    };
    daemon_ = coffer::testing::Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    KeyctlResult created =
        coffer::testing::Keyctl(daemon_->admin_socket(), "dataset create " + std::string(kDataset));
    ASSERT_EQ(created.exit_code, 0) << created.err;
    auto c = Client::Connect(daemon_->data_socket());
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }

  std::unique_ptr<coffer::testing::Cofferd> daemon_;
  std::unique_ptr<Client> client_;
};

// The rate limit counts a batch as one request per item: a batch is admitted when the caller's
// bucket holds a token and is charged in full, so the next request waits out the debt.
TEST_F(BatchRateLimit, ABatchIsChargedOneRequestPerItem) {
  ASSERT_NO_FATAL_FAILURE(Start("cofferd-batch-rate"));
  std::vector<std::string> ids(1000, "contact");
  auto got = client_->GetRecords(kDataset, ids);  // admitted: the bucket holds tokens
  ASSERT_TRUE(got.ok()) << got.status();
  absl::StatusOr<std::string> next = client_->GetRecord(kDataset, "contact");
  EXPECT_EQ(ErrorCodeOf(next.status()), ErrorCode::kSlowDown) << next.status();
}

// Pseudonym batches (1 to 1,000 identifiers or tokens) are charged the same way: one request per
// identifier.
TEST_F(BatchRateLimit, APseudonymBatchIsChargedOneRequestPerIdentifier) {
  ASSERT_NO_FATAL_FAILURE(Start("cofferd-batch-rate-pseudonyms",
                                "grants { principals { uid: " + std::to_string(geteuid()) +
                                    " } datasets: \"*\" rights: PSEUDONYMIZE }\n"));
  auto few = client_->Pseudonymize(kDataset, std::vector<std::string>(50, "jane@example.com"));
  ASSERT_TRUE(few.ok()) << few.status();  // 50 of the 100 tokens
  auto many = client_->Pseudonymize(kDataset, std::vector<std::string>(1000, "jane@example.com"));
  ASSERT_TRUE(many.ok()) << many.status();  // admitted: the bucket still held tokens
  auto next = client_->Pseudonymize(kDataset, {"jane@example.com"});
  EXPECT_EQ(ErrorCodeOf(next.status()), ErrorCode::kSlowDown) << next.status();
}

}  // namespace
}  // namespace coffer
