// cofferd's transport over real Unix sockets in a temp dir, with an echoing SessionFactory.
// "Others keep being served" is checked by completing round trips on another connection while
// the misbehaving one is open, not by timing.

#include "kms/server/server.h"

#include <grp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kms/server/server_test_util.h"

namespace coffer::server {
namespace {

using std::chrono::milliseconds;
using testing::ConnectTo;
using testing::EchoFactory;
using testing::TempDir;
using testing::TestClient;

constexpr size_t kTestMaxFrame = 4096;

// The payload of a Request with `id` padded (an unknown length-delimited field 2, which
// parses) to exactly `size` bytes; size must be at least 16.
std::string PaddedRequestPayload(uint64_t id, size_t size) {
  coffer::v1::Request request;
  request.set_request_id(id);
  std::string payload = request.SerializeAsString();
  size_t room = size - payload.size() - 1;  // minus the tag byte
  // The padding length's varint takes 1-3 bytes here; pick the length that fits exactly.
  for (size_t prefix = 1; prefix <= 3; ++prefix) {
    size_t length = room - prefix;
    std::string varint;
    for (size_t v = length;; v >>= 7) {
      if (v < 0x80) {
        varint.push_back(static_cast<char>(v));
        break;
      }
      varint.push_back(static_cast<char>((v & 0x7f) | 0x80));
    }
    if (varint.size() == prefix) return payload + '\x12' + varint + std::string(length, 'p');
  }
  ADD_FAILURE() << "cannot pad to " << size;
  return payload;
}

std::string Frame(const std::string& payload) {
  std::string frame;
  for (size_t v = payload.size();; v >>= 7) {
    if (v < 0x80) {
      frame.push_back(static_cast<char>(v));
      break;
    }
    frame.push_back(static_cast<char>((v & 0x7f) | 0x80));
  }
  return frame + payload;
}

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    options_.data_socket.path = dir_.path() + "/data.sock";
    options_.admin_socket.path = dir_.path() + "/admin.sock";
    options_.workers = 4;
    options_.max_frame_bytes = kTestMaxFrame;
    options_.idle_timeout = milliseconds(200);
    options_.request_timeout = milliseconds(200);
  }

  void StartServer() {
    auto server = Server::Start(options_, &factory_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  const std::string& data_path() const { return options_.data_socket.path; }

  // Round trips on a fresh connection while something else misbehaves.
  void ExpectOthersServed() {
    TestClient other(data_path(), kTestMaxFrame);
    ASSERT_TRUE(other.connected());
    for (uint64_t id = 1; id <= 20; ++id) ASSERT_TRUE(other.RoundTrip(id));
  }

  TempDir dir_;
  ServerOptions options_;
  EchoFactory factory_;
  std::unique_ptr<Server> server_;
};

TEST_F(ServerTest, RoundTripsOnBothSockets) {
  StartServer();
  TestClient data(data_path());
  TestClient admin(options_.admin_socket.path);
  ASSERT_TRUE(data.RoundTrip(7));
  ASSERT_TRUE(admin.RoundTrip(8));
  auto peers = factory_.peers();
  ASSERT_EQ(peers.size(), 2u);
  EXPECT_EQ(peers[0].socket, daemon::SocketKind::kData);
  EXPECT_EQ(peers[1].socket, daemon::SocketKind::kAdmin);
  EXPECT_EQ(server_->Stats().requests, 2u);
  EXPECT_EQ(server_->Stats().connections_open, 2u);
}

TEST_F(ServerTest, PipelinedFramesAnsweredInOrder) {
  StartServer();
  TestClient client(data_path());
  std::string frames;
  for (uint64_t id = 1; id <= 50; ++id) {
    coffer::v1::Request request;
    request.set_request_id(id);
    api::AppendFrame(request, &frames);
  }
  ASSERT_TRUE(client.SendRaw(frames).ok());
  for (uint64_t id = 1; id <= 50; ++id) {
    coffer::v1::Response response;
    bool eos = false;
    ASSERT_TRUE(client.Read(&response, &eos).ok());
    ASSERT_FALSE(eos);
    EXPECT_EQ(response.request_id(), id);
  }
}

// Requests the session runs inline are handled on the reactor that read them, all on one
// thread, pipelined frames answered in order on each connection; the others still go to the
// workers.
TEST_F(ServerTest, InlineRequestsRunToCompletionOnTheReactor) {
  factory_.inline_requests = true;
  StartServer();
  TestClient first(data_path());
  TestClient second(data_path());
  for (TestClient* client : {&first, &second}) {
    std::string frames;
    for (uint64_t id = 1; id <= 100; ++id) {
      coffer::v1::Request request;
      request.set_request_id(id);
      request.mutable_record_get();
      api::AppendFrame(request, &frames);
    }
    ASSERT_TRUE(client->SendRaw(frames).ok());
  }
  for (TestClient* client : {&first, &second}) {
    for (uint64_t id = 1; id <= 100; ++id) {
      coffer::v1::Response response;
      bool eos = false;
      ASSERT_TRUE(client->Read(&response, &eos).ok());
      ASSERT_FALSE(eos);
      ASSERT_EQ(response.request_id(), id);
    }
  }
  EXPECT_EQ(server_->Stats().requests_inline, 200u);
  const auto reactor = factory_.threads(true);
  ASSERT_EQ(reactor.size(), 1u);
  EXPECT_EQ(reactor.begin()->second, 200);

  factory_.big_responses = 1;
  coffer::v1::Request streamed;
  streamed.set_request_id(7);
  streamed.mutable_record_list();  // not inline
  ASSERT_TRUE(first.Send(streamed).ok());
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(first.Read(&response, &eos).ok());
  EXPECT_EQ(response.request_id(), 7u);
  const auto workers = factory_.threads(false);
  ASSERT_EQ(workers.size(), 1u);
  EXPECT_NE(workers.begin()->first, reactor.begin()->first);
  EXPECT_EQ(server_->Stats().requests, 201u);
  EXPECT_EQ(server_->Stats().requests_inline, 200u);
}

// With run_inline off, the session's word is not asked: every request goes to the workers.
TEST_F(ServerTest, RunInlineOffSendsEveryRequestToTheWorkers) {
  factory_.inline_requests = true;
  options_.run_inline = false;
  StartServer();
  TestClient client(data_path());
  for (uint64_t id = 1; id <= 10; ++id) ASSERT_TRUE(client.RoundTrip(id));
  EXPECT_EQ(server_->Stats().requests, 10u);
  EXPECT_EQ(server_->Stats().requests_inline, 0u);
}

// An inline request's reply to a client that does not read is left in the connection's output:
// the reactor goes on serving everyone else, stops reading that connection, and drops it once
// the peer has taken nothing for the request timeout.
TEST_F(ServerTest, AnInlineReplyToAReaderThatNeverReadsHoldsNoThread) {
  factory_.inline_requests = true;
  options_.max_output_bytes_per_connection = size_t{64} << 10;
  StartServer();
  TestClient sleeper(data_path());
  std::string frames;
  for (uint64_t id = 1; id <= 8; ++id) {  // 8 replies of 1 MiB, never read
    coffer::v1::Request request;
    request.set_request_id(id);
    request.mutable_record_exists();
    api::AppendFrame(request, &frames);
  }
  ASSERT_TRUE(sleeper.SendRaw(frames).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().requests_inline >= 1; }));
  ExpectOthersServed();
  // Only the first was served: the connection is not read while its reply is unsent.
  EXPECT_EQ(factory_.threads(true).begin()->second, 1 + 20);
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().output_timeouts == 1; }));
  EXPECT_EQ(factory_.refusals(ErrorCode::kRequestTimeout), 1);
  ExpectOthersServed();
  EXPECT_EQ(server_->Stats().buffered_output_bytes, 0u);
}

// A request that parks (ResponseSink::Park, as a record request waiting for its window-0 audit
// entry does) frees the reactor at once: other connections are served while it waits, its own
// connection's pipelined frame waits behind it, and its reply — finished from another thread —
// comes before that frame's. A reply dropped unfinished closes the connection. A request on a
// worker is not offered parking: it answers from Handle.
TEST_F(ServerTest, AParkedRequestFreesTheReactorAndIsAnsweredInOrder) {
  factory_.inline_requests = true;
  StartServer();
  TestClient parker(data_path());
  std::string frames;
  for (uint64_t id = 1; id <= 2; ++id) {
    coffer::v1::Request request;
    request.set_request_id(id);
    if (id == 1) {
      request.mutable_record_delete();  // parks
    } else {
      request.mutable_record_get();
    }
    api::AppendFrame(request, &frames);
  }
  ASSERT_TRUE(parker.SendRaw(frames).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.parked() == 1; }));
  ExpectOthersServed();
  EXPECT_EQ(server_->Stats().requests, 1u + 20u);  // request 2 waits behind the parked one
  EXPECT_EQ(server_->Stats().requests_parked, 1u);

  std::thread([&] { EXPECT_TRUE(factory_.EndOldestParked(/*finish=*/true)); }).join();
  for (uint64_t id = 1; id <= 2; ++id) {
    coffer::v1::Response response;
    bool eos = false;
    ASSERT_TRUE(parker.Read(&response, &eos).ok());
    ASSERT_FALSE(eos);
    EXPECT_EQ(response.request_id(), id);
  }
  EXPECT_EQ(factory_.threads(true).size(), 1u);  // every request ran on the reactor

  coffer::v1::Request dropped;
  dropped.set_request_id(3);
  dropped.mutable_record_delete();
  ASSERT_TRUE(parker.Send(dropped).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.parked() == 1; }));
  EXPECT_TRUE(factory_.EndOldestParked(/*finish=*/false));
  coffer::v1::Response response;
  bool eos = false;
  EXPECT_TRUE(parker.Read(&response, &eos).ok());
  EXPECT_TRUE(eos);  // closed, with no reply
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.closed() >= 1; }));

  factory_.inline_requests = false;  // on a worker, Park offers nothing
  TestClient worker(data_path());
  coffer::v1::Request on_worker;
  on_worker.set_request_id(4);
  on_worker.mutable_record_delete();
  ASSERT_TRUE(worker.Send(on_worker).ok());
  ASSERT_TRUE(worker.Read(&response, &eos).ok());
  ASSERT_FALSE(eos);
  EXPECT_EQ(response.request_id(), 4u);
  EXPECT_EQ(factory_.parked(), 0u);
  EXPECT_EQ(server_->Stats().requests_parked, 2u);
}

TEST_F(ServerTest, PeerIdentityComesFromTheKernel) {
  StartServer();
  TestClient client(data_path());
  ASSERT_TRUE(client.RoundTrip(1));
  auto peers = factory_.peers();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].uid, ::getuid());
  EXPECT_EQ(peers[0].gid, ::getgid());
  EXPECT_EQ(peers[0].pid, ::getpid());
  std::vector<gid_t> groups(::getgroups(0, nullptr));
  groups.resize(::getgroups(static_cast<int>(groups.size()), groups.data()));
  groups.erase(std::remove(groups.begin(), groups.end(), ::getgid()), groups.end());
  std::vector<gid_t> seen = peers[0].groups;
  std::sort(groups.begin(), groups.end());
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, groups);
}

// A child that drops to uid/gid 65534 with supplementary groups {65533, 65534 + many} is seen
// as exactly that; the many groups also exercise SO_PEERGROUPS's ERANGE retry.
TEST_F(ServerTest, PeerIdentityOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to change uid";
  options_.data_socket.mode = 0666;
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);
  StartServer();
  std::vector<gid_t> groups;
  for (gid_t g = 60000; g < 60100; ++g) groups.push_back(g);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::setgroups(groups.size(), groups.data()) != 0) ::_exit(10);
    if (::setresgid(65534, 65534, 65534) != 0) ::_exit(11);
    if (::setresuid(65534, 65534, 65534) != 0) ::_exit(12);
    TestClient client(data_path());
    if (!client.connected()) ::_exit(13);
    ::_exit(client.RoundTrip(42) ? 0 : 14);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  auto peers = factory_.peers();
  ASSERT_EQ(peers.size(), 1u);
  EXPECT_EQ(peers[0].uid, 65534u);
  EXPECT_EQ(peers[0].gid, 65534u);
  EXPECT_EQ(peers[0].pid, child);
  std::vector<gid_t> seen = peers[0].groups;
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(seen, groups);
}

TEST_F(ServerTest, SixtyFourClientsOnFourWorkers) {
  options_.idle_timeout = milliseconds(10'000);
  options_.request_timeout = milliseconds(10'000);
  StartServer();
  constexpr int kClients = 64;
  constexpr int kRoundTrips = 200;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      TestClient client(data_path());
      for (int i = 0; i < kRoundTrips; ++i) {
        if (!client.RoundTrip(uint64_t(c) * 100'000 + i)) ++failures;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(server_->Stats().requests, uint64_t{kClients * kRoundTrips});
  EXPECT_EQ(server_->Stats().connections_total, uint64_t{kClients});
  EXPECT_TRUE(server_->Stats().refusals.empty());
}

TEST_F(ServerTest, ExactlyMaxFrameServedAndOneMoreRefused) {
  StartServer();
  TestClient client(data_path(), 2 * kTestMaxFrame);
  ASSERT_TRUE(client.SendRaw(Frame(PaddedRequestPayload(5, kTestMaxFrame))).ok());
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(client.Read(&response, &eos).ok());
  EXPECT_EQ(response.request_id(), 5u);
  EXPECT_FALSE(response.has_error());

  TestClient big(data_path(), 2 * kTestMaxFrame);
  (void)big.SendRaw(Frame(PaddedRequestPayload(6, kTestMaxFrame + 1)));  // may hit EPIPE
  EXPECT_EQ(big.ReadUntilClosed(), std::vector<int>{500});
  EXPECT_EQ(factory_.refusals(ErrorCode::kFrameTooLarge), 1);
  ExpectOthersServed();
}

TEST_F(ServerTest, OversizedDeclaredSizeRefusedBeforeThePayload) {
  StartServer();
  TestClient client(data_path());
  // Declares 1 GiB and sends none of it.
  ASSERT_TRUE(client.SendRaw(std::string("\x80\x80\x80\x80\x04", 5)).ok());
  EXPECT_EQ(client.ReadUntilClosed(), std::vector<int>{500});
  ExpectOthersServed();
}

TEST_F(ServerTest, BadVarintAndUnparsablePayloadAreMalformed) {
  StartServer();
  TestClient varint(data_path());
  ASSERT_TRUE(varint.SendRaw(std::string(11, '\xff')).ok());
  EXPECT_EQ(varint.ReadUntilClosed(), std::vector<int>{501});

  TestClient payload(data_path());
  ASSERT_TRUE(payload.SendRaw(std::string("\x05\xff\xff\xff\xff\xff", 6)).ok());
  EXPECT_EQ(payload.ReadUntilClosed(), std::vector<int>{501});
  EXPECT_EQ(factory_.refusals(ErrorCode::kMalformedRequest), 2);
  ExpectOthersServed();
}

TEST_F(ServerTest, RandomGarbageIsRefusedOrDropped) {
  StartServer();
  std::mt19937 random(1234);
  for (int round = 0; round < 50; ++round) {
    std::string garbage(1 + random() % 300, '\0');
    for (char& byte : garbage) byte = static_cast<char>(random());
    TestClient client(data_path());
    (void)client.SendRaw(garbage);
    ::shutdown(client.fd(), SHUT_WR);
    // Whatever it is — an unparsable or too-large frame, a truncated one, or by chance a valid
    // request — the connection ends with at most error responses and echoes.
    for (int code : client.ReadUntilClosed()) {
      EXPECT_TRUE(code == 0 || code == 500 || code == 501) << code;
    }
  }
  ExpectOthersServed();
}

TEST_F(ServerTest, TruncatedFrameThenCloseIsDropped) {
  StartServer();
  {
    TestClient client(data_path());
    ASSERT_TRUE(client.SendRaw(Frame(PaddedRequestPayload(1, 100)).substr(0, 40)).ok());
    ExpectOthersServed();
  }
  EXPECT_TRUE(factory_.WaitUntil([&] { return factory_.closed() >= 2; }));
  EXPECT_TRUE(factory_.WaitUntil([&] { return server_->Stats().connections_open == 0; }));
  EXPECT_TRUE(server_->Stats().refusals.empty());
}

TEST_F(ServerTest, HalfClosedClientStillGetsItsResponse) {
  StartServer();
  TestClient client(data_path());
  coffer::v1::Request request;
  request.set_request_id(99);
  ASSERT_TRUE(client.Send(request).ok());
  ASSERT_EQ(::shutdown(client.fd(), SHUT_WR), 0);
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(client.Read(&response, &eos).ok());
  ASSERT_FALSE(eos);
  EXPECT_EQ(response.request_id(), 99u);
  ASSERT_TRUE(client.Read(&response, &eos).ok());
  EXPECT_TRUE(eos);
}

TEST_F(ServerTest, StalledMidFrameTimesOutWhileOthersAreServed) {
  StartServer();
  TestClient stalled(data_path());
  ASSERT_TRUE(stalled.SendRaw(Frame(PaddedRequestPayload(1, 100)).substr(0, 30)).ok());
  ExpectOthersServed();
  EXPECT_EQ(stalled.ReadUntilClosed(), std::vector<int>{505});
  EXPECT_EQ(factory_.refusals(ErrorCode::kRequestTimeout), 1);
}

TEST_F(ServerTest, IdleConnectionClosedSilentlyWhileOthersAreServed) {
  StartServer();
  TestClient idle(data_path());
  ASSERT_TRUE(idle.RoundTrip(1));
  ExpectOthersServed();
  EXPECT_EQ(idle.ReadUntilClosed(), std::vector<int>{});
  EXPECT_GE(factory_.refusals(ErrorCode::kRequestTimeout), 1);
}

TEST_F(ServerTest, IdleAndPartialConnectionsHoldNoWorker) {
  options_.workers = 1;
  options_.idle_timeout = milliseconds(10'000);
  options_.request_timeout = milliseconds(10'000);
  StartServer();
  std::vector<std::unique_ptr<TestClient>> parked;
  for (int i = 0; i < 20; ++i) {
    parked.push_back(std::make_unique<TestClient>(data_path()));
    if (i % 2 == 0) {
      ASSERT_TRUE(parked.back()->SendRaw(std::string("\x20\x08", 2)).ok());
    }
  }
  ExpectOthersServed();
}

TEST_F(ServerTest, UnreadResponsesTimeOutAndFreeTheWorker) {
  options_.workers = 1;
  StartServer();
  TestClient sleeper(data_path());
  coffer::v1::Request request;
  request.set_request_id(3);
  request.mutable_record_list();  // 64 responses of 256 KiB, never read
  ASSERT_TRUE(sleeper.Send(request).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.send_failures() == 1; }));
  ExpectOthersServed();  // the only worker is free again
  EXPECT_EQ(factory_.refusals(ErrorCode::kRequestTimeout), 1);
}

TEST_F(ServerTest, BeyondMaxConnectionsServerBusy) {
  options_.max_connections = 2;
  options_.idle_timeout = milliseconds(10'000);
  StartServer();
  auto first = std::make_unique<TestClient>(data_path());
  TestClient second(options_.admin_socket.path);
  ASSERT_TRUE(first->RoundTrip(1));
  ASSERT_TRUE(second.RoundTrip(2));
  TestClient third(data_path());
  ASSERT_TRUE(third.connected());
  EXPECT_EQ(third.ReadUntilClosed(), std::vector<int>{506});
  EXPECT_EQ(factory_.refusals(ErrorCode::kServerBusy), 1);
  EXPECT_EQ(server_->Stats().refusals[ErrorCode::kServerBusy], 1u);
  first.reset();
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().connections_open == 1; }));
  ExpectOthersServed();
}

TEST_F(ServerTest, FullQueuePausesReadingAndEveryoneIsServedLater) {
  options_.workers = 1;
  options_.max_queued_requests = 1;
  options_.idle_timeout = milliseconds(10'000);
  options_.request_timeout = milliseconds(10'000);
  StartServer();
  TestClient holder(data_path());
  coffer::v1::Request hold;
  hold.set_request_id(1);
  hold.mutable_status();
  ASSERT_TRUE(holder.Send(hold).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.holding() == 1; }));
  std::vector<std::unique_ptr<TestClient>> waiting;
  for (uint64_t id = 10; id < 20; ++id) {
    waiting.push_back(std::make_unique<TestClient>(data_path()));
    coffer::v1::Request request;
    request.set_request_id(id);
    ASSERT_TRUE(waiting.back()->Send(request).ok());
  }
  factory_.Release();
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(holder.Read(&response, &eos).ok());
  EXPECT_EQ(response.request_id(), 1u);
  for (uint64_t id = 10; id < 20; ++id) {
    ASSERT_TRUE(waiting[id - 10]->Read(&response, &eos).ok());
    EXPECT_EQ(response.request_id(), id);
  }
}

TEST_F(ServerTest, ShutdownDeliversTheResponseOfARunningHandle) {
  options_.workers = 1;
  options_.idle_timeout = milliseconds(10'000);
  StartServer();
  TestClient slow(data_path());
  TestClient queued(data_path());
  TestClient idle(data_path());
  ASSERT_TRUE(idle.RoundTrip(1));
  coffer::v1::Request request;
  request.set_request_id(77);
  request.mutable_status();  // held inside Handle
  ASSERT_TRUE(slow.Send(request).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.holding() == 1; }));
  coffer::v1::Request second;
  second.set_request_id(78);
  ASSERT_TRUE(queued.Send(second).ok());  // waits for the only worker

  std::thread shutdown([&] { server_->Shutdown(milliseconds(10'000)); });
  // The socket file goes away once accepting stopped.
  ASSERT_TRUE(factory_.WaitUntil([&] { return ::access(data_path().c_str(), F_OK) != 0; }));
  EXPECT_LT(ConnectTo(data_path()), 0);
  factory_.Release();

  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(slow.Read(&response, &eos).ok());
  ASSERT_FALSE(eos);
  EXPECT_EQ(response.request_id(), 77u);
  EXPECT_FALSE(response.has_error());
  // The queued request never reached the session: SHUTTING_DOWN or a closed connection.
  for (int code : queued.ReadUntilClosed()) {
    EXPECT_EQ(code, 507);
  }
  EXPECT_EQ(idle.ReadUntilClosed(), std::vector<int>{});
  shutdown.join();
  EXPECT_EQ(factory_.closed(), 3);
  EXPECT_EQ(server_->Stats().connections_open, 0u);
  server_->Shutdown(milliseconds(0));  // idempotent
}

// Every request the session handled had its response delivered: the clients' count of echoes
// equals the server's count of requests handed to Handle; the rest saw SHUTTING_DOWN or a
// closed connection.
TEST_F(ServerTest, ShutdownUnderLoadLosesNoHandledResponse) {
  options_.idle_timeout = milliseconds(10'000);
  options_.request_timeout = milliseconds(10'000);
  StartServer();
  constexpr int kClients = 32;
  std::atomic<uint64_t> echoed{0};
  std::atomic<int> wrong{0};
  std::atomic<int> started{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      TestClient client(data_path());
      ++started;
      for (uint64_t i = 1;; ++i) {
        coffer::v1::Request request;
        request.set_request_id(uint64_t(c) * 1'000'000 + i);
        if (!client.Send(request).ok()) return;
        coffer::v1::Response response;
        bool eos = false;
        if (!client.Read(&response, &eos).ok() || eos) return;
        if (response.has_error()) {
          if (response.error().code() != 507) ++wrong;
          return;
        }
        if (response.request_id() != request.request_id()) ++wrong;
        ++echoed;
      }
    });
  }
  // No ASSERT before the joins: the threads end only once the server shut down.
  EXPECT_TRUE(factory_.WaitUntil([&] { return started == kClients && echoed > 2000; }));
  server_->Shutdown(milliseconds(10'000));
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(server_->Stats().requests, echoed.load());
  // A connection still in the listen backlog when accepting stopped never had a session.
  EXPECT_EQ(factory_.closed(), static_cast<int>(factory_.peers().size()));
}

TEST_F(ServerTest, ShutdownTimeoutStillClosesEverything) {
  options_.workers = 1;
  StartServer();
  TestClient slow(data_path());
  coffer::v1::Request request;
  request.set_request_id(5);
  request.mutable_status();
  ASSERT_TRUE(slow.Send(request).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.holding() == 1; }));
  std::thread release([&] {
    std::this_thread::sleep_for(milliseconds(300));
    factory_.Release();
  });
  server_->Shutdown(milliseconds(50));  // returns once the held Handle returned
  release.join();
  EXPECT_EQ(factory_.closed(), 1);
  EXPECT_EQ(server_->Stats().connections_open, 0u);
}

TEST_F(ServerTest, SocketFilesHaveTheConfiguredModeAndGroup) {
  options_.admin_socket.mode = 0600;
  options_.admin_socket.group = ::getgid();
  StartServer();
  struct stat info {};
  ASSERT_EQ(::stat(data_path().c_str(), &info), 0);
  EXPECT_TRUE(S_ISSOCK(info.st_mode));
  EXPECT_EQ(info.st_mode & 07777, 0660u);
  ASSERT_EQ(::stat(options_.admin_socket.path.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  EXPECT_EQ(info.st_gid, ::getgid());
  server_.reset();
  EXPECT_NE(::access(data_path().c_str(), F_OK), 0);  // removed at shutdown
}

TEST_F(ServerTest, RefusesARegularFileInTheWay) {
  { std::ofstream(data_path()) << "precious"; }
  auto server = Server::Start(options_, &factory_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(ErrorCodeOf(server.status()), ErrorCode::kConfigInvalid);
  EXPECT_NE(server.status().message().find("not a socket"), std::string::npos);
  std::ifstream kept(data_path());
  std::string content;
  kept >> content;
  EXPECT_EQ(content, "precious");
}

TEST_F(ServerTest, RefusesLongPathsAndMissingDirectories) {
  ServerOptions options = options_;
  options.data_socket.path = dir_.path() + "/" + std::string(120, 'a');
  auto server = Server::Start(options, &factory_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(ErrorCodeOf(server.status()), ErrorCode::kConfigInvalid);
  options.data_socket.path = dir_.path() + "/missing/data.sock";
  server = Server::Start(options, &factory_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(ErrorCodeOf(server.status()), ErrorCode::kConfigInvalid);
  EXPECT_NE(server.status().message().find("does not exist"), std::string::npos);
}

TEST_F(ServerTest, ReplacesAStaleSocketButNotALiveOne) {
  // A stale socket: bound, then its owner went away without unlinking it.
  int stale = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, data_path().c_str(), sizeof(address.sun_path) - 1);
  ASSERT_EQ(::bind(stale, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ::close(stale);
  StartServer();
  TestClient client(data_path());
  ASSERT_TRUE(client.RoundTrip(1));

  auto second = Server::Start(options_, &factory_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(ErrorCodeOf(second.status()), ErrorCode::kConfigInvalid);
  ASSERT_TRUE(client.RoundTrip(2));  // the first server's socket is untouched
}

}  // namespace
}  // namespace coffer::server
