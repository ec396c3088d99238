"""Tokens are Django TimestampSigner tokens with the configured secret and salt, so Django itself
(and pushnote-server) accepts them; PUSHNOTE_TOKENIZER replaces the default."""

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core import signing

import pushnote
from pushnote import _native
from pushnote.utils import channel_token, tokenize


def django_unsign(token, secret, salt="pushnote"):
    return signing.TimestampSigner(key=secret, salt=salt).unsign(token, max_age=600)


def test_the_protocols_worked_example():
    signer = _native.Signer("s3cret")
    assert signer.tokenize_at("42", 1700000000) == (
        "42:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M"
    )
    assert _native.Signer(b"s3cret", "pushnote").tokenize_at("42", 1700000000) == (
        "42:1r31eq:egqH_37soYTJMP9PS6Nui99-AAHApGie8p7ZkvIjd3M"
    )


@pytest.mark.django_db
def test_tokens_are_signed_with_secret_key_by_default(settings, django_user_model):
    user = django_user_model.objects.create_user("ada")
    token = tokenize(user)
    assert django_unsign(token, settings.SECRET_KEY) == str(user.pk)
    assert django_unsign(tokenize(user.pk), settings.SECRET_KEY) == str(user.pk)


def test_pushnote_secret_and_salt_override_the_defaults(settings):
    settings.PUSHNOTE_SECRET = "a-dedicated-push-secret"
    settings.PUSHNOTE_SALT = "my-salt"
    token = tokenize(42)
    assert django_unsign(token, "a-dedicated-push-secret", "my-salt") == "42"
    with pytest.raises(signing.BadSignature):
        django_unsign(token, settings.SECRET_KEY, "my-salt")


def test_channel_tokens_are_signed_with_the_channel_salt(settings):
    secret = settings.SECRET_KEY
    assert django_unsign(channel_token("private-group-7"), secret, "pushnote.channel") == (
        "private-group-7"
    )
    assert django_unsign(channel_token("private-group-7", user=42), secret,
                         "pushnote.channel") == "private-group-7:42"


def test_invalid_users_and_channels_get_clear_errors():
    with pytest.raises(pushnote.InvalidUserError, match="anonymous"):
        tokenize(AnonymousUser())
    with pytest.raises(pushnote.InvalidChannelError, match='"no spaces please": invalid channel'):
        channel_token("no spaces please")
    with pytest.raises(pushnote.InvalidUserError, match="invalid user id"):
        tokenize("bad\nid")


def test_a_tokenizer_setting_replaces_the_default(settings):
    settings.PUSHNOTE_TOKENIZER = "testsite.tokenizers.marked"
    token = tokenize(42)
    assert token.startswith("custom:42:")
    assert django_unsign(token.removeprefix("custom:"), settings.SECRET_KEY) == "42"


def test_the_originals_own_tokenizer_setting_means_the_default(settings):
    settings.PUSHNOTE_TOKENIZER = "pushnote.utils.tokenize"
    assert django_unsign(tokenize(42), settings.SECRET_KEY) == "42"


@pytest.mark.parametrize("path", ["testsite.nowhere.marked", "testsite.tokenizers.nothing",
                                  "testsite.settings.SECRET_KEY"])
def test_a_tokenizer_setting_that_names_no_function_is_a_configuration_error(settings, path):
    settings.PUSHNOTE_TOKENIZER = path
    with pytest.raises(pushnote.ConfigurationError, match="PUSHNOTE_TOKENIZER"):
        tokenize(42)
