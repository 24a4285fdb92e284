// Issue 20 item 10 against a running cofferd (test-cofferd, fresh SoftHSM2 token, real RocksDB,
// real sockets, a real HTTP scrape): the Prometheus metrics — requests per operation and socket,
// error answers and refusals by code, the key cache, the HSM, the audit batches, the transport and
// the jobs — on the loopback endpoint named by metrics_listen and through keyctl metrics; no
// dataset name in them; no endpoint unless configured. Also the endpoint's and the observer's
// edges in process.

#include "kms/cofferd/metrics.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/client/client.h"
#include "kms/ops/operation_table.h"
#include "tests/kms/cofferd/cofferd_harness.h"

namespace coffer {
namespace {

using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Keyctl;
using ::coffer::testing::KeyctlResult;

constexpr char kDataset[] = "crm/contacts-metrics";

// The value of the series written exactly as `series` (name and labels as the text has them),
// or nullopt when the text has no such line.
std::optional<double> Sample(const std::string& text, const std::string& series) {
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(series + " ", 0) == 0) return std::strtod(line.c_str() + series.size(), nullptr);
  }
  return std::nullopt;
}

// GET /metrics over TCP from 127.0.0.1:`port`: the whole HTTP answer, "" when it cannot connect.
std::string Scrape(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string answer;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) == 0) {
    const std::string request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
        static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      for (ssize_t n; (n = ::recv(fd, buffer, sizeof(buffer), 0)) > 0;) answer.append(buffer, n);
    }
  }
  ::close(fd);
  return answer;
}

std::string Count(const std::string& operation, const std::string& socket) {
  return "coffer_request_duration_seconds_count{operation=\"" + operation + "\",socket=\"" +
         socket + "\"}";
}

class MetricsTest : public ::testing::Test {
 protected:
  void StartDaemon(bool endpoint) {
    CofferdOptions options;
    options.name = "cofferd-metrics";
    if (endpoint) {
      options.extra_config = [](const std::string&) {
        return std::string("metrics_listen: \"127.0.0.1:0\"\n");
      };
    }
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr);
    KeyctlResult created = Run("dataset create " + std::string(kDataset) + " --json");
    ASSERT_EQ(created.exit_code, 0) << created.err;
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
  }
  KeyctlResult Run(const std::string& args) { return Keyctl(daemon_->admin_socket(), args); }
  std::string MetricsEndpoint() {
    KeyctlResult status = Run("--json status");
    EXPECT_EQ(status.exit_code, 0) << status.err;
    return status.JsonOrEmpty().value("metrics_endpoint", "");
  }

  std::unique_ptr<Cofferd> daemon_;
};

TEST_F(MetricsTest, RequestsRefusalsAndPartsAreCountedOnTheEndpointAndByKeyctl) {
  StartDaemon(/*endpoint=*/true);
  const std::string endpoint = MetricsEndpoint();
  ASSERT_EQ(endpoint.rfind("127.0.0.1:", 0), 0u) << endpoint;
  const int port = std::stoi(endpoint.substr(endpoint.find(':') + 1));
  ASSERT_GT(port, 0);

  auto c = client::Client::Connect(daemon_->data_socket());
  ASSERT_TRUE(c.ok()) << c.status();
  for (const char* id : {"contact-1", "contact-2", "contact-3"}) {
    ASSERT_TRUE((*c)->PutRecord(kDataset, id, "a confidential value").ok());
  }
  ASSERT_TRUE((*c)->GetRecord(kDataset, "contact-1").ok());
  ASSERT_TRUE((*c)->GetRecord(kDataset, "contact-2").ok());
  EXPECT_EQ(ErrorCodeOf((*c)->GetRecord(kDataset, "no-such-contact").status()),
            ErrorCode::kRecordNotFound);
  // The suite's grant has no PSEUDONYMIZE right: a refusal.
  EXPECT_EQ(ErrorCodeOf((*c)->Pseudonymize(kDataset, {"alice@example.com"}).status()),
            ErrorCode::kNotGranted);

  KeyctlResult printed = Run("metrics");
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  const std::string& text = printed.out;
  EXPECT_EQ(Sample(text, Count("record_put", "data")), 3) << text;
  EXPECT_EQ(Sample(text, Count("record_get", "data")), 3) << text;
  EXPECT_EQ(Sample(text,
                   "coffer_request_errors_total{code=\"RECORD_NOT_FOUND\",operation=\"record_get\","
                   "socket=\"data\"}"),
            1)
      << text;
  EXPECT_EQ(Sample(text, "coffer_refusals_total{code=\"NOT_GRANTED\",socket=\"data\"}"), 1) << text;
  EXPECT_EQ(Sample(text,
                   "coffer_request_errors_total{code=\"NOT_GRANTED\",operation="
                   "\"pseudonymize\",socket=\"data\"}"),
            1)
      << text;
  // Admin requests too (dataset_create, status), with their latency buckets.
  EXPECT_EQ(Sample(text, Count("dataset_create", "admin")), 1) << text;
  EXPECT_GE(Sample(text, Count("status", "admin")).value_or(0), 1) << text;
  EXPECT_TRUE(Sample(text,
                     "coffer_request_duration_seconds_bucket{operation=\"record_put\","
                     "socket=\"data\",le=\"+Inf\"}")
                  .has_value())
      << text;
  // The parts: three puts and three gets of one dataset's key hit the cache after its first
  // unwrap, which the HSM counted; access events went out in audited batches.
  EXPECT_GE(Sample(text, "coffer_key_cache_hits_total").value_or(0), 4) << text;
  EXPECT_GE(Sample(text, "coffer_key_cache_misses_total").value_or(0), 1) << text;
  EXPECT_GT(Sample(text, "coffer_hsm_operations_total").value_or(0), 0) << text;
  EXPECT_EQ(Sample(text, "coffer_hsm_connected"), 1) << text;
  EXPECT_GE(Sample(text, "coffer_audit_batch_events_sum").value_or(0), 6) << text;
  EXPECT_GE(Sample(text, "coffer_audit_batch_commit_seconds_count").value_or(0), 1) << text;
  EXPECT_EQ(Sample(text, "coffer_audit_writable"), 1) << text;
  EXPECT_GE(Sample(text, "coffer_connections_open").value_or(0), 1) << text;
  EXPECT_NE(text.find("coffer_job_done_items{id=\""), std::string::npos) << text;
  // Nothing names a dataset or carries a value.
  EXPECT_EQ(text.find("crm/"), std::string::npos) << text;
  EXPECT_EQ(text.find("confidential"), std::string::npos) << text;

  // The endpoint serves the same series over HTTP. (The keyctl metrics call itself is not
  // checked here: a request is counted when its handler returns, after its reply was sent, so a
  // scrape right behind the reply may not hold it yet.)
  const std::string scraped = Scrape(port);
  ASSERT_EQ(scraped.rfind("HTTP/1.1 200", 0), 0u) << scraped;
  EXPECT_EQ(Sample(scraped, Count("record_put", "data")), 3) << scraped;
  EXPECT_EQ(Sample(scraped, Count("dataset_create", "admin")), 1) << scraped;
  EXPECT_EQ(Sample(scraped, "coffer_refusals_total{code=\"NOT_GRANTED\",socket=\"data\"}"), 1);
  EXPECT_EQ(scraped.find("crm/"), std::string::npos);

  // Stopped, the daemon no longer listens there.
  daemon_.reset();
  EXPECT_EQ(Scrape(port), "");
}

TEST_F(MetricsTest, WithoutMetricsListenThereIsNoEndpointAndKeyctlStillPrints) {
  StartDaemon(/*endpoint=*/false);
  EXPECT_EQ(MetricsEndpoint(), "");
  KeyctlResult printed = Run("metrics");
  ASSERT_EQ(printed.exit_code, 0) << printed.err;
  EXPECT_EQ(Sample(printed.out, Count("dataset_create", "admin")), 1) << printed.out;
  KeyctlResult json = Run("--json metrics");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.JsonOrEmpty().value("text", "").find("coffer_hsm_operations_total"),
            std::string::npos)
      << json.out;
}

TEST(MetricsEndpointTest, ABusyPortIsAClearError) {
  cofferd::DaemonMetrics metrics(daemon::OperationTable::Default());
  auto first = cofferd::MetricsEndpoint::Start("127.0.0.1:0", metrics);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string taken = (*first)->endpoint();
  auto second = cofferd::MetricsEndpoint::Start(taken, metrics);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorCodeOf(second.status()), ErrorCode::kIoError);
  EXPECT_NE(second.status().message().find(taken), std::string::npos) << second.status();
}

TEST(DaemonMetricsTest, OperationsWithoutARowAndRefusalsAreCountedApart) {
  cofferd::DaemonMetrics metrics(daemon::OperationTable::Default());
  metrics.Handled(coffer::v1::Request::OP_NOT_SET, daemon::SocketKind::kData,
                  ErrorCode::kMalformedRequest, std::chrono::microseconds(20));
  metrics.Handled(coffer::v1::Request::kRecordGet, daemon::SocketKind::kAdmin,
                  ErrorCode::kWrongSocket, std::chrono::microseconds(20));
  metrics.Refused(daemon::SocketKind::kData, ErrorCode::kServerBusy);
  metrics.Refused(daemon::SocketKind::kData, ErrorCode::kServerBusy);
  metrics.AuditBatchWritten(7, std::chrono::milliseconds(2));
  const std::string text = metrics.Text();
  EXPECT_EQ(Sample(text, Count("unknown", "data")), 1) << text;
  EXPECT_EQ(Sample(text,
                   "coffer_request_errors_total{code=\"MALFORMED_REQUEST\",operation="
                   "\"unknown\",socket=\"data\"}"),
            1)
      << text;
  EXPECT_EQ(Sample(text, Count("record_get", "admin")), 1) << text;
  EXPECT_EQ(Sample(text, Count("record_get", "data")), 0) << text;
  EXPECT_EQ(Sample(text, "coffer_refusals_total{code=\"SERVER_BUSY\",socket=\"data\"}"), 2);
  EXPECT_EQ(Sample(text, "coffer_audit_batch_events_sum"), 7) << text;
  // No source set: none of the parts' figures.
  EXPECT_EQ(text.find("coffer_hsm_operations_total"), std::string::npos) << text;
}

}  // namespace
}  // namespace coffer
