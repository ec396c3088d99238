"""The Django app: add "pushnote" to INSTALLED_APPS for the {% pushnote_token %} tags."""

from django.apps import AppConfig


class PushnoteConfig(AppConfig):
    name = "pushnote"
    verbose_name = "pushnote"
