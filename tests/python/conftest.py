"""Fixtures: a bus the package publishes to (a ZeroMQ subscriber bound where a forwarder would
listen), and the real forwarder and server for the browser tests."""

import pytest
import zmq

import pushnote.connection
from support import Bus, Forwarder, Server


@pytest.fixture(scope="session")
def zmq_context():
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture(scope="session")
def bus_forwarder():
    forwarder = Forwarder()
    yield forwarder
    forwarder.proc.kill()


@pytest.fixture
def bus(zmq_context, bus_forwarder, settings):
    """A forwarder at PUSHNOTE_MQ_SOCKET, and a subscriber that receives everything the package
    publishes to it."""
    bus = Bus(zmq_context, bus_forwarder)
    settings.PUSHNOTE_MQ_SOCKET = bus_forwarder.sub
    yield bus
    pushnote.connection.close()
    bus.close()


@pytest.fixture(scope="module")
def forwarder():
    forwarder = Forwarder()
    yield forwarder
    forwarder.proc.kill()


@pytest.fixture(scope="module")
def push_server(forwarder):
    """pushnote-server signing with the test site's SECRET_KEY, as a server set up for an app
    that moved from the original pushnote without a PUSHNOTE_SECRET would be."""
    from django.conf import settings

    server = Server(forwarder, settings.SECRET_KEY)
    yield server
    server.proc.kill()
