"""Who is in a presence channel, as the forwarder or a server knows them:

    import pushnote
    pushnote.presence("presence-room-7")
    # [{"user": "42", "info": {"name": "Ann"}}, {"user": "7", "info": None}]

Asks `GET /presence?channel=...` (docs/PROTOCOL.md §2d) at PUSHNOTE_HTTP_URL (the forwarder's
--http port, or the port of a pushnote-server started with --api-key) with PUSHNOTE_API_KEY,
through the client crate; waits at most 5 s.
"""

import json

from . import _native, conf

__all__ = ("presence",)


def presence(channel):
    """The members of presence channel `channel`: a list of {"user": user id, "info": the info
    of the member's presence token, decoded}. Raises InvalidChannelError for a name that is not
    a presence channel's, ConfigurationError for a missing or refused URL or key,
    NotConnectedError when nothing answers at PUSHNOTE_HTTP_URL within 5 s, PushnoteError for
    another refusal (with the server's error text)."""
    members = _native.presence_members(conf.http_url(), conf.api_key(), channel)
    return [{"user": user, "info": json.loads(info)} for user, info in members]
