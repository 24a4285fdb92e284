"""The attachment streams of coffer_client: AttachmentWriter (chunk frames on a connection held
for the upload) and AttachmentReader (ranged download frames) — the counterparts of the C++
client's AttachmentWriter and AttachmentReader (kms/client/attachment_streams.cc), with the same
rules. Client.begin_attachment and Client.open_attachment make them; each is for one thread at a
time and holds its pooled connection until it finishes.
"""

from . import errors
from ._common import _bytes, _error_of, _info, service_pb2
from ._connection import DAEMON_CLOSES_AFTER


class AttachmentWriter:
    """An attachment upload in progress on one connection (the begin was acknowledged).

    write() buffers and sends chunk frames of ClientOptions.chunk_bytes; commit() sends the rest
    and makes the new version visible atomically; abort() discards it. Leaving a `with` block
    without commit() aborts (nothing becomes visible). After commit or abort — or after a
    failure, which aborts the upload on the daemon's side — every call raises (UploadClosedError,
    or the failure again).
    """

    def __init__(self, pool, connection):
        self._pool = pool
        self._connection = connection
        self._pending = bytearray()  # fewer than chunk_bytes bytes not yet sent
        self._failure = None
        self._finished = False
        self.chunks_sent = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self._finished and self._connection is not None:
            try:
                self.abort()
            except errors.CofferError:
                pass  # the daemon also aborts an upload whose connection closes
        return False

    def __del__(self):
        # Neither committed nor aborted: closing the connection makes the daemon abort it.
        if getattr(self, "_connection", None) is not None:
            self._pool.discard(self._connection)
            self._connection = None

    def write(self, data):
        """Appends `data`; sends every full chunk now (the daemon reports a chunk's failure at
        commit)."""
        data = memoryview(_bytes(data, "data"))
        self._check_open()
        chunk = self._pool.options.chunk_bytes
        if self._pending:
            take = min(chunk - len(self._pending), len(data))
            self._pending += data[:take]
            data = data[take:]
            if len(self._pending) < chunk:
                return
            self._send_chunk(bytes(self._pending))
            self._pending.clear()
        while len(data) >= chunk:
            self._send_chunk(bytes(data[:chunk]))
            data = data[chunk:]
        self._pending += data

    def commit(self):
        """Sends the buffered tail and commits; returns the new version's AttachmentInfo."""
        self._check_open()
        if self._pending:
            self._send_chunk(bytes(self._pending))
            self._pending.clear()
        request = service_pb2.Request()
        request.attachment_put_commit.SetInParent()
        response = self._finish(request)
        if response.WhichOneof("result") != "attachment_put_commit":
            self._fail(errors.UnexpectedFrameError(
                "cofferd answered an attachment commit with another result"))
        self._done()
        return _info(response.attachment_put_commit)

    def abort(self):
        """Discards the upload; nothing becomes visible."""
        self._check_open()
        self._pending.clear()
        request = service_pb2.Request()
        request.attachment_put_abort.SetInParent()
        response = self._finish(request)
        if response.WhichOneof("result") != "attachment_put_abort":
            self._fail(errors.UnexpectedFrameError(
                "cofferd answered an attachment abort with another result"))
        self._done()

    def _check_open(self):
        if self._failure is not None:
            raise self._failure
        if self._finished:
            raise errors.UploadClosedError("the upload was already committed or aborted")

    def _fail(self, failure):
        self._failure = failure
        self._finished = True
        if self._connection is not None:
            self._pool.discard(self._connection)
            self._connection = None
        raise failure

    def _done(self):
        self._finished = True
        self._pool.release(self._connection)
        self._connection = None

    def _send_chunk(self, data):
        request = service_pb2.Request()
        request.attachment_chunk.data = data
        try:
            self._connection.send(request)
        except errors.CofferError as failure:
            self._fail(failure)
        self.chunks_sent += 1

    def _finish(self, request):
        """Sends the commit or abort and reads its response; raises the daemon's error."""
        try:
            self._connection.send(request)
            response = self._connection.receive(request.request_id)
        except errors.CofferError as failure:
            self._fail(failure)
        if response.HasField("error"):
            failure = _error_of(response)
            self._failure = failure
            self._finished = True
            if failure.code in DAEMON_CLOSES_AFTER:
                self._pool.discard(self._connection)
            else:
                self._pool.release(self._connection)
            self._connection = None
            raise failure
        return response


class AttachmentReader:
    """An attachment download: `info` (the attachment's metadata; its size is the whole
    attachment's), `range_bytes` (bytes of the requested range), then the range's bytes streamed
    from the daemon's response frames: read(n), read() for the rest, or iteration over the
    frames' pieces. Closing a reader before the end closes its connection (the daemon's
    remaining frames are not drained)."""

    def __init__(self, pool, connection, request_id):
        self._pool = pool
        self._connection = connection
        self._request_id = request_id
        self.info = None
        self.range_bytes = 0
        self.frames = 0          # response frames received so far
        self._received = 0
        self._chunk = b""
        self._pos = 0
        self._last_seen = False
        self._failure = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_connection", None) is not None:
            self.close()

    def close(self):
        if self._connection is not None:
            # Frames of an unfinished download may still be in flight: never reuse it.
            self._pool.discard(self._connection)
            self._connection = None

    def read(self, size=-1):
        """Up to `size` next bytes of the range (all the rest when size < 0); b"" at the end."""
        if size is None or size < 0:
            parts = [self._take(len(self._chunk))]
            while not self._last_seen:
                self._next_frame()
                parts.append(self._take(len(self._chunk)))
            return b"".join(parts)
        while True:
            if self._failure is not None:
                raise self._failure
            if self._pos < len(self._chunk) or size == 0:
                return self._take(size)
            if self._last_seen:
                return b""
            self._next_frame()

    def __iter__(self):
        """The rest of the range, one piece per response frame."""
        while True:
            piece = self._take(len(self._chunk))
            if piece:
                yield piece
            if self._last_seen:
                return
            self._next_frame()

    def _take(self, size):
        if self._failure is not None:
            raise self._failure
        piece = self._chunk[self._pos:self._pos + size]
        self._pos += len(piece)
        return piece

    def _accept(self, frame):
        self.frames += 1
        self._received += len(frame.data)
        if self._received > self.range_bytes:
            raise errors.UnexpectedFrameError(
                f"cofferd sent more attachment bytes than the {self.range_bytes} of the "
                f"requested range")
        self._chunk, self._pos = frame.data, 0
        if frame.last:
            if self._received != self.range_bytes:
                raise errors.UnexpectedFrameError(
                    f"cofferd ended the download after {self._received} of {self.range_bytes} "
                    f"bytes")
            self._last_seen = True
            self._pool.release(self._connection)
            self._connection = None

    def _next_frame(self):
        if self._failure is not None:
            raise self._failure
        if self._connection is None:
            raise errors.FailedPreconditionError("the attachment reader was closed")
        try:
            response = self._connection.receive(self._request_id)
            if response.HasField("error"):
                raise _error_of(response)
            if response.WhichOneof("result") != "attachment_get":
                raise errors.UnexpectedFrameError(
                    "cofferd sent another result in the middle of a download")
            self._accept(response.attachment_get)
        except errors.CofferError as failure:
            self._failure = failure
            self.close()
            raise
