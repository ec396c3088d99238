"""Settings of the test site: the original pushnote's (INSTALLED_APPS, PUSHNOTE_MQ_SOCKET),
nothing more. Tests point PUSHNOTE_MQ_SOCKET at their own forwarder or bus."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

SECRET_KEY = "pushnote-test-site-Qm4Xr8Lz2Vb6Nc1Hw9Kt5Jd3Fy7Gp0Se"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
USE_I18N = True
LANGUAGE_CODE = "en"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "pushnote",
    "testsite",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "testsite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
STATIC_URL = "/static/"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

PUSHNOTE_MQ_SOCKET = os.environ.get("PUSHNOTE_MQ_SOCKET", "tcp://127.0.0.1:8002")

# Where the example page's browser connects (pushnote-server's SockJS URL); tests set it.
PUSHNOTE_SERVER_URL = "http://localhost:8080/sockjs"
# The scripts the example page loads from CDNs in the original, served here instead.
SCRIPTS = {
    "sockjs.min.js": REPO / "tests/browser/node_modules/sockjs-client/dist/sockjs.min.js",
    "jquery.min.js": REPO / "tests/python/node_modules/jquery/dist/jquery.min.js",
}
