"""The test project's URLs: the status page as a project mounts it, Django's login views,
and, for the browser tests only, a login by token (``tests.views.login_by_token``)."""

from django.urls import include, path

from tests import views

urlpatterns = [
    path("tasks/", include("procpool_tasks.urls")),
    path("accounts/", include("django.contrib.auth.urls")),
    path("test-login/<str:token>/", views.login_by_token),
]
