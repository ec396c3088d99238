"""Data to JSON text, as Django encodes it: with DjangoJSONEncoder when Django is installed
(datetimes, dates and times in ISO 8601, Decimals and UUIDs as strings, lazy translation
strings translated), with the standard encoder otherwise."""

import json

from .exceptions import SerializationError

try:
    from django.core.serializers.json import DjangoJSONEncoder as _BaseEncoder
except ImportError:  # pushnote without Django
    _BaseEncoder = json.JSONEncoder


def _encoder_with(serializer):
    """An encoder that asks `serializer` (the original pushnote's `serializer` argument: a
    function of one object returning something JSON can encode) before the base encoder."""

    class Encoder(_BaseEncoder):
        def default(self, o):
            value = serializer(o)
            if value is not None:
                return value
            return super().default(o)

    return Encoder


def to_json(data, serializer=None):
    """`data` as compact JSON text. Raises SerializationError, naming what could not be
    encoded."""
    encoder = _BaseEncoder if serializer is None else _encoder_with(serializer)
    try:
        return json.dumps(data, cls=encoder, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        raise SerializationError(f"cannot encode data as JSON: {e}") from e
