// Helpers for the transport tests: a SessionFactory whose sessions echo request ids (and can be
// held inside Handle), a blocking test client over a real Unix socket, and a temp directory.

#ifndef COFFER_TESTS_KMS_SERVER_SERVER_TEST_UTIL_H_
#define COFFER_TESTS_KMS_SERVER_SERVER_TEST_UTIL_H_

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "coffer/v1/service.pb.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"
#include "kms/server/connection.h"

namespace coffer::server::testing {

inline api::Deadline In(std::chrono::milliseconds ms) {
  return std::chrono::steady_clock::now() + ms;
}

// Echoes each request's id. A request with `status` set waits inside Handle until Release()
// (for shutdown and backpressure tests); one with `record_list` set streams `big_responses`
// responses of 256 KiB each (for write-timeout tests); one with `record_exists` set is answered
// with one response of `big_reply_bytes`. With `inline_requests` set, every request but those
// with `status` or `record_list` runs inline (Session::Inline), on the reactor.
class EchoFactory : public daemon::SessionFactory {
 public:
  class EchoSession : public daemon::Session {
   public:
    explicit EchoSession(EchoFactory* factory) : factory_(factory) {}

    absl::Status Handle(const coffer::v1::Request& request, daemon::ResponseSink* sink) override {
      factory_->RecordThread(Inline(request));
      if (request.has_status()) factory_->Hold();
      coffer::v1::Response response;
      response.set_request_id(request.request_id());
      if (request.has_record_exists()) {
        response.mutable_error()->set_message(std::string(factory_->big_reply_bytes, 'y'));
      }
      // A delete parks where the transport offers it: the test finishes or drops its reply.
      if (request.has_record_delete()) {
        std::unique_ptr<daemon::ParkedReply> parked = sink->Park();
        if (parked != nullptr) {
          factory_->KeepParked(std::move(parked), std::move(response));
          return absl::OkStatus();
        }
      }
      if (request.has_record_list()) {
        response.mutable_error()->set_message(std::string(256 << 10, 'x'));
        for (int i = 0; i < factory_->big_responses; ++i) {
          absl::Status sent = sink->Send(response);
          if (!sent.ok()) {
            factory_->RecordSendFailure();
            return sent;
          }
        }
        return absl::OkStatus();
      }
      return sink->Send(response);
    }

    bool Inline(const coffer::v1::Request& request) const override {
      return factory_->inline_requests.load() && !request.has_status() &&
             !request.has_record_list();
    }

    void Closed() override { factory_->RecordClosed(); }

   private:
    EchoFactory* factory_;
  };

  std::unique_ptr<daemon::Session> Open(const daemon::PeerIdentity& peer) override {
    std::lock_guard<std::mutex> lock(mu_);
    peers_.push_back(peer);
    return std::make_unique<EchoSession>(this);
  }

  void TransportRefused(const daemon::PeerIdentity& peer, ErrorCode code) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++refusals_[code];
    refused_peers_.push_back(peer);
    cv_.notify_all();
  }

  std::vector<daemon::PeerIdentity> peers() {
    std::lock_guard<std::mutex> lock(mu_);
    return peers_;
  }
  int refusals(ErrorCode code) {
    std::lock_guard<std::mutex> lock(mu_);
    return refusals_[code];
  }
  int closed() {
    std::lock_guard<std::mutex> lock(mu_);
    return closed_;
  }
  int send_failures() {
    std::lock_guard<std::mutex> lock(mu_);
    return send_failures_;
  }
  int holding() {
    std::lock_guard<std::mutex> lock(mu_);
    return holding_;
  }
  // The threads Handle ran on, with how many requests each, for inline requests (true) and the
  // others (false).
  std::map<std::thread::id, int> threads(bool inline_request) {
    std::lock_guard<std::mutex> lock(mu_);
    return threads_[inline_request];
  }

  // Waits (up to 10 s) until `predicate` holds; the factory's state changes notify.
  template <typename Predicate>
  bool WaitUntil(Predicate predicate) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!predicate()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  // Replies parked by record_delete requests, not yet finished or dropped.
  size_t parked() {
    std::lock_guard<std::mutex> lock(mu_);
    return parked_.size();
  }
  // Finishes (true) or drops (false) the oldest parked reply; false if none is parked.
  bool EndOldestParked(bool finish) {
    std::unique_ptr<daemon::ParkedReply> reply;
    coffer::v1::Response response;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (parked_.empty()) return false;
      reply = std::move(parked_.front().first);
      response = std::move(parked_.front().second);
      parked_.pop_front();
    }
    if (finish) reply->Finish(std::move(response));
    return true;  // `reply` is destroyed here, finished or not
  }

  void Release() {
    std::lock_guard<std::mutex> lock(mu_);
    released_ = true;
    cv_.notify_all();
  }

  int big_responses = 64;
  size_t big_reply_bytes = size_t{1} << 20;
  std::atomic<bool> inline_requests{false};

 private:
  void Hold() {
    std::unique_lock<std::mutex> lock(mu_);
    ++holding_;
    cv_.wait(lock, [this] { return released_; });
    --holding_;
  }
  void RecordThread(bool inline_request) {
    std::lock_guard<std::mutex> lock(mu_);
    ++threads_[inline_request][std::this_thread::get_id()];
  }
  void KeepParked(std::unique_ptr<daemon::ParkedReply> reply, coffer::v1::Response response) {
    std::lock_guard<std::mutex> lock(mu_);
    parked_.emplace_back(std::move(reply), std::move(response));
  }
  void RecordClosed() {
    std::lock_guard<std::mutex> lock(mu_);
    ++closed_;
  }
  void RecordSendFailure() {
    std::lock_guard<std::mutex> lock(mu_);
    ++send_failures_;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<daemon::PeerIdentity> peers_;
  std::vector<daemon::PeerIdentity> refused_peers_;
  std::map<ErrorCode, int> refusals_;
  int closed_ = 0;
  int send_failures_ = 0;
  int holding_ = 0;
  bool released_ = false;
  std::map<bool, std::map<std::thread::id, int>> threads_;
  std::deque<std::pair<std::unique_ptr<daemon::ParkedReply>, coffer::v1::Response>> parked_;
};

// Returns a connected fd, or -1 with errno set.
inline int ConnectTo(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, path.c_str(), sizeof(address.sun_path) - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    int error = errno;
    ::close(fd);
    errno = error;
    return -1;
  }
  return fd;
}

class TestClient {
 public:
  explicit TestClient(const std::string& path, size_t max_frame = api::kDefaultMaxFrameBytes)
      : fd_(ConnectTo(path)), reader_(fd_, max_frame) {}
  ~TestClient() { Close(); }
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;

  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  absl::Status Send(const coffer::v1::Request& request) {
    return api::WriteFrame(fd_, request, In(std::chrono::seconds(10)));
  }
  absl::Status SendRaw(const std::string& bytes) {
    return api::WriteAll(fd_, bytes, In(std::chrono::seconds(10)));
  }
  absl::Status Read(coffer::v1::Response* response, bool* end_of_stream) {
    return reader_.Read(response, In(std::chrono::seconds(10)), end_of_stream);
  }

  // Sends a request with `id` and checks that its echo comes back.
  ::testing::AssertionResult RoundTrip(uint64_t id) {
    coffer::v1::Request request;
    request.set_request_id(id);
    request.mutable_record_get();
    absl::Status sent = Send(request);
    if (!sent.ok()) return ::testing::AssertionFailure() << "send: " << sent;
    coffer::v1::Response response;
    bool eos = false;
    absl::Status read = Read(&response, &eos);
    if (!read.ok()) return ::testing::AssertionFailure() << "read: " << read;
    if (eos) return ::testing::AssertionFailure() << "connection closed";
    if (response.request_id() != id || response.has_error()) {
      return ::testing::AssertionFailure()
             << "got id " << response.request_id() << " error " << response.error().code();
    }
    return ::testing::AssertionSuccess();
  }

  // Reads until the daemon closes the connection; returns the error codes of the responses
  // read on the way (a closed-with-unread-input socket may end in ECONNRESET: also the end).
  std::vector<int> ReadUntilClosed() {
    std::vector<int> codes;
    for (;;) {
      coffer::v1::Response response;
      bool eos = false;
      absl::Status read = Read(&response, &eos);
      if (!read.ok() || eos) {
        if (!read.ok() && ErrorCodeOf(read) == ErrorCode::kRequestTimeout) codes.push_back(-1);
        return codes;
      }
      codes.push_back(response.error().code());
    }
  }

 private:
  int fd_;
  api::FrameReader reader_;
};

class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/coffer-srv-XXXXXX";
    path_ = ::mkdtemp(pattern);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace coffer::server::testing

#endif  // COFFER_TESTS_KMS_SERVER_SERVER_TEST_UTIL_H_
