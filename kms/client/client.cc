#include "kms/client/client.h"

#include <deque>

#include "kms/client/internal/connection_pool.h"

namespace coffer::client {

using coffer::v1::Request;
using coffer::v1::Response;
using internal::DaemonClosesAfter;
using internal::DeadlineAfter;
using internal::ErrorFromResponse;
using internal::InfoFromProto;
using internal::kRetryAfterPayload;

std::optional<std::chrono::milliseconds> RetryAfter(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kRetryAfterPayload);
  if (!payload.has_value()) return std::nullopt;
  std::string text(*payload);
  uint32_t millis = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), millis);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return std::chrono::milliseconds(millis);
}

namespace {

// Sets the dataset and the record id of a record request; returns it.
template <typename Op>
Op* WithId(Op* op, std::string_view dataset, std::string_view id) {
  op->set_dataset(dataset.data(), dataset.size());
  op->set_id(id.data(), id.size());
  return op;
}

// Sets the dataset and the attachment name of an attachment request; returns it.
template <typename Op>
Op* WithName(Op* op, std::string_view dataset, std::string_view name) {
  op->set_dataset(dataset.data(), dataset.size());
  op->set_name(name.data(), name.size());
  return op;
}

}  // namespace

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
  auto* op = WithId(request.mutable_record_put(), dataset, id);
  op->set_value(value.data(), value.size());
  // Repeating a put stores the same value again: safe after a broken connection.
  return Call(request, /*idempotent=*/true, Response::kRecordPut).status();
}

absl::StatusOr<std::string> Client::GetRecord(std::string_view dataset, std::string_view id) {
  Request request;
  WithId(request.mutable_record_get(), dataset, id);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordGet));
  return std::move(*response.mutable_record_get()->mutable_value());
}

// ---- Pipelining ----

void RecordPipeline::Put(std::string_view dataset, std::string_view id, std::string_view value) {
  auto* op = WithId(requests_.emplace_back().mutable_record_put(), dataset, id);
  op->set_value(value.data(), value.size());
  expected_.push_back(Response::kRecordPut);
}

void RecordPipeline::Get(std::string_view dataset, std::string_view id) {
  WithId(requests_.emplace_back().mutable_record_get(), dataset, id);
  expected_.push_back(Response::kRecordGet);
}

void RecordPipeline::Exists(std::string_view dataset, std::string_view id) {
  WithId(requests_.emplace_back().mutable_record_exists(), dataset, id);
  expected_.push_back(Response::kRecordExists);
}

void RecordPipeline::Delete(std::string_view dataset, std::string_view id) {
  WithId(requests_.emplace_back().mutable_record_delete(), dataset, id);
  expected_.push_back(Response::kRecordDelete);
}

namespace {

// The result an answered pipelined call, expecting result `expected`, gets from its reply.
PipelinedResult ResultOf(Response::ResultCase expected, Response& response) {
  PipelinedResult result;
  if (response.has_error()) {
    result.status = ErrorFromResponse(response.error());
    return result;
  }
  if (response.result_case() != expected) {
    result.status = MakeError(ErrorCode::kUnexpectedFrame,
                              "cofferd answered a pipelined call with another result");
  } else if (expected == Response::kRecordGet) {
    result.value = std::move(*response.mutable_record_get()->mutable_value());
  } else if (expected == Response::kRecordExists) {
    result.exists = response.record_exists().exists();
  }
  return result;
}

}  // namespace

absl::StatusOr<std::vector<PipelinedResult>> Client::Run(RecordPipeline pipeline) {
  std::vector<Request>& requests = pipeline.requests_;
  std::vector<PipelinedResult> results(requests.size());
  if (requests.empty()) return results;
  COFFER_ASSIGN_OR_RETURN(std::unique_ptr<internal::Connection> connection,
                          pool_->Acquire(/*fresh=*/false));
  std::vector<size_t> sizes;  // of each request, for the window
  sizes.reserve(requests.size());
  for (const Request& request : requests) sizes.push_back(request.ByteSizeLong());
  absl::Status broken;            // the connection's failure: every call not yet answered gets it
  std::deque<size_t> unanswered;  // sent, in order
  size_t unanswered_bytes = 0;
  size_t next = 0;
  while (broken.ok() && (next < requests.size() || !unanswered.empty())) {
    // Send a group: while the window has room, and always one when nothing is unanswered (so
    // the daemon, which reads no further frame of a connection whose reply is unsent, never
    // waits on a reader that is itself blocked writing).
    std::vector<Request*> group;
    std::vector<size_t> indexes;
    while (next < requests.size() && ((unanswered.empty() && group.empty()) ||
                                      (unanswered.size() + group.size() < kPipelineDepth &&
                                       unanswered_bytes + sizes[next] <= kPipelineBytes))) {
      unanswered_bytes += sizes[next];
      group.push_back(&requests[next]);
      indexes.push_back(next++);
    }
    if (!group.empty()) {
      std::vector<size_t> too_large;
      bool sent_nothing = false;
      absl::Status sent = connection->SendAll(group, &too_large, &sent_nothing);
      for (size_t i : too_large) {
        results[indexes[i]].status = MakeError(
            ErrorCode::kFrameTooLarge,
            "this call's request frame exceeds max_frame_bytes; send large data as an attachment");
        unanswered_bytes -= sizes[indexes[i]];
      }
      for (size_t i = 0, skip = 0; i < group.size(); ++i) {
        if (skip < too_large.size() && too_large[skip] == i) {
          ++skip;
          continue;
        }
        unanswered.push_back(indexes[i]);
      }
      if (!sent.ok()) {
        broken = sent;
        break;
      }
      if (unanswered.empty()) continue;  // every call of the group was too large
    }
    const size_t index = unanswered.front();
    Response response;
    absl::Status received = connection->Receive(requests[index].request_id(), &response);
    if (!received.ok()) {
      broken = received;
      break;
    }
    unanswered.pop_front();
    unanswered_bytes -= sizes[index];
    results[index] = ResultOf(pipeline.expected_[index], response);
    if (response.has_error() &&
        DaemonClosesAfter(static_cast<ErrorCode>(response.error().code()))) {
      broken = MakeError(ErrorCode::kDaemonUnavailable,
                         "cofferd at " + pool_->path() +
                             " closes the connection after an earlier call's error; this call "
                             "was not answered");
    }
  }
  if (broken.ok()) {
    pool_->Release(std::move(connection));
    return results;
  }
  pool_->Discard(std::move(connection));
  for (size_t index : unanswered) results[index].status = broken;
  for (; next < requests.size(); ++next) results[next].status = broken;
  return results;
}

absl::StatusOr<std::vector<absl::StatusOr<std::string>>> Client::GetRecords(
    std::string_view dataset, const std::vector<std::string>& ids) {
  Request request;
  auto* op = request.mutable_record_get_many();
  op->set_dataset(dataset.data(), dataset.size());
  for (const std::string& id : ids) op->add_ids(id);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordGetMany));
  auto* results = response.mutable_record_get_many()->mutable_results();
  if (results->size() != static_cast<int>(ids.size())) {
    return MakeError(ErrorCode::kUnexpectedFrame, "record_get_many answered another item count");
  }
  std::vector<absl::StatusOr<std::string>> out;
  out.reserve(ids.size());
  for (auto& item : *results) {
    if (item.has_error()) {
      out.emplace_back(ErrorFromResponse(item.error()));
    } else {
      out.emplace_back(std::move(*item.mutable_value()));
    }
  }
  return out;
}

absl::StatusOr<std::vector<absl::Status>> Client::PutRecords(
    std::string_view dataset, const std::vector<RecordWrite>& items) {
  Request request;
  auto* op = request.mutable_record_put_many();
  op->set_dataset(dataset.data(), dataset.size());
  for (const RecordWrite& item : items) {
    auto* put = op->add_items();
    put->set_id(item.id);
    put->set_value(item.value);
  }
  // Repeating the batch stores the same values again: safe after a broken connection.
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordPutMany));
  const auto& results = response.record_put_many().results();
  if (results.size() != static_cast<int>(items.size())) {
    return MakeError(ErrorCode::kUnexpectedFrame, "record_put_many answered another item count");
  }
  std::vector<absl::Status> out;
  out.reserve(items.size());
  for (const auto& item : results) {
    out.push_back(item.has_error() ? ErrorFromResponse(item.error()) : absl::OkStatus());
  }
  return out;
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
  WithId(request.mutable_record_exists(), dataset, id);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kRecordExists));
  return response.record_exists().exists();
}

absl::Status Client::DeleteRecord(std::string_view dataset, std::string_view id) {
  Request request;
  WithId(request.mutable_record_delete(), dataset, id);
  return Call(request, /*idempotent=*/false, Response::kRecordDelete).status();
}

absl::Status Client::RestoreRecord(std::string_view dataset, std::string_view id) {
  Request request;
  WithId(request.mutable_record_restore(), dataset, id);
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
  page.damaged = list->damaged();
  for (const auto& item : list->damaged_items()) page.damaged_refs.push_back(item.ref());
  return page;
}

absl::StatusOr<std::unique_ptr<AttachmentWriter>> Client::BeginAttachment(
    std::string_view dataset, std::string_view name, std::string_view content_type) {
  Request request;
  auto* op = WithName(request.mutable_attachment_put_begin(), dataset, name);
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
  auto* op = WithName(request.mutable_attachment_get(), dataset, name);
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
  WithName(request.mutable_attachment_metadata(), dataset, name);
  COFFER_ASSIGN_OR_RETURN(Response response, Call(request, true, Response::kAttachmentMetadata));
  return InfoFromProto(response.attachment_metadata());
}

absl::Status Client::DeleteAttachment(std::string_view dataset, std::string_view name) {
  Request request;
  WithName(request.mutable_attachment_delete(), dataset, name);
  return Call(request, /*idempotent=*/false, Response::kAttachmentDelete).status();
}

absl::Status Client::RestoreAttachment(std::string_view dataset, std::string_view name) {
  Request request;
  WithName(request.mutable_attachment_restore(), dataset, name);
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
