"""A view for the browser tests only: log in without a form.

Headless Chromium run from the command line cannot type into a login form or be given a
cookie, so the tests start their server with ``PROCPOOL_TEST_LOGIN_TOKEN`` (a random
token) and ``PROCPOOL_TEST_LOGIN_USER`` set, and point Chromium at
``/test-login/<token>/?next=/tasks/``. Without both variables, or with another token, the
URL is a 404. Only ``tests/urls.py`` mounts it.
"""

from __future__ import annotations

import os
import secrets

from django.contrib.auth import get_user_model, login
from django.http import Http404, HttpRequest, HttpResponseBase
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme

LOGIN_TOKEN_VARIABLE = "PROCPOOL_TEST_LOGIN_TOKEN"  # noqa: S105 (a variable's name)
LOGIN_USER_VARIABLE = "PROCPOOL_TEST_LOGIN_USER"


def login_by_token(request: HttpRequest, token: str) -> HttpResponseBase:
    """Log in as ``$PROCPOOL_TEST_LOGIN_USER`` and go to ``?next=`` (a local URL)."""
    expected = os.environ.get(LOGIN_TOKEN_VARIABLE, "")
    username = os.environ.get(LOGIN_USER_VARIABLE, "")
    if not (expected and username and secrets.compare_digest(token, expected)):
        raise Http404("no such page")
    user = get_user_model().objects.get_by_natural_key(username)
    login(request, user, backend="django.contrib.auth.backends.ModelBackend")
    target = request.GET.get("next", "/")
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)
