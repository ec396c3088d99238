"""The original pushnote's example page, rendered by Django, in headless Chromium with the stock
sockjs-client: it subscribes with the token {% pushnote_token %} wrote and receives what Django
views send through the real pushnote-mq and pushnote-server, and nothing else (no reply of the
server, not even to a token the server refuses: the page logs every message it receives as a
notification); an anonymous page gets no token, subscribes to nothing and receives the
broadcasts only. The page is tested verbatim (`var token = {% pushnote_token %};`, as the
original's README writes it) and as apps written for the original have it
(`var token = "{% pushnote_token %}";`)."""

import decimal
import time
import urllib.request

import pytest
from django.core import signing
from django.urls import reverse

from browser import Browser
from pushnote.pub import notify, notify_all, publish
from support import WAIT, Server, unique


@pytest.fixture(scope="module")
def browser():
    browser = Browser()
    yield browser
    browser.close()


def sync(browser, page, send, arrives_as=lambda marker: marker):
    """Sends markers with `send` until page `page` logs one (as `arrives_as(marker)`): the
    server's bus subscriptions reach the forwarder in the background, so a message sent right
    after a page subscribed could precede them."""
    deadline = time.monotonic() + WAIT
    while True:
        marker = {"sync": unique()}
        send(marker)
        try:
            browser.until_logged(page, lambda v: v == arrives_as(marker), timeout=0.3)
            return
        except AssertionError:
            assert time.monotonic() < deadline, f"{page} never received a marker"


def get(url):
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        assert response.status == 200, response.read()


def sent(msg):
    """What testsite.views.payload sends, as the page receives it."""
    return {
        "msg": msg,
        "at": "2026-12-03T15:30:01.123Z",
        "day": "2026-12-03",
        "price": "19.90",
        "id": "12345678-1234-5678-1234-567812345678",
        "greeting": "Hello",
    }


def with_msg(msg):
    return lambda v: isinstance(v, dict) and v.get("msg") == msg


def replies(browser, page):
    """The server's replies page `page` has logged."""
    return [v for v in browser.logged(page)
            if isinstance(v, dict) and str(v.get("name", "")).startswith("pushnote:")]


def withheld(code):
    """The server's counter of replies it did not send, for `code` (`ok`: success replies)."""
    return f'pushnote_replies_withheld_total{{code="{code}"}}'


# Each form of the example page: its URL name in the test site, and the token an anonymous
# page gets in it.
EXAMPLE_PAGES = {
    "bare": ("example", None),
    "quoted": ("example-quoted", ""),
}


@pytest.mark.parametrize("form", EXAMPLE_PAGES)
@pytest.mark.django_db(transaction=True)
def test_the_original_example_page_receives_what_django_sends(
    form, browser, live_server, forwarder, push_server, settings, django_user_model
):
    settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
    settings.PUSHNOTE_SERVER_URL = push_server.url
    url_name, anonymous_token = EXAMPLE_PAGES[form]
    user = django_user_model.objects.create_user(f"ada-{form}")
    anonymous, ada = f"anonymous-{form}", f"ada-{form}"

    assert browser.open(anonymous, f"{live_server.url}{reverse(url_name)}") == 200
    assert browser.page_errors(anonymous) == []
    assert browser.eval(anonymous, "token") == anonymous_token
    browser.wait_for(anonymous, "typeof conn === 'object' && conn.readyState === SockJS.OPEN")

    assert browser.open(ada, f"{live_server.url}/login-as/{user.pk}/?page={url_name}") == 200
    assert browser.page_errors(ada) == []
    token = browser.eval(ada, "token")
    signer = signing.TimestampSigner(key=settings.SECRET_KEY, salt="pushnote")
    assert signer.unsign(token, max_age=600) == str(user.pk)

    sync(browser, ada, lambda marker: notify(marker, users=[user]))
    sync(browser, anonymous, notify_all)
    first = browser.logged(ada)[0]
    assert isinstance(first, dict) and "sync" in first, f"ada's first message: {first}"

    get(f"{live_server.url}/notify/{user.pk}/?msg=for-ada")
    get(f"{live_server.url}/notify-all/?msg=for-all")
    assert browser.until_logged(ada, with_msg("for-ada")) == sent("for-ada")
    assert browser.until_logged(ada, with_msg("for-all")) == sent("for-all")
    assert browser.until_logged(anonymous, with_msg("for-all")) == sent("for-all")
    # The user's message went out before the broadcast, on the same path: had the anonymous
    # page been sent it, it would have arrived first.
    assert not any(with_msg("for-ada")(v) for v in browser.logged(anonymous))
    assert replies(browser, anonymous) == [], "the anonymous page was told something"
    assert replies(browser, ada) == [], "the page was told something"
    assert "You are logged in" in browser.eval(ada, "$('#summary').text()")
    assert "You are not logged in" in browser.eval(anonymous, "$('#summary').text()")
    assert browser.page_errors() == []
    # The server answered the subscribe, and kept the answer from a page that never asked.
    assert push_server.metric(withheld("ok")) >= 1


@pytest.fixture(scope="module")
def server_of_another_secret(forwarder):
    """pushnote-server with a secret other than the test site's, as a server set up with the
    wrong one would be: it refuses every token the site renders."""
    server = Server(forwarder, "another-secret-Wq8Zr3Km5Tx7Bv2Nc9Lp4Hd6")
    yield server
    server.proc.kill()


@pytest.mark.django_db(transaction=True)
def test_the_original_example_page_is_not_told_of_a_refused_token(
    browser, live_server, forwarder, server_of_another_secret, settings, django_user_model
):
    settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
    settings.PUSHNOTE_SERVER_URL = server_of_another_secret.url
    user = django_user_model.objects.create_user("refused")
    page = "refused"

    assert browser.open(page, f"{live_server.url}/login-as/{user.pk}/") == 200
    assert browser.eval(page, "typeof token === 'string' && token.length > 0")
    server_of_another_secret.wait_metric("pushnote_subscribes_refused_total", 1)
    # Whatever the server sent the page after refusing its token comes before this broadcast.
    sync(browser, page, notify_all)
    get(f"{live_server.url}/notify-all/?msg=for-all")
    assert browser.until_logged(page, with_msg("for-all")) == sent("for-all")
    assert replies(browser, page) == [], "the page was told something"
    assert all(isinstance(v, dict) and ("sync" in v or "msg" in v)
               for v in browser.logged(page)), browser.logged(page)
    assert browser.page_errors() == []
    assert server_of_another_secret.metric(withheld("invalid_token")) >= 1


@pytest.mark.django_db(transaction=True)
def test_a_page_joins_a_private_channel_with_the_tags_token(
    browser, live_server, forwarder, push_server, settings
):
    settings.PUSHNOTE_MQ_SOCKET = forwarder.sub
    settings.PUSHNOTE_SERVER_URL = push_server.url
    channel = f"private-group-{unique()}"

    assert browser.open("member", f"{live_server.url}/channel/{channel}/") == 200
    joined = browser.until_logged(
        "member", lambda v: isinstance(v, dict) and v.get("name") == "pushnote:subscribed"
    )
    assert joined["data"] == {"channel": channel}
    sync(browser, "member", lambda marker: publish(channel, "sync", marker),
         lambda marker: {"channel": channel, "event": "sync", "data": marker})

    publish(channel, "create", {"id": 7, "price": decimal.Decimal("1.50")})
    received = browser.until_logged(
        "member", lambda v: isinstance(v, dict) and v.get("event") == "create"
    )
    assert received == {"channel": channel, "event": "create", "data": {"id": 7, "price": "1.50"}}
    assert browser.page_errors() == []
