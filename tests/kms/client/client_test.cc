// Tests of the client library's protocol handling against a small in-test daemon that speaks the
// coffer.v1 framing on a real Unix socket (FrameReader/WriteFrame, one thread per connection):
// typed calls, error mapping, chunked uploads, multi-frame downloads, protocol violations,
// reconnecting after the daemon drops a connection, and 8 threads sharing one client's pool.
// The real daemon is exercised by the integration tests in this folder's other suites.

#include "kms/client/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "crypto/base/status.h"
#include "gtest/gtest.h"
#include "kms/api/framing.h"

namespace coffer::client {
namespace {

using coffer::v1::Request;
using coffer::v1::Response;

constexpr size_t kMiB = size_t{1} << 20;

api::Deadline Later() { return std::chrono::steady_clock::now() + std::chrono::seconds(30); }

void SetError(Response* response, ErrorCode code, const std::string& message,
              uint32_t retry_after_ms = 0) {
  response->mutable_error()->set_code(static_cast<int>(code));
  response->mutable_error()->set_code_name(std::string(ErrorCodeName(code)));
  response->mutable_error()->set_message(message);
  response->mutable_error()->set_retry_after_ms(retry_after_ms);
}

std::string Pattern(size_t size, uint32_t seed) {
  std::string out(size, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (char& c : out) {
    x = x * 1103515245u + 12345u;
    c = static_cast<char>(x >> 24);
  }
  return out;
}

// An in-memory daemon behind a Unix socket. Datasets "denied" and "slow" answer NOT_GRANTED and
// SLOW_DOWN; "future" answers an error code this client does not know.
class FakeDaemon {
 public:
  FakeDaemon() {
    char pattern[] = "/tmp/coffer-client-test-XXXXXX";
    dir_ = ::mkdtemp(pattern);
    path_ = dir_ + "/data.sock";
    listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::memcpy(address.sun_path, path_.data(), path_.size());
    EXPECT_EQ(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    EXPECT_EQ(::listen(listen_fd_, 128), 0);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }

  ~FakeDaemon() {
    stop_ = true;
    acceptor_.join();
    ::close(listen_fd_);
    CloseAllConnections();
    std::vector<std::thread> threads;
    {
      std::lock_guard<std::mutex> lock(mu_);
      threads.swap(threads_);
    }
    for (std::thread& t : threads) t.join();
    std::filesystem::remove_all(dir_);
  }

  const std::string& path() const { return path_; }

  // Shuts down every open connection from the daemon's side (as an idle timeout would).
  void CloseAllConnections() {
    std::lock_guard<std::mutex> lock(mu_);
    for (int fd : open_fds_) ::shutdown(fd, SHUT_RDWR);
  }

  // Knobs.
  std::atomic<int> drop_next{0};  // read this many requests and close without answering
  std::atomic<size_t> download_frame_bytes{size_t{256} * 1024};
  std::atomic<bool> wrong_request_id{false};
  std::atomic<bool> short_download{false};
  // After the next request, read this many more before answering any (a client that waits for
  // each reply before sending the next request never gets one).
  std::atomic<int> read_ahead{0};
  std::atomic<int> answer_then_close{0};  // answer this many more requests, then close

  // Observations.
  std::atomic<int> accepted{0};
  std::atomic<int> active{0};
  std::atomic<int> max_active{0};
  std::atomic<int> requests{0};
  std::atomic<int> aborts{0};
  std::atomic<int> uploads_dropped{0};  // connections closed with an upload open
  std::atomic<int> download_frames{0};

  std::vector<size_t> chunk_sizes() {
    std::lock_guard<std::mutex> lock(mu_);
    return chunk_sizes_;
  }
  bool HasRecord(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    return records_.count(id) > 0;
  }
  bool HasAttachment(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return attachments_.count(name) > 0;
  }
  std::string AttachmentBytes(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    return attachments_[name].data;
  }

 private:
  struct Attachment {
    std::string data;
    std::string content_type;
  };
  struct Upload {
    bool open = false;
    std::string name;
    std::string content_type;
    std::string data;
    bool oversized_chunk = false;
  };

  void AcceptLoop() {
    while (!stop_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) continue;
      ++accepted;
      std::lock_guard<std::mutex> lock(mu_);
      open_fds_.insert(fd);
      threads_.emplace_back([this, fd] { Serve(fd); });
    }
  }

  void Serve(int fd) {
    int now = ++active;
    int seen = max_active.load();
    while (now > seen && !max_active.compare_exchange_weak(seen, now)) {
    }
    api::FrameReader reader(fd, api::kDefaultMaxFrameBytes);
    Upload upload;
    std::deque<Request> ahead;
    for (;;) {
      Request request;
      if (!ahead.empty()) {
        request = std::move(ahead.front());
        ahead.pop_front();
      } else {
        bool end = false;
        if (!reader.Read(&request, Later(), &end).ok() || end) break;
        ++requests;
        bool read_all = true;
        for (int more = read_ahead.exchange(0); more > 0 && read_all; --more) {
          read_all = reader.Read(&ahead.emplace_back(), Later(), &end).ok() && !end;
          if (read_all) ++requests;
        }
        if (!read_all) break;
      }
      if (drop_next.fetch_sub(1) > 0) break;
      if (!Handle(fd, request, &upload).ok()) break;
      if (answer_then_close.load() > 0 && answer_then_close.fetch_sub(1) == 1) {
        // Close as a daemon does, keeping the replies sent: no more writes, and what the client
        // still sends is read and dropped (closing with it unread would reset the connection,
        // which may discard replies the client has not read yet).
        ::shutdown(fd, SHUT_WR);
        Request dropped;
        bool end = false;
        while (reader.Read(&dropped, Later(), &end).ok() && !end) {
        }
        break;
      }
    }
    if (upload.open) ++uploads_dropped;
    --active;
    std::lock_guard<std::mutex> lock(mu_);
    open_fds_.erase(fd);
    ::close(fd);
  }

  absl::Status Send(int fd, Response& response, uint64_t request_id) {
    response.set_request_id(wrong_request_id ? request_id + 100 : request_id);
    return api::WriteFrame(fd, response, Later());
  }

  // Fills `response` for a one-response request; returns false for chunks (no response).
  absl::Status Handle(int fd, const Request& request, Upload* upload) {
    Response response;
    if (upload->open && request.op_case() != Request::kAttachmentChunk &&
        request.op_case() != Request::kAttachmentPutCommit &&
        request.op_case() != Request::kAttachmentPutAbort) {
      SetError(&response, ErrorCode::kUnexpectedFrame, "an upload is open on this connection");
      return Send(fd, response, request.request_id());
    }
    std::string dataset;
    switch (request.op_case()) {
      case Request::kRecordPut:
        dataset = request.record_put().dataset();
        break;
      case Request::kRecordGet:
        dataset = request.record_get().dataset();
        break;
      default:
        break;
    }
    if (dataset == "denied") {
      SetError(&response, ErrorCode::kNotGranted, "no grant for this dataset");
      return Send(fd, response, request.request_id());
    }
    if (dataset == "slow") {
      SetError(&response, ErrorCode::kSlowDown, "rate limit exhausted", 250);
      return Send(fd, response, request.request_id());
    }
    if (dataset == "future") {
      response.mutable_error()->set_code(777);
      response.mutable_error()->set_code_name("FROM_THE_FUTURE");
      response.mutable_error()->set_message("a newer daemon");
      return Send(fd, response, request.request_id());
    }

    std::unique_lock<std::mutex> lock(mu_);
    switch (request.op_case()) {
      case Request::kRecordPut:
        records_[request.record_put().id()] = request.record_put().value();
        response.mutable_record_put();
        break;
      case Request::kRecordGet: {
        auto it = records_.find(request.record_get().id());
        if (it == records_.end()) {
          SetError(&response, ErrorCode::kRecordNotFound, "no live record with this id");
        } else {
          response.mutable_record_get()->set_value(it->second);
        }
        break;
      }
      case Request::kRecordExists:
        response.mutable_record_exists()->set_exists(records_.count(request.record_exists().id()));
        break;
      case Request::kRecordDelete: {
        auto it = records_.find(request.record_delete().id());
        if (it == records_.end()) {
          SetError(&response, ErrorCode::kRecordNotFound, "no live record with this id");
        } else {
          bin_[it->first] = it->second;
          records_.erase(it);
          response.mutable_record_delete();
        }
        break;
      }
      case Request::kRecordRestore: {
        const std::string& id = request.record_restore().id();
        if (records_.count(id)) {
          SetError(&response, ErrorCode::kAlreadyExists, "a live record has this id");
        } else if (!bin_.count(id)) {
          SetError(&response, ErrorCode::kNotInRecycleBin, "not in the recycle bin");
        } else {
          records_[id] = bin_[id];
          bin_.erase(id);
          response.mutable_record_restore();
        }
        break;
      }
      case Request::kRecordList: {
        uint32_t max = request.record_list().max_ids() ? request.record_list().max_ids() : 1000;
        auto it = records_.upper_bound(request.record_list().page_token());
        auto* list = response.mutable_record_list();
        for (; it != records_.end() && static_cast<uint32_t>(list->ids_size()) < max; ++it) {
          list->add_ids(it->first);
        }
        if (it != records_.end()) list->set_next_page_token(list->ids(list->ids_size() - 1));
        break;
      }
      case Request::kAttachmentPutBegin:
        upload->open = true;
        upload->name = request.attachment_put_begin().name();
        upload->content_type = request.attachment_put_begin().content_type();
        upload->data.clear();
        upload->oversized_chunk = false;
        response.mutable_attachment_put_begin();
        break;
      case Request::kAttachmentChunk:
        chunk_sizes_.push_back(request.attachment_chunk().data().size());
        if (!upload->open) {
          SetError(&response, ErrorCode::kUnexpectedFrame, "chunk with no upload open");
          break;
        }
        if (request.attachment_chunk().data().size() > kMiB) upload->oversized_chunk = true;
        upload->data += request.attachment_chunk().data();
        return absl::OkStatus();  // chunks are not answered
      case Request::kAttachmentPutCommit:
        if (!upload->open) {
          SetError(&response, ErrorCode::kUnexpectedFrame, "commit with no upload open");
        } else if (upload->oversized_chunk) {
          SetError(&response, ErrorCode::kFrameTooLarge, "a chunk exceeded 1 MiB");
        } else {
          attachments_[upload->name] = Attachment{upload->data, upload->content_type};
          auto* info = response.mutable_attachment_put_commit();
          info->set_size(upload->data.size());
          info->set_content_type(upload->content_type);
          info->set_created_micros(1'700'000'000'000'000);
        }
        upload->open = false;
        break;
      case Request::kAttachmentPutAbort:
        if (!upload->open) {
          SetError(&response, ErrorCode::kUnexpectedFrame, "abort with no upload open");
        } else {
          ++aborts;
          response.mutable_attachment_put_abort();
        }
        upload->open = false;
        break;
      case Request::kAttachmentGet: {
        const auto& get = request.attachment_get();
        auto it = attachments_.find(get.name());
        if (it == attachments_.end()) {
          SetError(&response, ErrorCode::kAttachmentNotFound, "no live attachment");
          break;
        }
        const std::string data = it->second.data;
        const std::string type = it->second.content_type;
        lock.unlock();
        uint64_t length = get.length()
                              ? get.length()
                              : data.size() - std::min<uint64_t>(get.offset(), data.size());
        if (get.offset() + length > data.size()) {
          SetError(&response, ErrorCode::kRangeBeyondEnd, "range ends beyond the attachment");
          return Send(fd, response, request.request_id());
        }
        std::string range = data.substr(get.offset(), length);
        if (short_download) range.resize(range.size() / 2);
        size_t step = download_frame_bytes;
        size_t at = 0;
        do {
          Response frame;
          auto* part = frame.mutable_attachment_get();
          if (at == 0) {
            part->mutable_info()->set_size(data.size());
            part->mutable_info()->set_content_type(type);
          }
          size_t n = std::min(step, range.size() - at);
          part->set_data(range.substr(at, n));
          at += n;
          part->set_last(at == range.size());
          ++download_frames;
          COFFER_RETURN_IF_ERROR(Send(fd, frame, request.request_id()));
        } while (at < range.size());
        return absl::OkStatus();
      }
      case Request::kAttachmentMetadata: {
        auto it = attachments_.find(request.attachment_metadata().name());
        if (it == attachments_.end()) {
          SetError(&response, ErrorCode::kAttachmentNotFound, "no live attachment");
        } else {
          response.mutable_attachment_metadata()->set_size(it->second.data.size());
          response.mutable_attachment_metadata()->set_content_type(it->second.content_type);
        }
        break;
      }
      case Request::kAttachmentDelete:
        if (attachments_.erase(request.attachment_delete().name()) == 0) {
          SetError(&response, ErrorCode::kAttachmentNotFound, "no live attachment");
        } else {
          response.mutable_attachment_delete();
        }
        break;
      case Request::kDatasetList:
        response.mutable_dataset_list()->add_datasets()->set_name("crm");
        response.mutable_dataset_list()->add_datasets()->set_name("hr");
        break;
      case Request::kDatasetDescribe:
        if (request.dataset_describe().name() != "crm") {
          SetError(&response, ErrorCode::kDatasetNotFound, "no such dataset");
        } else {
          response.mutable_dataset_describe()->set_name("crm");
          response.mutable_dataset_describe()->set_records(records_.size());
        }
        break;
      default:
        SetError(&response, ErrorCode::kWrongSocket, "not served on the data socket");
        break;
    }
    if (lock.owns_lock()) lock.unlock();
    return Send(fd, response, request.request_id());
  }

  std::string dir_;
  std::string path_;
  int listen_fd_ = -1;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<std::thread> threads_;
  std::set<int> open_fds_;
  std::map<std::string, std::string> records_;
  std::map<std::string, std::string> bin_;
  std::map<std::string, Attachment> attachments_;
  std::vector<size_t> chunk_sizes_;
};

// Avoids `"literal" + std::string&&`, which trips GCC 12's -Wrestrict false positive.
std::string ThreadId(int thread, int op) {
  std::string id = "t";
  id += std::to_string(thread);
  id += '/';
  id += std::to_string(op);
  return id;
}

std::unique_ptr<Client> MustConnect(const std::string& path, ClientOptions options = {}) {
  auto client = Client::Connect(path, options);
  EXPECT_TRUE(client.ok()) << client.status();
  return client.ok() ? std::move(client).value() : nullptr;
}

TEST(ClientTest, RecordsRoundTrip) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  std::string id("id\0with-nul", 11);
  ASSERT_TRUE(client->PutRecord("crm", id, "value-1").ok());
  auto got = client->GetRecord("crm", id);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "value-1");
  EXPECT_EQ(*client->RecordExists("crm", id), true);
  EXPECT_EQ(*client->RecordExists("crm", "other"), false);

  ASSERT_TRUE(client->DeleteRecord("crm", id).ok());
  EXPECT_EQ(*client->RecordExists("crm", id), false);
  EXPECT_EQ(ErrorCodeOf(client->DeleteRecord("crm", id)), ErrorCode::kRecordNotFound);
  ASSERT_TRUE(client->RestoreRecord("crm", id).ok());
  EXPECT_EQ(*client->GetRecord("crm", id), "value-1");
  EXPECT_EQ(ErrorCodeOf(client->RestoreRecord("crm", id)), ErrorCode::kAlreadyExists);
  EXPECT_EQ(ErrorCodeOf(client->RestoreRecord("crm", "never")), ErrorCode::kNotInRecycleBin);
}

TEST(ClientTest, ListRecordsFollowsPageTokens) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  std::set<std::string> stored;
  for (int i = 0; i < 7; ++i) {
    stored.insert("id-" + std::to_string(i));
    ASSERT_TRUE(client->PutRecord("crm", "id-" + std::to_string(i), "v").ok());
  }
  std::set<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    auto page = client->ListRecords("crm", token, 3);
    ASSERT_TRUE(page.ok()) << page.status();
    EXPECT_LE(page->ids.size(), 3u);
    listed.insert(page->ids.begin(), page->ids.end());
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 10);
  EXPECT_EQ(pages, 3);
  EXPECT_EQ(listed, stored);
}

TEST(ClientTest, DaemonErrorsKeepTheirCodeAndRetryAfter) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  auto missing = client->GetRecord("crm", "nothing");
  EXPECT_EQ(ErrorCodeOf(missing.status()), ErrorCode::kRecordNotFound);
  EXPECT_NE(missing.status().message().find("no live record"), std::string::npos);
  EXPECT_FALSE(RetryAfter(missing.status()).has_value());

  absl::Status denied = client->PutRecord("denied", "id", "v");
  EXPECT_EQ(ErrorCodeOf(denied), ErrorCode::kNotGranted);
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);

  absl::Status slow = client->PutRecord("slow", "id", "v");
  EXPECT_EQ(ErrorCodeOf(slow), ErrorCode::kSlowDown);
  ASSERT_TRUE(RetryAfter(slow).has_value());
  EXPECT_EQ(*RetryAfter(slow), std::chrono::milliseconds(250));

  absl::Status future = client->PutRecord("future", "id", "v");
  EXPECT_EQ(ErrorCodeOf(future), ErrorCode::kInternal);
  EXPECT_NE(future.message().find("777"), std::string::npos);
  EXPECT_NE(future.message().find("FROM_THE_FUTURE"), std::string::npos);

  auto described = client->DescribeDataset("nope");
  EXPECT_EQ(ErrorCodeOf(described.status()), ErrorCode::kDatasetNotFound);
  // Errors answered by the daemon leave the connection usable: nothing was redialled.
  EXPECT_TRUE(client->PutRecord("crm", "id", "v").ok());
  EXPECT_EQ(daemon.accepted.load(), 1);
}

TEST(ClientTest, DatasetMetadata) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->PutRecord("crm", "a", "v").ok());
  auto list = client->ListDatasets();
  ASSERT_TRUE(list.ok()) << list.status();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name(), "crm");
  EXPECT_EQ((*list)[1].name(), "hr");
  auto info = client->DescribeDataset("crm");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->records(), 1u);
}

TEST(ClientTest, ConnectFailuresAreDaemonUnavailableNamingThePath) {
  char pattern[] = "/tmp/coffer-client-test-XXXXXX";
  std::string dir = ::mkdtemp(pattern);
  std::string nowhere = dir + "/absent.sock";
  auto absent = Client::Connect(nowhere);
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(ErrorCodeOf(absent.status()), ErrorCode::kDaemonUnavailable);
  EXPECT_NE(absent.status().message().find(nowhere), std::string::npos);
  EXPECT_NE(absent.status().message().find("running"), std::string::npos);

  // A socket file nobody listens on (a daemon that died): connection refused.
  std::string stale = dir + "/stale.sock";
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, stale.data(), stale.size());
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
  ::close(fd);
  auto refused = Client::Connect(stale);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(ErrorCodeOf(refused.status()), ErrorCode::kDaemonUnavailable);
  EXPECT_NE(refused.status().message().find("refused"), std::string::npos);
  EXPECT_NE(refused.status().message().find(stale), std::string::npos);

  auto too_long = Client::Connect(dir + "/" + std::string(200, 'x'));
  EXPECT_EQ(ErrorCodeOf(too_long.status()), ErrorCode::kInvalidArgument);
  std::filesystem::remove_all(dir);
}

TEST(ClientTest, UploadSplitsIntoChunksOfAtMostOneMiB) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  const std::string contents = Pattern(3 * kMiB + 12'345, 1);
  auto writer = client->BeginAttachment("crm", "contract.pdf", "application/pdf");
  ASSERT_TRUE(writer.ok()) << writer.status();
  // Small appends, then one larger than two chunks, then the tail.
  size_t at = 0;
  for (; at < 700'000; at += 100'000) {
    ASSERT_TRUE((*writer)->Append(std::string_view(contents).substr(at, 100'000)).ok());
  }
  ASSERT_TRUE((*writer)->Append(std::string_view(contents).substr(at, 2 * kMiB + 5)).ok());
  at += 2 * kMiB + 5;
  ASSERT_TRUE((*writer)->Append(std::string_view(contents).substr(at)).ok());
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->size, contents.size());
  EXPECT_EQ(info->content_type, "application/pdf");
  EXPECT_EQ(info->created_micros, 1'700'000'000'000'000);
  EXPECT_EQ(daemon.AttachmentBytes("contract.pdf"), contents);

  std::vector<size_t> chunks = daemon.chunk_sizes();
  ASSERT_EQ(chunks.size(), 4u);  // 3 full MiB chunks and the tail
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i], kMiB);
  EXPECT_EQ(chunks.back(), 12'345u);

  // A finished writer refuses more work.
  EXPECT_EQ(ErrorCodeOf((*writer)->Append("more")), ErrorCode::kUploadClosed);
  EXPECT_EQ(ErrorCodeOf((*writer)->Commit().status()), ErrorCode::kUploadClosed);
  // The connection went back to the pool after the commit.
  EXPECT_TRUE(client->PutRecord("crm", "after", "v").ok());
  EXPECT_EQ(daemon.accepted.load(), 1);
}

TEST(ClientTest, SmallerChunkSizeIsHonoured) {
  FakeDaemon daemon;
  ClientOptions options;
  options.chunk_bytes = 1000;
  auto client = MustConnect(daemon.path(), options);
  ASSERT_NE(client, nullptr);
  auto writer = client->BeginAttachment("crm", "a", "text/plain");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(Pattern(4500, 2)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  EXPECT_EQ(daemon.chunk_sizes(), (std::vector<size_t>{1000, 1000, 1000, 1000, 500}));
}

TEST(ClientTest, WriterDestroyedWithoutCommitAborts) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  {
    auto writer = client->BeginAttachment("crm", "draft", "text/plain");
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE((*writer)->Append(Pattern(kMiB + 10, 3)).ok());
  }
  EXPECT_EQ(daemon.aborts.load(), 1);
  EXPECT_FALSE(daemon.HasAttachment("draft"));
  EXPECT_EQ(ErrorCodeOf(client->AttachmentMetadata("crm", "draft").status()),
            ErrorCode::kAttachmentNotFound);

  auto writer = client->BeginAttachment("crm", "draft", "text/plain");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Abort().ok());
  EXPECT_EQ(daemon.aborts.load(), 2);
  EXPECT_EQ(ErrorCodeOf((*writer)->Abort()), ErrorCode::kUploadClosed);
  EXPECT_FALSE(daemon.HasAttachment("draft"));
}

TEST(ClientTest, DownloadStreamsManyFrames) {
  FakeDaemon daemon;
  daemon.download_frame_bytes = 100'000;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  const std::string contents = Pattern(kMiB + 7, 4);
  auto writer = client->BeginAttachment("crm", "scan.png", "image/png");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(contents).ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  auto reader = client->OpenAttachment("crm", "scan.png");
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ((*reader)->info().size, contents.size());
  EXPECT_EQ((*reader)->info().content_type, "image/png");
  EXPECT_EQ((*reader)->range_bytes(), contents.size());
  std::string out;
  char buffer[4096];
  for (;;) {
    auto n = (*reader)->Read(buffer, sizeof(buffer));
    ASSERT_TRUE(n.ok()) << n.status();
    if (*n == 0) break;
    out.append(buffer, *n);
  }
  EXPECT_EQ(out, contents);
  EXPECT_EQ(daemon.download_frames.load(), 11);  // ceil((1 MiB + 7) / 100,000)

  auto range = client->OpenAttachment("crm", "scan.png", 99'990, 250'000);
  ASSERT_TRUE(range.ok()) << range.status();
  EXPECT_EQ((*range)->range_bytes(), 250'000u);
  auto all = (*range)->ReadAll();
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(*all, contents.substr(99'990, 250'000));

  auto tail = client->OpenAttachment("crm", "scan.png", contents.size() - 3);
  ASSERT_TRUE(tail.ok());
  EXPECT_EQ(*(*tail)->ReadAll(), contents.substr(contents.size() - 3));

  // Readers that finished gave their connection back: still one connection.
  EXPECT_EQ(daemon.accepted.load(), 1);

  EXPECT_EQ(ErrorCodeOf(client->OpenAttachment("crm", "absent").status()),
            ErrorCode::kAttachmentNotFound);
  EXPECT_EQ(ErrorCodeOf(client->OpenAttachment("crm", "scan.png", 10, contents.size()).status()),
            ErrorCode::kRangeBeyondEnd);
  auto meta = client->AttachmentMetadata("crm", "scan.png");
  ASSERT_TRUE(meta.ok());
  EXPECT_EQ(meta->size, contents.size());
  ASSERT_TRUE(client->DeleteAttachment("crm", "scan.png").ok());
  EXPECT_EQ(ErrorCodeOf(client->DeleteAttachment("crm", "scan.png")),
            ErrorCode::kAttachmentNotFound);
}

TEST(ClientTest, EmptyAttachmentRoundTrips) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  auto writer = client->BeginAttachment("crm", "empty", "");
  ASSERT_TRUE(writer.ok());
  auto info = (*writer)->Commit();
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size, 0u);
  EXPECT_TRUE(daemon.chunk_sizes().empty());
  auto reader = client->OpenAttachment("crm", "empty");
  ASSERT_TRUE(reader.ok()) << reader.status();
  char byte;
  EXPECT_EQ(*(*reader)->Read(&byte, 1), 0u);
}

TEST(ClientTest, ReaderDroppedMidStreamDoesNotPoisonThePool) {
  FakeDaemon daemon;
  daemon.download_frame_bytes = size_t{64} * 1024;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  auto writer = client->BeginAttachment("crm", "big", "");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(Pattern(2 * kMiB, 5)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  {
    auto reader = client->OpenAttachment("crm", "big");
    ASSERT_TRUE(reader.ok());
    char buffer[10];
    ASSERT_TRUE((*reader)->Read(buffer, sizeof(buffer)).ok());
  }
  // The abandoned download's frames must not be read as the answer to this request.
  ASSERT_TRUE(client->PutRecord("crm", "x", "y").ok());
  EXPECT_EQ(*client->GetRecord("crm", "x"), "y");
}

TEST(ClientTest, ProtocolViolationsAreUnexpectedFrame) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  auto writer = client->BeginAttachment("crm", "doc", "");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(Pattern(300'000, 6)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  daemon.short_download = true;
  auto reader = client->OpenAttachment("crm", "doc");
  absl::Status short_status = reader.ok() ? (*reader)->ReadAll().status() : reader.status();
  EXPECT_EQ(ErrorCodeOf(short_status), ErrorCode::kUnexpectedFrame);
  daemon.short_download = false;

  daemon.wrong_request_id = true;
  EXPECT_EQ(ErrorCodeOf(client->GetRecord("crm", "doc").status()), ErrorCode::kUnexpectedFrame);
  daemon.wrong_request_id = false;
  EXPECT_TRUE(client->PutRecord("crm", "ok", "v").ok());
}

TEST(ClientTest, OversizedRequestIsRefusedBeforeSending) {
  FakeDaemon daemon;
  ClientOptions options;
  options.max_frame_bytes = size_t{64} * 1024;
  auto client = MustConnect(daemon.path(), options);
  ASSERT_NE(client, nullptr);
  absl::Status status = client->PutRecord("crm", "big", std::string(100'000, 'v'));
  EXPECT_EQ(ErrorCodeOf(status), ErrorCode::kFrameTooLarge);
  EXPECT_EQ(daemon.requests.load(), 0);
  EXPECT_TRUE(client->PutRecord("crm", "small", "v").ok());
  EXPECT_EQ(daemon.accepted.load(), 1);
}

// Pipelining sends the calls back to back before reading their replies: this daemon reads ten
// requests before it answers any, which a client waiting for each reply would never get past
// (its request timeout, 2 s here, would fail the calls). Results come back in order, on one
// connection.
TEST(ClientTest, PipelinedCallsAreSentBeforeTheirRepliesAreRead) {
  FakeDaemon daemon;
  ClientOptions options;
  options.request_timeout = std::chrono::seconds(2);
  auto client = Client::Connect(daemon.path(), options);
  ASSERT_TRUE(client.ok()) << client.status();
  daemon.read_ahead = 9;
  RecordPipeline pipeline;
  for (int i = 0; i < 5; ++i) pipeline.Put("crm", absl::StrCat("p", i), absl::StrCat("v", i));
  for (int i = 0; i < 5; ++i) pipeline.Get("crm", absl::StrCat("p", i));
  auto results = (*client)->Run(std::move(pipeline));
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 10u);
  for (size_t i = 0; i < 10; ++i) {
    ASSERT_TRUE((*results)[i].status.ok()) << i << ": " << (*results)[i].status;
  }
  for (int i = 0; i < 5; ++i) EXPECT_EQ((*results)[5 + i].value, absl::StrCat("v", i));
  EXPECT_EQ(daemon.requests.load(), 10);
  EXPECT_EQ(daemon.accepted.load(), 1);
}

// A pipeline whose connection breaks: the calls answered keep their results, the others fail
// with the connection's error (not repeated: whether they took effect is unknown).
TEST(ClientTest, APipelineCutShortFailsOnlyItsUnansweredCalls) {
  FakeDaemon daemon;
  auto client = Client::Connect(daemon.path());
  ASSERT_TRUE(client.ok()) << client.status();
  daemon.answer_then_close = 3;  // the put below and two gets (set first: no race with it)
  RecordPipeline first;
  first.Put("crm", "a", "1");
  ASSERT_TRUE((*client)->Run(std::move(first)).ok());  // the connection is now pooled
  RecordPipeline pipeline;
  for (int i = 0; i < 4; ++i) pipeline.Get("crm", "a");
  auto results = (*client)->Run(std::move(pipeline));
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);
  for (size_t i = 0; i < 4; ++i) {
    const PipelinedResult& result = (*results)[i];
    if (i < 2) {
      EXPECT_TRUE(result.status.ok()) << result.status;
      EXPECT_EQ(result.value, "1");
    } else {
      EXPECT_EQ(ErrorCodeOf(result.status), ErrorCode::kDaemonUnavailable) << result.status;
    }
  }
  auto again = (*client)->GetRecord("crm", "a");  // a new connection
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, "1");
}

TEST(ClientTest, BrokenConnectionIsRedialledOnceForIdempotentCalls) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->PutRecord("crm", "id", "v").ok());
  EXPECT_EQ(daemon.accepted.load(), 1);

  // The daemon reads the get and drops the connection: the client dials again and repeats it.
  daemon.drop_next = 1;
  auto got = client->GetRecord("crm", "id");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, "v");
  EXPECT_EQ(daemon.accepted.load(), 2);

  // Only once: a second drop is reported.
  daemon.drop_next = 2;
  auto twice = client->GetRecord("crm", "id");
  EXPECT_EQ(ErrorCodeOf(twice.status()), ErrorCode::kDaemonUnavailable);
  EXPECT_NE(twice.status().message().find(daemon.path()), std::string::npos);

  // A delete is not repeated: its failure is reported and the record is untouched.
  daemon.drop_next = 1;
  EXPECT_EQ(ErrorCodeOf(client->DeleteRecord("crm", "id")), ErrorCode::kDaemonUnavailable);
  EXPECT_TRUE(daemon.HasRecord("id"));
  EXPECT_TRUE(client->DeleteRecord("crm", "id").ok());
  EXPECT_FALSE(daemon.HasRecord("id"));

  // A dropped upload fails the writer; the daemon saw the upload's connection close.
  auto writer = client->BeginAttachment("crm", "att", "");
  ASSERT_TRUE(writer.ok());
  daemon.drop_next = 1;
  absl::Status append = (*writer)->Append(Pattern(kMiB, 7));
  absl::StatusOr<AttachmentInfo> commit = append.ok() ? (*writer)->Commit() : append;
  EXPECT_EQ(ErrorCodeOf(commit.status()), ErrorCode::kDaemonUnavailable);
  EXPECT_FALSE(daemon.HasAttachment("att"));
}

TEST(ClientTest, IdleConnectionsClosedByTheDaemonAreNotReused) {
  FakeDaemon daemon;
  auto client = MustConnect(daemon.path());
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->PutRecord("crm", "id", "v").ok());
  daemon.CloseAllConnections();
  // Wait until the daemon's side has closed (its thread exits).
  while (daemon.active.load() != 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  // Not idempotent, so it would fail on a dead connection: it must get a new one instead.
  ASSERT_TRUE(client->DeleteRecord("crm", "id").ok());
  EXPECT_EQ(daemon.accepted.load(), 2);
}

TEST(ClientTest, MaxConnectionsBoundsOpenConnections) {
  FakeDaemon daemon;
  daemon.download_frame_bytes = 1000;
  ClientOptions options;
  options.max_connections = 2;
  options.request_timeout = std::chrono::milliseconds(300);
  auto client = MustConnect(daemon.path(), options);
  ASSERT_NE(client, nullptr);
  auto writer = client->BeginAttachment("crm", "a", "");
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE((*writer)->Append(Pattern(10'000, 8)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  // Two unfinished downloads hold both connections.
  auto first = client->OpenAttachment("crm", "a");
  auto second = client->OpenAttachment("crm", "a");
  ASSERT_TRUE(first.ok() && second.ok());
  auto blocked = client->GetRecord("crm", "x");
  EXPECT_EQ(ErrorCodeOf(blocked.status()), ErrorCode::kResourceExhausted);
  EXPECT_NE(blocked.status().message().find("max_connections"), std::string::npos);
  // Finishing one download frees its connection for the next call.
  ASSERT_TRUE((*first)->ReadAll().ok());
  EXPECT_EQ(ErrorCodeOf(client->GetRecord("crm", "x").status()), ErrorCode::kRecordNotFound);
  EXPECT_EQ(daemon.accepted.load(), 2);
}

TEST(ClientTest, EightThreadsShareThePool) {
  FakeDaemon daemon;
  ClientOptions options;
  // Idle = max: a connection is never closed for want of idle room, so the daemon's count of
  // accepted connections is exactly the number the client opened.
  options.idle_connections = 4;
  options.max_connections = 4;
  auto client = MustConnect(daemon.path(), options);
  ASSERT_NE(client, nullptr);
  constexpr int kThreads = 8;
  constexpr int kOps = 150;
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  threads.reserve(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        std::string id = ThreadId(t, i);
        std::string value = Pattern(1024, static_cast<uint32_t>(t * 1000 + i));
        if (!client->PutRecord("crm", id, value).ok()) ++failures;
        auto got = client->GetRecord("crm", id);
        if (!got.ok() || *got != value) ++failures;
        auto exists = client->RecordExists("crm", id);
        if (!exists.ok() || !*exists) ++failures;
        if (i % 25 == 0) {
          std::string contents =
              Pattern(kMiB / 2 + static_cast<size_t>(i), static_cast<uint32_t>(t));
          auto writer = client->BeginAttachment("crm", id, "");
          if (!writer.ok() || !(*writer)->Append(contents).ok() || !(*writer)->Commit().ok()) {
            ++failures;
            continue;
          }
          auto reader = client->OpenAttachment("crm", id);
          auto all = reader.ok() ? (*reader)->ReadAll() : reader.status();
          if (!all.ok() || *all != contents) ++failures;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(daemon.accepted.load(), 4);
  EXPECT_GE(daemon.max_active.load(), 2);  // the threads did run on several connections
  EXPECT_EQ(daemon.uploads_dropped.load(), 0);
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(daemon.HasRecord(ThreadId(t, kOps - 1)));
  }
}

}  // namespace
}  // namespace coffer::client
