"""Sending: to every page, to the pages of some users, to the pages in a channel.

    from pushnote.pub import notify_all, notify, publish
    notify_all({"msg": "Hi all!"})
    notify({"msg": "Your order shipped"}, users=[request.user])  # User objects or ids
    publish("orders", "create", {"id": order.pk})

Data is encoded as Django's DjangoJSONEncoder does (datetimes, dates and times in ISO 8601,
Decimals and UUIDs as strings, lazy translation strings translated). Every call raises on
failure: NotConnectedError when no forwarder listens at PUSHNOTE_MQ_SOCKET, or the Redis of
PUSHNOTE_BROKER cannot be reached (nothing is sent or queued), UnconfirmedError when confirm=True got no confirmation in time, SerializationError for data JSON cannot hold, InvalidUserError, InvalidChannelError
and InvalidEventError for ids and names pushnote-server would refuse.
"""

from . import conf, utils
from .connection import publisher
from .encoding import to_json
from .users import user_id

__all__ = ("notify", "notify_all", "publish")


def notify_all(data, serializer=None, confirm=False):
    """Sends `data` to every connected page.

    `serializer`, as in the original pushnote, is a function of one object that returns a
    JSON-encodable value for objects the encoder does not know (None: not known to it either).

    With confirm=True (and PUSHNOTE_MQ_CONFIRM_SOCKET set, or PUSHNOTE_BROKER), returns once
    the forwarder (or Redis) holds the message, with its position (epoch, offset); raises
    UnconfirmedError if no confirmation came in time (it may or may not have been published).
    Through Redis (PUSHNOTE_BROKER) every publish waits for Redis' answer, confirm=True or not.
    """
    if confirm:
        return publisher().notify_all_confirmed(to_json(data, serializer))
    publisher().notify_all(to_json(data, serializer))
    return None


def notify(data, users=(), serializer=None, confirm=False):
    """Sends `data` to every page subscribed as one of `users` (User objects or user ids).

    With PUSHNOTE_OPAQUE_TOKENS and a PUSHNOTE_TOKENIZER, to every page subscribed with one
    of the tokens the tokenizer gives `users`, as the original pushnote did: an opaque token
    (one that is not of the signed form user:timestamp:signature) reaches the pages that
    subscribed with it on a server started with --opaque-tokens, and only a keyed hash of it
    travels the bus; a signed token reaches its user's pages.

    With confirm=True, returns each user's position (epoch, offset), in order, once the
    forwarder holds the messages (all of them, or none: one request).
    """
    ids = _recipients(users)
    if not ids:
        return [] if confirm else None
    if confirm:
        return publisher().notify_confirmed(to_json(data, serializer), ids)
    publisher().notify(to_json(data, serializer), ids)
    return None


def _recipients(users):
    """The user ids the pages of `users` are subscribed as."""
    tokenize = utils.tokenizer()
    if not conf.opaque_tokens() or tokenize is utils.default_tokenize:
        return [user_id(u) for u in users]
    signer = utils.signer()
    return [signer.user_of_token(tokenize(u)) for u in users]


def publish(channel, event, data, serializer=None, confirm=False):
    """Sends `data` as `event` to every page in `channel`; pages receive
    {"channel": channel, "event": event, "data": data}. With confirm=True, returns its
    position (epoch, offset) once the forwarder holds it."""
    if confirm:
        return publisher().publish_confirmed(channel, event, to_json(data, serializer))
    publisher().publish(channel, event, to_json(data, serializer))
    return None
