"""{% load pushnote %}, then in a <script>:

    var token = {% pushnote_token %};
    var token = "{% pushnote_token %}";
    var groupToken = {% pushnote_channel_token "private-group-7" user=request.user %};
    var roomToken = {% pushnote_presence_token "presence-room-7" info %};

Each tag writes the token where it stands, in either form pages use:

- bare (`var token = {% pushnote_token %};`, the original pushnote's README): a JavaScript
  literal, the token as a quoted string, or `null` when there is no user to make one for
  (anonymous pages);
- inside quotes (`var token = "{% pushnote_token %}";`, what pages written for the original
  use, because it wrote the bare token there): the token's characters alone, or nothing for an
  anonymous page, so the page gets the same string, or "".

Either way `if (token)` tells a signed-in page from an anonymous one. The tag sees which form it
is in when the template is compiled: it is inside quotes when the text right after it starts
with a quote (" or '). Both forms are escaped for a <script>: `<`, `>`, `&`, quotes and
backslashes are written as JavaScript escapes, which tokens of the default tokenizer never
contain. (The original wrote the bare token, which is no JavaScript, and `False` for failures.)
`{% pushnote_token as name %}` stores the literal in `name` and writes nothing.
"""

import functools
import json

from django import template
from django.template.base import TokenType
from django.utils.safestring import mark_safe

from ..utils import channel_token, presence_token, tokenize

register = template.Library()

_SCRIPT_ESCAPES = {
    ord("<"): "\\u003C",
    ord(">"): "\\u003E",
    ord("&"): "\\u0026",
    ord("'"): "\\u0027",
}
_QUOTES = ('"', "'")


def js_literal(value):
    """`value` (a string or None) as a JavaScript literal that is safe in HTML."""
    return mark_safe(json.dumps(value).translate(_SCRIPT_ESCAPES))


def js_string_contents(value):
    """`value` (a string or None) as the characters of a JavaScript string literal, to write
    between quotes of either kind: None is the empty string."""
    return mark_safe(js_literal("" if value is None else value)[1:-1])


def _quote_follows(parser):
    """Whether the template text right after the tag being compiled starts with a quote."""
    if not parser.tokens:
        return False
    following = parser.next_token()
    parser.prepend_token(following)
    return following.token_type == TokenType.TEXT and following.contents.startswith(_QUOTES)


def _token_tag(make):
    """Registers `make(context, ...)`, which returns a token or None, as a tag with
    simple_tag's arguments (and `as name`) that writes it as a literal, or as a string's
    contents when it stands inside quotes."""
    register.simple_tag(takes_context=True)(make)
    compile_simple = register.tags[make.__name__]

    @functools.wraps(make)
    def compile_func(parser, token):
        node = compile_simple(parser, token)
        quoted = node.target_var is None and _quote_follows(parser)
        write = js_string_contents if quoted else js_literal
        node.func = lambda *args, **kwargs: write(make(*args, **kwargs))
        return node

    register.tag(make.__name__, compile_func)
    return make


def _user(context):
    user = context.get("user")
    if user is None and context.get("request") is not None:
        user = getattr(context["request"], "user", None)
    return user


def _signed_in(user):
    return user is not None and getattr(user, "is_authenticated", True) and (
        getattr(user, "pk", user) is not None
    )


@_token_tag
def pushnote_token(context, user=None):
    """The token of the page's user (the context's `user`, or `request.user`), or of `user`;
    none for an anonymous user."""
    user = _user(context) if user is None else user
    return tokenize(user) if _signed_in(user) else None


@_token_tag
def pushnote_channel_token(context, channel, user=None):
    """The token that lets the page join `channel`: bound to `user` if given (none when that
    user is anonymous), else for any page holding it. Render it only for pages allowed in the
    channel."""
    if user is not None and not _signed_in(user):
        return None
    return channel_token(channel, user)


@_token_tag
def pushnote_presence_token(context, channel, info=None, user=None):
    """The token that lets the page join presence channel `channel` as the page's user (the
    context's `user`, or `request.user`), or as `user`, whom the channel's other members see
    with `info` (any value JSON can hold; None is null); none for an anonymous user. Render it
    only for pages allowed in the channel."""
    user = _user(context) if user is None else user
    return presence_token(channel, user, info) if _signed_in(user) else None
