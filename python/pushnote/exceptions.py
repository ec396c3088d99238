"""What pushnote raises. Every error is a PushnoteError; each kind is also the built-in
exception it resembles, so code that catches ValueError, TypeError or ConnectionError
catches it too."""


class PushnoteError(Exception):
    """Something pushnote could not do; the message says what and why."""


class ConfigurationError(PushnoteError):
    """A setting is missing or wrong (no secret, a tokenizer path that does not import...)."""


class NotConnectedError(PushnoteError, ConnectionError):
    """No forwarder (or single server) listens at PUSHNOTE_MQ_SOCKET: nothing was sent."""


class UnconfirmedError(PushnoteError, ConnectionError):
    """A publish with confirm=True got no confirmation in time: the forwarder may or may not
    have taken it. Publish again if it must arrive (a page may then receive it twice)."""


class SerializationError(PushnoteError, TypeError, ValueError):
    """The data cannot be encoded as JSON (an unknown type, a NaN, a circular reference)."""


class InvalidUserError(PushnoteError, ValueError):
    """Not a user id: anonymous or unsaved users, empty ids, ids with control characters."""


class InvalidChannelError(PushnoteError, ValueError):
    """Not a channel name: 1 to 164 ASCII letters, digits and _-=@,.; only."""


class InvalidEventError(PushnoteError, ValueError):
    """Not an event name: 1 to 200 bytes without control characters."""


class TokenError(PushnoteError, ValueError):
    """A token could not be made."""
