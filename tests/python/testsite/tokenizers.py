"""A PUSHNOTE_TOKENIZER for the tests: the default token with a mark in front."""

from pushnote.utils import default_tokenize


def marked(user):
    return "custom:" + default_tokenize(user)
