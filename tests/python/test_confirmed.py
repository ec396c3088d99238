"""What a publish promises when the forwarder dies (docs/PROTOCOL.md §2, "Publishing
reliably"): once the publisher has seen the forwarder go, a send raises NotConnectedError."""

import time

import pytest

import pushnote
import pushnote.connection
from pushnote.pub import notify, notify_all, publish
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


def test_confirmed_publishes_return_positions_or_raise_once_the_forwarder_is_gone(settings):
    forwarder = Forwarder(["--confirm", "tcp://127.0.0.1:*"])
    try:
        settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
        settings.PUSHNOTE_MQ_CONFIRM_SOCKET = forwarder.proc.value_after("confirmed publishes at")
        epoch, offset = notify_all({"msg": "hi"}, confirm=True)
        assert epoch > 0 and offset == 1
        # Each topic numbers its own messages.
        positions = notify({"msg": "hi"}, users=["r", "s"], confirm=True)
        assert [offset for _, offset in positions] == [1, 1]
        assert all(epoch > 0 for epoch, _ in positions)
        assert publish("news", "tick", {"n": 1}, confirm=True)[1] == 1
        assert notify_all({"msg": "again"}, confirm=True) == (epoch, 2)
        forwarder.proc.kill()
        for delay in (0.0, 0.1, 1.0):
            time.sleep(delay)
            with pytest.raises((pushnote.NotConnectedError, pushnote.UnconfirmedError)):
                notify({"msg": "after"}, users=["r"], confirm=True)
    finally:
        pushnote.connection.close()
        forwarder.proc.kill()


def test_confirm_without_its_setting_is_a_configuration_error(bus, settings):
    settings.PUSHNOTE_MQ_CONFIRM_SOCKET = None
    with pytest.raises(pushnote.ConfigurationError, match="PUSHNOTE_MQ_CONFIRM_SOCKET"):
        notify_all({"msg": "hi"}, confirm=True)
