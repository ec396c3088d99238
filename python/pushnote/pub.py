"""Sending: to every page, to the pages of some users, to the pages in a channel.

    from pushnote.pub import notify_all, notify, publish
    notify_all({"msg": "Hi all!"})
    notify({"msg": "Your order shipped"}, users=[request.user])  # User objects or ids
    publish("orders", "create", {"id": order.pk})

Data is encoded as Django's DjangoJSONEncoder does (datetimes, dates and times in ISO 8601,
Decimals and UUIDs as strings, lazy translation strings translated). Every call raises on
failure: NotConnectedError when no forwarder listens at PUSHNOTE_MQ_SOCKET (nothing is sent or
queued), SerializationError for data JSON cannot hold, InvalidUserError, InvalidChannelError
and InvalidEventError for ids and names pushnote-server would refuse.
"""

from .connection import publisher
from .encoding import to_json
from .users import user_id

__all__ = ("notify", "notify_all", "publish")


def notify_all(data, serializer=None):
    """Sends `data` to every connected page.

    `serializer`, as in the original pushnote, is a function of one object that returns a
    JSON-encodable value for objects the encoder does not know (None: not known to it either).
    """
    publisher().notify_all(to_json(data, serializer))


def notify(data, users=(), serializer=None):
    """Sends `data` to every page subscribed as one of `users` (User objects or user ids)."""
    ids = [user_id(u) for u in users]
    if not ids:
        return
    publisher().notify(to_json(data, serializer), ids)


def publish(channel, event, data, serializer=None):
    """Sends `data` as `event` to every page in `channel`; pages receive
    {"channel": channel, "event": event, "data": data}."""
    publisher().publish(channel, event, to_json(data, serializer))
