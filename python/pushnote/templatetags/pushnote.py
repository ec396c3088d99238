"""{% load pushnote %}, then in a <script>:

    var token = {% pushnote_token %};
    var groupToken = {% pushnote_channel_token "private-group-7" user=request.user %};

Each tag writes a JavaScript literal: the token as a quoted string, or `null` when there is no
user to make one for (anonymous pages), so `var token = {% pushnote_token %};` is valid
JavaScript either way and `if (token)` tells the two apart. (The original pushnote wrote the
bare token, which is no JavaScript, and `False` for failures.) The literal is JSON with `<`, `>`
and `&` escaped, safe inside <script> and HTML attributes alike.
"""

import json

from django import template
from django.utils.safestring import mark_safe

from ..utils import channel_token, tokenize

register = template.Library()

_SCRIPT_ESCAPES = {ord("<"): "\\u003C", ord(">"): "\\u003E", ord("&"): "\\u0026"}


def js_literal(value):
    """`value` (a string or None) as a JavaScript literal that is safe in HTML."""
    return mark_safe(json.dumps(value).translate(_SCRIPT_ESCAPES))


def _user(context):
    user = context.get("user")
    if user is None and context.get("request") is not None:
        user = getattr(context["request"], "user", None)
    return user


def _signed_in(user):
    return user is not None and getattr(user, "is_authenticated", True) and (
        getattr(user, "pk", user) is not None
    )


@register.simple_tag(takes_context=True)
def pushnote_token(context, user=None):
    """The token of the page's user (the context's `user`, or `request.user`), or of `user`;
    `null` for an anonymous user."""
    user = _user(context) if user is None else user
    return js_literal(tokenize(user) if _signed_in(user) else None)


@register.simple_tag(takes_context=True)
def pushnote_channel_token(context, channel, user=None):
    """The token that lets the page join `channel`: bound to `user` if given (`null` when that
    user is anonymous), else for any page holding it. Render it only for pages allowed in the
    channel."""
    if user is not None and not _signed_in(user):
        return js_literal(None)
    return js_literal(channel_token(channel, user))
