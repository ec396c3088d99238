"""Under gunicorn with --preload, the master publishes while the app loads, then forks its
workers: each worker publishes through a connection of its own, and every message arrives."""

import json
import os
import sys
import time
import urllib.request
from pathlib import Path

from support import WAIT, Proc, free_port

HERE = Path(__file__).resolve().parent


def data_of(frames):
    return json.loads(frames[1])["data"]


def test_gunicorn_workers_publish_after_a_master_that_published(bus):
    port = free_port()
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="testsite.settings",
        PUSHNOTE_MQ_SOCKET=bus.forwarder.sub,
        PUSHNOTE_NOTIFY_AT_LOAD="1",
        PYTHONPATH=str(HERE),
    )
    gunicorn = Proc(
        [sys.executable, "-m", "gunicorn", "--preload", "--workers", "2", "--bind",
         f"127.0.0.1:{port}", "--error-logfile", "-", "testsite.wsgi:application"],
        env=env, cwd=HERE, merge_stderr=True,
    )
    try:
        master = data_of(bus.receive())
        assert master == {"from": "master", "pid": gunicorn.popen.pid}
        for _ in range(2):
            gunicorn.value_after("Booting worker with pid:")

        workers = set()
        deadline = time.monotonic() + WAIT
        while len(workers) < 2:
            assert time.monotonic() < deadline, f"only workers {workers} served requests"
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/notify-pid/",
                                        timeout=WAIT) as response:
                served_by = json.load(response)["pid"]
            assert data_of(bus.receive()) == {"from": "worker", "pid": served_by}
            workers.add(served_by)
        assert gunicorn.popen.pid not in workers
    finally:
        gunicorn.terminate()
