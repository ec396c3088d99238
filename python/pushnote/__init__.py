"""pushnote for Python and Django: push data to browsers through pushnote-server.

    from pushnote.pub import notify_all, notify, publish
    from pushnote.utils import tokenize, channel_token, presence_token
    pushnote.presence("presence-room-7")   # who is in a presence channel

Built on pushnote's Rust client crate (the `pushnote._native` module), so that the bus
format, tokens, the wait for the forwarder and the linger at exit are the server's own.
Settings are described in `pushnote.conf`; errors in `pushnote.exceptions`.
"""

from .exceptions import (
    ConfigurationError,
    InvalidChannelError,
    InvalidEventError,
    InvalidUserError,
    NotConnectedError,
    UnconfirmedError,
    PushnoteError,
    SerializationError,
    TokenError,
)

__all__ = (
    "ConfigurationError",
    "InvalidChannelError",
    "InvalidEventError",
    "InvalidUserError",
    "NotConnectedError",
    "UnconfirmedError",
    "PushnoteError",
    "SerializationError",
    "TokenError",
    "presence",
)

from . import pub, utils  # noqa: E402  (pushnote.pub.notify_all works after `import pushnote`)
from .members import presence  # noqa: E402
