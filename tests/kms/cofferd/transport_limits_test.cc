// Issue 18 item 0, "a transport no caller can monopolise", against a running cofferd
// (test-cofferd on a fresh token, tests/kms/cofferd/cofferd_harness.h): slow readers hold no
// worker, a caller's connections and requests are capped while the admin socket keeps capacity
// of its own, refusals in a row close the connection, and input buffers grow only as bytes
// arrive. Each test configures small limits so that its daemon reaches them at once; waits are
// bounded safety nets (kRawIoWait, tests/kms/cofferd/raw_connection.h), never measures. The
// daemon's own gauges (status.transport, kms/server/server.h ServerStats) say what it holds.
//
// Run as root (CI, this sandbox) the daemon runs as `nobody` and other callers fork and drop to
// uids of their own; run as another user, the tests that need other uids skip.

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coffer/v1/service.pb.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"
#include "kms/audit/verifier.h"
#include "kms/client/client.h"
#include "tests/kms/cofferd/cofferd_harness.h"
#include "tests/kms/cofferd/raw_connection.h"

namespace coffer {
namespace {

namespace pb = ::coffer::v1;
using ::coffer::testing::Cofferd;
using ::coffer::testing::CofferdOptions;
using ::coffer::testing::Dial;
using ::coffer::testing::RawConnection;
using ::coffer::testing::RunAsUid;

constexpr char kDataset[] = "crm/limits";
constexpr uid_t kNoGrantUid = 41102;  // no grant at all
constexpr uid_t kReaderUid = 41103;   // READ on every dataset

// The response's error code; -1 when the daemon closed the connection, -2 on other failures.
int CodeOf(const absl::StatusOr<pb::Response>& response) {
  if (!response.ok()) {
    return ErrorCodeOf(response.status()) == ErrorCode::kDaemonUnavailable ? -1 : -2;
  }
  return response->error().code();
}

pb::Request RecordGet(const std::string& id) {
  pb::Request request;
  request.set_request_id(7);
  request.mutable_record_get()->set_dataset(kDataset);
  request.mutable_record_get()->set_id(id);
  return request;
}

pb::Request AttachmentGet(const std::string& name) {
  pb::Request request;
  request.set_request_id(9);
  request.mutable_attachment_get()->set_dataset(kDataset);
  request.mutable_attachment_get()->set_name(name);
  return request;
}

// A child process, dropped to `uid` (with the daemon's group, for the data socket), that runs
// `body` and then holds whatever it opened until Release. Needs root.
class HeldChild {
 public:
  HeldChild(uid_t uid, gid_t group, const std::function<std::string()>& body) {
    int result[2];
    int release[2];
    if (pipe(result) != 0 || pipe(release) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      close(result[0]);
      close(release[1]);
      if (setgroups(1, &group) != 0 || setresgid(uid, uid, uid) != 0 ||
          setresuid(uid, uid, uid) != 0) {
        _exit(3);
      }
      std::string out = body() + "\n";
      if (write(result[1], out.data(), out.size()) != static_cast<ssize_t>(out.size())) _exit(4);
      char byte;
      while (read(release[0], &byte, 1) > 0) {
      }
      _exit(0);  // the held connections close with the process
    }
    close(result[1]);
    close(release[0]);
    result_fd_ = result[0];
    release_fd_ = release[1];
  }
  HeldChild(const HeldChild&) = delete;
  HeldChild& operator=(const HeldChild&) = delete;
  ~HeldChild() { Release(); }

  // What the body returned, once it returned ("" if the child failed).
  std::string Result() {
    std::string out;
    char c;
    while (result_fd_ >= 0 && read(result_fd_, &c, 1) == 1 && c != '\n') out.push_back(c);
    return out;
  }
  void Release() {
    if (release_fd_ >= 0) close(release_fd_);
    if (result_fd_ >= 0) close(result_fd_);
    release_fd_ = result_fd_ = -1;
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
  int result_fd_ = -1;
  int release_fd_ = -1;
};

class TransportLimitsTest : public ::testing::Test {
 protected:
  // Starts a daemon whose `limits` block is `limits` and creates kDataset. With the access
  // audit's window at 0 every request runs on a worker; above 0 short data requests run on the
  // reactor (docs/daemon.md, "Request path").
  void StartDaemon(const std::string& limits, uint32_t audit_window_ms = 0) {
    CofferdOptions options;
    options.name = "cofferd-limits";
    options.config_body = [limits, audit_window_ms](const std::string&, const std::string&) {
      const std::string me = std::to_string(geteuid());
      std::ostringstream out;
      out << "limits { " << limits << " }\n"
          << "access_audit { crash_loss_window_millis: " << audit_window_ms << " }\n"
          << "grants { principals { uid: " << me
          << " } datasets: \"*\" rights: READ rights: WRITE rights: DELETE }\n"
          << "grants { principals { uid: " << kReaderUid << " } datasets: \"*\" rights: READ }\n"
          << "admins { uid: " << me << " }\n"
          << "mfa { required: false }\n"
          << "rate_limit { default_limit { requests_per_second: 1000000 burst: 1000000 } }\n";
      return out.str();
    };
    daemon_ = Cofferd::Create(std::move(options));
    ASSERT_NE(daemon_, nullptr) << "could not prepare the state directory, token or daemon";
    pb::Request create;
    create.mutable_dataset_create()->set_name(kDataset);
    auto created = Admin(create);
    ASSERT_TRUE(created.ok()) << created.status();
    ASSERT_FALSE(created->has_error()) << created->error().DebugString();
  }
  void TearDown() override {
    if (HasFailure() && daemon_) std::cerr << "cofferd's log:\n" << daemon_->Logs();
    if (daemon_ && daemon_->pid() > 0) {
      EXPECT_EQ(daemon_->SignalAndWait(SIGTERM), 0);
    }
  }

  absl::StatusOr<pb::Response> Admin(const pb::Request& request) {
    RawConnection admin(daemon_->admin_socket());
    return admin.Call(request);
  }
  // Twelve connections ask for a 1 MiB value and never read; others are served meanwhile, the
  // replies wait in the connections' output, no thread waits for them, and a late reader gets
  // its whole reply.
  void ExpectSlowReadersOfLargeValuesHoldNothing();

  // The daemon's transport gauges and counters, over the admin socket.
  absl::StatusOr<pb::TransportStatus> Transport() {
    pb::Request status;
    status.set_request_id(1);
    status.mutable_status();
    COFFER_ASSIGN_OR_RETURN(pb::Response response, Admin(status));
    if (response.has_error()) return MakeError(ErrorCode::kInternal, response.error().message());
    return response.status().transport();
  }
  std::unique_ptr<client::Client> Connect() {
    auto c = client::Client::Connect(daemon_->data_socket());
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  std::unique_ptr<Cofferd> daemon_;
};

// Hole 1: a reply used to hold its worker until the client read it. Two workers, one of them
// reserved for the admin socket, every request on them (workers_only): twelve connections ask
// for a 1 MiB value and never read; the one data worker, and the admin socket, still serve
// others (on the old transport both workers stay blocked for the 600 s request timeout and
// these calls hit the safety net).
TEST_F(TransportLimitsTest, SlowReadersOfLargeValuesHoldNoWorker) {
  StartDaemon(
      "workers: 2 admin_reserved_workers: 1 request_timeout_seconds: 600 "
      "idle_timeout_seconds: 600 workers_only: true");
  ExpectSlowReadersOfLargeValuesHoldNothing();
  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->requests_inline(), 0u);
}

// The same at window 0 with the gets on the reactor: each parks until its access entry is
// durable, then its reply waits in the connection's output like any other.
TEST_F(TransportLimitsTest, SlowReadersOfLargeValuesHoldNoReactorAtWindowZero) {
  StartDaemon(
      "workers: 2 admin_reserved_workers: 1 request_timeout_seconds: 600 "
      "idle_timeout_seconds: 600");
  ExpectSlowReadersOfLargeValuesHoldNothing();
  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->requests_inline(), 26u);
  EXPECT_EQ(transport->requests_parked(), 26u);
}

// Window 0 means no acknowledged access unaudited, and stays so on the reactor (issue 18 item
// 1: a request waiting for its audit batch parks and the thread moves on). After each reply,
// the access entries in the audit log's files — read from disk here, with no flush — number
// the accesses acknowledged so far; single requests, a batch (one entry per item) and eight
// concurrent clients all parked, none ran on a worker.
TEST_F(TransportLimitsTest, AtWindowZeroNoReplyLeavesBeforeItsAccessEntryIsOnDisk) {
  StartDaemon("");
  auto id_of = [](const char* prefix, int i) { return absl::StrCat(prefix, i); };
  auto accesses_on_disk = [&]() -> size_t {
    auto entries = kms::audit::ReadAuditEntries(daemon_->dir() + "/audit");
    EXPECT_TRUE(entries.ok()) << entries.status();
    if (!entries.ok()) return 0;
    size_t count = 0;
    for (const auto& entry : *entries) {
      if (entry.kind() == ::coffer::audit::v1::ACCESS_READ ||
          entry.kind() == ::coffer::audit::v1::ACCESS_WRITE) {
        ++count;
      }
    }
    return count;
  };
  auto client = Connect();
  ASSERT_NE(client, nullptr);
  const size_t before = accesses_on_disk();
  size_t acknowledged = 0;
  for (int i = 0; i < 10; ++i) {
    const std::string id = id_of("w0-", i);
    ASSERT_TRUE(client->PutRecord(kDataset, id, "value").ok());
    ASSERT_EQ(accesses_on_disk(), before + ++acknowledged) << "put " << i;
    auto got = client->GetRecord(kDataset, id);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(accesses_on_disk(), before + ++acknowledged) << "get " << i;
  }
  pb::Request batch;
  batch.mutable_record_get_many()->set_dataset(kDataset);
  for (int i = 0; i < 10; ++i) batch.mutable_record_get_many()->add_ids(id_of("w0-", i));
  RawConnection raw(daemon_->data_socket());
  ASSERT_TRUE(raw.Send(batch).ok());
  auto reply = raw.Receive();
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_EQ(reply->record_get_many().results_size(), 10);
  acknowledged += 10;
  EXPECT_EQ(accesses_on_disk(), before + acknowledged);

  constexpr int kClients = 8;
  constexpr int kPuts = 25;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      auto c = Connect();
      for (int i = 0; c != nullptr && i < kPuts; ++i) {
        if (!c->PutRecord(kDataset, id_of("c-", t * kPuts + i), "v").ok()) {
          ++failures;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  acknowledged += kClients * kPuts;
  EXPECT_EQ(accesses_on_disk(), before + acknowledged);

  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  const uint64_t data_requests = 2 * 10 + 1 + kClients * kPuts;
  EXPECT_EQ(transport->requests_inline(), data_requests);
  EXPECT_EQ(transport->requests_parked(), data_requests);
}

// The same with the gets run to completion on the reactor (window 50 ms): the replies the
// readers do not take stay in their connections' output, and the reactor goes on serving.
TEST_F(TransportLimitsTest, SlowReadersOfLargeValuesHoldNoReactor) {
  StartDaemon(
      "workers: 2 admin_reserved_workers: 1 request_timeout_seconds: 600 "
      "idle_timeout_seconds: 600",
      /*audit_window_ms=*/50);
  ExpectSlowReadersOfLargeValuesHoldNothing();
  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  // 2 puts and 12 + 12 gets ran on the reactor; the admin requests on a worker.
  EXPECT_EQ(transport->requests_inline(), 26u);
  EXPECT_GT(transport->requests(), transport->requests_inline());
}

// Pipelining (issue 18 item 1): a client sends 32 gets at once on one connection and reads the
// replies afterwards, in order. Backpressure: each reply (1 MiB) is larger than the socket
// takes, so while the first is unsent the daemon reads no further frame of that connection —
// exactly one get has run when its output is first seen buffered.
TEST_F(TransportLimitsTest, PipelinedGetsAreAnsweredInOrderOneReplyAtATime) {
  StartDaemon("request_timeout_seconds: 600 idle_timeout_seconds: 600", /*audit_window_ms=*/50);
  constexpr int kGets = 32;
  auto value_of = [](int i) {
    return std::string(size_t{1} << 20, static_cast<char>('a' + i % 26));
  };
  auto id_of = [](int i) { return absl::StrCat("p", i); };
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  for (int i = 0; i < kGets; ++i) {
    ASSERT_TRUE(writer->PutRecord(kDataset, id_of(i), value_of(i)).ok());
  }
  std::string frames;
  for (int i = 0; i < kGets; ++i) {
    pb::Request get = RecordGet(id_of(i));
    get.set_request_id(static_cast<uint64_t>(i) + 1);
    api::AppendFrame(get, &frames);
  }
  RawConnection pipelined(daemon_->data_socket());
  ASSERT_TRUE(pipelined.SendBytes(frames).ok());

  absl::StatusOr<pb::TransportStatus> transport;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    transport = Transport();
    return transport.ok() && transport->buffered_output_bytes() > 0;
  })) << "the first reply is not held back";
  EXPECT_EQ(transport->requests_inline(), uint64_t{kGets} + 1);  // the puts, and one get

  for (int i = 0; i < kGets; ++i) {
    auto reply = pipelined.Receive();
    ASSERT_TRUE(reply.ok()) << reply.status();
    ASSERT_EQ(reply->request_id(), static_cast<uint64_t>(i) + 1);
    ASSERT_FALSE(reply->has_error()) << reply->error().DebugString();
    EXPECT_TRUE(reply->record_get().value() == value_of(i))
        << "reply " << i << " has another value";
  }
  transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->requests_inline(), uint64_t{2 * kGets});
}

// limits.workers_only turns the reactor path off, whatever the window.
TEST_F(TransportLimitsTest, WorkersOnlyRunsNoRequestOnTheReactor) {
  StartDaemon("workers_only: true", /*audit_window_ms=*/50);
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->PutRecord(kDataset, "id", "v").ok());
  auto got = writer->GetRecord(kDataset, "id");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_GE(transport->requests(), 3u);  // dataset_create, put, get (and this status)
  EXPECT_EQ(transport->requests_inline(), 0u);
}

void TransportLimitsTest::ExpectSlowReadersOfLargeValuesHoldNothing() {
  const std::string value(size_t{1} << 20, 'v');
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->PutRecord(kDataset, "big", value).ok());
  ASSERT_TRUE(writer->PutRecord(kDataset, "small", "s").ok());

  std::vector<std::unique_ptr<RawConnection>> slow;
  for (int i = 0; i < 12; ++i) {
    slow.push_back(std::make_unique<RawConnection>(daemon_->data_socket()));
    ASSERT_TRUE(slow.back()->ok());
    ASSERT_TRUE(slow.back()->Send(RecordGet("big")).ok());
  }

  // A data request on another connection, and an admin request, are served meanwhile.
  RawConnection other(daemon_->data_socket());
  for (int i = 0; i < 12; ++i) {
    auto got = other.Call(RecordGet("small"));
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_FALSE(got->has_error()) << got->error().DebugString();
    EXPECT_EQ(got->record_get().value(), "s");
  }
  absl::StatusOr<pb::TransportStatus> transport;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    transport = Transport();
    return transport.ok() && transport->buffered_output_bytes() > 0;
  })) << "the slow readers' replies are not buffered";
  // The readers still hold their replies: every worker is free, none is waiting for them.
  EXPECT_EQ(transport->sends_waiting(), 0u);
  std::cout << "slow readers: " << transport->buffered_output_bytes()
            << " reply bytes buffered for them\n";

  // A slow reader that finally reads gets its whole reply.
  auto late = slow.front()->Receive();
  ASSERT_TRUE(late.ok()) << late.status();
  EXPECT_EQ(late->record_get().value().size(), value.size());
}

// Hole 2: any member of the data socket's group, with no grant, could hold every connection
// slot. Twelve slots, two reserved for the admin socket, six per caller: the ungranted uid gets
// six, the test's uid the remaining four data slots, and the admin socket still connects (on
// the old transport the ungranted uid holds all twelve and the admin gets SERVER_BUSY).
TEST_F(TransportLimitsTest, ACallerAtItsConnectionCapIsRefusedAndTheAdminSocketStillConnects) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to another uid";
  StartDaemon(
      "max_connections: 12 admin_reserved_connections: 2 max_connections_per_uid: 6 "
      "idle_timeout_seconds: 600");
  // Each connection is confirmed by a request the daemon answers (NOT_GRANTED keeps it open);
  // SERVER_BUSY, or the connection closed (the refusal may be lost to a reset), means it was
  // refused: the counters below say why.
  auto fill = [](const std::string& socket, std::vector<std::unique_ptr<RawConnection>>* held) {
    for (int i = 0; i < 13; ++i) {
      auto connection = std::make_unique<RawConnection>(socket);
      if (!connection->ok()) return std::string("dial failed");
      int code = CodeOf(connection->Call(RecordGet("nothing")));
      if (code == static_cast<int>(ErrorCode::kServerBusy) || code < 0) break;
      if (code != static_cast<int>(ErrorCode::kNotGranted) &&
          code != static_cast<int>(ErrorCode::kRecordNotFound)) {
        return "unexpected code " + std::to_string(code);
      }
      held->push_back(std::move(connection));
    }
    return std::to_string(held->size());
  };
  std::vector<std::unique_ptr<RawConnection>> ungranted_held;
  HeldChild ungranted(kNoGrantUid, daemon_->daemon_gid(),
                      [&] { return fill(daemon_->data_socket(), &ungranted_held); });
  EXPECT_EQ(ungranted.Result(), "6");

  std::vector<std::unique_ptr<RawConnection>> mine;
  EXPECT_EQ(fill(daemon_->data_socket(), &mine), "4");  // the data socket's share is full

  auto transport = Transport();  // the admin socket keeps its reserved slots
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->busy_uid_connections(), 1u);
  EXPECT_EQ(transport->busy_connection_limit(), 1u);

  ungranted.Release();  // its slots free up
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    RawConnection again(daemon_->data_socket());
    return CodeOf(again.Call(RecordGet("nothing"))) == static_cast<int>(ErrorCode::kRecordNotFound);
  }));
}

// A refused request used to keep its connection open (and reset its idle timer): three
// refusals in a row close it, while requests that merely fail (RECORD_NOT_FOUND) do not.
TEST_F(TransportLimitsTest, RefusalsInARowCloseTheConnection) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to another uid";
  StartDaemon("max_refusals_in_a_row: 3");
  std::string codes = RunAsUid(kNoGrantUid, daemon_->daemon_gid(), [&] {
    RawConnection connection(daemon_->data_socket());
    std::string out;
    for (int i = 0; i < 5; ++i)
      out += std::to_string(CodeOf(connection.Call(RecordGet("x")))) + ",";
    return out;
  });
  EXPECT_EQ(codes, "502,502,502,-1,-1,");  // NOT_GRANTED three times, then closed

  RawConnection mine(daemon_->data_socket());
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(CodeOf(mine.Call(RecordGet("missing"))),
              static_cast<int>(ErrorCode::kRecordNotFound));
  }
  auto transport = Transport();
  ASSERT_TRUE(transport.ok()) << transport.status();
  EXPECT_EQ(transport->closed_after_refusals(), 1u);
}

uint64_t ResidentBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

// Hole 3: a declared frame size used to be allocated (and zero-filled) as soon as its size
// prefix arrived. 200 connections send only the prefix of a 4 MiB frame; once the daemon has
// read every prefix (its bytes_received counter says so, exactly), its input buffers hold a
// few KiB per connection (the old transport: 4 MiB each, about 800 MiB).
TEST_F(TransportLimitsTest, PrefixOnlyConnectionsBufferOnlyWhatArrived) {
  StartDaemon(
      "max_connections: 400 max_connections_per_uid: 300 request_timeout_seconds: 600 "
      "idle_timeout_seconds: 600");
  constexpr int kConnections = 200;
  const std::string prefix("\x80\x80\x80\x02", 4);  // varint 4 MiB
  pb::Request status;
  status.set_request_id(1);
  status.mutable_status();
  std::string status_frame;
  api::AppendFrame(status, &status_frame);

  auto before = Transport();
  ASSERT_TRUE(before.ok()) << before.status();
  // bytes_received counts the status request it answers.
  uint64_t expected = before->bytes_received() + kConnections * prefix.size();
  uint64_t rss_before = ResidentBytes(daemon_->pid());

  std::vector<std::unique_ptr<RawConnection>> prefixes;
  for (int i = 0; i < kConnections; ++i) {
    prefixes.push_back(std::make_unique<RawConnection>(daemon_->data_socket()));
    ASSERT_TRUE(prefixes.back()->ok());
    ASSERT_TRUE(prefixes.back()->SendBytes(prefix).ok());
  }
  absl::StatusOr<pb::TransportStatus> after;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    expected += status_frame.size();
    after = Transport();
    return after.ok() && after->bytes_received() >= expected;
  })) << "the daemon did not read every prefix";
  uint64_t rss_after = ResidentBytes(daemon_->pid());
  std::cout << "after " << kConnections << " prefix-only connections: input buffers "
            << after->buffered_input_bytes() << " bytes (were " << before->buffered_input_bytes()
            << "), resident " << rss_before / 1024 << " KiB -> " << rss_after / 1024 << " KiB\n";
  EXPECT_LE(after->buffered_input_bytes(), uint64_t{kConnections} * (64 << 10));
  EXPECT_LT(rss_after, rss_before + (uint64_t{256} << 20));

  // And the daemon still serves.
  RawConnection other(daemon_->data_socket());
  EXPECT_EQ(CodeOf(other.Call(RecordGet("missing"))), static_cast<int>(ErrorCode::kRecordNotFound));
}

// A streamed download whose reader stalls holds its worker (a bounded wait), so the caller's
// request cap and the admin reserve bound what such readers pin. Three workers, one reserved
// for the admin socket, one request per caller: the test's uid stalls six downloads, which pin
// one worker (the rest are held); another uid is served by the other data worker; that uid
// stalls a download too, and the admin socket is still served by its own worker (on the old
// transport the stalled downloads pin every worker and both calls hit the safety net).
TEST_F(TransportLimitsTest, StalledDownloadsPinAtMostTheirCallersShareOfWorkers) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to drop to another uid";
  StartDaemon(
      "workers: 3 admin_reserved_workers: 1 max_requests_per_uid: 1 "
      "max_output_bytes_per_connection: 65536 request_timeout_seconds: 600 "
      "idle_timeout_seconds: 600");
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->PutRecord(kDataset, "small", "s").ok());
  auto upload = writer->BeginAttachment(kDataset, "scan.bin", "application/octet-stream");
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE((*upload)->Append(std::string(size_t{8} << 20, 'a')).ok());
  ASSERT_TRUE((*upload)->Commit().ok());
  writer.reset();

  std::vector<std::unique_ptr<RawConnection>> stalled;
  for (int i = 0; i < 6; ++i) {
    stalled.push_back(std::make_unique<RawConnection>(daemon_->data_socket()));
    ASSERT_TRUE(stalled.back()->ok());
    ASSERT_TRUE(stalled.back()->Send(AttachmentGet("scan.bin")).ok());
  }
  absl::StatusOr<pb::TransportStatus> transport;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    transport = Transport();
    return transport.ok() && transport->sends_waiting() == 1 && transport->requests_held() >= 5;
  })) << "expected one download waiting for its reader and five held";

  std::string served = RunAsUid(kReaderUid, daemon_->daemon_gid(), [&] {
    RawConnection reader(daemon_->data_socket());
    auto got = reader.Call(RecordGet("small"));
    return got.ok() && !got->has_error() ? got->record_get().value()
                                         : "code " + std::to_string(CodeOf(got));
  });
  EXPECT_EQ(served, "s");

  std::vector<std::unique_ptr<RawConnection>> reader_stalled;
  HeldChild reader(kReaderUid, daemon_->daemon_gid(), [&] {
    reader_stalled.push_back(std::make_unique<RawConnection>(daemon_->data_socket()));
    return reader_stalled.back()->Send(AttachmentGet("scan.bin")).ok() ? "sent" : "failed";
  });
  ASSERT_EQ(reader.Result(), "sent");
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    transport = Transport();  // every data worker is pinned; the admin socket has its own
    return transport.ok() && transport->sends_waiting() == 2;
  }));

  // A stalled reader that reads at last gets its whole download.
  size_t bytes = 0;
  for (;;) {
    auto frame = stalled.front()->Receive();
    ASSERT_TRUE(frame.ok()) << frame.status();
    ASSERT_FALSE(frame->has_error()) << frame->error().DebugString();
    bytes += frame->attachment_get().data().size();
    if (frame->attachment_get().last()) break;
  }
  EXPECT_EQ(bytes, size_t{8} << 20);
}

// A reader too slow past the request timeout is dropped and its buffered reply released.
TEST_F(TransportLimitsTest, AReaderSlowerThanTheRequestTimeoutIsDropped) {
  StartDaemon("request_timeout_seconds: 1 idle_timeout_seconds: 600");
  auto writer = Connect();
  ASSERT_NE(writer, nullptr);
  ASSERT_TRUE(writer->PutRecord(kDataset, "big", std::string(size_t{1} << 20, 'v')).ok());
  RawConnection slow(daemon_->data_socket());
  ASSERT_TRUE(slow.Send(RecordGet("big")).ok());
  absl::StatusOr<pb::TransportStatus> transport;
  ASSERT_TRUE(Cofferd::WaitUntil([&] {
    transport = Transport();
    return transport.ok() && transport->output_timeouts() == 1;
  }));
  EXPECT_EQ(transport->buffered_output_bytes(), 0u);
  EXPECT_EQ(transport->sends_waiting(), 0u);
}

}  // namespace
}  // namespace coffer
