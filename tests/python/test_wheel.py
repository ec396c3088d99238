"""The package's wheel, installed into a fresh virtual environment, gives the original pushnote's
commands: `pushnote-server` and `pushnote-mq` (and `pushnote`) are the Rust binaries, on the
environment's PATH, and run with the original's flags (`--flag=value`, `--mq_socket`) carry
what the package in that environment notifies to a WebSocket subscriber."""

import os
import subprocess
import sys
import time
import uuid

import pytest

from support import REPO, WAIT, Proc, RawWebSocket

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

        ws = RawWebSocket(url)
        ws.send({"name": "subscribe", "data": {"token": token, "replies": True}})
        reply = ws.receive()
        assert reply == {"name": "pushnote:subscribed", "data": {"user": "42"}}, reply

        # The app notifies user 42 until the page has it: the server's subscription reaches
        # the forwarder in the background.
        app = Proc([python, "-c", NOTIFYING_APP], env=app_env, cwd=str(venv))
        procs.append(app)
        package = app.value_after("package at")
        assert package.startswith(str(venv.parent)), package
        data = ws.receive()
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
