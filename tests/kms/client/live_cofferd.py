"""A real cofferd for the Python client's tests: the built daemon on a fresh temporary state
directory with a fresh SoftHSM2 token (scripts/softhsm-token), real RocksDB and real sockets —
the same set-up as tests/kms/cofferd/cofferd_harness.cc and interop_test.sh.

    daemon = LiveCofferd(cofferd_binary, token_script, granted=["crm"], ungranted=["hr"])
    daemon.start()         # returns once the admin socket answers a status request
    ... daemon.data_socket, daemon.admin_socket, daemon.status() ...
    daemon.stop()          # SIGTERM; raises unless cofferd exits 0
    daemon.start()         # again, on the same state
    daemon.close()         # kills a running daemon, removes the directory

The calling uid gets read, write, delete, pseudonymize and reidentify grants on `granted`, none
on `ungranted` (both are created at start with --ensure-dataset) and the admin role (development
mode: no MFA). As root the daemon runs as nobody (--user nobody), as cofferd refuses root.
Readiness is polled (a status request on the admin socket every 20 ms, 60 s at most: a safety
net, not a measure), never slept through. Failures raise RuntimeError with the daemon's log.
"""

import grp
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from coffer.v1 import service_pb2
from coffer_client._connection import Connection
from coffer_client.client import ClientOptions

_READY_TIMEOUT_S = 60.0
_POLL_S = 0.02


class LiveCofferd:
    def __init__(self, cofferd, token_script, granted, ungranted=()):
        self._cofferd = cofferd
        self._datasets = list(granted) + list(ungranted)
        self.dir = tempfile.mkdtemp(prefix="coffer-pyclient-")
        os.chmod(self.dir, 0o755)
        self.data_socket = os.path.join(self.dir, "data.sock")
        self.admin_socket = os.path.join(self.dir, "admin.sock")
        self._process = None
        self._log = None
        self._starts = 0
        subprocess.run([token_script, os.path.join(self.dir, "hsm"), "coffer"], check=True,
                       stdout=subprocess.DEVNULL)
        me = os.geteuid()
        self._user_args = []
        group_line = ""
        if me == 0:
            nobody = pwd.getpwnam("nobody")
            self._user_args = ["--user", "nobody"]
            group_line = f'data_socket_group: "{grp.getgrgid(nobody.pw_gid).gr_name}"\n'
        datasets = " ".join(f'datasets: "{name}"' for name in granted)
        with open(os.path.join(self.dir, "cofferd.conf"), "w") as conf:
            conf.write(
                f'state_directory: "{self.dir}"\n'
                'data_socket: "data.sock"\nadmin_socket: "admin.sock"\n'
                f"{group_line}"
                'hsm { token_label: "coffer" pin_file: "hsm/user.pin" token_directory: "hsm" }\n'
                "durability: WAL\n"
                f"grants {{ principals {{ uid: {me} }} {datasets} rights: READ rights: WRITE "
                "rights: DELETE rights: PSEUDONYMIZE rights: REIDENTIFY }\n"
                f"admins {{ uid: {me} }}\n"
                "mfa { required: false }\n")
        if me == 0:
            subprocess.run(["chown", "-R", "nobody:", self.dir], check=True)

    def start(self):
        args = [self._cofferd, "--config", os.path.join(self.dir, "cofferd.conf")]
        args += self._user_args
        for name in self._datasets:
            args += ["--ensure-dataset", name]
        env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
        self._log = os.path.join(self.dir, f"cofferd.log{self._starts}")
        self._starts += 1
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + _READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"cofferd exited at start:\n{self.logs()}")
            try:
                self.status()
                return
            except Exception:  # not listening yet, or not answering yet
                time.sleep(_POLL_S)
        raise RuntimeError(f"cofferd did not start serving in {_READY_TIMEOUT_S:.0f} s:\n"
                           f"{self.logs()}")

    def status(self):
        """The daemon's StatusResponse, over a connection of its own to the admin socket."""
        connection = Connection(self.admin_socket, ClientOptions(request_timeout=10.0),
                                service_pb2)
        try:
            request = service_pb2.Request()
            request.status.SetInParent()
            connection.send(request)
            response = connection.receive(request.request_id)
        finally:
            connection.close()
        if response.HasField("error"):
            raise RuntimeError(f"status: {response.error.code_name}: {response.error.message}")
        return response.status

    def stop(self):
        """SIGTERM and wait; RuntimeError unless cofferd exited 0."""
        process, self._process = self._process, None
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        if code != 0:
            raise RuntimeError(f"cofferd exited {code} on SIGTERM:\n{self.logs()}")

    @property
    def running(self):
        return self._process is not None

    def logs(self):
        out = []
        for n in range(self._starts):
            path = os.path.join(self.dir, f"cofferd.log{n}")
            if os.path.exists(path):
                with open(path, errors="replace") as log:
                    out.append(log.read())
        return "".join(out)

    def close(self):
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None
        shutil.rmtree(self.dir, ignore_errors=True)
