"""The status page: what ``procpool_status`` shows, as HTML and as JSON, for staff.

    GET  ""                        the page (``status.collect``); reloads itself
    GET  "status.json"             ``status.to_json(status.collect(backend))``
    GET  "task/<id>/"              one task, read with the backend's ``get_result``
    POST "task/<id>/requeue/"      re-queue a FAILED task         } only with the
    POST "task/<id>/cancel/"       cancel a READY or RUNNING task } OPTIONS["admin_actions"]
    POST "quarantine/<name>/drop/" delete a quarantined record    }

Every view takes ``?backend=ALIAS`` (default: the default alias) and answers 404 for
anything but a ``ProcPoolBackend``. Anonymous users are sent to the login page
(``access.login_url``), users that ``access.may_view`` refuses get 403. A finished
task's page does not reload itself. Nothing user-controlled is marked safe:
the templates escape task paths, arguments, errors and names like any other text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.http import require_POST, require_safe

from .. import compat
from .. import journal as j
from ..backend import ProcPoolBackend
from ..journal import history
from ..journal.heartbeats import Heartbeat
from ..operations import cancel, quarantine, requeue, status
from .access import login_url, may_view, refresh_seconds
from .chart import finished_chart

__all__ = [
    "cancel_task",
    "drop_quarantined",
    "requeue_task",
    "status_json",
    "status_page",
    "task_page",
]

logger = logging.getLogger(__name__)

View = Callable[..., HttpResponseBase]


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueRow:
    name: str
    counts: list[int]  # in the order of status.COUNTED
    oldest_ready_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorRow:
    beat: Heartbeat
    live: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class FailureRow:
    failure: history.Failure
    finished_at: datetime
    traceback: str  # the last attempt's; empty when its result is gone


# -- access -----------------------------------------------------------------------------------


def _viewers_only(view: View) -> View:
    """Anonymous users go to the login page (``access.login_url``); others need ``may_view``."""

    @wraps(view)
    def check_access(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = getattr(request, "user", None)
        if user is None:
            raise ImproperlyConfigured(
                "The procpool_tasks status page needs "
                "'django.contrib.auth.middleware.AuthenticationMiddleware' in MIDDLEWARE"
            )
        if not user.is_authenticated:
            # Imported here, as django.contrib.auth.decorators does: the module loads
            # auth's models, so importing it up front would tie importing the views to
            # django.contrib.auth being installed (the benchmarks render without it).
            from django.contrib.auth.views import redirect_to_login

            return redirect_to_login(request.get_full_path(), login_url())
        if not may_view(user):
            raise PermissionDenied("This user may not see the task status page")
        return view(request, *args, **kwargs)

    return check_access


def _backend(request: HttpRequest) -> tuple[str, ProcPoolBackend | None]:
    """The alias ``?backend=`` names (else the default) and its backend, if a ProcPool one."""
    alias = request.GET.get("backend") or compat.DEFAULT_TASK_BACKEND_ALIAS
    try:
        backend = compat.task_backends[alias]
    except compat.InvalidTaskBackend:
        return alias, None
    return alias, backend if isinstance(backend, ProcPoolBackend) else None


def _procpool_aliases() -> list[str]:
    """The aliases of TASKS that are ProcPoolBackends: the page can show each."""
    aliases = []
    for alias in compat.task_backends.settings:
        try:
            if isinstance(compat.task_backends[alias], ProcPoolBackend):
                aliases.append(alias)
        except compat.InvalidTaskBackend:
            continue  # the framework's own check reports it
    return aliases


def _refuse_without_actions(backend: ProcPoolBackend) -> None:
    if not backend.backend_options.admin_actions:
        raise PermissionDenied(
            f"TASKS[{backend.alias!r}]['OPTIONS']['admin_actions'] is off: the status "
            "page is read-only"
        )


# -- pages ------------------------------------------------------------------------------------


def _backend_query(alias: str) -> str:
    """``?backend=ALIAS`` for links that stay on a backend other than the default."""
    if alias == compat.DEFAULT_TASK_BACKEND_ALIAS:
        return ""
    return "?" + urlencode({"backend": alias})


def _page_context(request: HttpRequest, alias: str) -> dict[str, Any]:
    """What every page of the status page shows around its content."""
    refresh_s = refresh_seconds(request)
    without_refresh = request.GET.copy()
    without_refresh.pop("refresh", None)
    stopped = request.GET.copy()
    stopped["refresh"] = "0"
    return {
        "alias": alias,
        "backend_query": _backend_query(alias),
        "aliases": _procpool_aliases(),
        "refresh_s": refresh_s,
        "stop_refresh_query": "?" + stopped.urlencode(),
        "default_refresh_query": "?" + without_refresh.urlencode(),
        "username": request.user.get_username(),
        "page_messages": messages.get_messages(request),
    }


def _not_found(request: HttpRequest, alias: str, title: str, detail: str) -> HttpResponse:
    context = {**_page_context(request, alias), "title": title, "detail": detail}
    return render(request, "procpool_tasks/not_found.html", context, status=404)


def _no_backend(request: HttpRequest, alias: str) -> HttpResponse:
    return _not_found(
        request,
        compat.DEFAULT_TASK_BACKEND_ALIAS,
        "No such backend",
        f"TASKS has no ProcPoolBackend named {alias!r}.",
    )


@never_cache
@require_safe
@_viewers_only
@csrf_protect  # sets the CSRF cookie for the action buttons, with or without the middleware
def status_page(request: HttpRequest) -> HttpResponse:
    """Counts per queue, the chart, supervisors, running tasks, failures, quarantine; a
    banner when READY tasks wait in a queue that no live supervisor serves."""
    alias, backend = _backend(request)
    if backend is None:
        return _no_backend(request, alias)
    current = status.collect(backend)
    total = current.total()
    context = {
        **_page_context(request, alias),
        "status": current,
        "warnings": status.warnings(current),
        "counted": status.COUNTED,
        "queues": [
            QueueRow(
                name=name,
                counts=[queue.counts[key] for key in status.COUNTED],
                oldest_ready_at=queue.oldest_ready_at,
            )
            for name, queue in current.queues.items()
        ],
        "total": QueueRow(
            name="(all)",
            counts=[total.counts[key] for key in status.COUNTED],
            oldest_ready_at=total.oldest_ready_at,
        ),
        "supervisors": [
            SupervisorRow(beat=beat, live=beat.is_live(current.generated_at))
            for beat in current.supervisors
        ],
        "live_supervisors": len(current.live_supervisors()),
        "failures": [
            FailureRow(
                failure=failure,
                finished_at=datetime.fromtimestamp(failure.finished_at, UTC),
                traceback=_last_traceback(backend.journal, failure.id),
            )
            for failure in current.recent_failures
        ],
        "chart": finished_chart(current.finished_per_minute),
        "admin_actions": backend.backend_options.admin_actions,
        "here": request.get_full_path(),
    }
    return render(request, "procpool_tasks/status.html", context)


def _last_traceback(journal: j.Journal, result_id: str) -> str:
    """The traceback of a failed task's last error: one result file, read by id."""
    try:
        state = journal.read_state(result_id)
    except OSError:
        return ""  # pruned or unreadable meanwhile: the row still shows the error line
    if state is None or not state.errors:
        return ""
    return state.errors[-1].traceback


@never_cache
@require_safe
@_viewers_only
def status_json(request: HttpRequest) -> HttpResponse:
    """The document ``procpool_status --json`` prints, from the same function."""
    alias, backend = _backend(request)
    if backend is None:
        return _no_backend(request, alias)
    document = status.to_json(status.collect(backend))
    return JsonResponse(document, json_dumps_params={"indent": 2})


@never_cache
@require_safe
@_viewers_only
@csrf_protect
def task_page(request: HttpRequest, result_id: str) -> HttpResponse:
    """One task as ``get_result`` reads it: status, times, attempts, errors, arguments."""
    alias, backend = _backend(request)
    if backend is None:
        return _no_backend(request, alias)
    try:
        result = backend.get_result(result_id)
    except compat.TaskResultDoesNotExist as error:
        detail = str(error)
        return _not_found(
            request,
            alias,
            "No such task",
            f"Backend {alias!r} has no task {result_id!r}"
            + ("." if detail in ("", result_id) else f": {detail}."),
        )
    state = str(getattr(result.status, "value", result.status))
    finished = _is_finished(backend.journal, result_id)
    context = {
        **_page_context(request, alias),
        # A finished task's page changes no more: it does not reload itself.
        **({"refresh_s": 0, "finished": True} if finished else {}),
        "result": result,
        "state": state,
        "task_path": result.task.module_path,
        "attempts": list(enumerate(result.worker_ids, start=1)),
        "errors": list(enumerate(result.errors, start=1)),
        "args_json": _json_text(result.args),
        "kwargs_json": _json_text(result.kwargs),
        "return_json": _json_text(result.return_value) if state == j.SUCCESSFUL else None,
        "can_requeue": backend.backend_options.admin_actions and state == j.FAILED,
        "can_cancel": backend.backend_options.admin_actions and state in (j.READY, j.RUNNING),
        "here": request.get_full_path(),
    }
    return render(request, "procpool_tasks/task.html", context)


def _is_finished(journal: j.Journal, result_id: str) -> bool:
    """Whether the task ended in this journal: SUCCESSFUL, FAILED or HANDED_OFF."""
    try:
        state = journal.read_state(result_id)
    except OSError:
        return False  # pruned meanwhile: the page shows what get_result read
    return state is not None and state.is_finished


def _json_text(value: Any) -> str:
    """A JSON value as the journal holds it, indented for reading (escaped by the template)."""
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


# -- actions ----------------------------------------------------------------------------------


def _redirect_back(request: HttpRequest, alias: str) -> HttpResponse:
    """Back to the page the form was on (``next``, if it is ours), else the status page."""
    back = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(
        back, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return redirect(back)
    return redirect(reverse("procpool_tasks:status") + _backend_query(alias))


def _action(view: Callable[[HttpRequest, ProcPoolBackend, str], None]) -> View:
    """A button's view: POST with the CSRF token, by a viewer, on a backend whose
    ``admin_actions`` are on; it gets that backend and what the URL names, and answers
    with a redirect back to the page."""

    @require_POST
    @csrf_protect
    @_viewers_only
    @wraps(view)
    def act(request: HttpRequest, **url_kwargs: str) -> HttpResponse:
        alias, backend = _backend(request)
        if backend is None:
            return _no_backend(request, alias)
        _refuse_without_actions(backend)
        [key] = url_kwargs.values()  # the task's id, or the quarantined record's name
        view(request, backend, key)
        return _redirect_back(request, alias)

    return act


@_action
def requeue_task(request: HttpRequest, backend: ProcPoolBackend, result_id: str) -> None:
    """Run a FAILED task again as a new attempt (``requeue.requeue``); others are refused."""
    [outcome] = requeue.requeue(backend.journal, [result_id], backend_alias=backend.alias)
    if outcome.refused is None:
        logger.info(
            "Status page: user=%s re-queued id=%s path=%s as attempt %s",
            request.user.get_username(),
            result_id,
            outcome.task_path,
            outcome.attempt,
        )
        messages.success(
            request,
            f"Task {result_id} ({outcome.task_path}) is READY again, as attempt {outcome.attempt}.",
            fail_silently=True,
        )
    else:
        messages.error(
            request, f"Task {result_id} was not re-queued: {outcome.refused}.", fail_silently=True
        )


@_action
def cancel_task(request: HttpRequest, backend: ProcPoolBackend, result_id: str) -> None:
    """Cancel a READY or RUNNING task (``cancel.cancel``); finished ones are refused."""
    [outcome] = cancel.cancel(backend, [result_id])
    if outcome.refused is not None:
        messages.error(
            request, f"Task {result_id} was not cancelled: {outcome.refused}.", fail_silently=True
        )
        return
    logger.info(
        "Status page: user=%s cancelled id=%s path=%s status=%s",
        request.user.get_username(),
        result_id,
        outcome.task_path,
        outcome.status,
    )
    if outcome.is_running:
        text = (
            f"Task {result_id} ({outcome.task_path}) is cancelled: its worker process is "
            "being stopped, and it ends FAILED."
        )
    else:
        text = f"Task {result_id} ({outcome.task_path}) is cancelled: it will never run."
    messages.success(request, text, fail_silently=True)


@_action
def drop_quarantined(request: HttpRequest, backend: ProcPoolBackend, name: str) -> None:
    """Delete a quarantined copy (``quarantine.drop``); the task stays as it ended."""
    try:
        quarantine.drop(backend.journal, name)
    except quarantine.QuarantineError as error:
        messages.error(request, f"Nothing was dropped: {error}.", fail_silently=True)
    else:
        logger.info(
            "Status page: user=%s dropped quarantined record name=%s",
            request.user.get_username(),
            name,
        )
        messages.success(request, f"Dropped the quarantined record {name}.", fail_silently=True)
