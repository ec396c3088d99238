from django.urls import path

from . import views

urlpatterns = [
    path("", views.example, name="example"),
    path("quoted/", views.example_quoted, name="example-quoted"),
    path("channel/<str:channel>/", views.channel_page, name="channel"),
    path("scripts/<str:name>", views.script, name="script"),
    path("login-as/<int:user_id>/", views.login_as, name="login-as"),
    path("notify/<int:user_id>/", views.notify_user, name="notify"),
    path("notify-all/", views.notify_everyone, name="notify-all"),
    path("notify-pid/", views.notify_pid, name="notify-pid"),
]
