"""The package's wheel, installed into a fresh virtual environment, gives the original pushnote's
commands: `pushnote-server` and `pushnote-mq` (and `pushnote`) are the Rust binaries, on the
environment's PATH, and run with the original's flags (`--flag=value`, `--mq_socket`) carry
what the package in that environment notifies to a WebSocket subscriber."""

import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.parse
import uuid

import pytest

from support import REPO, WAIT, Proc

# The wheel scripts/test builds (`pip wheel ./python`): the same one it installs for the other
# tests, so the binaries in it are not compiled again here.
WHEEL_DIR = os.environ.get("PUSHNOTE_WHEEL_DIR", str(REPO / "target" / "python-wheel"))
COMMANDS = ("pushnote-server", "pushnote-mq", "pushnote")
# Creating the environment and installing the wheel into it (no index, no dependencies).
SETUP = 300.0


def clean_env(**extra):
    """The environment without the test run's PUSHNOTE_*, Django and Python path settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PUSHNOTE_", "DJANGO_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A new virtual environment with the wheel installed: its bin directory."""
    wheels = list(os.scandir(WHEEL_DIR)) if os.path.isdir(WHEEL_DIR) else []
    if not any(w.name.startswith("pushnote-") and w.name.endswith(".whl") for w in wheels):
        raise RuntimeError(f"no pushnote wheel in {WHEEL_DIR}: run scripts/test (it builds it "
                           f"with `pip wheel --wheel-dir {WHEEL_DIR} ./python`)")
    root = tmp_path_factory.mktemp("venv")
    # Without a pip of its own (ensurepip takes long): this pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True,
                   timeout=SETUP, env=clean_env())
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(root / "bin" / "python"), "install",
         "--quiet", "--no-index", "--no-deps", "--disable-pip-version-check", "--find-links",
         WHEEL_DIR, "pushnote"],
        check=True, timeout=SETUP, env=clean_env(),
    )
    return root / "bin"


def test_the_commands_are_the_binaries(venv):
    for name in COMMANDS:
        path = venv / name
        assert path.exists(), f"pip install gave no {name} command"
        with open(path, "rb") as f:
            assert f.read(4) == b"\x7fELF", f"{path} is not the binary"
        done = subprocess.run([str(path), "--help"], capture_output=True, text=True,
                              timeout=WAIT, env=clean_env())
        assert done.returncode == 0, done.stderr
        assert f"Usage: {name} " in done.stdout, done.stdout
    server_help = subprocess.run([str(venv / "pushnote-server"), "--help"], capture_output=True,
                                 text=True, timeout=WAIT, env=clean_env()).stdout
    assert "--mq_socket" in server_help
    mq_help = subprocess.run([str(venv / "pushnote-mq"), "--help"], capture_output=True,
                             text=True, timeout=WAIT, env=clean_env()).stdout
    assert "--sub" in mq_help and "--pub" in mq_help


def test_the_original_command_lines_carry_a_notify_to_a_websocket(venv):
    secret = "wheel-" + uuid.uuid4().hex + uuid.uuid4().hex
    python = str(venv / "python")
    procs = []
    try:
        # The original README's command lines, on loopback and free ports.
        forwarder = Proc([str(venv / "pushnote-mq"), "--sub=tcp://127.0.0.1:*",
                          "--pub=tcp://127.0.0.1:*"], env=clean_env())
        procs.append(forwarder)
        sub, pub = forwarder.value_after("apps publish to").split(", servers subscribe at ")
        server = Proc([str(venv / "pushnote-server"), "--port=0", f"--mq_socket={pub}",
                       "--route=/sockjs", "--address=127.0.0.1"],
                      env=clean_env(PUSHNOTE_SECRET=secret))
        procs.append(server)
        url = server.value_after("listening on")

        app_env = clean_env(PUSHNOTE_SECRET=secret, PUSHNOTE_MQ_SOCKET=sub)
        token = subprocess.run(
            [python, "-c", "from pushnote.utils import tokenize; print(tokenize(42))"],
            env=app_env, capture_output=True, text=True, timeout=WAIT, check=True,
        ).stdout.strip()

        ws = WebSocket(f"ws{url[4:]}/websocket")
        ws.send(json.dumps({"name": "subscribe", "data": {"token": token, "replies": True}}))
        reply = json.loads(ws.receive())
        assert reply == {"name": "pushnote:subscribed", "data": {"user": "42"}}, reply

        # The app notifies user 42 until the page has it: the server's subscription reaches
        # the forwarder in the background.
        app = Proc([python, "-c", NOTIFYING_APP], env=app_env, cwd=str(venv))
        procs.append(app)
        package = app.value_after("package at")
        assert package.startswith(str(venv.parent)), package
        data = json.loads(ws.receive())
        assert data.keys() == {"n", "to"} and data["to"] == 42, data
        ws.close()
    finally:
        for proc in reversed(procs):
            proc.kill()


NOTIFYING_APP = """
import time
import pushnote
from pushnote.exceptions import NotConnectedError
from pushnote.pub import notify
print("package at", pushnote.__file__, flush=True)
deadline = time.monotonic() + %r
n = 0
while time.monotonic() < deadline:
    try:
        notify({"n": n, "to": 42}, users=[42])
    except NotConnectedError:
        pass
    n += 1
    time.sleep(0.1)
""" % WAIT


class WebSocket:
    """A WebSocket client (RFC 6455: text frames, none fragmented) on a loopback connection."""

    def __init__(self, url):
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=WAIT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        self.deadline = time.monotonic() + WAIT
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def send(self, text):
        payload = text.encode()
        mask = os.urandom(4)
        if len(payload) < 126:
            header = struct.pack("!BB", 0x81, 0x80 | len(payload))
        else:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self):
        """The next text message; fails if none arrives within WAIT seconds."""
        self.deadline = time.monotonic() + WAIT
        while True:
            first, second = self._take(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", self._take(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", self._take(8))
            payload = self._take(length)
            opcode = first & 0x0F
            assert first & 0x80, "a fragmented message"
            if opcode == 1:
                return payload.decode()
            assert opcode != 8, f"closed: {payload!r}"

    def close(self):
        self.sock.close()

    def _take(self, n):
        while len(self.buffer) < n:
            self._fill()
        taken, self.buffer = self.buffer[:n], self.buffer[n:]
        return taken

    def _fill(self):
        left = self.deadline - time.monotonic()
        assert left > 0, f"nothing from the server in {WAIT} s"
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise AssertionError(f"nothing from the server in {WAIT} s")
        assert chunk, "the server closed the connection"
        self.buffer += chunk
