"""A PUSHNOTE_TOKENIZER that returns tokens the app makes itself (a random string per user, kept
here in a dict as an app keeps it in its database), as the original pushnote allowed: with
PUSHNOTE_OPAQUE_TOKENS and a pushnote-server started with --opaque-tokens, a page that
subscribes with such a token receives what `notify(data, users)` sends those users, through
the real pushnote-mq and pushnote-server; the bus never carries the token."""

import base64
import json
import os
import secrets
import socket
import time
import urllib.parse

import pytest

from pushnote.pub import notify
from pushnote.utils import tokenize
from support import WAIT, Proc, binary, unique

# The app's own tokens, one per user, made on first use (an app would keep them in a model).
TOKENS = {}


def opaque_tokenize(user):
    return TOKENS.setdefault(user.pk, secrets.token_urlsafe(24))


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


@pytest.fixture
def opaque_server(bus_forwarder, settings):
    """pushnote-server --opaque-tokens at the `bus` fixture's forwarder, with the site's key."""
    env = dict(os.environ, PUSHNOTE_SECRET=settings.SECRET_KEY)
    env.pop("PUSHNOTE_OPAQUE_TOKENS", None)
    proc = Proc(
        [binary("pushnote-server"), "--port", "0", "--address", "127.0.0.1", "--mq_socket",
         bus_forwarder.pub, "--opaque-tokens"],
        env=env,
    )
    url = proc.value_after("listening on")
    yield url
    proc.kill()


def receive_notify(page, user, timeout=WAIT):
    """Notifies `user` with markers until the page receives one: the server's subscription to
    the user's topic reaches the forwarder in the background."""
    deadline = time.monotonic() + timeout
    while True:
        marker = {"sync": unique()}
        notify(marker, users=[user])
        try:
            while page.receive(timeout=0.3) != marker:
                pass
            return
        except AssertionError:
            assert time.monotonic() < deadline, "the page never received notify's markers"


@pytest.mark.django_db(transaction=True)
def test_notify_reaches_the_page_subscribed_with_the_tokenizers_opaque_token(
    bus, opaque_server, settings, django_user_model
):
    settings.PUSHNOTE_TOKENIZER = f"{__name__}.opaque_tokenize"
    settings.PUSHNOTE_OPAQUE_TOKENS = True
    user = django_user_model.objects.create_user(f"opaque-{unique()}")
    token = tokenize(user)
    assert token == TOKENS[user.pk] and ":" not in token

    page = RawWebSocket(opaque_server)
    try:
        page.send({"name": "subscribe", "data": {"token": token, "replies": True}})
        reply = page.receive()
        assert reply["name"] == "pushnote:subscribed", reply
        receive_notify(page, user)
        notify({"msg": "your order shipped"}, users=[user])
        assert page.receive() == {"msg": "your order shipped"}

        # Without the setting, notify sends to the user's primary key, which this page is not.
        settings.PUSHNOTE_OPAQUE_TOKENS = False
        notify({"msg": "to the primary key"}, users=[user])
        settings.PUSHNOTE_OPAQUE_TOKENS = True
        notify({"msg": "fence"}, users=[user])
        assert page.receive() == {"msg": "fence"}
    finally:
        page.close()

    # What crossed the bus: a keyed hash of the token, never the token.
    frames = []
    while bus.socket.poll(0):
        frames.extend(bus.receive())
    assert any(b"your order shipped" in f for f in frames), frames
    assert not any(token.encode() in f for f in frames), frames


def test_the_user_of_an_opaque_token_is_the_documented_keyed_hash_and_bounds_hold(settings):
    """docs/PROTOCOL.md §3's formula, in Python's standard library, for apps in any language."""
    import hashlib
    import hmac

    from pushnote import TokenError
    from pushnote.utils import signer

    settings.PUSHNOTE_SECRET = "an-app-secret-of-32-characters-Xy7"
    settings.PUSHNOTE_SALT = "pushnote"
    token = secrets.token_urlsafe(24)
    key = hashlib.sha256(b"pushnote.opaque" + b"signer" + settings.PUSHNOTE_SECRET.encode())
    mac = hmac.new(key.digest(), token.encode(), "sha256").digest()
    expected = "~" + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert signer().opaque_user(token) == expected
    assert signer().user_of_token(token) == expected
    signed = signer().tokenize("42")
    assert signer().user_of_token(signed) == "42"
    for bad in (signed, "short", "x" * 513):
        with pytest.raises(TokenError) as raised:
            signer().opaque_user(bad)
        assert bad not in str(raised.value)
