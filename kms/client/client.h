// The C++ client library for cofferd's data socket (the coffer.v1 API, kms/api/proto, framed as
// in kms/api/framing.h): a typed call for every data operation, attachments as streaming
// writer/reader objects, and the two metadata calls the data socket serves.
//
// Thread safety: a Client is safe to use from any number of threads at once. Each call borrows a
// connection from the client's pool for the duration of one request (an AttachmentWriter or
// AttachmentReader holds its connection until it finishes), so calls from different threads run
// concurrently on different connections; Run pipelines several record calls on one connection.
// AttachmentWriter and AttachmentReader are not thread-safe: one thread at a time per object.
//
// Ownership: Client::Connect returns a unique_ptr; writers and readers keep the client's
// connection pool alive by themselves, so they may outlive the Client object. Nothing returned
// aliases library memory: values, ids and infos are copies the caller owns.
//
// Connections: the pool keeps up to `ClientOptions::idle_connections` idle connections for reuse
// and opens at most `max_connections` at a time; a call finding every connection in use waits
// for one up to the request timeout (then RESOURCE_EXHAUSTED). An idle connection the daemon has
// closed is noticed and dropped before reuse. When a connection breaks during a call (the daemon
// restarted, or dropped the connection) the connection is closed and, for calls that are safe to
// repeat — every read, PutRecord and PutRecords (they replace with the same values),
// BeginAttachment and OpenAttachment before any data arrived — the request is sent once more on a
// newly dialled connection. DeleteRecord, RestoreRecord, DeleteAttachment, RestoreAttachment and
// attachment commit/abort are never repeated: their failure is reported and the caller decides.
//
// Failures: every call returns absl::Status / absl::StatusOr made with coffer::MakeError, so
// coffer::ErrorCodeOf(status) gives the stable code (docs/errors.md). An error the daemon answers
// keeps its code (e.g. RECORD_NOT_FOUND 402, NOT_GRANTED 502, SLOW_DOWN 503 — see RetryAfter);
// failing to reach or keep the daemon is DAEMON_UNAVAILABLE (510) with a message naming the
// socket path and what to check; a client-side deadline is REQUEST_TIMEOUT (505); a response
// that breaks the protocol (wrong request id, wrong result, a download longer or shorter than
// announced) is UNEXPECTED_FRAME (508). After any failure other than an error answered by the
// daemon the connection is discarded, never reused.
//
// Secrets: the library never logs. Error messages never contain ids, values or attachment bytes.

#ifndef COFFER_KMS_CLIENT_CLIENT_H_
#define COFFER_KMS_CLIENT_CLIENT_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "coffer/v1/service.pb.h"
#include "kms/api/framing.h"

namespace coffer::client {

struct ClientOptions {
  // Idle connections kept open for reuse.
  size_t idle_connections = 4;
  // Connections open at once (in use + idle); at least 1.
  size_t max_connections = 64;
  // Dialling the socket (a full accept backlog makes connect wait).
  std::chrono::milliseconds connect_timeout{5'000};
  // One request: sending it and receiving each of its response frames.
  std::chrono::milliseconds request_timeout{30'000};
  // Largest frame sent or accepted; keep equal to the daemon's max_frame_bytes. A request that
  // would exceed it is refused locally with FRAME_TOO_LARGE before anything is sent.
  size_t max_frame_bytes = api::kDefaultMaxFrameBytes;
  // Attachment bytes per chunk frame (the daemon accepts up to 1 MiB by default).
  size_t chunk_bytes = api::kDefaultChunkBytes;
};

struct AttachmentInfo {
  uint64_t size = 0;
  std::string content_type;
  int64_t created_micros = 0;  // when this version was committed, µs since the Unix epoch
};

struct RecordPage {
  std::vector<std::string> ids;
  std::string next_page_token;  // empty on the last page
  // Records on this page skipped because their stored bytes no longer open (docs/api.md,
  // record_list): how many, and their opaque references ("dmg-..."), for the admin.
  uint64_t damaged = 0;
  std::vector<std::string> damaged_refs;
};

// For a SLOW_DOWN (503) status from this library: how long the daemon asked to wait.
std::optional<std::chrono::milliseconds> RetryAfter(const absl::Status& status);

namespace internal {
class ConnectionPool;
class Connection;
}  // namespace internal

// An attachment upload in progress on one connection (AttachmentPutBegin was acknowledged).
// Append buffers and sends chunk frames of ClientOptions::chunk_bytes; Commit sends the rest and
// makes the new version visible atomically; Abort (or the destructor, when neither was called)
// discards it. After Commit or Abort — or after a failure, which aborts the upload on the daemon
// side — every call returns an error (UPLOAD_CLOSED, or the failure).
class AttachmentWriter {
 public:
  AttachmentWriter(const AttachmentWriter&) = delete;
  AttachmentWriter& operator=(const AttachmentWriter&) = delete;
  ~AttachmentWriter();

  // Appends `bytes` to the attachment. Sends every full chunk now; the daemon reports a chunk's
  // failure at Commit.
  absl::Status Append(std::string_view bytes);
  // Sends the buffered tail and commits; returns the new version's metadata.
  absl::StatusOr<AttachmentInfo> Commit();
  // Discards the upload; nothing becomes visible.
  absl::Status Abort();

 private:
  friend class Client;
  AttachmentWriter(std::shared_ptr<internal::ConnectionPool> pool,
                   std::unique_ptr<internal::Connection> connection);
  absl::Status SendChunk(std::string_view bytes);
  absl::Status Fail(absl::Status status);
  absl::Status CheckOpen() const;

  std::shared_ptr<internal::ConnectionPool> pool_;
  std::unique_ptr<internal::Connection> connection_;
  std::string pending_;  // bytes not yet sent, fewer than chunk_bytes
  absl::Status failure_;
  bool finished_ = false;
};

// An attachment download: the range's metadata, then its bytes streamed from the daemon's
// response frames. Destroying a reader before the end closes its connection (the daemon's
// remaining frames are not drained).
class AttachmentReader {
 public:
  AttachmentReader(const AttachmentReader&) = delete;
  AttachmentReader& operator=(const AttachmentReader&) = delete;
  ~AttachmentReader();

  // The attachment's metadata (size is the whole attachment's, not the range's).
  const AttachmentInfo& info() const { return info_; }
  // Bytes of the requested range.
  uint64_t range_bytes() const { return expected_; }

  // Copies up to `size` next bytes of the range into `buffer`; returns how many, 0 at the end.
  absl::StatusOr<size_t> Read(char* buffer, size_t size);
  // The rest of the range.
  absl::StatusOr<std::string> ReadAll();

 private:
  friend class Client;
  AttachmentReader(std::shared_ptr<internal::ConnectionPool> pool,
                   std::unique_ptr<internal::Connection> connection, uint64_t request_id);
  // Takes the data of one AttachmentGetResponse; checks the byte count against the range.
  absl::Status Accept(coffer::v1::AttachmentGetResponse* frame);
  absl::Status NextFrame();

  std::shared_ptr<internal::ConnectionPool> pool_;
  std::unique_ptr<internal::Connection> connection_;
  uint64_t request_id_;
  AttachmentInfo info_;
  uint64_t expected_ = 0;  // bytes of the range
  uint64_t received_ = 0;  // bytes received so far
  std::string chunk_;      // current frame's bytes
  size_t chunk_pos_ = 0;
  bool last_seen_ = false;
  absl::Status failure_;
};

// Tokens of a pseudonymize or translate call, in request order, and the key version they are
// under.
struct PseudonymBatch {
  std::vector<std::string> tokens;
  uint32_t key_version = 0;
};

// Record calls queued for Client::Run, which pipelines them (docs/api.md, "Framing"). Each call
// is what the Client method of the same name sends; they may name different datasets.
class RecordPipeline {
 public:
  void Put(std::string_view dataset, std::string_view id, std::string_view value);
  void Get(std::string_view dataset, std::string_view id);
  void Exists(std::string_view dataset, std::string_view id);
  void Delete(std::string_view dataset, std::string_view id);

  size_t size() const { return requests_.size(); }

 private:
  friend class Client;
  std::vector<coffer::v1::Request> requests_;
  std::vector<coffer::v1::Response::ResultCase> expected_;  // each request's result
};

// One call's result in a pipeline: `status` as the Client method would return it, and for a
// Get its value, for an Exists its answer.
struct PipelinedResult {
  absl::Status status;
  std::string value;
  bool exists = false;
};

class Client {
 public:
  // Dials `socket_path` once (so a daemon that is not there is reported here, as
  // DAEMON_UNAVAILABLE) and keeps that connection in the pool.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(std::string socket_path,
                                                         ClientOptions options = {});

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Records (data.proto). Ids are 1 byte to 1 KiB of arbitrary bytes.
  absl::Status PutRecord(std::string_view dataset, std::string_view id, std::string_view value);
  absl::StatusOr<std::string> GetRecord(std::string_view dataset, std::string_view id);
  absl::StatusOr<bool> RecordExists(std::string_view dataset, std::string_view id);
  absl::Status DeleteRecord(std::string_view dataset, std::string_view id);
  absl::Status RestoreRecord(std::string_view dataset, std::string_view id);
  // One page of live ids; pass the previous page's next_page_token (empty for the first page).
  // max_ids 0 means the daemon's default (1,000).
  absl::StatusOr<RecordPage> ListRecords(std::string_view dataset, std::string_view page_token,
                                         uint32_t max_ids = 0);

  // Batches (docs/api.md, "Batches"): up to 1,000 records of one dataset in one request. Not
  // atomic: the result holds one status per item, in order (a value, or the error record_get /
  // record_put would give for it); the call itself fails only for what concerns the whole
  // batch (the dataset, the grant, the item count, the frame size, the daemon). GetRecords
  // answers the items that would not fit the reply BATCH_REPLY_FULL (417): ask for them again.
  // Both are repeated after a broken connection (reads, and puts that store the same values).
  absl::StatusOr<std::vector<absl::StatusOr<std::string>>> GetRecords(
      std::string_view dataset, const std::vector<std::string>& ids);
  struct RecordWrite {
    std::string id;
    std::string value;
  };
  absl::StatusOr<std::vector<absl::Status>> PutRecords(std::string_view dataset,
                                                       const std::vector<RecordWrite>& items);

  // Pipelining: the pipeline's calls go out on one connection several at a time, back to back
  // in one write (at most kPipelineDepth unanswered, or kPipelineBytes of requests, and always
  // one), and their replies are read in order: one round trip per group instead of per call.
  // Returns one result per call, in order; not atomic (each call succeeds or fails on its own,
  // as if made alone, in this order). A call whose frame is over max_frame_bytes fails
  // FRAME_TOO_LARGE unsent. If the connection breaks, the calls not yet answered fail with
  // its error (DAEMON_UNAVAILABLE, REQUEST_TIMEOUT) and whether they took effect is unknown:
  // nothing is repeated. Run itself fails only when no connection can be had.
  static constexpr size_t kPipelineDepth = 64;
  static constexpr size_t kPipelineBytes = size_t{64} << 10;
  absl::StatusOr<std::vector<PipelinedResult>> Run(RecordPipeline pipeline);

  // Attachments. BeginAttachment returns once the daemon acknowledged the upload's start.
  absl::StatusOr<std::unique_ptr<AttachmentWriter>> BeginAttachment(std::string_view dataset,
                                                                    std::string_view name,
                                                                    std::string_view content_type);
  // Opens [offset, offset + length) of the attachment (length 0: to the end) and returns once the
  // first response frame arrived (so a missing attachment is reported here).
  absl::StatusOr<std::unique_ptr<AttachmentReader>> OpenAttachment(std::string_view dataset,
                                                                   std::string_view name,
                                                                   uint64_t offset = 0,
                                                                   uint64_t length = 0);
  absl::StatusOr<AttachmentInfo> AttachmentMetadata(std::string_view dataset,
                                                    std::string_view name);
  absl::Status DeleteAttachment(std::string_view dataset, std::string_view name);
  absl::Status RestoreAttachment(std::string_view dataset, std::string_view name);

  // Pseudonymization (data.proto): tokens for identifiers, in order (deterministic within a
  // dataset and pseudonym key version; 1..1,000 items of 1 byte to 1 KiB). Needs PSEUDONYMIZE.
  absl::StatusOr<PseudonymBatch> Pseudonymize(std::string_view dataset,
                                              const std::vector<std::string>& identifiers);
  // The identifiers behind `tokens` (masked for display with `mask`). Needs REIDENTIFY; every
  // call is in the audit log.
  absl::StatusOr<std::vector<std::string>> Reidentify(
      std::string_view dataset, const std::vector<std::string>& tokens,
      coffer::v1::Mask mask = coffer::v1::MASK_NONE);
  // Re-keying: the same identifiers' tokens under the current pseudonym key version.
  absl::StatusOr<PseudonymBatch> TranslatePseudonyms(std::string_view dataset,
                                                     const std::vector<std::string>& tokens);

  // Metadata the data socket serves to principals with a grant or the metadata role.
  absl::StatusOr<std::vector<coffer::v1::DatasetInfo>> ListDatasets();
  absl::StatusOr<coffer::v1::DatasetInfo> DescribeDataset(std::string_view name);

  const std::string& socket_path() const;

 private:
  explicit Client(std::shared_ptr<internal::ConnectionPool> pool);

  // Sends `request` and reads its one response; `idempotent` allows one repeat on a new
  // connection after a broken one. Returns the response only if it carries no error and has
  // `expected` as its result; otherwise the mapped error.
  absl::StatusOr<coffer::v1::Response> Call(coffer::v1::Request& request, bool idempotent,
                                            coffer::v1::Response::ResultCase expected);

  std::shared_ptr<internal::ConnectionPool> pool_;
};

}  // namespace coffer::client

#endif  // COFFER_KMS_CLIENT_CLIENT_H_
