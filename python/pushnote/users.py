"""Which user id a User object (or an id) stands for on the bus and in tokens."""

from .exceptions import InvalidUserError


def user_id(user):
    """The id pushnote-server knows `user` by: its primary key as text. Accepts User objects
    (anything with `pk`) and plain ids (int, str, UUID...)."""
    if user is None:
        raise InvalidUserError("user is None: anonymous pages cannot be notified by user")
    value = getattr(user, "pk", user)
    if value is None or getattr(user, "is_anonymous", False) is True:
        raise InvalidUserError(
            f"{user!r} has no id (anonymous or unsaved): only saved users can be notified or "
            f"tokenized"
        )
    text = str(value)
    if not text:
        raise InvalidUserError("user id is empty")
    return text
