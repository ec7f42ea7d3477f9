"""Who may see the status page and how often it refreshes (``checks`` checks these settings).

    PROCPOOL_TASKS_STATUS_PERMISSION  None (staff: ``is_active`` and ``is_staff``), or a
                                      permission "app_label.codename" the user must have
    PROCPOOL_TASKS_STATUS_REFRESH_S   seconds between the page's reloads; 0 or None: never

The views are in ``views.py``; a project mounts them with
``path("tasks/", include("procpool_tasks.urls"))``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

__all__ = [
    "DEFAULT_REFRESH_S",
    "PERMISSION_SETTING",
    "REFRESH_SETTING",
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
