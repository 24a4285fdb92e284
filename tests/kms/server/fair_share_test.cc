// The transport's fair shares (kms/server/server.h, "Output" and "Fair shares") over real Unix
// sockets with the echoing SessionFactory: fast checks of the caps that
// tests/kms/cofferd/transport_limits_test.cc shows on a running cofferd. Every check reads the
// server's own gauges or counts answers; none measures time.

#include <unistd.h>

#include <csignal>
#include <memory>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kms/server/server.h"
#include "tests/kms/server/server_test_util.h"

namespace coffer::server {
namespace {

using std::chrono::milliseconds;
using testing::EchoFactory;
using testing::TempDir;
using testing::TestClient;

class FairShareTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ::signal(SIGPIPE, SIG_IGN);
    options_.data_socket.path = dir_.path() + "/data.sock";
    options_.admin_socket.path = dir_.path() + "/admin.sock";
    options_.workers = 2;
    options_.admin_reserved_workers = 1;
    options_.idle_timeout = milliseconds(10'000);
    options_.request_timeout = milliseconds(10'000);
  }
  void TearDown() override { factory_.Release(); }

  void StartServer() {
    auto server = Server::Start(options_, &factory_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(*server);
  }

  TempDir dir_;
  ServerOptions options_;
  EchoFactory factory_;
  std::unique_ptr<Server> server_;
};

coffer::v1::Request Held(uint64_t id) {  // EchoFactory holds a `status` request in Handle
  coffer::v1::Request request;
  request.set_request_id(id);
  request.mutable_status();
  return request;
}

TEST_F(FairShareTest, InputBuffersGrowAsBytesArriveNotAtTheSizePrefix) {
  options_.max_frame_bytes = size_t{32} << 20;
  StartServer();
  std::vector<std::unique_ptr<TestClient>> prefixes;
  for (int i = 0; i < 50; ++i) {
    prefixes.push_back(std::make_unique<TestClient>(options_.data_socket.path));
    ASSERT_TRUE(prefixes.back()->SendRaw(std::string("\x80\x80\x80\x10", 4)).ok());  // 32 MiB
  }
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().bytes_received == 50 * 4; }));
  EXPECT_LE(server_->Stats().buffered_input_bytes, 50u * 4096);
}

TEST_F(FairShareTest, DataRequestsLeaveTheAdminReserveFree) {
  StartServer();
  TestClient first(options_.data_socket.path);
  TestClient second(options_.data_socket.path);
  ASSERT_TRUE(first.Send(Held(1)).ok());
  ASSERT_TRUE(second.Send(Held(2)).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.holding() == 1; }));
  TestClient admin(options_.admin_socket.path);
  ASSERT_TRUE(admin.RoundTrip(3));   // on the reserved worker
  EXPECT_EQ(factory_.holding(), 1);  // the second data request still waits for the data worker
  factory_.Release();
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(second.Read(&response, &eos).ok());
  EXPECT_EQ(response.request_id(), 2u);
}

TEST_F(FairShareTest, ACallerBeyondItsConnectionCapIsBusyAndAdminsStillConnect) {
  options_.max_connections = 8;
  options_.admin_reserved_connections = 2;
  options_.max_connections_per_uid = 3;
  StartServer();
  std::vector<std::unique_ptr<TestClient>> mine;
  for (uint64_t id = 1; id <= 3; ++id) {
    mine.push_back(std::make_unique<TestClient>(options_.data_socket.path));
    ASSERT_TRUE(mine.back()->RoundTrip(id));
  }
  TestClient refused(options_.data_socket.path);
  EXPECT_EQ(refused.ReadUntilClosed(), std::vector<int>{506});
  EXPECT_EQ(server_->Stats().busy_uid_connections, 1u);
  TestClient admin(options_.admin_socket.path);  // the same uid, on the other socket
  EXPECT_TRUE(admin.RoundTrip(9));
}

TEST_F(FairShareTest, ARequestBeyondTheCallersCapWaitsForItsOwnRequestsOnly) {
  options_.workers = 3;
  options_.max_requests_per_uid = 1;
  StartServer();
  TestClient holder(options_.data_socket.path);
  TestClient waiting(options_.data_socket.path);
  ASSERT_TRUE(holder.Send(Held(1)).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return factory_.holding() == 1; }));
  coffer::v1::Request next;
  next.set_request_id(2);
  ASSERT_TRUE(waiting.Send(next).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().requests_held == 1; }));
  factory_.Release();
  coffer::v1::Response response;
  bool eos = false;
  ASSERT_TRUE(waiting.Read(&response, &eos).ok());
  EXPECT_EQ(response.request_id(), 2u);
}

TEST_F(FairShareTest, AnUnreadReplyFreesItsWorkerAndIsSentWhenRead) {
  options_.admin_reserved_workers = 0;
  options_.workers = 1;
  factory_.big_responses = 4;  // 1 MiB of replies: more than the socket takes at once
  StartServer();
  TestClient slow(options_.data_socket.path);
  coffer::v1::Request list;
  list.set_request_id(5);
  list.mutable_record_list();
  ASSERT_TRUE(slow.Send(list).ok());
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().buffered_output_bytes > 0; }));
  TestClient other(options_.data_socket.path);
  for (uint64_t id = 1; id <= 5; ++id) ASSERT_TRUE(other.RoundTrip(id));  // the only worker
  EXPECT_EQ(server_->Stats().sends_waiting, 0u);
  for (int i = 0; i < 4; ++i) {
    coffer::v1::Response response;
    bool eos = false;
    ASSERT_TRUE(slow.Read(&response, &eos).ok());
    EXPECT_EQ(response.request_id(), 5u);
  }
  ASSERT_TRUE(factory_.WaitUntil([&] { return server_->Stats().buffered_output_bytes == 0; }));
}

TEST_F(FairShareTest, PastTheByteCapsDataRequestsAreBusyButAdminRequestsAreServed) {
  options_.max_frame_bytes = size_t{64} << 10;
  options_.max_buffered_bytes_per_uid = size_t{1} << 20;
  options_.max_buffered_bytes = size_t{1} << 20;
  factory_.big_responses = 8;  // 2 MiB of replies, never read
  StartServer();
  TestClient slow(options_.data_socket.path);
  coffer::v1::Request list;
  list.set_request_id(5);
  list.mutable_record_list();
  ASSERT_TRUE(slow.Send(list).ok());
  ASSERT_TRUE(factory_.WaitUntil(
      [&] { return server_->Stats().buffered_output_bytes > options_.max_buffered_bytes; }));
  TestClient data(options_.data_socket.path);
  coffer::v1::Request request;
  request.set_request_id(6);
  ASSERT_TRUE(data.Send(request).ok());
  EXPECT_EQ(data.ReadUntilClosed(), std::vector<int>{506});
  EXPECT_EQ(server_->Stats().busy_buffered_bytes, 1u);
  TestClient admin(options_.admin_socket.path);  // another caller; the daemon's cap spares it
  EXPECT_TRUE(admin.RoundTrip(7));
}

}  // namespace
}  // namespace coffer::server
