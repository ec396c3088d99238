"""A PUSHNOTE_TOKENIZER for the tests: the default token with a mark in front."""

from pushnote.utils import default_tokenize


def marked(user):
    return "custom:" + default_tokenize(user)


def hostile(user):
    """A token with every character that could end a string or a <script> early."""
    return f"""{user}:"'</script>\\&"""
