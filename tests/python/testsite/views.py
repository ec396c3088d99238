import datetime
import os
import decimal
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template import engines
from django.template.loader import get_template
from django.utils.translation import gettext_lazy

import pushnote
from pushnote.pub import notify, notify_all


def example(request):
    """The original pushnote's example page."""
    return render(request, "pushnote.html", {"pushnote_url": settings.PUSHNOTE_SERVER_URL})


def example_quoted(request):
    """The original pushnote's example page as apps written for it have it: the token tag
    between quotes (`var token = "{% pushnote_token %}";`), the only difference."""
    source = get_template("pushnote.html").template.source
    assert source.count("{% pushnote_token %}") == 1, "the example page changed"
    quoted = source.replace("{% pushnote_token %}", '"{% pushnote_token %}"')
    page = engines["django"].from_string(quoted)
    return HttpResponse(page.render({"pushnote_url": settings.PUSHNOTE_SERVER_URL}, request))


def channel_page(request, channel):
    return render(
        request, "channel.html", {"channel": channel, "pushnote_url": settings.PUSHNOTE_SERVER_URL}
    )


def script(request, name):
    if name not in settings.SCRIPTS:
        raise Http404(name)
    return FileResponse(open(settings.SCRIPTS[name], "rb"), content_type="text/javascript")


def login_as(request, user_id):
    """Signs the browser in as the user (a test site has no passwords to type), then shows the
    example page named by `?page=` (default: the original's)."""
    login(request, get_object_or_404(get_user_model(), pk=user_id))
    return redirect(request.GET.get("page", "example"))


def payload(request):
    """What the views send: every type DjangoJSONEncoder knows."""
    return {
        "msg": request.GET.get("msg", "Hi!"),
        "at": datetime.datetime(2026, 12, 3, 15, 30, 1, 123456, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2026, 12, 3),
        "price": decimal.Decimal("19.90"),
        "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "greeting": gettext_lazy("Hello"),
    }


def notify_user(request, user_id):
    user = get_object_or_404(get_user_model(), pk=user_id)
    try:
        notify(payload(request), users=[user])
    except pushnote.NotConnectedError as e:
        return JsonResponse({"error": str(e)}, status=503)
    return JsonResponse({"notified": user.pk})


def notify_everyone(request):
    try:
        notify_all(payload(request))
    except pushnote.NotConnectedError as e:
        return JsonResponse({"error": str(e)}, status=503)
    return JsonResponse({"notified": "all"})


def notify_pid(request):
    """Tells everyone which process served the request (a worker of a pre-forking server)."""
    notify_all({"from": "worker", "pid": os.getpid()})
    return JsonResponse({"pid": os.getpid()})
