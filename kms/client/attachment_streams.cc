// The client library's attachment streams: AttachmentWriter (chunk frames on a connection held
// for the upload) and AttachmentReader (ranged download frames).

#include "kms/client/client.h"
#include "kms/client/internal/connection_pool.h"

namespace coffer::client {

using coffer::v1::Request;
using coffer::v1::Response;
using internal::DaemonClosesAfter;
using internal::DeadlineAfter;
using internal::ErrorFromResponse;
using internal::InfoFromProto;
using internal::kRetryAfterPayload;

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

}  // namespace coffer::client
