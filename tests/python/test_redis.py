"""Publishing into Redis (PUSHNOTE_BROKER, docs/PROTOCOL.md §2c): a real redis-server on a free
port in a folder of its own, and a subscriber speaking RESP over a plain socket that sees each
message as servers do, its position in front of its body."""

import shutil
import socket
import struct
import tempfile
import time

import pytest

import pushnote
import pushnote.connection
from pushnote.pub import notify, notify_all, publish
from support import WAIT, Proc, free_port


def redis_binary():
    return shutil.which("redis-server") or "/usr/bin/redis-server"


class Redis:
    """redis-server on a free loopback port, without persistence, in a temporary folder."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="pushnote-redis-")
        self.port = free_port()
        self.proc = None
        self.start()

    @property
    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.proc = Proc([redis_binary(), "--bind", "127.0.0.1", "--port", str(self.port),
                          "--dir", self.dir, "--save", "", "--appendonly", "no",
                          "--protected-mode", "no", "--loglevel", "warning"])
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with Resp(self.port) as c:
                    if c.call("PING") == b"PONG":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server did not start")
            time.sleep(0.02)

    def kill(self):
        self.proc.kill()

    def close(self):
        self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class Resp:
    """A plain socket speaking RESP2: commands, their replies, and Pub/Sub messages."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.file = self.sock.makefile("rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.file.close()
        self.sock.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise AssertionError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            return [self.read() for _ in range(int(rest))]
        raise AssertionError(f"not RESP: {line!r}")

    def call(self, *args):
        self.send(*args)
        return self.read()

    def subscribe(self, *channels):
        self.send("SUBSCRIBE", *channels)
        for _ in channels:
            assert self.read()[0] == b"subscribe"

    def message(self):
        """(channel, (epoch, offset), body) of the next message."""
        kind, channel, payload = self.read()
        assert kind == b"message"
        epoch, offset = struct.unpack(">II", payload[:8])
        return channel.decode(), (epoch, offset), payload[8:].decode()


@pytest.fixture
def redis(settings):
    redis = Redis()
    settings.PUSHNOTE_BROKER = redis.url
    settings.PUSHNOTE_MQ_CONFIRM_SOCKET = None
    yield redis
    pushnote.connection.close()
    redis.close()


def test_publishes_land_in_redis_with_their_positions(redis):
    with Resp(redis.port) as sub:
        sub.subscribe("pushnote:all", "pushnote:user:7", "pushnote:chan:news")
        assert notify_all({"msg": "hi"}) is None
        at = notify_all({"msg": "again"}, confirm=True)
        positions = notify({"n": 1}, users=["7", "8"], confirm=True)
        news = publish("news", "tick", {"n": 2}, confirm=True)

        channel, first, body = sub.message()
        assert channel == "pushnote:all"
        assert body == '{"name":"notify_all","data":{"msg":"hi"}}'
        assert at == (first[0], first[1] + 1)
        assert sub.message() == ("pushnote:all", at,
                                 '{"name":"notify_all","data":{"msg":"again"}}')
        assert [offset for _, offset in positions] == [1, 1]
        assert sub.message() == ("pushnote:user:7", positions[0],
                                 '{"name":"notify","data":{"n":1}}')
        channel, position, _ = sub.message()
        assert (channel, position) == ("pushnote:chan:news", news)
    with Resp(redis.port) as c:
        assert c.call("LLEN", "pushnote:history:user:8") == 1


def test_the_prefix_setting_keeps_keys_apart(redis, settings):
    settings.PUSHNOTE_BROKER_PREFIX = "app1:"
    with Resp(redis.port) as sub:
        sub.subscribe("app1:user:7")
        [position] = notify({"n": 1}, users=["7"], confirm=True)
        assert sub.message()[:2] == ("app1:user:7", position)
    with Resp(redis.port) as c:
        assert c.call("EXISTS", "app1:meta:user:7") == 1
        assert c.call("EXISTS", "pushnote:meta:user:7") == 0


def test_redis_down_raises_not_connected_and_the_next_call_after_its_return_works(redis):
    notify_all({"n": 1})
    redis.kill()
    with pytest.raises(pushnote.NotConnectedError, match="PUSHNOTE_BROKER"):
        notify_all({"n": 2})
    redis.start()
    epoch, offset = notify_all({"n": 3}, confirm=True)
    assert epoch > 0 and offset == 1  # a Redis without persistence starts afresh


def test_a_publish_that_asks_for_a_replica_returns_once_it_holds_it(redis, settings):
    replica = Redis.__new__(Redis)
    replica.dir = tempfile.mkdtemp(prefix="pushnote-redis-")
    replica.port = free_port()
    replica.proc = Proc([redis_binary(), "--bind", "127.0.0.1", "--port", str(replica.port),
                         "--dir", replica.dir, "--save", "", "--appendonly", "no",
                         "--replicaof", "127.0.0.1", str(redis.port),
                         "--protected-mode", "no", "--loglevel", "warning"])
    try:
        deadline = time.monotonic() + WAIT
        while True:
            try:
                with Resp(replica.port) as c:
                    if b"master_link_status:up" in c.call("INFO", "replication"):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the replica syncs"
            time.sleep(0.02)
        settings.PUSHNOTE_BROKER_REPLICAS = 1
        notify_all({"n": 1})
        with Resp(replica.port) as c:
            assert c.call("HGET", "pushnote:meta:all", "offset") == b"1"
        replica.kill()
        with pytest.raises(pushnote.UnconfirmedError):
            notify_all({"n": 2})
        settings.PUSHNOTE_BROKER_REPLICAS = "two"
        with pytest.raises(pushnote.ConfigurationError):
            notify_all({"n": 3})
    finally:
        replica.close()
