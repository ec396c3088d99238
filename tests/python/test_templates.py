"""{% pushnote_token %} and {% pushnote_channel_token %} render JavaScript literals: a quoted
token for a signed-in user, null for an anonymous one; written between quotes, as pages made
for the original pushnote have them, the token's characters alone, or nothing."""

import json
import re

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing
from django.template import Context, Template

from pushnote.templatetags.pushnote import js_literal


def script_value(html, name):
    """The JavaScript literal assigned to `var name` in `html`, as a Python value."""
    match = re.search(rf"var {name} = (.*?);\n", html)
    assert match, f"no var {name} in {html}"
    return json.loads(match.group(1))


def unsign(token, secret, salt="pushnote"):
    return signing.TimestampSigner(key=secret, salt=salt).unsign(token, max_age=600)


@pytest.mark.django_db
def test_the_original_example_page_gets_a_quoted_token_for_a_signed_in_user(
    client, django_user_model, settings
):
    user = django_user_model.objects.create_user("ada")
    client.force_login(user)
    html = client.get("/").content.decode()
    assert re.search(r'var token = "[^"<>&]+";\n', html)
    assert unsign(script_value(html, "token"), settings.SECRET_KEY) == str(user.pk)


@pytest.mark.django_db
def test_the_original_example_page_gets_null_for_an_anonymous_user(client):
    html = client.get("/").content.decode()
    assert "var token = null;\n" in html


@pytest.mark.django_db
def test_channel_token_tags(client, django_user_model, settings):
    html = client.get("/channel/private-group-7/").content.decode()
    assert script_value(html, "token") is None
    assert unsign(script_value(html, "channelToken"), settings.SECRET_KEY,
                  "pushnote.channel") == "private-group-7"
    assert script_value(html, "userChannelToken") is None, "anonymous: no user to bind to"

    user = django_user_model.objects.create_user("ada")
    client.force_login(user)
    html = client.get("/channel/private-group-7/").content.decode()
    assert unsign(script_value(html, "userChannelToken"), settings.SECRET_KEY,
                  "pushnote.channel") == f"private-group-7:{user.pk}"


def render(source, user):
    return Template("{% load pushnote %}" + source).render(Context({"user": user}))


@pytest.mark.django_db
def test_between_quotes_the_tag_writes_the_token_alone(django_user_model, settings):
    user = django_user_model.objects.create_user("ada")
    for quote in ('"', "'"):
        html = render(f"var token = {quote}{{% pushnote_token %}}{quote};\n", user)
        token = re.fullmatch(f"var token = {quote}([^\"'<>&]+){quote};\n", html)
        assert token, html
        assert unsign(token.group(1), settings.SECRET_KEY) == str(user.pk)
    html = render("var t = \"{% pushnote_channel_token 'private-7' user=user %}\";", user)
    token = re.fullmatch(r'var t = "([^"]+)";', html).group(1)
    assert unsign(token, settings.SECRET_KEY, "pushnote.channel") == f"private-7:{user.pk}"


def test_between_quotes_an_anonymous_page_gets_the_empty_string():
    anonymous = AnonymousUser()
    assert render('var token = "{% pushnote_token %}";', anonymous) == 'var token = "";'
    assert render("var token = '{% pushnote_token %}';", anonymous) == "var token = '';"
    assert render("var token = {% pushnote_token %};", anonymous) == "var token = null;"
    assert render("var token = \"{% pushnote_token %}\";", None) == 'var token = "";'


def test_between_quotes_nothing_ends_the_string_or_the_script(settings):
    settings.PUSHNOTE_TOKENIZER = "testsite.tokenizers.hostile"
    expected = "7:\"'</script>\\&"
    for quote in ('"', "'"):
        html = render(f"var token = {quote}{{% pushnote_token user %}}{quote};", 7)
        contents = html[len("var token = ") + 1:-2]
        assert not set("\"'<>&") & set(contents.replace("\\\"", "")), html
        assert json.loads(f'"{contents}"') == expected
    html = render("var token = {% pushnote_token user %};", 7)
    assert json.loads(html[len("var token = "):-1]) == expected


def test_the_tag_stores_the_literal_with_as():
    html = render('{% pushnote_token as t %}"{{ t }}" {% pushnote_token as u %}{{ u }}', None)
    assert html == '"null" null'


def test_a_custom_tokenizer_is_what_the_tag_writes(settings):
    settings.PUSHNOTE_TOKENIZER = "testsite.tokenizers.marked"
    html = Template("{% load pushnote %}var token = {% pushnote_token user %};\n").render(
        Context({"user": 42})
    )
    assert script_value(html, "token").startswith("custom:42:")


def test_literals_cannot_end_the_script():
    out = js_literal('</script><script>alert("x")</script>&amp;')
    assert "<" not in out and ">" not in out and "&" not in out
    assert json.loads(out) == '</script><script>alert("x")</script>&amp;'
    assert js_literal(None) == "null"
