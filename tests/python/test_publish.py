"""pushnote.pub publishes what pushnote-server expects (docs/PROTOCOL.md §2), encodes data as
DjangoJSONEncoder does, and fails with clear exceptions."""

import datetime
import decimal
import json
import math
import uuid

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.utils.translation import gettext_lazy

import pushnote
import pushnote.connection
from pushnote.pub import notify, notify_all, publish
from support import Bus, Forwarder, free_port, topic_of


def body(frames):
    assert len(frames) == 2, frames
    return json.loads(frames[1])


def test_notify_all_sends_the_data_to_everyone(bus):
    pushnote.pub.notify_all({"msg": "Hi all!"})
    frames = bus.receive()
    assert topic_of(frames) == "all"
    assert body(frames) == {"name": "notify_all", "data": {"msg": "Hi all!"}}


@pytest.mark.django_db
def test_notify_sends_to_each_user_given_as_object_or_id(bus, django_user_model):
    user = django_user_model.objects.create_user("ada")
    notify({"msg": "Hi, ada!"}, users=[user, 7, "bob"])
    received = bus.receive_all(3)
    assert [topic_of(f) for f in received] == [f"user:{user.pk}", "user:7", "user:bob"]
    assert all(body(f) == {"name": "notify", "data": {"msg": "Hi, ada!"}} for f in received)


def test_notify_without_users_sends_nothing(bus):
    notify({"msg": "nobody"}, users=[])
    notify_all({"msg": "fence"})
    assert body(bus.receive())["data"] == {"msg": "fence"}


def test_publish_sends_an_event_on_a_channel(bus):
    publish("bucket-collection-record", "create", {"id": "r1"})
    frames = bus.receive()
    assert topic_of(frames) == "chan:bucket-collection-record"
    assert body(frames) == {"name": "publish", "event": "create", "data": {"id": "r1"}}


def test_data_is_encoded_as_django_encodes_it(bus):
    data = {
        "aware": datetime.datetime(2026, 12, 3, 15, 30, 1, 123456, tzinfo=datetime.timezone.utc),
        "naive": datetime.datetime(2026, 12, 3, 15, 30, 1),
        "day": datetime.date(2026, 12, 3),
        "time": datetime.time(15, 30, 1, 500000),
        "duration": datetime.timedelta(days=1, seconds=2),
        "price": decimal.Decimal("19.90"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "lazy": gettext_lazy("Hello"),
        "text": "é 中文 😀 </script> \u2028",
        "numbers": [1, -2, 2.5, 10**20, None, True],
    }
    notify_all(data)
    received = body(bus.receive())["data"]
    assert received == json.loads(json.dumps(data, cls=DjangoJSONEncoder))
    assert received["aware"] == "2026-12-03T15:30:01.123Z"
    assert received["price"] == "19.90"
    assert received["id"] == "12345678-1234-5678-1234-567812345678"
    assert received["lazy"] == "Hello"
    assert received["numbers"][3] == 10**20, "integers keep their digits"


def test_the_originals_serializer_argument_is_asked_first(bus):
    class Point:
        x, y = 1, 2

    notify_all({"p": Point()}, serializer=lambda o: [o.x, o.y] if isinstance(o, Point) else None)
    assert body(bus.receive())["data"] == {"p": [1, 2]}


@pytest.mark.parametrize(
    "data, base, words",
    [
        ({"obj": object()}, TypeError, "not JSON serializable"),
        ({"nan": math.nan}, ValueError, "Out of range float values"),
    ],
)
def test_data_json_cannot_hold_is_refused_and_nothing_sent(bus, data, base, words):
    with pytest.raises(pushnote.SerializationError, match=words) as raised:
        notify_all(data)
    assert isinstance(raised.value, base)
    assert isinstance(raised.value, pushnote.PushnoteError)
    assert str(raised.value).startswith("cannot encode data as JSON")
    bus.expect_nothing()


@pytest.mark.parametrize(
    "channel, event, error",
    [
        ("bad name!", "create", pushnote.InvalidChannelError),
        ("x" * 165, "create", pushnote.InvalidChannelError),
        ("a:b", "create", pushnote.InvalidChannelError),
        ("news", "", pushnote.InvalidEventError),
        ("news", "bad\nevent", pushnote.InvalidEventError),
    ],
)
def test_invalid_channel_and_event_names_are_refused(bus, channel, event, error):
    with pytest.raises(error) as raised:
        publish(channel, event, {})
    assert isinstance(raised.value, ValueError)
    assert f"channel {json.dumps(channel)}, event {json.dumps(event)}" in str(raised.value)
    assert "invalid" in str(raised.value)
    bus.expect_nothing()


def test_anonymous_users_cannot_be_notified(bus):
    with pytest.raises(pushnote.InvalidUserError, match="anonymous"):
        notify({"msg": "x"}, users=[AnonymousUser()])
    with pytest.raises(pushnote.InvalidUserError, match="invalid user id"):
        notify({"msg": "x"}, users=["bad\x00id"])
    bus.expect_nothing()


def test_nothing_listening_raises_not_connected(settings):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    settings.PUSHNOTE_MQ_SOCKET = endpoint
    try:
        with pytest.raises(pushnote.NotConnectedError) as raised:
            notify_all({"msg": "lost"})
        assert isinstance(raised.value, ConnectionError)
        assert "not connected" in str(raised.value)
        assert endpoint in str(raised.value)
        # Later sends fail at once, not after another wait.
        with pytest.raises(pushnote.NotConnectedError):
            notify_all({"msg": "lost"})
    finally:
        pushnote.connection.close()


def test_a_changed_setting_publishes_where_it_says_now(bus, zmq_context, settings):
    notify_all({"n": 1})
    assert body(bus.receive())["data"] == {"n": 1}
    forwarder = Forwarder()
    other = Bus(zmq_context, forwarder)
    try:
        settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
        notify_all({"n": 2})
        assert body(other.receive())["data"] == {"n": 2}
        bus.expect_nothing()
    finally:
        pushnote.connection.close()
        other.close()
        forwarder.proc.kill()
