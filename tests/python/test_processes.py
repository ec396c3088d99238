"""One publisher per process, shared by threads, made again in forked children, and flushed
at exit."""

import json
import os
import subprocess
import sys
import threading
import time
import traceback


import pushnote.connection
from pushnote.pub import notify_all
from support import WAIT, free_port


def data_of(frames):
    return json.loads(frames[1])["data"]


def test_threads_share_one_publisher_and_every_message_arrives(bus):
    threads, per_thread = 8, 25
    seen = set()
    start = threading.Barrier(threads)
    errors = []

    def send(t):
        try:
            start.wait(timeout=WAIT)
            seen.add(id(pushnote.connection.publisher()))
            for n in range(per_thread):
                notify_all({"t": t, "n": n})
        except Exception as e:  # reported below, with the thread's number
            errors.append((t, e))

    workers = [threading.Thread(target=send, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=WAIT)
    assert not errors, errors
    assert len(seen) == 1, "every thread uses the process's one publisher"
    received = [data_of(f) for f in bus.receive_all(threads * per_thread)]
    for t in range(threads):
        # Each thread's messages arrive, in the order it sent them.
        assert [d["n"] for d in received if d["t"] == t] == list(range(per_thread))
    bus.expect_nothing()


def wait_child(pid, timeout=WAIT):
    """The exit code of child `pid`; kills it if it has not exited in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    raise AssertionError(f"forked child {pid} did not exit in {timeout} s")


def test_a_forked_child_publishes_through_its_own_connection(bus):
    # A pre-forking server's master that published before forking its workers.
    notify_all({"from": "parent", "n": 1})
    assert data_of(bus.receive()) == {"from": "parent", "n": 1}
    inherited = pushnote.connection.publisher()

    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only, never return into pytest
        code = 1
        try:
            notify_all({"from": "child"})
            code = 0 if pushnote.connection.publisher() is not inherited else 2
            pushnote.connection.close()  # lingers until the message is out
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)

    code = wait_child(pid)
    assert code != 2, "the child published through the publisher it inherited"
    assert code == 0, "the child failed to publish (its traceback is on stderr)"
    assert data_of(bus.receive()) == {"from": "child"}
    # The parent's connection is untouched by the child.
    assert pushnote.connection.publisher() is inherited
    notify_all({"from": "parent", "n": 2})
    assert data_of(bus.receive()) == {"from": "parent", "n": 2}


def test_a_process_that_notifies_and_exits_delivers(bus):
    # No Django settings here: the package reads PUSHNOTE_MQ_SOCKET from the environment.
    script = (
        "from pushnote.pub import notify_all\n"
        "for n in range(200):\n"
        "    notify_all({'n': n, 'pad': 'x' * 1000})\n"
    )
    env = dict(os.environ, PUSHNOTE_MQ_SOCKET=bus.forwarder.sub)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=WAIT)
    assert [data_of(f)["n"] for f in bus.receive_all(200)] == list(range(200))


def test_a_script_with_nothing_listening_fails_with_a_clear_message():
    env = dict(os.environ, PUSHNOTE_MQ_SOCKET=f"tcp://127.0.0.1:{free_port()}")
    env.pop("DJANGO_SETTINGS_MODULE", None)
    done = subprocess.run(
        [sys.executable, "-c", "import pushnote.pub; pushnote.pub.notify_all({'n': 1})"],
        env=env, capture_output=True, text=True, timeout=WAIT,
    )
    assert done.returncode == 1
    assert "pushnote.exceptions.NotConnectedError: not connected" in done.stderr


