"""The Python client for cofferd's data socket (the coffer.v1 API of kms/api/proto, framed as in
kms/api/framing.h): a method for every data operation, attachments as streaming writer/reader
objects, and the two metadata calls the data socket serves. It follows the C++ client library
(kms/client/client.h) call for call and rule for rule.

Thread safety: a Client may be used from any number of threads at once. Each call borrows a
connection from the client's pool for one request (an AttachmentWriter or AttachmentReader
holds its connection until it finishes), so calls from different threads run concurrently on
different connections; each connection carries one request at a time (the daemon answers
pipelined frames in order; Client.run pipelines a RecordPipeline's calls on one connection, and
get_records and put_records batch). AttachmentWriter and AttachmentReader are for one thread at a
time.

Connections: the pool keeps up to ClientOptions.idle_connections idle connections for reuse and
opens at most max_connections at a time; a call finding every connection in use waits for one up
to the request timeout (then ResourceExhaustedError). An idle connection the daemon has closed
is noticed and dropped before reuse. When a connection breaks during a call, it is closed and,
for calls that are safe to repeat — every read (get_records too), put_record and put_records
(they store the same values again), begin_attachment and open_attachment — the request is sent
once more on a newly dialled connection. delete_record, restore_record, delete_attachment,
restore_attachment and an upload's commit or abort are never repeated: their failure is raised
and the caller decides.

Failures: every failure raises a subclass of errors.CofferError (see errors.py for which codes
the client raises itself). After any failure other than an error answered by the daemon, the
connection is discarded, never reused. Bad arguments (a str where bytes are expected, a negative
offset) raise TypeError or ValueError before anything is sent.

Secrets: the package never logs, and its error messages never contain ids, values, identifiers
or attachment bytes.

Generated code: the coffer.v1 modules (`coffer/v1/*_pb2.py`) are generated at build time from
kms/api/proto by protoc (CMake target coffer_client_python, into BUILD/python); BUILD/python and
kms/client/python must both be on sys.path.
"""
import collections
import dataclasses

from . import errors
from ._common import (DEFAULT_CHUNK_BYTES, DEFAULT_MAX_FRAME_BYTES, MASK_EMAIL, MASK_NONE,
                      MASK_PHONE, AttachmentInfo, PseudonymBatch, RecordPage, _bytes, _error_of,
                      _info, _item_error, _text, service_pb2)
from ._connection import DAEMON_CLOSES_AFTER, ConnectionPool
from .attachments import AttachmentReader, AttachmentWriter

__all__ = ["AttachmentInfo", "AttachmentReader", "AttachmentWriter", "Client", "ClientOptions",
           "DEFAULT_CHUNK_BYTES", "DEFAULT_MAX_FRAME_BYTES", "MASK_EMAIL", "MASK_NONE",
           "MASK_PHONE", "PIPELINE_BYTES", "PIPELINE_DEPTH", "PseudonymBatch", "RecordPage",
           "RecordPipeline"]

# Client.run keeps at most PIPELINE_DEPTH calls, or PIPELINE_BYTES of requests, unanswered (and
# always one), as the C++ client does (Client::kPipelineDepth, kPipelineBytes).
PIPELINE_DEPTH = 64
PIPELINE_BYTES = 64 << 10


@dataclasses.dataclass
class ClientOptions:
    """Connection settings; the defaults match the daemon's and the C++ client's."""
    idle_connections: int = 4          # idle connections kept open for reuse
    max_connections: int = 64          # connections open at once (in use + idle); at least 1
    connect_timeout: float = 5.0       # seconds for dialling the socket
    request_timeout: float = 30.0      # seconds for sending a request, and for each response
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES  # keep equal to the daemon's max_frame_bytes
    chunk_bytes: int = DEFAULT_CHUNK_BYTES          # attachment bytes per chunk frame

    def checked(self):
        for name in ("idle_connections", "max_connections", "max_frame_bytes", "chunk_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "idle_connections" else 1):
                raise ValueError(f"ClientOptions.{name} must be an integer of at least "
                                 f"{0 if name == 'idle_connections' else 1}, not {value!r}")
        for name in ("connect_timeout", "request_timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"ClientOptions.{name} must be a positive number of seconds, "
                                 f"not {value!r}")
        return self


def _exchange(pool, request, idempotent, expected, keep=False):
    """Sends `request` and reads its one response with the pool's retry rule. Returns the
    response (and, with `keep`, the connection, which the caller then owns), or raises."""
    for attempt in (0, 1):
        connection = pool.acquire(fresh=attempt > 0)
        try:
            connection.send(request)
        except errors.FrameTooLargeError:
            pool.release(connection)  # refused before a byte was sent
            raise
        except errors.CofferError as failure:
            pool.discard(connection)
            if idempotent and attempt == 0 and isinstance(failure, errors.DaemonUnavailableError):
                continue  # the connection broke: once more on a new one
            raise
        except BaseException:
            pool.discard(connection)
            raise
        try:
            response = connection.receive(request.request_id)
        except errors.CofferError as failure:
            pool.discard(connection)
            if idempotent and attempt == 0 and isinstance(failure, errors.DaemonUnavailableError):
                continue
            raise
        except BaseException:
            pool.discard(connection)
            raise
        if response.HasField("error"):
            failure = _error_of(response)
            if failure.code in DAEMON_CLOSES_AFTER:
                pool.discard(connection)
            else:
                pool.release(connection)
            raise failure
        if response.WhichOneof("result") != expected:
            pool.discard(connection)
            raise errors.UnexpectedFrameError(
                f"cofferd answered request {request.request_id} with result "
                f"{response.WhichOneof('result')!r}, expected {expected!r}")
        if keep:
            return response, connection
        pool.release(connection)
        return response
    raise AssertionError("unreachable")


def _batch_items(results, expected, operation, value_of):
    """A batch reply's items: value_of(item), or the item's error as an exception instance."""
    if len(results) != expected:
        raise errors.UnexpectedFrameError(f"{operation} answered another item count")
    return [_item_error(item.error) if item.HasField("error") else value_of(item)
            for item in results]


class RecordPipeline:
    """Record calls queued for Client.run, which pipelines them (docs/api.md, "Framing"). Each
    is what the Client method of the same name sends; they may name different datasets."""

    def __init__(self):
        self._calls = []  # (request, expected result field)

    def __len__(self):
        return len(self._calls)

    def _add(self, field, dataset, record_id):
        request = service_pb2.Request()
        op = getattr(request, field)
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        self._calls.append((request, field))
        return op

    def put(self, dataset, record_id, value):
        self._add("record_put", dataset, record_id).value = _bytes(value, "value")

    def get(self, dataset, record_id):
        self._add("record_get", dataset, record_id)

    def exists(self, dataset, record_id):
        self._add("record_exists", dataset, record_id)

    def delete(self, dataset, record_id):
        self._add("record_delete", dataset, record_id)


def _pipelined_result(response, expected):
    if response.HasField("error"):
        return _error_of(response)
    if response.WhichOneof("result") != expected:
        return errors.UnexpectedFrameError(
            "cofferd answered a pipelined call with another result")
    if expected == "record_get":
        return response.record_get.value
    if expected == "record_exists":
        return response.record_exists.exists
    return None


class Client:
    """A client of one cofferd data socket. Use as a context manager, or call close()."""

    def __init__(self, socket_path, options=None):
        """Dials `socket_path` once (so a daemon that is not there raises DaemonUnavailableError
        here) and keeps that connection in the pool."""
        if not isinstance(socket_path, (str, bytes)) or not socket_path:
            raise ValueError("socket_path must be the path of cofferd's data socket")
        options = dataclasses.replace(options or ClientOptions()).checked()
        self._pool = ConnectionPool(socket_path, options, service_pb2)
        self._pool.release(self._pool.acquire(fresh=True))

    @property
    def socket_path(self):
        return self._pool.path

    def close(self):
        """Closes the idle connections; later calls raise FailedPreconditionError. Readers and
        writers still open keep their connections until they finish."""
        self._pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _call(self, request, idempotent, expected):
        return _exchange(self._pool, request, idempotent, expected)

    # ---- Records (data.proto). Ids are 1 byte to 1 KiB of arbitrary bytes. ----

    def put_record(self, dataset, record_id, value):
        request = service_pb2.Request()
        op = request.record_put
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        op.value = _bytes(value, "value")
        self._call(request, True, "record_put")

    def get_record(self, dataset, record_id):
        """The value of live record `record_id`; RecordNotFoundError if there is none."""
        request = service_pb2.Request()
        op = request.record_get
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        return self._call(request, True, "record_get").record_get.value

    def record_exists(self, dataset, record_id):
        request = service_pb2.Request()
        op = request.record_exists
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        return self._call(request, True, "record_exists").record_exists.exists

    def delete_record(self, dataset, record_id):
        """Moves the record to the recycle bin (restorable for the dataset's bin period)."""
        request = service_pb2.Request()
        op = request.record_delete
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        self._call(request, False, "record_delete")

    def restore_record(self, dataset, record_id):
        request = service_pb2.Request()
        op = request.record_restore
        op.dataset, op.id = _text(dataset, "dataset"), _bytes(record_id, "record_id")
        self._call(request, False, "record_restore")

    def list_records(self, dataset, page_token="", max_ids=0):
        """One page of live ids; pass the previous page's next_page_token ("" for the first
        page). max_ids 0 means the daemon's default (1,000)."""
        if not isinstance(max_ids, int) or not 0 <= max_ids <= 0xFFFFFFFF:
            raise ValueError(f"max_ids must be an integer from 0 to 2^32-1, not {max_ids!r}")
        request = service_pb2.Request()
        op = request.record_list
        op.dataset, op.page_token = _text(dataset, "dataset"), _text(page_token, "page_token")
        op.max_ids = max_ids
        page = self._call(request, True, "record_list").record_list
        return RecordPage(list(page.ids), page.next_page_token, page.damaged,
                          [item.ref for item in page.damaged_items])

    def iter_record_ids(self, dataset, max_ids=0):
        """Every live id of `dataset`, page after page."""
        token = ""
        while True:
            page = self.list_records(dataset, token, max_ids)
            yield from page.ids
            if not page.next_page_token:
                return
            token = page.next_page_token

    # ---- Batches: 1 to 1,000 records of one dataset per request (docs/api.md, "Batches") ----

    def get_records(self, dataset, ids):
        """The values of `ids`, in order: each item is the value (bytes) or the CofferError its
        own get_record would have raised (RecordNotFoundError, ...); BatchReplyFullError for the
        items that did not fit the daemon's reply frame: ask for those again. Raises when the
        whole batch is refused (the dataset, the grant, the item count, the frame size, the
        daemon). Not atomic: each item is served and audited on its own."""
        request = service_pb2.Request()
        op = request.record_get_many
        op.dataset = _text(dataset, "dataset")
        op.ids.extend(_bytes(i, "each record_id") for i in ids)
        results = self._call(request, True, "record_get_many").record_get_many.results
        return _batch_items(results, len(op.ids), "record_get_many",
                            lambda item: item.value)

    def put_records(self, dataset, items):
        """Writes `items` ((record_id, value) pairs of bytes) in order; returns, per item, None
        or the CofferError its own put_record would have raised (a failed item does not stop the
        rest). Raises when the whole batch is refused, as get_records."""
        request = service_pb2.Request()
        op = request.record_put_many
        op.dataset = _text(dataset, "dataset")
        for record_id, value in items:
            item = op.items.add()
            item.id, item.value = _bytes(record_id, "each record_id"), _bytes(value, "each value")
        # Repeating the batch stores the same values again: safe after a broken connection.
        results = self._call(request, True, "record_put_many").record_put_many.results
        return _batch_items(results, len(op.items), "record_put_many", lambda item: None)

    # ---- Pipelining ----

    def run(self, pipeline):
        """Sends the pipeline's calls on one connection several at a time, back to back in one
        write (at most PIPELINE_DEPTH unanswered, or PIPELINE_BYTES of requests, and always one),
        and reads their replies in order: one round trip per group instead of per call. Returns
        one result per call, in order: None for a put or delete, the value for a get, a bool for
        an exists, or the CofferError instance the call's own method would have raised. Not
        atomic (each call succeeds or fails on its own, in this order). A call over
        max_frame_bytes gets FrameTooLargeError, unsent. If the connection breaks, the calls not
        yet answered get its error (DaemonUnavailableError, RequestTimeoutError) and whether they
        took effect is unknown: nothing is repeated. Raises only when no connection can be had."""
        if not isinstance(pipeline, RecordPipeline):
            raise TypeError(f"pipeline must be a RecordPipeline, not {type(pipeline).__name__}")
        calls = pipeline._calls
        results = [None] * len(calls)
        if not calls:
            return results
        sizes = [request.ByteSize() for request, _ in calls]
        connection = self._pool.acquire()
        unanswered, unanswered_bytes, following = collections.deque(), 0, 0
        broken = None
        try:
            while following < len(calls) or unanswered:
                group = []
                while following < len(calls) and (
                        (not unanswered and not group) or
                        (len(unanswered) + len(group) < PIPELINE_DEPTH and
                         unanswered_bytes + sizes[following] <= PIPELINE_BYTES)):
                    unanswered_bytes += sizes[following]
                    group.append(following)
                    following += 1
                if group:
                    frames, too_large = connection.encode_all([calls[i][0] for i in group])
                    for position, index in enumerate(group):
                        if position in too_large:
                            unanswered_bytes -= sizes[index]
                            results[index] = errors.FrameTooLargeError(
                                "this call's request frame exceeds max_frame_bytes; send large "
                                "data as an attachment")
                        else:
                            unanswered.append(index)
                    if frames:
                        connection.send_frames(frames)
                    if not unanswered:
                        continue
                index = unanswered[0]
                request, expected = calls[index]
                response = connection.receive(request.request_id)
                unanswered.popleft()
                unanswered_bytes -= sizes[index]
                results[index] = _pipelined_result(response, expected)
                if response.HasField("error") and response.error.code in DAEMON_CLOSES_AFTER:
                    raise errors.DaemonUnavailableError(
                        f"cofferd at {self.socket_path} closes the connection after an earlier "
                        "call's error; this call was not answered")
        except errors.CofferError as failure:
            broken = failure
        except BaseException:
            self._pool.discard(connection)
            raise
        if broken is None:
            self._pool.release(connection)
            return results
        self._pool.discard(connection)
        for index in unanswered:
            results[index] = broken
        for index in range(following, len(calls)):
            results[index] = broken
        return results

    # ---- Attachments ----

    def begin_attachment(self, dataset, name, content_type=""):
        """Starts an upload and returns its AttachmentWriter once the daemon acknowledged it."""
        request = service_pb2.Request()
        op = request.attachment_put_begin
        op.dataset, op.name = _text(dataset, "dataset"), _bytes(name, "name")
        op.content_type = _text(content_type, "content_type")
        # A begin that never arrived opened nothing; one that did is aborted by the daemon when
        # its connection closed. Either way repeating it is safe.
        _, connection = _exchange(self._pool, request, True, "attachment_put_begin", keep=True)
        return AttachmentWriter(self._pool, connection)

    def put_attachment(self, dataset, name, source, content_type=""):
        """Uploads `source` (bytes, or a binary file object read chunk by chunk) and commits it;
        returns the new version's AttachmentInfo."""
        with self.begin_attachment(dataset, name, content_type) as writer:
            if hasattr(source, "read"):
                while True:
                    block = source.read(self._pool.options.chunk_bytes)
                    if not block:
                        break
                    writer.write(block)
            else:
                writer.write(source)
            return writer.commit()

    def open_attachment(self, dataset, name, offset=0, length=0):
        """Opens [offset, offset + length) of the attachment (length 0: to the end) and returns
        its AttachmentReader once the first response frame arrived (so a missing attachment
        raises AttachmentNotFoundError here)."""
        for value, what in ((offset, "offset"), (length, "length")):
            if not isinstance(value, int) or not 0 <= value < 1 << 64:
                raise ValueError(f"{what} must be an integer from 0 to 2^64-1, not {value!r}")
        request = service_pb2.Request()
        op = request.attachment_get
        op.dataset, op.name = _text(dataset, "dataset"), _bytes(name, "name")
        op.offset, op.length = offset, length
        first, connection = _exchange(self._pool, request, True, "attachment_get", keep=True)
        reader = AttachmentReader(self._pool, connection, request.request_id)
        frame = first.attachment_get
        try:
            if not frame.HasField("info"):
                raise errors.UnexpectedFrameError(
                    "cofferd's first download frame carries no attachment info")
            reader.info = _info(frame.info)
            if length == 0:
                if offset > reader.info.size:
                    raise errors.UnexpectedFrameError(
                        "cofferd started a download at an offset beyond the attachment")
                reader.range_bytes = reader.info.size - offset
            else:
                reader.range_bytes = length
            reader._accept(frame)
        except BaseException:
            reader.close()
            raise
        return reader

    def get_attachment(self, dataset, name, offset=0, length=0):
        """The whole range as bytes (for large attachments, stream with open_attachment)."""
        with self.open_attachment(dataset, name, offset, length) as reader:
            return reader.read()

    def attachment_metadata(self, dataset, name):
        request = service_pb2.Request()
        op = request.attachment_metadata
        op.dataset, op.name = _text(dataset, "dataset"), _bytes(name, "name")
        return _info(self._call(request, True, "attachment_metadata").attachment_metadata)

    def delete_attachment(self, dataset, name):
        request = service_pb2.Request()
        op = request.attachment_delete
        op.dataset, op.name = _text(dataset, "dataset"), _bytes(name, "name")
        self._call(request, False, "attachment_delete")

    def restore_attachment(self, dataset, name):
        request = service_pb2.Request()
        op = request.attachment_restore
        op.dataset, op.name = _text(dataset, "dataset"), _bytes(name, "name")
        self._call(request, False, "attachment_restore")

    # ---- Pseudonyms (data.proto) ----

    def pseudonymize(self, dataset, identifiers):
        """Tokens for `identifiers` (bytes, 1..1,000 of 1 byte to 1 KiB), in order:
        deterministic within a dataset and pseudonym key version. Needs PSEUDONYMIZE."""
        request = service_pb2.Request()
        op = request.pseudonymize
        op.dataset = _text(dataset, "dataset")
        op.identifiers.extend(_bytes(i, "each identifier") for i in identifiers)
        out = self._call(request, True, "pseudonymize").pseudonymize
        return PseudonymBatch(list(out.tokens), out.key_version)

    def reidentify(self, dataset, tokens, mask=MASK_NONE):
        """The identifiers behind `tokens`, masked for display with `mask` (MASK_NONE,
        MASK_EMAIL or MASK_PHONE). Needs REIDENTIFY; every call is audited."""
        if mask not in (MASK_NONE, MASK_EMAIL, MASK_PHONE):
            raise ValueError(f"mask must be MASK_NONE, MASK_EMAIL or MASK_PHONE, not {mask!r}")
        request = service_pb2.Request()
        op = request.pseudonym_reidentify
        op.dataset = _text(dataset, "dataset")
        op.tokens.extend(_text(t, "each token") for t in tokens)
        op.mask = mask
        return list(self._call(request, True, "pseudonym_reidentify")
                    .pseudonym_reidentify.identifiers)

    def translate_pseudonyms(self, dataset, tokens):
        """The same identifiers' tokens under the current pseudonym key version."""
        request = service_pb2.Request()
        op = request.pseudonym_translate
        op.dataset = _text(dataset, "dataset")
        op.tokens.extend(_text(t, "each token") for t in tokens)
        out = self._call(request, True, "pseudonym_translate").pseudonym_translate
        return PseudonymBatch(list(out.tokens), out.key_version)

    # ---- Metadata the data socket serves (a grant on the dataset, or the metadata role) ----

    def list_datasets(self):
        """coffer.v1.DatasetInfo messages of the datasets the caller may see."""
        request = service_pb2.Request()
        request.dataset_list.SetInParent()
        return list(self._call(request, True, "dataset_list").dataset_list.datasets)

    def describe_dataset(self, name):
        request = service_pb2.Request()
        request.dataset_describe.name = _text(name, "name")
        return self._call(request, True, "dataset_describe").dataset_describe
