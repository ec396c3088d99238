"""Mints and checks pushnote tokens with Django's own TimestampSigner.

    django_tokens.py sign SECRET SALT USER          prints the token
    django_tokens.py verify SECRET SALT TOKEN MAX_AGE
        prints the user id; exit 2 for a bad signature, 3 for an expired token
"""
import sys

from django.conf import settings

settings.configure()

from django.core import signing  # noqa: E402  (needs settings first)


def main(argv):
    cmd, secret, salt, arg = argv[1:5]
    signer = signing.TimestampSigner(key=secret, salt=salt)
    if cmd == "sign":
        print(signer.sign(arg))
        return 0
    if cmd == "verify":
        try:
            print(signer.unsign(arg, max_age=int(argv[5])))
        except signing.SignatureExpired:
            return 3
        except signing.BadSignature:
            return 2
        return 0
    print("unknown command", cmd, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
