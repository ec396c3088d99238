"""What a publish promises when the forwarder dies (docs/PROTOCOL.md §2, "Publishing
reliably"): once the publisher has seen the forwarder go, a send raises NotConnectedError."""

import time

import pytest

import pushnote
import pushnote.connection
from pushnote.pub import notify
from support import Forwarder


@pytest.mark.parametrize("delay", [0.1, 1.0, 5.0])
def test_the_first_notify_after_the_forwarder_died_raises(settings, delay):
    forwarder = Forwarder()
    try:
        settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
        notify({"msg": "before"}, users=["r"])  # waits for the forwarder, then sends
        forwarder.proc.kill()  # SIGKILL, then waitpid: its connections are closed
        time.sleep(delay)
        with pytest.raises(pushnote.NotConnectedError):
            notify({"msg": "after"}, users=["r"])
    finally:
        pushnote.connection.close()
        forwarder.proc.kill()
