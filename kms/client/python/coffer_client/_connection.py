"""Internal to coffer_client: one connection to cofferd's data socket (framing, request ids,
deadlines) and the pool that keeps them — the Python counterpart of
kms/client/internal/connection_pool.h, with the same rules.

Framing (docs/api.md, "Framing"; kms/api/framing.h): each message is preceded by its size as a
base-128 varint. The declared size of a response is checked against max_frame_bytes before
anything is buffered for it.

Thread safety: a Connection is used by one thread at a time; ConnectionPool is thread-safe.
Ownership: the pool owns idle connections; acquire() hands one out until release() or discard().
"""

import errno
import os
import select
import socket
import threading
import time

from . import errors

_MAX_VARINT_BYTES = 10


def encode_varint(value):
    """The base-128 varint of the non-negative integer `value`."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def dial_failure_message(path, err, timeout_s):
    """Why connecting to `path` failed (errno `err`), saying what to check."""
    head = f"cannot connect to cofferd at {path}: "
    if err in (errno.ENOENT, errno.ENOTDIR):
        return head + ("no such socket. Is cofferd running, and is this its data socket? "
                       "(scripts/start prints the socket paths)")
    if err == errno.ECONNREFUSED:
        return head + ("connection refused: the socket file exists but no cofferd listens on "
                       "it (the daemon stopped or crashed; start it again and check its log)")
    if err in (errno.EACCES, errno.EPERM):
        return head + ("permission denied: the data socket is mode 0660, so this user must be "
                       "in the daemon's data group, and may need search permission on its "
                       "directory")
    if err in (errno.EAGAIN, errno.ETIMEDOUT, errno.EINPROGRESS):
        return head + (f"the daemon did not accept within {timeout_s * 1000:.0f} ms (its "
                       f"accept backlog is full: overloaded or stalled)")
    return head + os.strerror(err)


# Codes after which the daemon closes the connection (docs/errors.md): never reuse it.
DAEMON_CLOSES_AFTER = frozenset({500, 501, 505, 506, 507})


class Connection:
    """One connected socket with its receive buffer and request-id counter."""

    def __init__(self, path, options, service_pb2):
        self._path = path
        self._options = options
        self._pb = service_pb2
        self._buffer = bytearray()
        self._next_request_id = 1
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(options.connect_timeout)
        try:
            self._sock.connect(path)
        except socket.timeout:
            self._sock.close()
            raise errors.DaemonUnavailableError(
                dial_failure_message(path, errno.ETIMEDOUT, options.connect_timeout)) from None
        except OSError as error:
            self._sock.close()
            raise errors.DaemonUnavailableError(
                dial_failure_message(path, error.errno or 0, options.connect_timeout)) from None

    def close(self):
        self._sock.close()

    def send(self, request):
        """Assigns the next request id and sends `request`; returns the id. FrameTooLargeError
        (nothing sent; the connection stays usable) when the frame exceeds max_frame_bytes."""
        frame = self._numbered_frame(request)
        if len(frame) > self._options.max_frame_bytes:
            raise errors.FrameTooLargeError(
                f"request frame of {len(frame)} bytes exceeds max_frame_bytes "
                f"({self._options.max_frame_bytes}); send large data as an attachment")
        self.send_frames(frame)
        return request.request_id

    def encode_all(self, requests):
        """Pipelining: assigns each request its id and frames them back to back. Returns the
        frames and the indexes of the requests whose frame exceeds max_frame_bytes, which are
        left out (send_frames then sends the rest in one write)."""
        frames, too_large = [], []
        for index, request in enumerate(requests):
            frame = self._numbered_frame(request)
            if len(frame) > self._options.max_frame_bytes:
                too_large.append(index)
            else:
                frames.append(frame)
        return b"".join(frames), too_large

    def send_frames(self, frames):
        """Sends whole frames (send's, or encode_all's), within request_timeout."""
        try:
            # Since Python 3.5 the timeout bounds the whole sendall, not each piece.
            self._sock.settimeout(self._options.request_timeout)
            self._sock.sendall(frames)
        except socket.timeout:
            raise self._timeout() from None
        except OSError as error:
            raise self._broken(os.strerror(error.errno or 0)) from None

    def _numbered_frame(self, request):
        """Assigns `request` the next request id; returns its frame."""
        request.request_id = self._next_request_id
        self._next_request_id += 1
        payload = request.SerializeToString()
        return encode_varint(len(payload)) + payload

    def receive(self, request_id):
        """Reads the next Response, which must answer `request_id`, within request_timeout."""
        deadline = time.monotonic() + self._options.request_timeout
        size, shift, used = 0, 0, 0
        while True:
            self._fill(used + 1, deadline, between_frames=(used == 0))
            byte = self._buffer[used]
            used += 1
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if used == _MAX_VARINT_BYTES:
                raise errors.UnexpectedFrameError(
                    f"response from cofferd at {self._path} has a malformed size prefix")
        if size > self._options.max_frame_bytes:
            raise errors.FrameTooLargeError(
                f"response from cofferd at {self._path} declares {size} bytes, above "
                f"max_frame_bytes ({self._options.max_frame_bytes}; raise it to the daemon's)")
        self._fill(used + size, deadline, between_frames=False)
        response = self._pb.Response()
        try:
            response.ParseFromString(bytes(self._buffer[used:used + size]))
        except Exception:  # protobuf's DecodeError; any parse failure means the same here
            raise errors.UnexpectedFrameError(
                f"response from cofferd at {self._path} is not a coffer.v1.Response") from None
        del self._buffer[:used + size]
        if response.request_id != request_id:
            raise errors.UnexpectedFrameError(
                f"response for request {response.request_id} while waiting for request "
                f"{request_id}")
        return response

    def looks_closed(self):
        """True when the daemon closed this idle connection (or sent something unasked): either
        way it must not carry another request."""
        if self._buffer:
            return True
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(readable)

    def _fill(self, want, deadline, between_frames):
        while len(self._buffer) < want:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._timeout()
            try:
                self._sock.settimeout(left)
                data = self._sock.recv(max(want - len(self._buffer), 1 << 16))
            except socket.timeout:
                raise self._timeout() from None
            except OSError as error:
                raise self._broken(os.strerror(error.errno or 0)) from None
            if not data:
                if between_frames and not self._buffer:
                    raise errors.DaemonUnavailableError(
                        f"cofferd at {self._path} closed the connection before answering (it "
                        f"may have restarted or dropped the connection; check its log)")
                raise self._broken("the daemon closed the connection in the middle of a frame")
            self._buffer += data

    def _timeout(self):
        return errors.RequestTimeoutError(
            f"cofferd at {self._path} did not answer within "
            f"{self._options.request_timeout * 1000:.0f} ms (ClientOptions.request_timeout)")

    def _broken(self, what):
        return errors.DaemonUnavailableError(
            f"connection to cofferd at {self._path} broke: {what} (the daemon may have "
            f"restarted or closed the connection)")


class ConnectionPool:
    """Up to options.idle_connections idle connections kept for reuse; at most
    options.max_connections open at once (in use + idle)."""

    def __init__(self, path, options, service_pb2):
        self.path = path
        self.options = options
        self._pb = service_pb2
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        self._idle = []  # guarded by _lock
        self._open = 0   # guarded by _lock: idle + in use
        self._closed = False

    def acquire(self, fresh=False):
        """An idle connection, or a newly dialled one when `fresh` or none is idle. Waits while
        max_connections are open and none is idle, up to the request timeout
        (ResourceExhaustedError)."""
        deadline = time.monotonic() + self.options.request_timeout
        with self._lock:
            while True:
                if self._closed:
                    raise errors.FailedPreconditionError("the client was closed")
                while self._idle:
                    connection = self._idle.pop()
                    if not fresh and not connection.looks_closed():
                        return connection
                    connection.close()  # closed by the daemon, or a new one is wanted
                    self._open -= 1
                if self._open < self.options.max_connections:
                    break
                left = deadline - time.monotonic()
                if left <= 0 or not self._released.wait(left):
                    raise errors.ResourceExhaustedError(
                        f"all {self.options.max_connections} connections of this client are in "
                        f"use (raise ClientOptions.max_connections, or finish open attachment "
                        f"readers and writers)")
            self._open += 1
        try:
            return Connection(self.path, self.options, self._pb)
        except BaseException:
            self._forget()
            raise

    def release(self, connection):
        """Returns a healthy connection after a complete exchange."""
        with self._lock:
            if not self._closed and len(self._idle) < self.options.idle_connections:
                self._idle.append(connection)
            else:
                connection.close()
                self._open -= 1
            self._released.notify()

    def discard(self, connection):
        """Closes a connection that must not be reused."""
        connection.close()
        self._forget()

    def close(self):
        """Closes the idle connections; connections in use close when they come back."""
        with self._lock:
            self._closed = True
            for connection in self._idle:
                connection.close()
                self._open -= 1
            self._idle.clear()
            self._released.notify_all()

    def _forget(self):
        with self._lock:
            self._open -= 1
            self._released.notify()
