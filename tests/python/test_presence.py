"""Presence from Django: presence_token and {% pushnote_presence_token %} mint the token of
docs/PROTOCOL.md §3's formula (what Django's own TimestampSigner signs, and what the `pushnote
presence-token` command mints), a real pushnote-server admits a page with it as the member it
names, and pushnote.presence() lists the members a real --single server knows, through the
package's settings."""

import json
import os
import subprocess
import time
import urllib.parse

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.template import Context, Template

import pushnote
from pushnote.utils import presence_token
from support import WAIT, Proc, RawWebSocket, binary, free_port, unique

API_KEY = "python-tests-api-key-0123456789-Qw7Zx"
CHANNEL_SALT = "pushnote.channel"


def member_value(channel, user, info):
    """The signed value of docs/PROTOCOL.md §3, "Presence tokens", as Django apps write it."""
    return channel + ":" + json.dumps({"user": user, "info": info}, separators=(",", ":"))


def django_unsign(token, secret):
    return signing.TimestampSigner(key=secret, salt=CHANNEL_SALT).unsign(token, max_age=600)


def django_sign_at(value, secret, timestamp):
    """Django's TimestampSigner token for `value`, stamped with `timestamp` (base 62, as the
    token compared with has it)."""

    class At(signing.TimestampSigner):
        def timestamp(self):
            return timestamp

    return At(key=secret, salt=CHANNEL_SALT).sign(value)


def timestamp_of(token):
    return token.rsplit(":", 2)[1]


@pytest.mark.parametrize("info", [
    {"name": "Ann", "avatar": "https://example.com/a.png", "langs": ["fr", "en"]},
    None,
    "Ann",
    1.5,
    {"name": "Zoë <b>"},
])
def test_presence_tokens_are_what_django_signs(settings, info):
    channel = f"presence-room-{unique()}"
    token = presence_token(channel, 42, info)
    value = member_value(channel, "42", info)
    assert django_unsign(token, settings.SECRET_KEY) == value
    assert django_sign_at(value, settings.SECRET_KEY, timestamp_of(token)) == token


def test_the_command_mints_the_same_token(settings):
    """`pushnote presence-token` (the Rust signer) and presence_token agree to the byte: the
    same value, and the same token when stamped in the same second."""
    channel = f"presence-room-{unique()}"
    info = {"name": "Ann", "n": [1, 2]}
    env = dict(os.environ, PUSHNOTE_SECRET=settings.SECRET_KEY)
    env.pop("PUSHNOTE_SALT", None)
    command = [binary("pushnote"), "presence-token", channel, "--user", "42", "--info",
               json.dumps(info)]
    from_cli = subprocess.run(command, env=env, capture_output=True, text=True, timeout=WAIT,
                              check=True).stdout.strip()
    from_python = presence_token(channel, "42", info)
    assert django_unsign(from_cli, settings.SECRET_KEY) == member_value(channel, "42", info)
    assert django_sign_at(member_value(channel, "42", info), settings.SECRET_KEY,
                          timestamp_of(from_cli)) == from_cli
    if timestamp_of(from_cli) == timestamp_of(from_python):
        assert from_cli == from_python


def test_presence_tokens_refuse_what_the_server_would():
    with pytest.raises(pushnote.InvalidChannelError, match="invalid channel"):
        presence_token("private-room-7", 42)
    with pytest.raises(pushnote.InvalidChannelError, match="invalid channel"):
        presence_token("presence-room 7", 42)
    with pytest.raises(pushnote.InvalidUserError):
        presence_token("presence-room-7", AnonymousUser())
    with pytest.raises(pushnote.SerializationError):
        presence_token("presence-room-7", 42, {"bad": object()})


def render(source, **context):
    return Template("{% load pushnote %}" + source).render(Context(context))


@pytest.mark.django_db
def test_the_tag_writes_the_pages_users_presence_token(django_user_model, settings):
    ann = django_user_model.objects.create_user(f"ann-{unique()}")
    info = {"name": "Ann"}
    literal = render('{% pushnote_presence_token "presence-room-7" info %}', user=ann, info=info)
    token = json.loads(literal)
    assert django_unsign(token, settings.SECRET_KEY) == (
        member_value("presence-room-7", str(ann.pk), info)
    )
    # Between quotes, the token's characters alone.
    quoted = render('"{% pushnote_presence_token "presence-room-7" info %}"', user=ann, info=info)
    assert django_unsign(json.loads(quoted), settings.SECRET_KEY) == (
        member_value("presence-room-7", str(ann.pk), info)
    )
    # Without info, null; user= names another user.
    bo = django_user_model.objects.create_user(f"bo-{unique()}")
    token = json.loads(render('{% pushnote_presence_token "presence-room-7" user=bo %}', user=ann,
                              bo=bo))
    assert django_unsign(token, settings.SECRET_KEY) == (
        member_value("presence-room-7", str(bo.pk), None)
    )
    # An anonymous page gets none.
    assert render('{% pushnote_presence_token "presence-room-7" info %}',
                  user=AnonymousUser(), info=info) == "null"


@pytest.fixture
def single_server(settings):
    """pushnote-server --single with an API key, signing with the site's key; yields its SockJS
    URL and its origin (where /presence is)."""
    env = dict(os.environ, PUSHNOTE_SECRET=settings.SECRET_KEY)
    env.pop("PUSHNOTE_API_KEY", None)
    proc = Proc(
        [binary("pushnote-server"), "--port", "0", "--address", "127.0.0.1", "--single",
         "--mq_socket", "tcp://127.0.0.1:*", "--api-key", API_KEY],
        env=env,
    )
    url = proc.value_after("listening on")
    parts = urllib.parse.urlsplit(url)
    yield url, f"{parts.scheme}://{parts.netloc}"
    proc.kill()


def join(url, channel, token):
    """A page that joined `channel` with `token`, and the server's reply."""
    page = RawWebSocket(url)
    page.send({"name": "subscribe", "data": {"channel": channel, "token": token,
                                             "replies": True}})
    while True:
        reply = page.receive()
        # A change may come between the join and its reply (docs/PROTOCOL.md §6).
        if reply.get("name") != "pushnote:presence":
            return page, reply


def members_become(channel, expected):
    """Waits until pushnote.presence(channel) lists `expected` (in any order)."""
    key = lambda m: m["user"]  # noqa: E731
    deadline = time.monotonic() + WAIT
    while (members := sorted(pushnote.presence(channel), key=key)) != sorted(expected, key=key):
        assert time.monotonic() < deadline, f"{channel}: {members}, expected {expected}"
        time.sleep(0.05)


@pytest.mark.django_db
def test_a_server_admits_the_member_and_presence_lists_the_members(
    single_server, settings, django_user_model
):
    url, origin = single_server
    settings.PUSHNOTE_HTTP_URL = origin
    settings.PUSHNOTE_API_KEY = API_KEY
    channel = f"presence-room-{unique()}"
    ann = django_user_model.objects.create_user(f"ann-{unique()}")
    bo = django_user_model.objects.create_user(f"bo-{unique()}")
    ann_member = {"user": str(ann.pk), "info": {"name": "Ann", "tags": ["a", "b"]}}
    bo_member = {"user": str(bo.pk), "info": None}

    token = json.loads(render('{% pushnote_presence_token channel info %}', user=ann,
                              channel=channel, info=ann_member["info"]))
    ann_page, reply = join(url, channel, token)
    try:
        assert reply == {"name": "pushnote:subscribed", "data": {
            "channel": channel, "me": ann_member, "members": [ann_member]}}
        members_become(channel, [ann_member])

        bo_page, reply = join(url, channel, presence_token(channel, bo))
        try:
            assert reply["data"]["me"] == bo_member, reply
            members_become(channel, [ann_member, bo_member])
        finally:
            bo_page.close()
        members_become(channel, [ann_member])
    finally:
        ann_page.close()
    members_become(channel, [])


def test_presence_refusals_are_clear(single_server, settings):
    url, origin = single_server
    settings.PUSHNOTE_HTTP_URL = origin
    settings.PUSHNOTE_API_KEY = "another-api-key-0123456789-Qw7Zx-xx"
    with pytest.raises(pushnote.ConfigurationError, match="401") as refused:
        pushnote.presence("presence-room-7")
    assert settings.PUSHNOTE_API_KEY not in str(refused.value)

    settings.PUSHNOTE_API_KEY = API_KEY
    with pytest.raises(pushnote.InvalidChannelError, match="presence channel"):
        pushnote.presence("room-7")
    assert pushnote.presence(f"presence-nobody-{unique()}") == []

    settings.PUSHNOTE_HTTP_URL = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(pushnote.NotConnectedError, match="cannot reach"):
        pushnote.presence("presence-room-7")
    settings.PUSHNOTE_HTTP_URL = "https://127.0.0.1:8003"
    with pytest.raises(pushnote.ConfigurationError, match="PUSHNOTE_HTTP_URL"):
        pushnote.presence("presence-room-7")
    del settings.PUSHNOTE_HTTP_URL
    with pytest.raises(pushnote.ConfigurationError, match="PUSHNOTE_HTTP_URL"):
        pushnote.presence("presence-room-7")
