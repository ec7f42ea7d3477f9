"""Who may see the status page, where they log in, how often it refreshes.

    PROCPOOL_TASKS_STATUS_PERMISSION  None (staff: ``is_active`` and ``is_staff``), or a
                                      permission "app_label.codename" the user must have
    PROCPOOL_TASKS_STATUS_REFRESH_S   seconds between the page's reloads; 0 or None: never
    LOGIN_URL                         where anonymous users log in; left at Django's
                                      default, the admin's login page (``login_url``)

``checks`` checks the first two.

The views are in ``views.py``; a project mounts them with
``path("tasks/", include("procpool_tasks.urls"))``.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import global_settings, settings
from django.http import HttpRequest
from django.urls import NoReverseMatch, Resolver404, resolve, reverse

__all__ = [
    "DEFAULT_REFRESH_S",
    "PERMISSION_SETTING",
    "REFRESH_SETTING",
    "login_url",
    "may_view",
    "refresh_seconds",
]

PERMISSION_SETTING = "PROCPOOL_TASKS_STATUS_PERMISSION"
REFRESH_SETTING = "PROCPOOL_TASKS_STATUS_REFRESH_S"
DEFAULT_REFRESH_S = 10
#: The longest refresh ``?refresh=N`` may ask for: a day.
MAX_REFRESH_S = 86_400


def may_view(user: Any) -> bool:
    """Whether an authenticated ``user`` may see the page (and, if on, use its actions)."""
    permission = getattr(settings, PERMISSION_SETTING, None)
    if permission is None:
        return bool(user.is_active and user.is_staff)
    return bool(user.has_perm(permission))


def login_url() -> str | None:
    """Where anonymous users log in: ``LOGIN_URL``, else, on a new project, the admin's login.

    A project from ``startproject`` has the admin but no page at Django's default
    ``LOGIN_URL`` (/accounts/login/), which would be a 404. So while ``LOGIN_URL`` is left
    at its default, no URL of the project answers it and the admin is installed with its
    URLs, the admin's login page it is. None: ``LOGIN_URL``, as Django resolves it.
    """
    if settings.LOGIN_URL != global_settings.LOGIN_URL or not apps.is_installed(
        "django.contrib.admin"
    ):
        return None
    try:
        resolve(str(settings.LOGIN_URL))
    except Resolver404:
        pass
    else:
        return None  # the project made a page there, e.g. with django.contrib.auth.urls
    try:
        return reverse("admin:login")
    except NoReverseMatch:
        return None  # the admin's URLs are not mounted, or under another namespace


def refresh_seconds(request: HttpRequest) -> int:
    """Seconds until the page reloads itself; 0: it does not.

    ``?refresh=N`` (whole seconds, 0 for never) overrides the setting for one page.
    """
    asked = request.GET.get("refresh", "")
    if asked.isdigit() and asked.isascii():
        return min(int(asked), MAX_REFRESH_S)
    configured = getattr(settings, REFRESH_SETTING, DEFAULT_REFRESH_S)
    return int(configured or 0)
