"""The test site as a WSGI application, for gunicorn. With PUSHNOTE_NOTIFY_AT_LOAD set, it
notifies everyone while it loads, as an app announcing a deploy would: under
`gunicorn --preload` that happens in the master, before it forks its workers."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testsite.settings")
application = get_wsgi_application()

if os.environ.get("PUSHNOTE_NOTIFY_AT_LOAD"):
    from pushnote.pub import notify_all

    notify_all({"from": "master", "pid": os.getpid()})
