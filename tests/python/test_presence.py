"""Presence from Django: presence_token and {% pushnote_presence_token %} mint the token of
docs/PROTOCOL.md §3's formula (what Django's own TimestampSigner signs, and what the `pushnote
presence-token` command mints)."""

import json
import os
import subprocess

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.template import Context, Template

import pushnote
from pushnote.utils import presence_token
from support import WAIT, binary, unique

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
