"""Publish pushnote notifications and mint tokens from Python, with pyzmq and Django only.

Follows docs/PROTOCOL.md:

    python3 publish.py notify-all '{"msg": "Hi all!"}'
    python3 publish.py notify --user 42 --user 43 '{"msg": "Hi you"}'
    python3 publish.py publish --channel news --event create '{"id": 7}'
    python3 publish.py token 42
    python3 publish.py channel-token private-team --user 42

--bus (or PUSHNOTE_PUBLISH) is where apps publish: the forwarder's app-facing side, or a
--single server's bus (default tcp://127.0.0.1:8002). Tokens use PUSHNOTE_SECRET (or --secret)
and PUSHNOTE_SALT (default "pushnote"), exactly as pushnote-server checks them.
"""
import argparse
import json
import os
import string
import sys
import time

BROADCAST_TOPIC = b"all\x00"
# Sent after each topic: room for the forwarder's stamp (docs/PROTOCOL.md).
STAMP_ROOM = bytes(8)
MAX_CHANNEL_BYTES = 164
MAX_EVENT_BYTES = 200
CHANNEL_CHARS = frozenset(string.ascii_letters + string.digits + "_-=@,.;")
# Channel tokens are signed with the salt + this, so that user and channel tokens never pass
# for each other.
CHANNEL_SALT_SUFFIX = ".channel"


def is_control(c):
    return ord(c) < 32 or 127 <= ord(c) < 160


def user_topic(user):
    data = str(user).encode("utf-8")
    if not data or len(data) > 256 or any(is_control(c) for c in str(user)):
        raise ValueError("user ids are 1 to 256 bytes of UTF-8 without control characters")
    return b"user:" + data + b"\x00"


def check_channel(channel):
    if (
        not isinstance(channel, str)
        or not 1 <= len(channel) <= MAX_CHANNEL_BYTES
        or not all(c in CHANNEL_CHARS for c in channel)
    ):
        raise ValueError(
            "invalid channel name %r: must be 1 to %d bytes of ASCII letters, digits and _-=@,.;"
            % (channel, MAX_CHANNEL_BYTES)
        )
    return channel


def check_event(event):
    try:
        size = len(event.encode("utf-8"))
    except (AttributeError, UnicodeError):
        size = 0
    if not 1 <= size <= MAX_EVENT_BYTES or any(is_control(c) for c in event):
        raise ValueError(
            "invalid event name %r: must be 1 to %d bytes of UTF-8 with no control characters"
            % (event, MAX_EVENT_BYTES)
        )
    return event


def channel_topic(channel):
    return b"chan:" + check_channel(channel).encode("ascii") + b"\x00"


def body(name, data):
    return json.dumps({"name": name, "data": data}, separators=(",", ":")).encode("utf-8")


def channel_body(event, data):
    # The bytes the Rust crate sends: compact, UTF-8 left as is, and no NaN (not JSON).
    return json.dumps(
        {"name": "publish", "event": check_event(event), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


class Publisher:
    """An XPUB socket that waits for the peer's subscription before its first send, so that
    ZeroMQ's slow-joiner drop cannot eat the first messages, and lingers on close so that a
    process that notifies and exits still delivers."""

    def __init__(self, endpoint, ready_timeout=2.0, linger_ms=2000):
        import zmq

        self._zmq = zmq
        self.endpoint = endpoint
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, linger_ms)
        self.sock.setsockopt(zmq.SNDHWM, 100000)
        self.sock.connect(endpoint)
        self.ready_timeout = ready_timeout
        self.ready = False

    def _wait_ready(self):
        deadline = time.monotonic() + self.ready_timeout
        while not self.ready:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no forwarder or server is connected at %s" % self.endpoint)
            if self.sock.poll(int(left * 1000) + 1, self._zmq.POLLIN):
                # A subscription message starts with byte 1.
                if self.sock.recv()[:1] == b"\x01":
                    self.ready = True

    def notify_all(self, data):
        self._wait_ready()
        self.sock.send_multipart([BROADCAST_TOPIC + STAMP_ROOM, body("notify_all", data)])

    def notify(self, data, users):
        self._wait_ready()
        payload = body("notify", data)
        for user in users:
            self.sock.send_multipart([user_topic(user) + STAMP_ROOM, payload])

    def publish(self, channel, event, data):
        """Send DATA as EVENT to every page subscribed to CHANNEL; pages receive
        {"channel": CHANNEL, "event": EVENT, "data": DATA}."""
        topic = channel_topic(channel)
        payload = channel_body(event, data)
        self._wait_ready()
        self.sock.send_multipart([topic + STAMP_ROOM, payload])

    def close(self):
        self.sock.close()
        self.ctx.term()  # waits up to LINGER for unsent messages


def timestamp_signer(secret, salt):
    from django.conf import settings

    if not settings.configured:
        settings.configure()
    from django.core.signing import TimestampSigner

    return TimestampSigner(key=secret, salt=salt)


def tokenize(user, secret, salt):
    return timestamp_signer(secret, salt).sign(str(user))


def channel_token(secret, channel, user=None, salt="pushnote"):
    """The token that lets a page subscribe to CHANNEL: any page holding it when USER is None,
    else only a page subscribed as USER."""
    value = check_channel(channel)
    if user is not None:
        user_topic(user)  # checks the user id
        value += ":" + str(user)
    return timestamp_signer(secret, salt + CHANNEL_SALT_SUFFIX).sign(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bus", default=os.environ.get("PUSHNOTE_PUBLISH", "tcp://127.0.0.1:8002"))
    parser.add_argument("--secret", default=os.environ.get("PUSHNOTE_SECRET"))
    parser.add_argument("--salt", default=os.environ.get("PUSHNOTE_SALT", "pushnote"))
    sub = parser.add_subparsers(dest="command", required=True)
    p_all = sub.add_parser("notify-all", help="send DATA (JSON) to every browser")
    p_all.add_argument("data")
    p_one = sub.add_parser("notify", help="send DATA (JSON) to the given users")
    p_one.add_argument("--user", action="append", required=True)
    p_one.add_argument("data")
    p_pub = sub.add_parser("publish", help="send DATA (JSON) as EVENT on CHANNEL")
    p_pub.add_argument("--channel", required=True)
    p_pub.add_argument("--event", required=True)
    p_pub.add_argument("data")
    p_tok = sub.add_parser("token", help="print the token for USER")
    p_tok.add_argument("user")
    p_chan = sub.add_parser("channel-token", help="print the token for CHANNEL (and USER)")
    p_chan.add_argument("channel")
    p_chan.add_argument("--user")
    args = parser.parse_args(argv)

    if args.command in ("token", "channel-token"):
        if not args.secret:
            parser.error("set PUSHNOTE_SECRET or --secret")
        try:
            if args.command == "token":
                print(tokenize(args.user, args.secret, args.salt))
            else:
                print(channel_token(args.secret, args.channel, args.user, args.salt))
        except ValueError as e:
            print("publish.py: %s" % e, file=sys.stderr)
            return 1
        return 0

    try:
        data = json.loads(args.data)
    except ValueError as e:
        parser.error("DATA is not JSON: %s" % e)
    publisher = Publisher(args.bus)
    try:
        if args.command == "notify-all":
            publisher.notify_all(data)
        elif args.command == "notify":
            publisher.notify(data, args.user)
        else:
            publisher.publish(args.channel, args.event, data)
    except (RuntimeError, ValueError) as e:
        print("publish.py: %s" % e, file=sys.stderr)
        return 1
    finally:
        publisher.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
