#include "kms/client/client.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <utility>

#include "absl/strings/cord.h"
#include "crypto/base/status.h"

namespace coffer::client {

using coffer::v1::Request;
using coffer::v1::Response;

namespace {

constexpr absl::string_view kRetryAfterPayload = "type.coffer.dev/coffer.client.RetryAfterMillis";

api::Deadline DeadlineAfter(std::chrono::milliseconds timeout) {
  return std::chrono::steady_clock::now() + timeout;
}

// Codes after which the daemon closes the connection (docs/errors.md): never reuse it.
bool DaemonClosesAfter(ErrorCode code) {
  switch (code) {
    case ErrorCode::kFrameTooLarge:
    case ErrorCode::kMalformedRequest:
    case ErrorCode::kRequestTimeout:
    case ErrorCode::kServerBusy:
    case ErrorCode::kShuttingDown:
      return true;
    default:
      return false;
  }
}

absl::Status ErrorFromResponse(const coffer::v1::Error& error) {
  auto code = static_cast<ErrorCode>(error.code());
  std::string message = "cofferd: " + error.message();
  if (ErrorCodeName(code) == "UNKNOWN" || error.code() <= 0) {
    // A code this client does not know (a newer daemon): keep it readable; maps to INTERNAL.
    message = "cofferd: " + error.code_name() + " (" + std::to_string(error.code()) +
              "): " + error.message();
  }
  absl::Status status = MakeError(code, message);
  if (error.retry_after_ms() > 0) {
    status.SetPayload(kRetryAfterPayload, absl::Cord(std::to_string(error.retry_after_ms())));
  }
  return status;
}

AttachmentInfo InfoFromProto(const coffer::v1::AttachmentInfo& info) {
  return AttachmentInfo{info.size(), info.content_type(), info.created_micros()};
}

std::string DialFailureMessage(const std::string& path, int err,
                               std::chrono::milliseconds timeout) {
  std::string head = "cannot connect to cofferd at " + path + ": ";
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return head +
             "no such socket. Is cofferd running, and is this its data socket? (scripts/start "
             "prints the socket paths; the example reads $COFFER_DATA_SOCKET)";
    case ECONNREFUSED:
      return head +
             "connection refused: the socket file exists but no cofferd listens on it (the "
             "daemon stopped or crashed; start it again and check its log)";
    case EACCES:
    case EPERM:
      return head +
             "permission denied: the data socket is mode 0660, so this user must be in the "
             "daemon's data group, and may need search permission on its directory";
    case EAGAIN:
    case ETIMEDOUT:
    case EINPROGRESS:
      return head + "the daemon did not accept within " + std::to_string(timeout.count()) +
             " ms (its accept backlog is full: overloaded or stalled)";
    default:
      return head + std::strerror(err);
  }
}

}  // namespace

std::optional<std::chrono::milliseconds> RetryAfter(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kRetryAfterPayload);
  if (!payload.has_value()) return std::nullopt;
  std::string text(*payload);
  uint32_t millis = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), millis);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return std::chrono::milliseconds(millis);
}

namespace internal {

// One connected socket with its frame reader and request-id counter.
class Connection {
 public:
  static absl::StatusOr<std::unique_ptr<Connection>> Dial(const std::string& path,
                                                          const ClientOptions& options) {
    int connect_errno = 0;
    absl::StatusOr<int> fd = api::DialUnixSocket(path, options.connect_timeout, &connect_errno);
    if (!fd.ok()) {
      if (connect_errno == 0) return fd.status();
      return MakeError(ErrorCode::kDaemonUnavailable,
                       DialFailureMessage(path, connect_errno, options.connect_timeout));
    }
    auto connection = std::unique_ptr<Connection>(new Connection(*fd, path, options));
    return connection;
  }

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection() { ::close(fd_); }

  // Assigns the next request id and sends `request`. Sets *sent_nothing when it failed before
  // writing a byte (the connection is then still usable).
  absl::Status Send(Request& request, bool* sent_nothing) {
    *sent_nothing = true;
    request.set_request_id(next_request_id_++);
    std::string frame;
    api::AppendFrame(request, &frame);
    if (frame.size() > options_.max_frame_bytes) {
      return MakeError(
          ErrorCode::kFrameTooLarge,
          "request frame of " + std::to_string(frame.size()) + " bytes exceeds max_frame_bytes (" +
              std::to_string(options_.max_frame_bytes) + "); send large data as an attachment");
    }
    *sent_nothing = false;
    return Annotate(api::WriteAll(fd_, frame, DeadlineAfter(options_.request_timeout)));
  }

  // Reads the next response frame, which must answer `request_id`.
  absl::Status Receive(uint64_t request_id, Response* response) {
    bool end_of_stream = false;
    absl::Status status =
        reader_.Read(response, DeadlineAfter(options_.request_timeout), &end_of_stream);
    if (!status.ok()) return Annotate(status);
    if (end_of_stream) {
      return MakeError(ErrorCode::kDaemonUnavailable,
                       "cofferd at " + path_ +
                           " closed the connection before answering (it may have restarted or "
                           "dropped the connection; check its log)");
    }
    if (response->request_id() != request_id) {
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "response for request " + std::to_string(response->request_id()) +
                           " while waiting for request " + std::to_string(request_id));
    }
    return absl::OkStatus();
  }

  // True when the daemon closed this idle connection (or sent something unasked): either way it
  // must not carry another request.
  bool LooksClosed() {
    if (reader_.buffered() > 0) return true;
    pollfd pfd{fd_, POLLIN, 0};
    return ::poll(&pfd, 1, 0) != 0;
  }

  uint64_t last_request_id() const { return next_request_id_ - 1; }

 private:
  Connection(int fd, std::string path, const ClientOptions& options)
      : fd_(fd), path_(std::move(path)), options_(options), reader_(fd, options.max_frame_bytes) {}

  absl::Status Annotate(const absl::Status& status) const {
    if (status.ok()) return status;
    ErrorCode code = ErrorCodeOf(status);
    std::string what(status.message());
    switch (code) {
      case ErrorCode::kDaemonUnavailable:
        return MakeError(code, "connection to cofferd at " + path_ + " broke: " + what +
                                   " (the daemon may have restarted or closed the connection)");
      case ErrorCode::kRequestTimeout:
        return MakeError(code, "cofferd at " + path_ + " did not answer within " +
                                   std::to_string(options_.request_timeout.count()) +
                                   " ms (ClientOptions::request_timeout)");
      case ErrorCode::kFrameTooLarge:
        return MakeError(code, "response from cofferd at " + path_ + ": " + what +
                                   " (raise ClientOptions::max_frame_bytes to the daemon's)");
      case ErrorCode::kMalformedRequest:
        return MakeError(ErrorCode::kUnexpectedFrame,
                         "response from cofferd at " + path_ + " is not a coffer.v1.Response");
      default:
        return status;
    }
  }

  int fd_;
  std::string path_;
  const ClientOptions& options_;
  api::FrameReader reader_;
  uint64_t next_request_id_ = 1;
};

class ConnectionPool {
 public:
  ConnectionPool(std::string path, ClientOptions options)
      : path_(std::move(path)), options_(options) {
    options_.max_connections = std::max<size_t>(options_.max_connections, 1);
    options_.chunk_bytes = std::max<size_t>(options_.chunk_bytes, 1);
  }

  const std::string& path() const { return path_; }
  const ClientOptions& options() const { return options_; }

  // An idle connection, or a newly dialled one when `fresh` or none is idle. Waits while
  // max_connections are open and none is idle.
  absl::StatusOr<std::unique_ptr<Connection>> Acquire(bool fresh) {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      while (!idle_.empty()) {
        std::unique_ptr<Connection> connection = std::move(idle_.back());
        idle_.pop_back();
        if (!fresh && !connection->LooksClosed()) return connection;
        --open_;  // closed by the daemon, or the caller wants a new one: drop it
      }
      if (open_ < options_.max_connections) break;
      if (!released_.wait_until(lock, DeadlineAfter(options_.request_timeout), [&] {
            return !idle_.empty() || open_ < options_.max_connections;
          })) {
        return MakeError(ErrorCode::kResourceExhausted,
                         "all " + std::to_string(options_.max_connections) +
                             " connections of this client are in use (raise "
                             "ClientOptions::max_connections, or finish open attachment "
                             "readers and writers)");
      }
    }
    ++open_;
    lock.unlock();
    auto connection = Connection::Dial(path_, options_);
    if (!connection.ok()) Discard(nullptr);
    return connection;
  }

  // Returns a healthy connection after a complete exchange.
  void Release(std::unique_ptr<Connection> connection) {
    std::lock_guard<std::mutex> lock(mu_);
    if (idle_.size() < options_.idle_connections) {
      idle_.push_back(std::move(connection));
    } else {
      connection.reset();
      --open_;
    }
    released_.notify_one();
  }

  // Closes a connection that must not be reused (or accounts for a failed dial: nullptr).
  void Discard(std::unique_ptr<Connection> connection) {
    connection.reset();
    std::lock_guard<std::mutex> lock(mu_);
    --open_;
    released_.notify_one();
  }

 private:
  const std::string path_;
  ClientOptions options_;
  std::mutex mu_;
  std::condition_variable released_;
  std::vector<std::unique_ptr<Connection>> idle_;  // guarded by mu_
  size_t open_ = 0;                                // guarded by mu_: idle + in use
};

namespace {

// One request/response exchange with the pool's retry rule. On success returns the response
// and, when `keep` is non-null, hands the connection to the caller instead of the pool.
absl::StatusOr<Response> Exchange(ConnectionPool& pool, Request& request, bool idempotent,
                                  Response::ResultCase expected,
                                  std::unique_ptr<Connection>* keep) {
  for (int attempt = 0;; ++attempt) {
    auto acquired = pool.Acquire(/*fresh=*/attempt > 0);
    if (!acquired.ok()) return acquired.status();
    std::unique_ptr<Connection> connection = std::move(acquired).value();
    bool sent_nothing = false;
    absl::Status status = connection->Send(request, &sent_nothing);
    Response response;
    if (status.ok()) status = connection->Receive(request.request_id(), &response);
    if (!status.ok()) {
      if (sent_nothing) {
        pool.Release(std::move(connection));
        return status;
      }
      pool.Discard(std::move(connection));
      if (idempotent && attempt == 0 && ErrorCodeOf(status) == ErrorCode::kDaemonUnavailable) {
        continue;  // the connection broke: once more on a new one
      }
      return status;
    }
    if (response.has_error()) {
      absl::Status error = ErrorFromResponse(response.error());
      if (DaemonClosesAfter(ErrorCodeOf(error))) {
        pool.Discard(std::move(connection));
      } else {
        pool.Release(std::move(connection));
      }
      return error;
    }
    if (response.result_case() != expected) {
      pool.Discard(std::move(connection));
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "cofferd answered request " + std::to_string(request.request_id()) +
                           " with result field " + std::to_string(response.result_case()) +
                           ", expected " + std::to_string(expected));
    }
    if (keep != nullptr) {
      *keep = std::move(connection);
    } else {
      pool.Release(std::move(connection));
    }
    return response;
  }
}

}  // namespace
}  // namespace internal

// ---- AttachmentWriter ----

AttachmentWriter::AttachmentWriter(std::shared_ptr<internal::ConnectionPool> pool,
                                   std::unique_ptr<internal::Connection> connection)
    : pool_(std::move(pool)), connection_(std::move(connection)) {}

AttachmentWriter::~AttachmentWriter() {
  if (!finished_ && connection_ != nullptr) {
    // Best effort: the daemon also aborts an upload whose connection closes.
    (void)Abort();
  }
  if (connection_ != nullptr) pool_->Discard(std::move(connection_));
}

absl::Status AttachmentWriter::CheckOpen() const {
  if (!failure_.ok()) return failure_;
  if (finished_) {
    return MakeError(ErrorCode::kUploadClosed, "the upload was already committed or aborted");
  }
  return absl::OkStatus();
}

absl::Status AttachmentWriter::Fail(absl::Status status) {
  failure_ = status;
  finished_ = true;
  if (connection_ != nullptr) pool_->Discard(std::move(connection_));
  return status;
}

absl::Status AttachmentWriter::SendChunk(std::string_view bytes) {
  Request request;
  request.mutable_attachment_chunk()->set_data(bytes.data(), bytes.size());
  bool sent_nothing = false;
  absl::Status status = connection_->Send(request, &sent_nothing);
  if (!status.ok()) return Fail(status);
  return absl::OkStatus();
}

absl::Status AttachmentWriter::Append(std::string_view bytes) {
  COFFER_RETURN_IF_ERROR(CheckOpen());
  const size_t chunk = pool_->options().chunk_bytes;
  if (!pending_.empty()) {
    size_t take = std::min(chunk - pending_.size(), bytes.size());
    pending_.append(bytes.data(), take);
    bytes.remove_prefix(take);
    if (pending_.size() < chunk) return absl::OkStatus();
    COFFER_RETURN_IF_ERROR(SendChunk(pending_));
    pending_.clear();
  }
  while (bytes.size() >= chunk) {
    COFFER_RETURN_IF_ERROR(SendChunk(bytes.substr(0, chunk)));
    bytes.remove_prefix(chunk);
  }
  pending_.assign(bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::StatusOr<AttachmentInfo> AttachmentWriter::Commit() {
  COFFER_RETURN_IF_ERROR(CheckOpen());
  if (!pending_.empty()) {
    COFFER_RETURN_IF_ERROR(SendChunk(pending_));
    pending_.clear();
  }
  Request request;
  request.mutable_attachment_put_commit();
  bool sent_nothing = false;
  absl::Status status = connection_->Send(request, &sent_nothing);
  Response response;
  if (status.ok()) status = connection_->Receive(request.request_id(), &response);
  if (!status.ok()) return Fail(status);
  finished_ = true;
  if (response.has_error()) {
    absl::Status error = ErrorFromResponse(response.error());
    failure_ = error;
    if (DaemonClosesAfter(ErrorCodeOf(error))) {
      pool_->Discard(std::move(connection_));
    } else {
      pool_->Release(std::move(connection_));
    }
    return error;
  }
  if (response.result_case() != Response::kAttachmentPutCommit) {
    return Fail(MakeError(ErrorCode::kUnexpectedFrame,
                          "cofferd answered an attachment commit with another result"));
  }
  pool_->Release(std::move(connection_));
  return InfoFromProto(response.attachment_put_commit());
}

absl::Status AttachmentWriter::Abort() {
  COFFER_RETURN_IF_ERROR(CheckOpen());
  pending_.clear();
  Request request;
  request.mutable_attachment_put_abort();
  bool sent_nothing = false;
  absl::Status status = connection_->Send(request, &sent_nothing);
  Response response;
  if (status.ok()) status = connection_->Receive(request.request_id(), &response);
  if (!status.ok()) return Fail(status);
  finished_ = true;
  if (response.has_error()) {
    absl::Status error = ErrorFromResponse(response.error());
    pool_->Discard(std::move(connection_));
    return error;
  }
  if (response.result_case() != Response::kAttachmentPutAbort) {
    return Fail(MakeError(ErrorCode::kUnexpectedFrame,
                          "cofferd answered an attachment abort with another result"));
  }
  pool_->Release(std::move(connection_));
  return absl::OkStatus();
}

// ---- AttachmentReader ----

AttachmentReader::AttachmentReader(std::shared_ptr<internal::ConnectionPool> pool,
                                   std::unique_ptr<internal::Connection> connection,
                                   uint64_t request_id)
    : pool_(std::move(pool)), connection_(std::move(connection)), request_id_(request_id) {}

AttachmentReader::~AttachmentReader() {
  // Frames of an unfinished download may still be in flight: the connection cannot be reused.
  if (connection_ != nullptr) pool_->Discard(std::move(connection_));
}

absl::Status AttachmentReader::Accept(coffer::v1::AttachmentGetResponse* frame) {
  received_ += frame->data().size();
  if (received_ > expected_) {
    return MakeError(ErrorCode::kUnexpectedFrame, "cofferd sent more attachment bytes than the " +
                                                      std::to_string(expected_) +
                                                      " of the requested range");
  }
  chunk_ = std::move(*frame->mutable_data());
  chunk_pos_ = 0;
  if (frame->last()) {
    if (received_ != expected_) {
      return MakeError(ErrorCode::kUnexpectedFrame, "cofferd ended the download after " +
                                                        std::to_string(received_) + " of " +
                                                        std::to_string(expected_) + " bytes");
    }
    last_seen_ = true;
    pool_->Release(std::move(connection_));
  }
  return absl::OkStatus();
}

absl::Status AttachmentReader::NextFrame() {
  Response response;
  absl::Status status = connection_->Receive(request_id_, &response);
  if (status.ok() && response.has_error()) {
    status = ErrorFromResponse(response.error());
  } else if (status.ok() && response.result_case() != Response::kAttachmentGet) {
    status = MakeError(ErrorCode::kUnexpectedFrame,
                       "cofferd sent another result in the middle of a download");
  }
  if (status.ok()) status = Accept(response.mutable_attachment_get());
  if (!status.ok()) {
    failure_ = status;
    if (connection_ != nullptr) pool_->Discard(std::move(connection_));
  }
  return status;
}

absl::StatusOr<size_t> AttachmentReader::Read(char* buffer, size_t size) {
  if (size == 0) return size_t{0};
  for (;;) {
    if (!failure_.ok()) return failure_;
    if (chunk_pos_ < chunk_.size()) {
      size_t n = std::min(size, chunk_.size() - chunk_pos_);
      std::memcpy(buffer, chunk_.data() + chunk_pos_, n);
      chunk_pos_ += n;
      return n;
    }
    if (last_seen_) return size_t{0};
    (void)NextFrame();  // a failure is in failure_
  }
}

absl::StatusOr<std::string> AttachmentReader::ReadAll() {
  std::string out;
  if (!failure_.ok()) return failure_;
  out.reserve(static_cast<size_t>(expected_ - received_) + (chunk_.size() - chunk_pos_));
  for (;;) {
    out.append(chunk_, chunk_pos_, std::string::npos);
    chunk_pos_ = chunk_.size();
    if (last_seen_) return out;
    COFFER_RETURN_IF_ERROR(NextFrame());
  }
}

// ---- Client ----

Client::Client(std::shared_ptr<internal::ConnectionPool> pool) : pool_(std::move(pool)) {}
Client::~Client() = default;

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(std::string socket_path,
                                                        ClientOptions options) {
  auto pool = std::make_shared<internal::ConnectionPool>(std::move(socket_path), options);
  COFFER_ASSIGN_OR_RETURN(auto first, pool->Acquire(/*fresh=*/true));
  pool->Release(std::move(first));
  return std::unique_ptr<Client>(new Client(std::move(pool)));
}

const std::string& Client::socket_path() const { return pool_->path(); }

absl::StatusOr<Response> Client::Call(Request& request, bool idempotent,
                                      Response::ResultCase expected) {
  return internal::Exchange(*pool_, request, idempotent, expected, nullptr);
}

absl::Status Client::PutRecord(std::string_view dataset, std::string_view id,
                               std::string_view value) {
  Request request;
  auto* op = request.mutable_record_put();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  op->set_value(value.data(), value.size());
  // Repeating a put stores the same value again: safe after a broken connection.
  return Call(request, /*idempotent=*/true, Response::kRecordPut).status();
}

absl::StatusOr<std::string> Client::GetRecord(std::string_view dataset, std::string_view id) {
  Request request;
  auto* op = request.mutable_record_get();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordGet));
  return std::move(*response.mutable_record_get()->mutable_value());
}

namespace {

// The tokens and key version of a pseudonymize or translate response, moved out of it.
template <typename TokenResponse>
PseudonymBatch TakeBatch(TokenResponse* out) {
  PseudonymBatch batch;
  batch.key_version = out->key_version();
  batch.tokens.assign(std::make_move_iterator(out->mutable_tokens()->begin()),
                      std::make_move_iterator(out->mutable_tokens()->end()));
  return batch;
}

}  // namespace

absl::StatusOr<PseudonymBatch> Client::Pseudonymize(std::string_view dataset,
                                                    const std::vector<std::string>& identifiers) {
  Request request;
  auto* op = request.mutable_pseudonymize();
  op->set_dataset(dataset.data(), dataset.size());
  for (const std::string& identifier : identifiers) op->add_identifiers(identifier);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kPseudonymize));
  return TakeBatch(response.mutable_pseudonymize());
}

absl::StatusOr<std::vector<std::string>> Client::Reidentify(std::string_view dataset,
                                                            const std::vector<std::string>& tokens,
                                                            coffer::v1::Mask mask) {
  Request request;
  auto* op = request.mutable_pseudonym_reidentify();
  op->set_dataset(dataset.data(), dataset.size());
  for (const std::string& token : tokens) op->add_tokens(token);
  op->set_mask(mask);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kPseudonymReidentify));
  auto* out = response.mutable_pseudonym_reidentify()->mutable_identifiers();
  return std::vector<std::string>(std::make_move_iterator(out->begin()),
                                  std::make_move_iterator(out->end()));
}

absl::StatusOr<PseudonymBatch> Client::TranslatePseudonyms(std::string_view dataset,
                                                           const std::vector<std::string>& tokens) {
  Request request;
  auto* op = request.mutable_pseudonym_translate();
  op->set_dataset(dataset.data(), dataset.size());
  for (const std::string& token : tokens) op->add_tokens(token);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kPseudonymTranslate));
  return TakeBatch(response.mutable_pseudonym_translate());
}

absl::StatusOr<bool> Client::RecordExists(std::string_view dataset, std::string_view id) {
  Request request;
  auto* op = request.mutable_record_exists();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordExists));
  return response.record_exists().exists();
}

absl::Status Client::DeleteRecord(std::string_view dataset, std::string_view id) {
  Request request;
  auto* op = request.mutable_record_delete();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  return Call(request, /*idempotent=*/false, Response::kRecordDelete).status();
}

absl::Status Client::RestoreRecord(std::string_view dataset, std::string_view id) {
  Request request;
  auto* op = request.mutable_record_restore();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  return Call(request, /*idempotent=*/false, Response::kRecordRestore).status();
}

absl::StatusOr<RecordPage> Client::ListRecords(std::string_view dataset,
                                               std::string_view page_token, uint32_t max_ids) {
  Request request;
  auto* op = request.mutable_record_list();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_page_token(page_token.data(), page_token.size());
  op->set_max_ids(max_ids);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordList));
  RecordPage page;
  auto* list = response.mutable_record_list();
  page.ids.reserve(list->ids_size());
  for (std::string& id : *list->mutable_ids()) page.ids.push_back(std::move(id));
  page.next_page_token = std::move(*list->mutable_next_page_token());
  return page;
}

absl::StatusOr<std::unique_ptr<AttachmentWriter>> Client::BeginAttachment(
    std::string_view dataset, std::string_view name, std::string_view content_type) {
  Request request;
  auto* op = request.mutable_attachment_put_begin();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  op->set_content_type(content_type.data(), content_type.size());
  std::unique_ptr<internal::Connection> connection;
  // A begin that never arrived opened nothing; one that did is aborted by the daemon when its
  // connection closed. Either way repeating it is safe.
  COFFER_RETURN_IF_ERROR(internal::Exchange(*pool_, request, /*idempotent=*/true,
                                            Response::kAttachmentPutBegin, &connection)
                             .status());
  return std::unique_ptr<AttachmentWriter>(new AttachmentWriter(pool_, std::move(connection)));
}

absl::StatusOr<std::unique_ptr<AttachmentReader>> Client::OpenAttachment(std::string_view dataset,
                                                                         std::string_view name,
                                                                         uint64_t offset,
                                                                         uint64_t length) {
  Request request;
  auto* op = request.mutable_attachment_get();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  op->set_offset(offset);
  op->set_length(length);
  std::unique_ptr<internal::Connection> connection;
  COFFER_ASSIGN_OR_RETURN(Response first,
                          internal::Exchange(*pool_, request, /*idempotent=*/true,
                                             Response::kAttachmentGet, &connection));
  std::unique_ptr<AttachmentReader> reader(
      new AttachmentReader(pool_, std::move(connection), request.request_id()));
  auto* frame = first.mutable_attachment_get();
  if (!frame->has_info()) {
    return MakeError(ErrorCode::kUnexpectedFrame,
                     "cofferd's first download frame carries no attachment info");
  }
  reader->info_ = InfoFromProto(frame->info());
  if (length == 0) {
    if (offset > reader->info_.size) {
      return MakeError(ErrorCode::kUnexpectedFrame,
                       "cofferd started a download at an offset beyond the attachment");
    }
    reader->expected_ = reader->info_.size - offset;
  } else {
    reader->expected_ = length;
  }
  COFFER_RETURN_IF_ERROR(reader->Accept(frame));
  return reader;
}

absl::StatusOr<AttachmentInfo> Client::AttachmentMetadata(std::string_view dataset,
                                                          std::string_view name) {
  Request request;
  auto* op = request.mutable_attachment_metadata();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kAttachmentMetadata));
  return InfoFromProto(response.attachment_metadata());
}

absl::Status Client::DeleteAttachment(std::string_view dataset, std::string_view name) {
  Request request;
  auto* op = request.mutable_attachment_delete();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  return Call(request, /*idempotent=*/false, Response::kAttachmentDelete).status();
}

absl::Status Client::RestoreAttachment(std::string_view dataset, std::string_view name) {
  Request request;
  auto* op = request.mutable_attachment_restore();
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  return Call(request, /*idempotent=*/false, Response::kAttachmentRestore).status();
}

absl::StatusOr<std::vector<coffer::v1::DatasetInfo>> Client::ListDatasets() {
  Request request;
  request.mutable_dataset_list();
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kDatasetList));
  std::vector<coffer::v1::DatasetInfo> out;
  for (auto& info : *response.mutable_dataset_list()->mutable_datasets()) {
    out.push_back(std::move(info));
  }
  return out;
}

absl::StatusOr<coffer::v1::DatasetInfo> Client::DescribeDataset(std::string_view name) {
  Request request;
  request.mutable_dataset_describe()->set_name(name.data(), name.size());
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kDatasetDescribe));
  return std::move(*response.mutable_dataset_describe());
}

}  // namespace coffer::client
