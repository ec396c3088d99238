"""The real pushnote binaries on ephemeral loopback ports, and ZeroMQ subscribers that see
exactly what the package publishes. Every wait has a deadline; every process is killed."""

import base64
import ctypes
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[2]
# The binaries `cargo test` and `cargo build` make (scripts/test builds them).
BIN_DIR = Path(os.environ.get("PUSHNOTE_BIN_DIR", REPO / "target" / "debug"))
# How long any single expected event may take before a test fails.
WAIT = 20.0


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `cargo build --bins` (scripts/test does)")
    return str(path)


PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl  # loaded here, not in a forked child
except (OSError, AttributeError):  # not Linux
    _prctl = None


def dies_with_parent(sig=signal.SIGKILL):
    """A preexec_fn: the child gets `sig` when the test process dies, however it dies (a
    timeout's SIGKILL included), so that no process outlives the tests."""

    def preexec():
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(sig))

    return preexec


class Proc:
    """A spawned process whose stdout lines arrive on a queue; kill() ends it."""

    def __init__(self, args, env=None, cwd=None, merge_stderr=False):
        self.args = args
        self.popen = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if merge_stderr else None,
            env=env,
            cwd=cwd,
            text=True,
            preexec_fn=dies_with_parent(),
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.put(line.rstrip("\n"))

    def value_after(self, marker, timeout=WAIT):
        """Waits for a stdout line containing `marker`; returns what follows it."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise AssertionError(f"{self.args[0]}: no line with {marker!r} in {timeout} s")
            if marker in line:
                return line.split(marker, 1)[1].strip()

    def terminate(self):
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=WAIT)


class Forwarder:
    """pushnote-mq on free ports: apps publish to `.sub`, servers subscribe at `.pub`."""

    def __init__(self, extra=()):
        self.proc = Proc([binary("pushnote-mq"), "--sub", "tcp://127.0.0.1:*", "--pub",
                          "tcp://127.0.0.1:*", *extra])
        line = self.proc.value_after("apps publish to")
        self.sub, self.pub = line.split(", servers subscribe at ")


class Server:
    """pushnote-server on a free port, connected to `forwarder`, signing with `secret`, with
    its /metrics."""

    def __init__(self, forwarder, secret):
        env = dict(os.environ, PUSHNOTE_SECRET=secret)
        self.proc = Proc(
            [binary("pushnote-server"), "--port", "0", "--address", "127.0.0.1", "--mq_socket",
             forwarder.pub, "--metrics"],
            env=env,
        )
        self.url = self.proc.value_after("listening on")

    def metric(self, name):
        """The value of metric `name` (with its labels, if any) in the server's /metrics."""
        parts = urllib.parse.urlsplit(self.url)
        url = f"{parts.scheme}://{parts.netloc}/metrics"
        with urllib.request.urlopen(url, timeout=WAIT) as response:
            for line in response.read().decode().splitlines():
                if line.startswith(name + " "):
                    return int(line.split()[-1])
        raise AssertionError(f"no metric {name}")

    def wait_metric(self, name, at_least):
        """Waits until metric `name` reaches `at_least`."""
        deadline = time.monotonic() + WAIT
        while (value := self.metric(name)) < at_least:
            assert time.monotonic() < deadline, f"{name} stayed at {value}"
            time.sleep(0.05)


class Bus:
    """A ZeroMQ subscriber at a forwarder's server side: it receives every message apps publish
    to `forwarder.sub`, as the forwarder passes it on (stamp included)."""

    def __init__(self, ctx, forwarder):
        self.forwarder = forwarder
        self.socket = ctx.socket(zmq.SUB)
        self.socket.linger = 0
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(forwarder.pub)
        self._sync()

    def _sync(self):
        """Waits until the subscription has reached the forwarder (it travels in the
        background): publishes markers, with a publisher of its own, until one arrives, then
        reads up to the last one sent."""
        from pushnote import _native

        probe = _native.Publisher(self.forwarder.sub)
        try:
            deadline = time.monotonic() + WAIT
            marker = None
            while time.monotonic() < deadline:
                marker = f'{{"bus-sync":"{unique()}"}}'
                probe.notify_all(marker)
                if self.socket.poll(100):
                    break
            else:
                raise AssertionError(f"no message through the forwarder in {WAIT} s")
            while json.loads(self.receive()[1])["data"] != json.loads(marker):
                pass
        finally:
            probe.close()

    def receive(self, timeout=WAIT):
        """The next message's frames."""
        if not self.socket.poll(int(timeout * 1000)):
            raise AssertionError(f"no message on the bus in {timeout} s")
        return self.socket.recv_multipart()

    def receive_all(self, count, timeout=WAIT):
        deadline = time.monotonic() + timeout
        return [self.receive(max(deadline - time.monotonic(), 0)) for _ in range(count)]

    def expect_nothing(self, within=0.3):
        """Nothing arrives within `within` seconds (a short check after what was expected)."""
        assert not self.socket.poll(int(within * 1000)), self.socket.recv_multipart()

    def close(self):
        self.socket.close()


def topic_of(frames):
    """The topic of a message the forwarder passed on, without the forwarder's stamp (the 8
    bytes after the NUL, where the package leaves room for it: docs/PROTOCOL.md §2)."""
    name, nul, stamp = frames[0].partition(b"\x00")
    assert nul and len(stamp) == 8, frames[0]
    return name.decode()


def free_port():
    """A loopback port free now (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique():
    return uuid.uuid4().hex[:12]


class RawWebSocket:
    """A page as a raw WebSocket client of pushnote-server (`<route>/websocket`): JSON text
    out, one JSON message per text frame in."""

    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {u.path}/websocket HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
                f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                f"Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            self._fill(WAIT)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        data = self.sock.recv(65536)
        if not data:
            raise AssertionError("the server closed the connection")
        self.buf += data

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        else:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, value):
        self._send_frame(0x1, json.dumps(value).encode())

    def _frame(self):
        """The next whole frame in the buffer, taken out of it, or None."""
        if len(self.buf) < 2:
            return None
        n, at = self.buf[1] & 0x7F, 2
        if n == 126:
            n, at = int.from_bytes(self.buf[2:4], "big"), 4
        elif n == 127:
            n, at = int.from_bytes(self.buf[2:10], "big"), 10
        if len(self.buf) < at + n:
            return None
        opcode, payload = self.buf[0] & 0x0F, self.buf[at : at + n]
        self.buf = self.buf[at + n :]
        return opcode, payload

    def receive(self, timeout=WAIT):
        """The next message; AssertionError if none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self._frame()
            if frame is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message in {timeout} s")
                try:
                    self._fill(left)
                except socket.timeout:
                    raise AssertionError(f"no message in {timeout} s")
                continue
            opcode, payload = frame
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x9:
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                raise AssertionError(f"closed: {payload!r}")

    def close(self):
        self.sock.close()
