// The data domain of Services::ConnectionSession: records, attachments (uploads in chunk
// frames, ranged downloads) and pseudonyms, each audited through the batching writer.

#include <algorithm>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kms/api/error_response.h"
#include "kms/api/framing.h"
#include "kms/audit/audit_format.h"
#include "kms/audit/verifier.h"
#include "kms/ops/canary.h"
#include "kms/ops/internal/connection_session.h"
#include "kms/ops/progress_stream.h"
#include "openssl/bio.h"
#include "openssl/crypto.h"
#include "openssl/pem.h"
#include "openssl/sha.h"
#include "openssl/x509.h"
#include "rocksdb/iterator.h"
#include "storage/data_key.h"
#include "storage/dataset_erasure.h"

namespace coffer::daemon {
namespace {

// Room a record_get_many reply keeps: its envelope (request id, field tags, the frame's length
// prefix) below the frame limit, each value's own tags and lengths, and, for every item still
// to come, an error answer (code, name, fixed text).
constexpr size_t kReplyEnvelopeBytes = 1024;
constexpr size_t kItemValueOverhead = 16;
constexpr size_t kItemErrorBytes = 256;

}  // namespace

absl::Status Services::ConnectionSession::HandleData(const pb::Request& request, Handler handler,
                                                     ResponseSink* sink) {
  const std::string_view dataset = DatasetNamedBy(request);
  absl::StatusOr<uint64_t> handle =
      MakeError(ErrorCode::kMalformedRequest, "the request names no dataset");
  if (!dataset.empty()) handle = deps_.keys->FindDataset(dataset);
  switch (handler) {
    case Handler::kRecords:
      return HandleRecord(request, sink, handle);
    case Handler::kAttachments:
      return HandleAttachment(request, sink, handle);
    case Handler::kPseudonyms:
      return HandlePseudonym(request, sink, handle);
    case Handler::kUploadFrame:
    case Handler::kAdmin:
    case Handler::kAdminControl:
    case Handler::kWired:
    case Handler::kGrants:
      break;
  }
  return SendError(sink, request, MakeError(ErrorCode::kMalformedRequest, "not a data operation"));
}

// record_put, _get, _exists, _delete, _restore, _list. `handle`: the dataset the request names, or
// why it has none.
absl::Status Services::ConnectionSession::HandleRecord(const pb::Request& request,
                                                       ResponseSink* sink,
                                                       const absl::StatusOr<uint64_t>& handle) {
  const uint64_t h = handle.value_or(0);
  pb::Response response;
  switch (request.op_case()) {
    case pb::Request::kRecordPut: {
      const auto& r = request.record_put();
      absl::Status result = handle.status();
      MovedItem moved{audit::ItemMove::kRecordWrite};
      if (result.ok()) result = deps_.records->Put(h, r.id(), r.value(), &moved.ref);
      if (result.ok()) response.mutable_record_put();
      return Finish(sink, request, audit::v1::ACCESS_WRITE, h, result, 1, std::move(response),
                    &moved);
    }
    case pb::Request::kRecordGet: {
      const auto& r = request.record_get();
      absl::Status result = handle.status();
      if (result.ok()) {
        absl::StatusOr<std::string> value = deps_.records->Get(h, r.id());
        result = value.status();
        if (value.ok()) response.mutable_record_get()->set_value(*std::move(value));
        // A canary's read is audited (CANARY_READ) before its value leaves (canary.h).
        if (result.ok() && deps_.canaries != nullptr) {
          result = deps_.canaries->CheckRead(actor_, h, pb::CANARY_RECORD, r.id());
          if (!result.ok()) response.clear_result();
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordExists: {
      absl::Status result = handle.status();
      if (result.ok()) {
        absl::StatusOr<bool> exists = deps_.records->Exists(h, request.record_exists().id());
        result = exists.status();
        if (exists.ok()) response.mutable_record_exists()->set_exists(*exists);
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kRecordDelete: {
      absl::Status result = handle.status();
      MovedItem moved{audit::ItemMove::kRecordDelete};
      if (result.ok()) result = deps_.records->Delete(h, request.record_delete().id(), &moved.ref);
      if (result.ok()) response.mutable_record_delete();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response),
                    &moved);
    }
    case pb::Request::kRecordRestore: {
      absl::Status result = handle.status();
      MovedItem moved{audit::ItemMove::kRecordRestore};
      if (result.ok())
        result = deps_.records->Restore(h, request.record_restore().id(), &moved.ref);
      if (result.ok()) response.mutable_record_restore();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response),
                    &moved);
    }
    case pb::Request::kRecordList:
      return HandleRecordList(request, sink, handle);
    case pb::Request::kRecordGetMany:
    case pb::Request::kRecordPutMany:
      return HandleRecordBatch(request, sink, handle);
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kMalformedRequest, "unknown data operation"));
  }
}

// record_list: one page of ids, damaged records skipped and reported.
absl::Status Services::ConnectionSession::HandleRecordList(const pb::Request& request,
                                                           ResponseSink* sink,
                                                           const absl::StatusOr<uint64_t>& handle) {
  const uint64_t h = handle.value_or(0);
  pb::Response response;
  const auto& r = request.record_list();
  uint32_t max_ids = r.max_ids() == 0 ? kDefaultListIds : r.max_ids();
  absl::Status result = handle.status();
  if (result.ok() && max_ids > kMaxListIds) {
    result = MakeError(ErrorCode::kInvalidArgument, "record_list.max_ids must be 1-10,000");
  }
  uint32_t count = 0;
  // Storage's page tokens are bytes; the API's are strings (proto3 strings must be UTF-8),
  // so they travel as unpadded web-safe base64.
  std::string token;
  if (result.ok() && !absl::WebSafeBase64Unescape(r.page_token(), &token)) {
    result = MakeError(ErrorCode::kInvalidArgument, "record_list.page_token is not valid");
  }
  if (result.ok()) {
    auto page = deps_.records->ListIds(h, token, max_ids);
    result = page.status();
    if (page.ok()) {
      auto* out = response.mutable_record_list();
      count = static_cast<uint32_t>(page->ids.size());
      for (std::string& id : page->ids) out->add_ids(std::move(id));
      out->set_next_page_token(absl::WebSafeBase64Escape(page->next_page_token));
      // A damaged record is skipped, not fatal: its reference goes to the caller and, once,
      // to the event log (docs/daemon.md, "Damaged items").
      const std::vector<storage::DamagedItem> damaged = page->damaged.listed();
      out->set_damaged(page->damaged.count());
      AppendWire(damaged, out->mutable_damaged_items());
      if (deps_.damaged_events != nullptr) {
        deps_.damaged_events->Raise(h, r.dataset(), damaged).IgnoreError();  // logged there
      }
    }
  }
  return Finish(sink, request, audit::v1::ACCESS_READ, h, result, count, std::move(response));
}

// record_get_many, record_put_many (data.proto, "Batches"): each item served as record_get or
// record_put serves it, with its own result and its own access entry; the entries are queued
// together and waited for once, before anything is answered.
absl::Status Services::ConnectionSession::HandleRecordBatch(
    const pb::Request& request, ResponseSink* sink, const absl::StatusOr<uint64_t>& handle) {
  const bool get = request.op_case() == pb::Request::kRecordGetMany;
  const int size =
      get ? request.record_get_many().ids_size() : request.record_put_many().items_size();
  const audit::v1::EventKind kind = get ? audit::v1::ACCESS_READ : audit::v1::ACCESS_WRITE;
  absl::Status whole = handle.status();
  if (whole.ok()) whole = CheckBatchSize(size, kMaxRecordBatch, get ? "ids" : "items");
  if (!whole.ok()) {
    // Nothing is served: one entry for the request, as a single operation's failure; a
    // MALFORMED_REQUEST keeps its message (it names the limit).
    return Finish(sink, request, kind, handle.value_or(0), whole, static_cast<uint32_t>(size),
                  pb::Response(), /*moved=*/nullptr, ErrorText::kPublicOrMalformed);
  }
  const uint64_t h = *handle;
  pb::Response response;
  std::vector<absl::Status> results;
  std::vector<MovedItem> moved;
  results.reserve(size);
  if (get) {
    ServeGetMany(h, request.record_get_many(), response.mutable_record_get_many(), &results);
  } else {
    moved.assign(size, MovedItem{audit::ItemMove::kRecordWrite});
    auto* out = response.mutable_record_put_many();
    for (int i = 0; i < size; ++i) {
      const pb::RecordPutItem& item = request.record_put_many().items(i);
      results.push_back(deps_.records->Put(h, item.id(), item.value(), &moved[i].ref));
      pb::RecordItemResult* result = out->add_results();
      if (!results.back().ok()) FillError(result->mutable_error(), Public(results.back()));
    }
  }
  std::vector<audit::AuditEvent> events;
  events.reserve(size);
  for (int i = 0; i < size; ++i) {
    events.push_back(
        AccessEvent(kind, audit::v1::PURPOSE_RECORDS, h, results[i], 1, get ? nullptr : &moved[i]));
  }
  std::vector<ErrorCode> read_results;  // for the anomaly counts
  if (get && deps_.anomalies != nullptr) {
    read_results.reserve(results.size());
    for (const absl::Status& result : results) read_results.push_back(ErrorCodeOf(result));
  }
  return AuditThenAnswer(
      sink, request, std::move(events),
      [this, h, read_results = std::move(read_results), response = std::move(response),
       dataset = std::string(DatasetNamedBy(request))](const absl::Status& audited) mutable {
        if (!audited.ok()) return ErrorReply(Public(audited));  // no value leaves
        for (ErrorCode result : read_results) {
          deps_.anomalies->Observe(peer_.uid, peer_.pid, h, dataset, 1, result);
        }
        return std::move(response);
      });
}

// record_get_many's items: read with one MultiGet, then answered in order while the reply
// stays within the frame limit; the items past it are answered BATCH_REPLY_FULL, their values
// dropped (freed memory is wiped: kms/cofferd/wiping_delete.cc).
void Services::ConnectionSession::ServeGetMany(uint64_t handle, const pb::RecordGetManyRequest& r,
                                               pb::RecordGetManyResponse* out,
                                               std::vector<absl::Status>* results) {
  const std::vector<std::string_view> ids(r.ids().begin(), r.ids().end());
  std::vector<absl::StatusOr<std::string>> values = deps_.records->GetMany(handle, ids);
  // What the reply may hold: the frame limit, less room for the envelope and for the items
  // still to come should each be an error.
  const size_t limit =
      deps_.max_frame_bytes > kReplyEnvelopeBytes ? deps_.max_frame_bytes - kReplyEnvelopeBytes : 0;
  size_t used = 0;
  bool full = false;
  for (size_t i = 0; i < ids.size(); ++i) {
    pb::RecordItemResult* item = out->add_results();
    absl::Status result = values[i].status();
    if (result.ok()) {
      const size_t reserve = (ids.size() - i - 1) * kItemErrorBytes;
      full = full || used + values[i]->size() + kItemValueOverhead + reserve > limit;
      if (full) {
        result = MakeError(ErrorCode::kBatchReplyFull, "the reply is full");
      } else if (deps_.canaries != nullptr) {
        // A canary's read is audited (CANARY_READ) before its value leaves (canary.h).
        result = deps_.canaries->CheckRead(actor_, handle, pb::CANARY_RECORD, ids[i]);
      }
    }
    if (result.ok()) {
      used += values[i]->size() + kItemValueOverhead;
      item->set_value(*std::move(values[i]));
    } else {
      values[i] = absl::StatusOr<std::string>(result);  // frees the value
      FillError(item->mutable_error(), Public(result));
      used += item->ByteSizeLong() + kItemValueOverhead;
    }
    results->push_back(std::move(result));
  }
}

// attachment_put_begin (the upload then runs in HandleUpload), _get (HandleDownload), _metadata,
// _delete, _restore. `handle`: the dataset the request names, or why it has none.
absl::Status Services::ConnectionSession::HandleAttachment(const pb::Request& request,
                                                           ResponseSink* sink,
                                                           const absl::StatusOr<uint64_t>& handle) {
  const uint64_t h = handle.value_or(0);
  pb::Response response;
  switch (request.op_case()) {
    case pb::Request::kAttachmentPutBegin: {
      const auto& r = request.attachment_put_begin();
      absl::Status result = handle.status();
      if (result.ok()) {
        auto upload = deps_.attachments->BeginUpload(h, r.name(), r.content_type());
        result = upload.status();
        if (upload.ok()) {
          upload_ = OpenUpload{*std::move(upload), h, r.name(), absl::OkStatus()};
          response.mutable_attachment_put_begin();
          return Send(sink, request, std::move(response));  // audited at commit or abort
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_WRITE, h, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentGet: {
      if (!handle.ok()) {
        return Finish(sink, request, audit::v1::ACCESS_READ, h, handle.status(), 1,
                      std::move(response));
      }
      return HandleDownload(request, h, sink);
    }
    case pb::Request::kAttachmentMetadata: {
      absl::Status result = handle.status();
      if (result.ok()) {
        auto info = deps_.attachments->Metadata(h, request.attachment_metadata().name());
        result = info.status();
        if (info.ok()) {
          auto* out = response.mutable_attachment_metadata();
          out->set_size(info->size);
          out->set_content_type(info->content_type);
          out->set_created_micros(coffer::ToUnixMicros(info->created));
        }
        if (result.ok() && deps_.canaries != nullptr) {
          result = deps_.canaries->CheckRead(actor_, h, pb::CANARY_ATTACHMENT,
                                             request.attachment_metadata().name());
          if (!result.ok()) response.clear_result();
        }
      }
      return Finish(sink, request, audit::v1::ACCESS_READ, h, result, 1, std::move(response));
    }
    case pb::Request::kAttachmentDelete: {
      absl::Status result = handle.status();
      MovedItem moved{audit::ItemMove::kAttachmentDelete};
      if (result.ok()) {
        result = deps_.attachments->Delete(h, request.attachment_delete().name(), &moved.ref);
      }
      if (result.ok()) response.mutable_attachment_delete();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response),
                    &moved);
    }
    case pb::Request::kAttachmentRestore: {
      absl::Status result = handle.status();
      MovedItem moved{audit::ItemMove::kAttachmentRestore};
      if (result.ok()) {
        result = deps_.attachments->Restore(h, request.attachment_restore().name(), &moved.ref);
      }
      if (result.ok()) response.mutable_attachment_restore();
      return Finish(sink, request, audit::v1::ACCESS_DELETE, h, result, 1, std::move(response),
                    &moved);
    }
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kMalformedRequest, "unknown data operation"));
  }
}

// pseudonymize, pseudonym_translate, pseudonym_reidentify (always audited in the audit log).
// `handle`: the dataset the request names, or why it has none.
absl::Status Services::ConnectionSession::HandlePseudonym(const pb::Request& request,
                                                          ResponseSink* sink,
                                                          const absl::StatusOr<uint64_t>& handle) {
  const uint64_t h = handle.value_or(0);
  pb::Response response;
  switch (request.op_case()) {
    case pb::Request::kPseudonymize: {
      const auto& r = request.pseudonymize();
      absl::Status result = handle.status();
      if (result.ok())
        result = CheckBatchSize(r.identifiers_size(), kMaxPseudonymBatch, "identifiers");
      if (result.ok()) {
        result = PseudonymBatch(r.identifiers(), response.mutable_pseudonymize(),
                                [&](const std::string& identifier) {
                                  return services_->pseudonymizer_->Pseudonymize(h, identifier);
                                });
      }
      return Finish(sink, request, audit::v1::ACCESS_PSEUDONYMIZE, h, result,
                    static_cast<uint32_t>(r.identifiers_size()), std::move(response),
                    /*moved=*/nullptr, ErrorText::kPublicOrMalformed);
    }
    case pb::Request::kPseudonymTranslate: {
      const auto& r = request.pseudonym_translate();
      absl::Status result = handle.status();
      if (result.ok()) result = CheckBatchSize(r.tokens_size(), kMaxPseudonymBatch, "tokens");
      if (result.ok()) {
        result = PseudonymBatch(r.tokens(), response.mutable_pseudonym_translate(),
                                [&](const std::string& token) {
                                  return services_->pseudonymizer_->Translate(h, token);
                                });
      }
      return Finish(sink, request, audit::v1::ACCESS_PSEUDONYMIZE, h, result,
                    static_cast<uint32_t>(r.tokens_size()), std::move(response),
                    /*moved=*/nullptr, ErrorText::kPublicOrMalformed);
    }
    case pb::Request::kPseudonymReidentify: {
      const auto& r = request.pseudonym_reidentify();
      absl::Status result = handle.status();
      if (result.ok()) result = CheckBatchSize(r.tokens_size(), kMaxPseudonymBatch, "tokens");
      if (result.ok() && !pb::Mask_IsValid(r.mask())) {
        result = MakeError(ErrorCode::kMalformedRequest, "pseudonym_reidentify.mask is unknown");
      }
      auto* out = response.mutable_pseudonym_reidentify();
      for (const std::string& token : r.tokens()) {
        if (!result.ok()) break;
        absl::StatusOr<std::string> identifier = services_->pseudonymizer_->Reidentify(h, token);
        if (!identifier.ok()) {
          result = identifier.status();
          break;
        }
        switch (r.mask()) {
          case pb::MASK_EMAIL:
            out->add_identifiers(storage::MaskEmail(*identifier));
            break;
          case pb::MASK_PHONE:
            out->add_identifiers(storage::MaskPhone(*identifier));
            break;
          default:
            out->add_identifiers(*std::move(identifier));
        }
      }
      // Re-identification is audited synchronously, before any identifier leaves: without a
      // durable entry nothing is answered.
      audit::AuditEvent event;
      event.kind = audit::v1::ACCESS_REIDENTIFY;
      event.actor = actor_;
      event.dataset_handle = h;
      event.result = ErrorCodeOf(result);
      event.record_count = static_cast<uint32_t>(r.tokens_size());
      absl::Status audited = deps_.audit_log->Append(event).status();
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      if (!result.ok()) return SendError(sink, request, PublicOrMalformed(result));
      return Send(sink, request, std::move(response));
    }
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kMalformedRequest, "unknown data operation"));
  }
}

absl::Status Services::ConnectionSession::HandleUpload(const pb::Request& request,
                                                       ResponseSink* sink) {
  OpenUpload& open = *upload_;
  switch (request.op_case()) {
    case pb::Request::kAttachmentChunk:
      // No response; the first failure is answered at commit.
      if (open.first_error.ok())
        open.first_error = open.upload->Append(request.attachment_chunk().data());
      return absl::OkStatus();
    case pb::Request::kAttachmentPutCommit: {
      absl::Status result = open.first_error;
      if (result.ok()) {
        result = open.upload->Commit();
      } else {
        open.upload->Abort().IgnoreError();
      }
      pb::Response response;
      if (result.ok()) {
        auto* info = response.mutable_attachment_put_commit();
        info->set_size(open.upload->bytes_appended());
        auto stored = deps_.attachments->Metadata(open.handle, open.name);
        if (stored.ok()) {
          info->set_content_type(stored->content_type);
          info->set_created_micros(coffer::ToUnixMicros(stored->created));
        }
      }
      uint64_t handle = open.handle;
      const MovedItem moved{audit::ItemMove::kAttachmentWrite, open.upload->ref()};
      upload_.reset();
      return Finish(sink, request, audit::v1::ACCESS_WRITE, handle, result, 1, std::move(response),
                    &moved);
    }
    case pb::Request::kAttachmentPutAbort: {
      absl::Status aborted = open.upload->Abort();
      uint64_t handle = open.handle;
      upload_.reset();
      pb::Response response;
      response.mutable_attachment_put_abort();
      // Audited as a write that did not happen.
      absl::Status audited = AuditAccess(audit::v1::ACCESS_WRITE, audit::v1::PURPOSE_ATTACHMENTS,
                                         handle, MakeError(ErrorCode::kCancelled, "abort"), 1);
      if (!audited.ok()) return SendError(sink, request, Public(audited));
      if (!aborted.ok() && ErrorCodeOf(aborted) != ErrorCode::kUploadClosed) {
        return SendError(sink, request, Public(aborted));
      }
      return Send(sink, request, std::move(response));
    }
    default:
      return SendError(sink, request,
                       MakeError(ErrorCode::kUnexpectedFrame, "not an upload frame"));
  }
}

absl::Status Services::ConnectionSession::HandleDownload(const pb::Request& request,
                                                         uint64_t handle, ResponseSink* sink) {
  const auto& r = request.attachment_get();
  auto reader = deps_.attachments->Open(handle, r.name());
  absl::Status result = reader.status();
  uint64_t length = 0;
  if (result.ok()) {
    uint64_t size = (*reader)->info().size;
    if (r.offset() > size || r.length() > size - r.offset()) {
      result = MakeError(ErrorCode::kRangeBeyondEnd, "range beyond end");
    } else {
      length = r.length() == 0 ? size - r.offset() : r.length();
    }
  }
  if (result.ok() && deps_.canaries != nullptr) {
    result = deps_.canaries->CheckRead(actor_, handle, pb::CANARY_ATTACHMENT, r.name());
  }
  // The read is audited before any byte leaves.
  absl::Status audited =
      AuditAccess(audit::v1::ACCESS_READ, audit::v1::PURPOSE_ATTACHMENTS, handle, result, 1);
  if (!audited.ok()) return SendError(sink, request, Public(audited));
  if (!result.ok()) return SendError(sink, request, Public(result));

  const storage::AttachmentInfo& info = (*reader)->info();
  uint64_t offset = r.offset();
  uint64_t remaining = length;
  bool first = true;
  std::string data;
  do {
    size_t n = static_cast<size_t>(std::min<uint64_t>(remaining, api::kDefaultChunkBytes));
    absl::Status read = (*reader)->Read(offset, n, &data);
    if (!read.ok()) return SendError(sink, request, Public(read));
    pb::Response response;
    auto* out = response.mutable_attachment_get();
    if (first) {
      out->mutable_info()->set_size(info.size);
      out->mutable_info()->set_content_type(info.content_type);
      out->mutable_info()->set_created_micros(coffer::ToUnixMicros(info.created));
      first = false;
    }
    out->set_data(std::move(data));
    data.clear();
    offset += n;
    remaining -= n;
    out->set_last(remaining == 0);
    COFFER_RETURN_IF_ERROR(Send(sink, request, std::move(response)));
  } while (remaining > 0);
  return absl::OkStatus();
}

}  // namespace coffer::daemon
