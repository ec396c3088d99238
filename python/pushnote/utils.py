"""Tokens: what a page subscribes with, minted by the app and checked by pushnote-server.

    from pushnote.utils import tokenize, channel_token
    tokenize(request.user)                            # "42:1r31eq:egqH_37..."
    channel_token("private-group-7")                  # any page holding it may join
    channel_token("private-group-7", user=request.user)   # only pages subscribed as that user
    presence_token("presence-room-7", request.user, {"name": request.user.first_name})

Tokens are Django TimestampSigner tokens signed with PUSHNOTE_SECRET (default: SECRET_KEY) and
PUSHNOTE_SALT (default "pushnote"); pushnote-server must be given the same secret and salt, and
refuses tokens older than its --token-max-age (a day by default). PUSHNOTE_TOKENIZER names a
function(user) -> token that `tokenize` uses instead; the token it makes must name the user id
`notify` sends to (the user's primary key), or that user's pages receive nothing, unless
PUSHNOTE_OPAQUE_TOKENS is True: then its tokens may be strings the app makes itself (opaque
tokens, for a pushnote-server started with --opaque-tokens), and `notify` sends to the pages
subscribed with the token it returns for each user.

A presence token (for a presence channel, `presence-...`) names who joins: the user, and the
info the channel's other members see of them (any value JSON can hold, encoded as the data of
`pushnote.pub` is).
"""

import functools
import importlib

from . import _native, conf
from .encoding import to_json
from .exceptions import ConfigurationError
from .users import user_id

__all__ = ("tokenize", "channel_token", "presence_token", "default_tokenize")


@functools.lru_cache(maxsize=8)
def _signer(secret, salt):
    return _native.Signer(secret, salt)


def signer():
    """The signer of the current settings."""
    return _signer(conf.secret(), conf.salt())


def default_tokenize(user):
    """The token of `user` (a User or a user id) with the current secret and salt."""
    return signer().tokenize(user_id(user))


@functools.lru_cache(maxsize=8)
def _import_tokenizer(path):
    module_name, _, name = path.rpartition(".")
    try:
        function = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigurationError(
            f"PUSHNOTE_TOKENIZER = {path!r} does not name a function: {e}"
        ) from e
    if not callable(function):
        raise ConfigurationError(f"PUSHNOTE_TOKENIZER = {path!r} is not callable")
    return function


def tokenizer():
    """The function that makes users' tokens: PUSHNOTE_TOKENIZER's, else the default."""
    path = conf.tokenizer_path()
    if not path:
        return default_tokenize
    function = _import_tokenizer(path)
    # The original's documentation sets it to this very function.
    return default_tokenize if function is tokenize else function


def tokenize(user):
    """The token a page of `user` subscribes with (a User or a user id)."""
    return tokenizer()(user)


def channel_token(channel, user=None):
    """The token that lets a page join `channel` (names starting with "private-" need one):
    any page holding it, or with `user` only pages subscribed as that user."""
    bound = None if user is None else user_id(user)
    return signer().channel_token(channel, bound)


def presence_token(channel, user, info=None):
    """The token that lets a page join presence channel `channel` (its name starts with
    "presence-") as `user` (a User or a user id), whom the channel's other members see with
    `info`: any value JSON can hold (a dict with a name and an avatar URL, say), encoded as
    pushnote.pub encodes data; None is null. The page joins as that user whether or not it
    subscribed as one. Render it only for pages of `user`."""
    return signer().presence_token(channel, user_id(user), to_json(info))
