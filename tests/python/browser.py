"""Headless Chromium for the tests, through browser.js (node + tests/browser's playwright-core):
open pages, evaluate JavaScript in them, and wait, with deadlines, for what they log."""

import json
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

from support import REPO, WAIT, dies_with_parent

SCRIPT = Path(__file__).with_name("browser.js")


class Browser:
    def __init__(self):
        if not (REPO / "tests/browser/node_modules/playwright-core").exists():
            raise RuntimeError("run `npm ci` in tests/browser (scripts/test does)")
        self.popen = subprocess.Popen(
            ["node", str(SCRIPT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            # SIGTERM: playwright closes Chromium on it.
            preexec_fn=dies_with_parent(signal.SIGTERM),
        )
        self.events = queue.Queue()
        # Every event so far, in order.
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()
        self.until(lambda e: e["event"] == "ready", timeout=60)

    def _read(self):
        for line in self.popen.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                continue

    def command(self, **cmd):
        self.popen.stdin.write(json.dumps(cmd) + "\n")
        self.popen.stdin.flush()

    def until(self, pred, timeout=WAIT):
        """The first event from now on that satisfies `pred`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(deadline - time.monotonic(), 0))
            except queue.Empty:
                raise AssertionError(f"browser: timed out; events so far: {self.log}")
            assert event["event"] != "error", f"browser.js failed: {event}"
            self.log.append(event)
            if pred(event):
                return event

    def open(self, page, url):
        """Opens `url` as page `page` (each page has its own cookies); returns the HTTP status."""
        self.command(cmd="open", id=page, url=url)
        return self.until(lambda e: e["event"] == "opened" and e["id"] == page)["status"]

    def eval(self, page, js):
        self.command(cmd="eval", id=page, js=js)
        return self.until(lambda e: e["event"] == "eval" and e["id"] == page)["value"]

    def wait_for(self, page, js, timeout=WAIT):
        """Waits until `js` is true in page `page`."""
        deadline = time.monotonic() + timeout
        while not self.eval(page, js):
            assert time.monotonic() < deadline, f"{js} never became true in {page}"
            time.sleep(0.05)

    def logged(self, page):
        """What page `page` has logged to its console so far: each message's first argument."""
        self.drain()
        return [e["args"][0] for e in self.log
                if e["event"] == "console" and e["id"] == page and e["args"]]

    def until_logged(self, page, pred, timeout=WAIT):
        """The first value page `page` logs (or has logged) that satisfies `pred`."""
        for value in self.logged(page):
            if pred(value):
                return value
        event = self.until(
            lambda e: e["event"] == "console" and e["id"] == page and e["args"]
            and pred(e["args"][0]),
            timeout,
        )
        return event["args"][0]

    def drain(self):
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            assert event["event"] != "error", f"browser.js failed: {event}"
            self.log.append(event)

    def page_errors(self, page=None):
        """The errors pages (or page `page`) have thrown so far."""
        self.drain()
        return [e for e in self.log
                if e["event"] == "pageerror" and (page is None or e["id"] == page)]

    def close(self):
        try:
            self.command(cmd="quit")
            self.popen.wait(timeout=WAIT)
        except (OSError, subprocess.TimeoutExpired):
            self.popen.kill()
            self.popen.wait(timeout=WAIT)
