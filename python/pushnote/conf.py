"""pushnote's settings, read when used (so that tests and `override_settings` see changes).

In a Django project they come from django.conf.settings; without Django (or before settings
are configured), from environment variables of the same names.

PUSHNOTE_MQ_SOCKET   where to publish: the forwarder's app side (pushnote-mq --sub), or a
                     pushnote-server --single's bus. Default tcp://127.0.0.1:8002.
PUSHNOTE_MQ_CONFIRM_SOCKET  where publishes with confirm=True go: the forwarder's --confirm
                     endpoint (docs/PROTOCOL.md §2b). Default: none (confirm=True raises
                     ConfigurationError).
PUSHNOTE_BROKER      the Redis of servers started with --broker (redis://[:password@]host[:port]
                     [/db]): when set, publishes go into it (docs/PROTOCOL.md §2c), each one
                     confirmed, and PUSHNOTE_MQ_SOCKET and PUSHNOTE_MQ_CONFIRM_SOCKET are not
                     used. Default: none.
PUSHNOTE_BROKER_PREFIX  the prefix of pushnote's keys in that Redis: the servers'
                     --broker-prefix. Default "pushnote:".
PUSHNOTE_BROKER_REPLICAS  how many of that Redis' replicas must hold a publish before it
                     returns (Redis' WAIT); fewer raises UnconfirmedError. With Sentinel, a
                     failover then loses no publish that returned. Default 0.
PUSHNOTE_HTTP_URL    the HTTP port `pushnote.presence(channel)` asks who is in a presence
                     channel: the forwarder's --http, or the port of a pushnote-server --single
                     (or of a server started with --broker) with --api-key, such as
                     http://127.0.0.1:8003. Default: none (presence() raises ConfigurationError).
PUSHNOTE_API_KEY     the API key of that forwarder or server (its --api-key, or its
                     PUSHNOTE_MQ_API_KEY / PUSHNOTE_API_KEY environment variable).
PUSHNOTE_SECRET      the secret tokens are signed with; pushnote-server must have the same
                     (--secret, or its PUSHNOTE_SECRET environment variable). Default: Django's
                     SECRET_KEY.
PUSHNOTE_SALT        the salt of tokens; pushnote-server's --salt must match. Default "pushnote".
PUSHNOTE_TOKENIZER   dotted path to a function(user) -> token used instead of the default.
PUSHNOTE_OPAQUE_TOKENS  True when PUSHNOTE_TOKENIZER returns tokens it makes itself (a random
                     string per user kept in the database, say) rather than signed ones:
                     `notify` then asks the tokenizer for each user's token and sends to the
                     pages subscribed with it, as the original pushnote did; pushnote-server
                     must be started with --opaque-tokens. Default False.
"""

import os

from . import _native
from .exceptions import ConfigurationError

DEFAULT_MQ_SOCKET = _native.DEFAULT_PUBLISH_ENDPOINT
DEFAULT_SALT = _native.DEFAULT_SALT
DEFAULT_BROKER_PREFIX = "pushnote:"


def _django_settings():
    """django.conf.settings if Django is installed and configured, else None."""
    try:
        from django.conf import settings
    except ImportError:
        return None
    return settings if settings.configured else None


def setting(name, default=None):
    """The setting `name`: Django's if configured, else the environment's, else `default`."""
    settings = _django_settings()
    if settings is not None:
        return getattr(settings, name, default)
    return os.environ.get(name, default)


def mq_socket():
    value = setting("PUSHNOTE_MQ_SOCKET") or DEFAULT_MQ_SOCKET
    if not isinstance(value, str):
        raise ConfigurationError(
            f"PUSHNOTE_MQ_SOCKET must be a ZeroMQ endpoint such as 'tcp://127.0.0.1:8002', "
            f"not {value!r}"
        )
    return value


def mq_confirm_socket():
    """PUSHNOTE_MQ_CONFIRM_SOCKET: the forwarder's --confirm endpoint, or None."""
    value = setting("PUSHNOTE_MQ_CONFIRM_SOCKET") or None
    if value is not None and not isinstance(value, str):
        raise ConfigurationError(
            f"PUSHNOTE_MQ_CONFIRM_SOCKET must be a ZeroMQ endpoint such as "
            f"'tcp://127.0.0.1:8004', not {value!r}"
        )
    return value


def broker():
    """PUSHNOTE_BROKER: the Redis endpoint to publish into, or None."""
    value = setting("PUSHNOTE_BROKER") or None
    if value is not None and not (isinstance(value, str) and value.startswith("redis")):
        raise ConfigurationError(
            "PUSHNOTE_BROKER must be a Redis endpoint such as 'redis://127.0.0.1:6379' "
            "(the servers' --broker)"
        )
    return value


def broker_prefix():
    """PUSHNOTE_BROKER_PREFIX: the prefix of pushnote's keys in Redis."""
    value = setting("PUSHNOTE_BROKER_PREFIX") or DEFAULT_BROKER_PREFIX
    if not isinstance(value, str):
        raise ConfigurationError(f"PUSHNOTE_BROKER_PREFIX must be a string, not {value!r}")
    return value


def broker_replicas():
    """PUSHNOTE_BROKER_REPLICAS: how many of Redis' replicas must hold a publish before it
    returns (0, the default: none)."""
    value = setting("PUSHNOTE_BROKER_REPLICAS") or 0
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)  # from the environment
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"PUSHNOTE_BROKER_REPLICAS must be a whole number of replicas, 0 or more, not {value!r}")
    return value


def http_url():
    """PUSHNOTE_HTTP_URL: the forwarder's or a server's HTTP port."""
    value = setting("PUSHNOTE_HTTP_URL") or None
    if not isinstance(value, str):
        raise ConfigurationError(
            "pushnote.presence needs PUSHNOTE_HTTP_URL: the http:// address of the forwarder's "
            "--http port, or of a pushnote-server started with --api-key (such as "
            f"'http://127.0.0.1:8003'), not {value!r}"
        )
    return value


def api_key():
    """PUSHNOTE_API_KEY: the key of the forwarder's or server's HTTP port."""
    value = setting("PUSHNOTE_API_KEY") or None
    if not isinstance(value, str):
        raise ConfigurationError(
            "pushnote.presence needs PUSHNOTE_API_KEY: the --api-key of the forwarder or server "
            "at PUSHNOTE_HTTP_URL"
        )
    return value


def secret():
    """PUSHNOTE_SECRET, else Django's SECRET_KEY: every Django app has one, so an app moving
    from the original pushnote (which keyed its tokens with PUSHNOTE_SALT) needs no new
    setting."""
    value = setting("PUSHNOTE_SECRET") or setting("SECRET_KEY")
    if not value:
        raise ConfigurationError(
            "no secret to sign pushnote tokens with: set PUSHNOTE_SECRET (recommended: then "
            "pushnote-server does not need Django's SECRET_KEY) or Django's SECRET_KEY, and "
            "give pushnote-server the same one (its PUSHNOTE_SECRET environment variable)"
        )
    return value


def salt():
    value = setting("PUSHNOTE_SALT") or DEFAULT_SALT
    if not isinstance(value, str):
        raise ConfigurationError(f"PUSHNOTE_SALT must be a string, not {value!r}")
    return value


def tokenizer_path():
    return setting("PUSHNOTE_TOKENIZER")


def opaque_tokens():
    """PUSHNOTE_OPAQUE_TOKENS: a Django setting (True/False), or in the environment 1, true,
    yes or on (any case) for True."""
    value = setting("PUSHNOTE_OPAQUE_TOKENS", False)
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
