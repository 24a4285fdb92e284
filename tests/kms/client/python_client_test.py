"""Tests of the Python client package (kms/client/python/coffer_client) against a real cofferd
(live_cofferd.py: the built daemon, a fresh SoftHSM2 token, real RocksDB, real sockets): the
scenarios of scenarios.txt, which the C++ client passes too (scenarios_test.cc), one test each;
a check that every listed scenario has its test here; a check that errors.py maps every error
code of crypto/base/status.h under its name; argument checks made before anything is sent; eight
threads sharing a pool of three connections; and the retry rule (a read is repeated once on a new
connection after a broken one, a delete never) and the request timeout against a stand-in daemon
that drops connections or does not answer.

ctest runs it (kms_client_python_test) as

    COFFERD=... COFFER_SOFTHSM_TOKEN_SCRIPT=scripts/softhsm-token COFFER_SOURCE_DIR=. \\
    PYTHONPATH=BUILD/python:kms/client/python:tests/kms/client \\
    /usr/bin/python3 -m unittest -v python_client_test

One daemon serves the whole module (started by the first test that needs it); each test uses
ids of its own.
"""

import os
import re
import socket
import tempfile
import threading
import unittest

from coffer.v1 import service_pb2
from coffer_client import MASK_EMAIL, Client, ClientOptions, RecordPipeline, errors
from coffer_client._connection import encode_varint
from live_cofferd import LiveCofferd

GRANTED = "crm"
UNGRANTED = "hr"  # exists; the caller holds no grant on it
CHUNK = 1 << 20
SOURCE_DIR = os.environ.get("COFFER_SOURCE_DIR", "")

_daemon = None


def _require_env(name):
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"${name} must be set (see this module's docstring)")
    return value


def running_daemon():
    """The module's cofferd: started on first use (the checks without a daemon need none), and
    started again if a test left it stopped."""
    global _daemon
    if _daemon is None:
        _daemon = LiveCofferd(_require_env("COFFERD"),
                              _require_env("COFFER_SOFTHSM_TOKEN_SCRIPT"),
                              granted=[GRANTED], ungranted=[UNGRANTED])
    if not _daemon.running:
        _daemon.start()
    return _daemon


def tearDownModule():
    if _daemon is not None:
        _daemon.close()


def listed_scenarios():
    path = os.path.join(SOURCE_DIR, "tests/kms/client/scenarios.txt")
    with open(path) as listing:
        return [line.split()[0] for line in listing
                if line.strip() and not line.startswith("#")]


class ScenarioTest(unittest.TestCase):
    """One test per scenario of scenarios.txt, named test_<scenario>."""

    def setUp(self):
        running_daemon()
        self.client = Client(_daemon.data_socket)
        self.tag = os.urandom(4).hex()

    def tearDown(self):
        self.client.close()

    def run(self, result=None):
        result = result or self.defaultTestResult()
        failed_before = len(result.failures) + len(result.errors)
        super().run(result)
        if _daemon is not None and len(result.failures) + len(result.errors) > failed_before:
            print(f"--- cofferd's log ---\n{_daemon.logs()}")
        return result

    def test_record_round_trip(self):
        record_id = f"py/{self.tag}/\x00contact".encode()
        value = b"\x00\xffvalue " * 100
        self.client.put_record(GRANTED, record_id, value)
        self.assertEqual(self.client.get_record(GRANTED, record_id), value)
        self.assertTrue(self.client.record_exists(GRANTED, record_id))
        self.client.delete_record(GRANTED, record_id)
        self.assertFalse(self.client.record_exists(GRANTED, record_id))
        with self.assertRaises(errors.RecordNotFoundError):
            self.client.get_record(GRANTED, record_id)

    def test_record_not_found(self):
        record_id = f"py/{self.tag}/never-written".encode()
        with self.assertRaises(errors.RecordNotFoundError) as raised:
            self.client.get_record(GRANTED, record_id)
        error = raised.exception
        self.assertIsInstance(error, errors.CofferError)
        self.assertEqual((error.code, error.code_name), (402, "RECORD_NOT_FOUND"))
        self.assertTrue(error.message)
        self.assertNotIn(self.tag, str(error))

    def test_record_batch(self):
        items = [(f"py/{self.tag}/batch/{n:02}".encode(), f"value {n} ".encode() * 3)
                 for n in range(12)]
        self.assertEqual(self.client.put_records(GRANTED, items), [None] * 12)
        ids = [record_id for record_id, _ in items]
        missing = f"py/{self.tag}/batch/missing".encode()
        got = self.client.get_records(GRANTED, ids[:6] + [missing] + ids[6:])
        self.assertEqual(len(got), 13)
        self.assertEqual(got[:6] + got[7:], [value for _, value in items])
        self.assertIsInstance(got[6], errors.RecordNotFoundError)
        self.assertNotIn(self.tag, str(got[6]))

        # Values beyond one reply frame (4 MiB): served from the first, BATCH_REPLY_FULL from
        # the first that would not fit; asked again, the rest come.
        big = {f"py/{self.tag}/big/{n}".encode(): bytes([n + 1]) * (1536 << 10) for n in range(4)}
        for record_id, value in big.items():  # one per request: each frame within the limit
            self.client.put_record(GRANTED, record_id, value)
        pending, rounds, saw_full = list(big), 0, False
        while pending:
            rounds += 1
            self.assertLessEqual(rounds, 4, "no progress")
            got = self.client.get_records(GRANTED, pending)
            served = [i for i, item in enumerate(got) if not isinstance(item, errors.CofferError)]
            self.assertTrue(served)
            self.assertEqual(served, list(range(len(served))))  # served first, then full
            for i, item in enumerate(got):
                if i < len(served):
                    self.assertEqual(item, big[pending[i]])
                else:
                    self.assertIsInstance(item, errors.BatchReplyFullError)
                    saw_full = True
            pending = pending[len(served):]
        self.assertTrue(saw_full)

    def test_record_list(self):
        mine = {f"py/{self.tag}/list/{n:02}".encode() for n in range(23)}
        for record_id in mine:
            self.client.put_record(GRANTED, record_id, b"v")
        seen, pages, token = [], 0, ""
        while True:
            page = self.client.list_records(GRANTED, token, max_ids=7)
            self.assertLessEqual(len(page.ids), 7)
            self.assertEqual(page.damaged, 0)
            seen += page.ids
            pages += 1
            token = page.next_page_token
            if not token:
                break
        self.assertGreaterEqual(pages, 4)
        self.assertEqual(len(seen), len(set(seen)), "an id listed twice")
        self.assertEqual(mine - set(seen), set())
        self.assertEqual(set(self.client.iter_record_ids(GRANTED, max_ids=5)), set(seen))

    def test_attachment_streamed(self):
        name = f"py/{self.tag}/scan.bin".encode()
        contents = os.urandom(5 * CHUNK + 12_345)  # above max_frame_bytes (4 MiB + 64 KiB)
        with self.client.begin_attachment(GRANTED, name, "application/pdf") as writer:
            for at in range(0, len(contents), 300_000):  # pieces unaligned with the chunks
                writer.write(contents[at:at + 300_000])
            info = writer.commit()
        self.assertEqual(writer.chunks_sent, 6)
        self.assertEqual((info.size, info.content_type), (len(contents), "application/pdf"))
        with self.client.open_attachment(GRANTED, name) as reader:
            self.assertEqual(reader.info.size, len(contents))
            pieces = list(reader)
        self.assertGreater(reader.frames, 1)
        self.assertEqual(b"".join(pieces), contents)
        with self.client.open_attachment(GRANTED, name, CHUNK - 10, CHUNK + 20) as reader:
            self.assertEqual(reader.range_bytes, CHUNK + 20)
            got = bytearray()
            while True:
                piece = reader.read(100_000)
                if not piece:
                    break
                got += piece
        self.assertEqual(bytes(got), contents[CHUNK - 10:2 * CHUNK + 10])
        self.client.delete_attachment(GRANTED, name)
        with self.assertRaises(errors.AttachmentNotFoundError):
            self.client.attachment_metadata(GRANTED, name)

    def test_not_granted(self):
        record_id = f"py/{self.tag}/refused".encode()
        with self.assertRaises(errors.NotGrantedError) as raised:
            self.client.put_record(UNGRANTED, record_id, b"value")
        self.assertEqual((raised.exception.code, raised.exception.code_name), (502, "NOT_GRANTED"))
        with self.assertRaises(errors.NotGrantedError):
            self.client.get_record(UNGRANTED, record_id)
        self.client.put_record(GRANTED, record_id, b"value")  # the client carries on
        self.assertEqual(self.client.get_record(GRANTED, record_id), b"value")

    def test_pseudonymize(self):
        identifiers = [b"jane@example.com", f"{self.tag}@example.org".encode()]
        first = self.client.pseudonymize(GRANTED, identifiers)
        self.assertEqual(len(first.tokens), 2)
        self.assertTrue(all(token.startswith("cp1.") for token in first.tokens), first.tokens)
        self.assertNotEqual(first.tokens[0], first.tokens[1])
        again = self.client.pseudonymize(GRANTED, identifiers)
        self.assertEqual(again, first)
        self.assertEqual(self.client.reidentify(GRANTED, first.tokens), identifiers)
        self.assertEqual(self.client.reidentify(GRANTED, first.tokens[:1], MASK_EMAIL),
                         [b"j***@example.com"])

    def test_record_pipeline(self):
        records = 40
        ids = [f"py/{self.tag}/pipe/{i}".encode() for i in range(records + 2)]
        values = [b"value %d\0\xff" % i for i in range(records)] + [b"b" * (3 << 19)]
        too_big = b"t" * (5 << 20)  # over the 4 MiB + 64 KiB frame
        pipeline = RecordPipeline()
        for i in range(records + 1):
            pipeline.put(GRANTED, ids[i], values[i])
        for i in range(records + 1):
            pipeline.get(GRANTED, ids[i])
        pipeline.exists(GRANTED, ids[0])
        pipeline.delete(GRANTED, ids[0])
        pipeline.get(GRANTED, ids[0])
        pipeline.get(UNGRANTED, ids[0])
        pipeline.put(GRANTED, ids[records + 1], too_big)
        pipeline.exists(GRANTED, ids[1])
        self.assertEqual(len(pipeline), 2 * (records + 1) + 6)
        before = _daemon.status().connections_total

        results = self.client.run(pipeline)
        self.assertEqual(len(results), 2 * (records + 1) + 6)
        self.assertEqual(results[:records + 1], [None] * (records + 1))
        self.assertEqual(results[records + 1:2 * (records + 1)], values)
        rest = results[2 * (records + 1):]
        self.assertIs(rest[0], True)
        self.assertIsNone(rest[1])  # the delete
        self.assertIsInstance(rest[2], errors.RecordNotFoundError)
        self.assertIsInstance(rest[3], errors.NotGrantedError)
        self.assertIsInstance(rest[4], errors.FrameTooLargeError)
        self.assertIs(rest[5], True)  # after the unsent one
        # The status request after the run is one new (admin) connection; the run added none.
        self.assertEqual(_daemon.status().connections_total - before, 1)
        with self.assertRaises(errors.RecordNotFoundError):  # the unsent put stored nothing
            self.client.get_record(GRANTED, ids[records + 1])

    def test_connection_reuse(self):
        record_id = f"py/{self.tag}/reuse".encode()
        before = _daemon.status().connections_total
        for n in range(10):
            self.client.put_record(GRANTED, record_id, b"%d" % n)
            self.assertEqual(self.client.get_record(GRANTED, record_id), b"%d" % n)
        after = _daemon.status().connections_total
        # The status request after the calls is one new (admin) connection; the calls add none.
        self.assertEqual(after - before, 1)

    def test_daemon_gone(self):
        record_id = f"py/{self.tag}/gone".encode()
        self.client.put_record(GRANTED, record_id, b"before")
        _daemon.stop()
        with self.assertRaises(errors.DaemonUnavailableError) as raised:
            self.client.get_record(GRANTED, record_id)
        self.assertEqual(raised.exception.code, 510)
        self.assertIn(_daemon.data_socket, raised.exception.message)
        with self.assertRaises(errors.DaemonUnavailableError):
            Client(_daemon.data_socket)
        _daemon.start()
        self.assertEqual(self.client.get_record(GRANTED, record_id), b"before")


class ScenarioListTest(unittest.TestCase):
    def test_every_listed_scenario_is_implemented(self):
        listed = listed_scenarios()
        self.assertGreaterEqual(len(listed), 8)
        implemented = {name[len("test_"):] for name in dir(ScenarioTest)
                       if name.startswith("test_")}
        self.assertEqual(sorted(set(listed) - implemented), [],
                         "scenarios of scenarios.txt without a ScenarioTest.test_<name>")
        self.assertEqual(sorted(implemented - set(listed)), [],
                         "ScenarioTest tests not listed in scenarios.txt")


class ErrorTableTest(unittest.TestCase):
    def test_every_error_code_is_mapped_under_its_name(self):
        with open(os.path.join(SOURCE_DIR, "crypto/base/status.h")) as header:
            numbers = dict(re.findall(r"\b(k[A-Z]\w*) = (\d+),", header.read()))
        with open(os.path.join(SOURCE_DIR, "crypto/base/status.cc")) as source:
            names = dict(re.findall(r'ErrorCode::(k\w+), "([A-Z0-9_]+)"', source.read()))
        self.assertIn("kRecordNotFound", numbers)
        expected = {int(numbers[k]): names[k] for k in numbers if k != "kOk"}
        mapped = {code: cls.code_name for code, cls in errors.ERROR_CLASSES.items()}
        self.assertEqual(mapped, expected)

    def test_an_unknown_code_keeps_its_number_and_name(self):
        error = errors.error_for(9999, "FROM_THE_FUTURE", "cofferd: new")
        self.assertIs(type(error), errors.CofferError)
        self.assertEqual((error.code, error.code_name), (9999, "FROM_THE_FUTURE"))
        slow = errors.error_for(503, "SLOW_DOWN", "cofferd: slow down", retry_after_ms=250)
        self.assertIsInstance(slow, errors.SlowDownError)
        self.assertEqual(slow.retry_after_ms, 250)


class ArgumentTest(unittest.TestCase):
    def setUp(self):
        running_daemon()
        self.client = Client(_daemon.data_socket)

    def tearDown(self):
        self.client.close()

    def test_bad_arguments_are_refused_before_sending(self):
        with self.assertRaises(TypeError):
            self.client.put_record(GRANTED, "a str id", b"value")
        with self.assertRaises(TypeError):
            self.client.put_record(GRANTED, b"id", "a str value")
        with self.assertRaises(ValueError):
            self.client.open_attachment(GRANTED, b"name", offset=-1)
        with self.assertRaises(ValueError):
            Client(_daemon.data_socket, ClientOptions(max_connections=0))
        with self.assertRaises(errors.FrameTooLargeError):
            self.client.put_record(GRANTED, b"id", b"x" * (5 << 20))
        self.client.put_record(GRANTED, b"id", b"fits")  # the connection was not spent

    def test_a_finished_upload_refuses_more(self):
        writer = self.client.begin_attachment(GRANTED, b"py/finished", "text/plain")
        writer.write(b"abc")
        writer.abort()
        with self.assertRaises(errors.UploadClosedError):
            writer.write(b"more")
        with self.assertRaises(errors.AttachmentNotFoundError):
            self.client.attachment_metadata(GRANTED, b"py/finished")


class PoolTest(unittest.TestCase):
    def test_eight_threads_share_three_connections(self):
        daemon = running_daemon()
        client = Client(daemon.data_socket, ClientOptions(max_connections=3, idle_connections=3))
        tag = os.urandom(4).hex()
        before = daemon.status().connections_total
        failures = []

        def work(worker):
            try:
                for n in range(20):
                    record_id = f"py/{tag}/{worker}/{n}".encode()
                    client.put_record(GRANTED, record_id, record_id)
                    if client.get_record(GRANTED, record_id) != record_id:
                        failures.append(f"worker {worker} read another value")
            except Exception as error:  # reported below, with the worker
                failures.append(f"worker {worker}: {error!r}")

        threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        self.assertEqual(failures, [])
        # At most two more than the one dialled at construction, plus the status connection.
        self.assertLessEqual(daemon.status().connections_total - before, 3)


class RetryRuleTest(unittest.TestCase):
    """The retry rule against a stand-in daemon on a real Unix socket whose connections each
    read one request and close without answering, until `drops` runs out; then it answers
    RECORD_NOT_FOUND to everything."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="coffer-pyclient-retry-")
        self.path = os.path.join(self.dir, "data.sock")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(16)
        self.drops = 0
        self.silent = False  # read requests and never answer
        self.read_ahead = 0  # after the next request, read this many more before answering any
        self.requests = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def tearDown(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept (close alone does not)
        self.listener.close()
        self.thread.join(timeout=10)
        self.assertFalse(self.thread.is_alive())
        os.unlink(self.path)
        os.rmdir(self.dir)

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed by tearDown
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _read_request(self, stream):
        """The next request, or None at the end of the stream."""
        size, shift = 0, 0
        while True:  # the varint size prefix
            byte = stream.read(1)
            if not byte:
                return None
            size |= (byte[0] & 0x7F) << shift
            shift += 7
            if not byte[0] & 0x80:
                break
        request = service_pb2.Request()
        request.ParseFromString(stream.read(size))
        self.requests += 1
        return request

    def _connection(self, conn):
        with conn, conn.makefile("rb") as stream:
            while True:
                request = self._read_request(stream)
                if request is None:
                    return
                batch = [request]
                ahead, self.read_ahead = self.read_ahead, 0
                for _ in range(ahead):
                    batch.append(self._read_request(stream))
                    if batch[-1] is None:
                        return
                if self.drops > 0:
                    self.drops -= 1
                    return
                if self.silent:
                    continue
                for request in batch:
                    response = service_pb2.Response()
                    response.request_id = request.request_id
                    response.error.code, response.error.code_name = 402, "RECORD_NOT_FOUND"
                    response.error.message = "no live record with this id"
                    payload = response.SerializeToString()
                    conn.sendall(encode_varint(len(payload)) + payload)

    def test_a_read_is_sent_once_more_on_a_new_connection(self):
        client = Client(self.path)
        self.drops = 1
        with self.assertRaises(errors.RecordNotFoundError):  # the second attempt's answer
            client.get_record(GRANTED, b"id")
        self.assertEqual(self.requests, 2)
        client.close()

    def test_a_read_is_repeated_only_once(self):
        client = Client(self.path)
        self.drops = 2
        with self.assertRaises(errors.DaemonUnavailableError):
            client.get_record(GRANTED, b"id")
        self.assertEqual(self.requests, 2)
        client.close()

    def test_a_delete_is_never_repeated(self):
        client = Client(self.path)
        self.drops = 1
        with self.assertRaises(errors.DaemonUnavailableError):
            client.delete_record(GRANTED, b"id")
        self.assertEqual(self.requests, 1)
        client.close()

    def test_pipelined_calls_are_sent_before_their_replies_are_read(self):
        # This daemon reads ten requests before it answers any: a client waiting for each reply
        # would time out (2 s here).
        client = Client(self.path, ClientOptions(request_timeout=2.0))
        self.read_ahead = 9
        pipeline = RecordPipeline()
        for i in range(10):
            pipeline.get(GRANTED, b"id%d" % i)
        results = client.run(pipeline)
        self.assertEqual(len(results), 10)
        for result in results:
            self.assertIsInstance(result, errors.RecordNotFoundError)
        self.assertEqual(self.requests, 10)
        client.close()

    def test_a_pipeline_cut_short_is_not_repeated(self):
        client = Client(self.path)
        self.drops = 1
        pipeline = RecordPipeline()
        for i in range(4):
            pipeline.get(GRANTED, b"id%d" % i)
        results = client.run(pipeline)
        self.assertEqual(len(results), 4)
        for result in results:
            self.assertIsInstance(result, errors.DaemonUnavailableError)
        self.assertEqual(self.requests, 1)  # read once, never sent again
        client.close()

    def test_a_daemon_that_does_not_answer_is_request_timeout(self):
        client = Client(self.path, ClientOptions(request_timeout=0.2))
        self.silent = True
        with self.assertRaises(errors.RequestTimeoutError) as raised:
            client.get_record(GRANTED, b"id")
        self.assertIn("200 ms", raised.exception.message)
        client.close()


if __name__ == "__main__":
    unittest.main()
