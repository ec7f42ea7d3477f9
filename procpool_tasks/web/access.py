"""Who may see the status page, how often it refreshes, and the checks of those settings.

    PROCPOOL_TASKS_STATUS_PERMISSION  None (staff: ``is_active`` and ``is_staff``), or a
                                      permission "app_label.codename" the user must have
    PROCPOOL_TASKS_STATUS_REFRESH_S   seconds between the page's reloads; 0 or None: never

The views are in ``views.py``; a project mounts them with
``path("tasks/", include("procpool_tasks.urls"))``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.conf import settings
from django.core import checks
from django.http import HttpRequest

__all__ = [
    "DEFAULT_REFRESH_S",
    "PERMISSION_SETTING",
    "REFRESH_SETTING",
    "check_settings",
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


def refresh_seconds(request: HttpRequest) -> int:
    """Seconds until the page reloads itself; 0: it does not.

    ``?refresh=N`` (whole seconds, 0 for never) overrides the setting for one page.
    """
    asked = request.GET.get("refresh", "")
    if asked.isdigit() and asked.isascii():
        return min(int(asked), MAX_REFRESH_S)
    configured = getattr(settings, REFRESH_SETTING, DEFAULT_REFRESH_S)
    return int(configured or 0)


def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``procpool_tasks.E005``: the status page's settings, if given, must make sense."""
    return list(_setting_errors())


def _setting_errors() -> Iterable[checks.CheckMessage]:
    permission = getattr(settings, PERMISSION_SETTING, None)
    if permission is not None and not _is_permission_name(permission):
        yield checks.Error(
            f"{PERMISSION_SETTING} must be a permission such as 'myapp.view_tasks' "
            f"(app_label.codename), or None for staff users; not {permission!r}",
            hint=f"Set {PERMISSION_SETTING} to 'app_label.codename' or remove it.",
            id="procpool_tasks.E005",
        )
    refresh = getattr(settings, REFRESH_SETTING, DEFAULT_REFRESH_S)
    if refresh is not None and (type(refresh) is not int or refresh < 0):
        yield checks.Error(
            f"{REFRESH_SETTING} must be a whole number of seconds >= 0 (0 or None: the "
            f"status page does not reload itself); not {refresh!r}",
            hint=f"Set {REFRESH_SETTING} to, e.g., {DEFAULT_REFRESH_S}.",
            id="procpool_tasks.E005",
        )


def _is_permission_name(value: object) -> bool:
    if not isinstance(value, str):
        return False
    app_label, dot, codename = value.partition(".")
    return bool(app_label and dot and codename) and "." not in codename
