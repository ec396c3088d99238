"""A PUSHNOTE_TOKENIZER that returns tokens the app makes itself (a random string per user, kept
here in a dict as an app keeps it in its database), as the original pushnote allowed: with
PUSHNOTE_OPAQUE_TOKENS and a pushnote-server started with --opaque-tokens, a page that
subscribes with such a token receives what `notify(data, users)` sends those users, through
the real pushnote-mq and pushnote-server; the bus never carries the token."""

import base64
import os
import secrets
import time

import pytest

from pushnote.pub import notify
from pushnote.utils import tokenize
from support import WAIT, Proc, RawWebSocket, binary, unique

# The app's own tokens, one per user, made on first use (an app would keep them in a model).
TOKENS = {}


def opaque_tokenize(user):
    return TOKENS.setdefault(user.pk, secrets.token_urlsafe(24))


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
