"""Mints and checks pushnote tokens with Django's own TimestampSigner.

    django_tokens.py sign SECRET SALT USER          prints the token
    django_tokens.py verify SECRET SALT TOKEN MAX_AGE
        prints the user id; exit 2 for a bad signature, 3 for an expired token
    django_tokens.py sign-channel SECRET SALT CHANNEL [USER]
        prints the channel token: the value CHANNEL (or CHANNEL:USER) signed with SALT.channel
    django_tokens.py verify-channel SECRET SALT TOKEN MAX_AGE
        prints the value the channel token signs; exits as verify does
"""
import sys

from django.conf import settings

settings.configure()

from django.core import signing  # noqa: E402  (needs settings first)

# What channel tokens add to the salt of user tokens (docs/PROTOCOL.md).
CHANNEL_SALT_SUFFIX = ".channel"


def unsign(signer, token, max_age):
    try:
        print(signer.unsign(token, max_age=int(max_age)))
    except signing.SignatureExpired:
        return 3
    except signing.BadSignature:
        return 2
    return 0


def main(argv):
    cmd, secret, salt, arg = argv[1:5]
    if cmd.endswith("-channel"):
        salt += CHANNEL_SALT_SUFFIX
    signer = signing.TimestampSigner(key=secret, salt=salt)
    if cmd == "sign":
        print(signer.sign(arg))
        return 0
    if cmd == "sign-channel":
        print(signer.sign(":".join([arg] + argv[5:6])))
        return 0
    if cmd in ("verify", "verify-channel"):
        return unsign(signer, arg, argv[5])
    print("unknown command", cmd, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
