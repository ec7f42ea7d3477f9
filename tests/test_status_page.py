"""The status page (``procpool_tasks.urls``) through Django's test client: who may see it,
what it shows beside ``procpool_status --json``, escaping, its actions and their CSRF
protection, refresh, one task's page and its 404s.

Journals are worked by real ``procpool_worker`` subprocesses; users and sessions live in an
in-memory SQLite database of this test process (``database``). The browser's view of the
same page is in ``test_status_page_browser.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import django
import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.core.checks import Error
from django.test import Client
from django.test.utils import override_settings, setup_databases, teardown_databases
from django.utils import timezone

from procpool_tasks import checks, compat, journal
from procpool_tasks.backend import ProcPoolBackend
from tests import tasks
from tests.conftest import Env, wait_for
from tests.pages import Page, read_page
from tests.support import journal_on_tmpfs, read_only, status_of
from tests.test_periodic import fired, set_schedules, start_live_worker
from tests.test_read_only_journal import run_and_leave
from tests.test_status import COUNTS, MixedRun, run_mixed, status_json

SCRIPT = "<script>alert(1)</script>"
#: A task path no module has: the worker fails the task and quarantines its record.
BAD_TASK_PATH = "tests.<script>alert(3)</script>"
BAD_TASK_ERROR = (
    "procpool_tasks.exceptions.TaskNotLoadable: 'tests.<script>alert(3)</script>' cannot be "
    'imported: Module "tests" does not define a "<script>alert(3)</script>" attribute/class'
)


@pytest.fixture(scope="module")
def database() -> Iterator[None]:
    """Auth's and sessions' tables in an in-memory SQLite database of this process."""
    databases = setup_databases(verbosity=0, interactive=False)
    try:
        yield
    finally:
        teardown_databases(databases, verbosity=0)


@dataclass
class Users:
    staff: User
    plain: User  # logged in, not staff
    superuser: User


@pytest.fixture
def users(database: None) -> Iterator[Users]:
    made = Users(
        staff=User.objects.create_user("staff", is_staff=True),
        plain=User.objects.create_user("plain"),
        superuser=User.objects.create_superuser("root"),
    )
    yield made
    User.objects.all().delete()


def client_of(user: User | None, *, enforce_csrf_checks: bool = False) -> Client:
    client = Client(enforce_csrf_checks=enforce_csrf_checks)
    if user is not None:
        client.force_login(user)
    return client


def html_of(response: Any) -> str:
    assert response.status_code == 200, (response.status_code, response.content[:2000])
    text: str = response.content.decode()
    return text


def page_of(client: Client, url: str) -> Page:
    return read_page(html_of(client.get(url)))


@pytest.fixture
def mixed_run(env: Env) -> Iterator[MixedRun]:
    """A task of every status, a worker still running one (``tests.test_status``)."""
    yield from run_mixed(env)


@pytest.fixture
def actions(env: Env) -> Iterator[None]:
    """The default backend with ``OPTIONS["admin_actions"] = True`` in this process."""
    with_actions: dict[str, Any] = copy.deepcopy(settings.TASKS)
    with_actions["default"]["OPTIONS"]["admin_actions"] = True
    with override_settings(TASKS=with_actions):
        yield


def enqueue_bad_task_path(queue_name: str = "default") -> str:
    """Append a record naming a task no module has, as a bad deploy leaves one; its id."""
    backend = compat.task_backends["default"]
    assert isinstance(backend, ProcPoolBackend)
    return str(
        backend.journal.append(
            journal.Record(
                id="",
                task_path=BAD_TASK_PATH,
                args=[],
                kwargs={},
                priority=0,
                queue_name=queue_name,
                backend="default",
                enqueued_at=timezone.now(),
            )
        )
    )


def state_of(env: Env, result_id: str) -> str | None:
    state = journal.Journal(env.journal).read_state(result_id)
    return None if state is None else state.status


# -- access -----------------------------------------------------------------------------------

PAGES = ["/tasks/", "/tasks/status.json", "/tasks/task/0123456789abcdef-0/"]


@pytest.mark.parametrize("url", PAGES)
def test_an_anonymous_user_is_sent_to_the_login_page(env: Env, users: Users, url: str) -> None:
    response = client_of(None).get(url)

    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={url}"


def test_the_login_page_is_the_login_url_setting(env: Env, users: Users) -> None:
    with override_settings(LOGIN_URL="/sign-in/"):
        response = client_of(None).get("/tasks/?refresh=0")

    assert response.status_code == 302
    assert response["Location"] == "/sign-in/?next=/tasks/%3Frefresh%3D0"


#: Run in a project made by ``startproject``: where an anonymous visit to the page ends.
ANONYMOUS_VISITS = """
import json
from django.test import Client
from django.test.utils import override_settings, setup_test_environment
setup_test_environment()  # lets the test client's host in
followed = Client().get("/tasks/", follow=True)
with override_settings(LOGIN_URL="/sign-in/"):
    with_login_url = Client().get("/tasks/")
print(json.dumps({
    "redirects": followed.redirect_chain,
    "final": [followed.request["PATH_INFO"], followed.request["QUERY_STRING"],
              followed.status_code],
    "login_form": 'name="password"' in followed.content.decode(),
    "with_login_url": [with_login_url.status_code, with_login_url["Location"]],
}))
"""


def startproject_with_the_status_page(env: Env) -> Env:
    """A new project as ``startproject`` makes it, with the app, TASKS and the status page's
    urls snippet added, and nothing else: no login page of its own."""
    (env.tmp_path / "site").mkdir()
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(env.tmp_path / "site")],
        env={key: value for key, value in env.variables.items() if key != "DJANGO_SETTINGS_MODULE"},
        check=True,
        timeout=60,
    )
    site = env.tmp_path / "site" / "mysite"
    backport = '"django_tasks", ' if django.VERSION < (6,) else ""
    with (site / "settings.py").open("a") as settings_file:
        settings_file.write(
            f"\nINSTALLED_APPS += [{backport}'procpool_tasks']\n"
            "TASKS = {'default': {'BACKEND': 'procpool_tasks.backend.ProcPoolBackend', "
            f"'OPTIONS': {{'path': {str(env.journal)!r}}}}}}}\n"
        )
    urls = (site / "urls.py").read_text()
    # The snippet of docs/guides/status-page.md, as it stands.
    urls = urls.replace("from django.urls import path", "from django.urls import include, path")
    snippet = '    path("tasks/", include("procpool_tasks.urls")),\n'
    urls = urls.replace("urlpatterns = [\n", "urlpatterns = [\n" + snippet)
    (site / "urls.py").write_text(urls)
    return dataclasses.replace(
        env,
        variables={
            **env.variables,
            "DJANGO_SETTINGS_MODULE": "mysite.settings",
            "PYTHONPATH": os.pathsep.join([str(site.parent), env.variables["PYTHONPATH"]]),
        },
    )


def test_on_a_new_project_an_anonymous_user_lands_on_the_admin_login(env: Env) -> None:
    project = startproject_with_the_status_page(env)
    assert "System check identified no issues" in project.manage("check").stdout

    visits = json.loads(project.run_python(ANONYMOUS_VISITS))

    assert visits["redirects"] == [["/admin/login/?next=/tasks/", 302]]
    assert visits["final"] == ["/admin/login/", "next=%2Ftasks%2F", 200]
    assert visits["login_form"] is True
    # LOGIN_URL, once set, wins over the admin's.
    assert visits["with_login_url"] == [302, "/sign-in/?next=/tasks/"]


@pytest.mark.parametrize("url", PAGES)
def test_a_user_who_is_not_staff_is_refused_with_403(env: Env, users: Users, url: str) -> None:
    assert client_of(users.plain).get(url).status_code == 403


def test_staff_users_see_every_page(env: Env, users: Users) -> None:
    result = tasks.add.enqueue(1, 2)
    staff = client_of(users.staff)

    for url in ["/tasks/", "/tasks/status.json", f"/tasks/task/{result.id}/"]:
        response = staff.get(url)
        assert response.status_code == 200, url
        assert response["Cache-Control"] == (
            "max-age=0, no-cache, no-store, must-revalidate, private"
        )
    assert client_of(users.superuser).get("/tasks/").status_code == 200


def test_the_permission_setting_decides_instead_of_is_staff(env: Env, users: Users) -> None:
    users.plain.user_permissions.add(Permission.objects.get(codename="view_note"))

    with override_settings(PROCPOOL_TASKS_STATUS_PERMISSION="tests.view_note"):
        assert client_of(users.plain).get("/tasks/").status_code == 200
        assert client_of(users.plain).get("/tasks/status.json").status_code == 200
        assert client_of(users.staff).get("/tasks/").status_code == 403
        assert client_of(users.superuser).get("/tasks/").status_code == 200
        assert client_of(None).get("/tasks/").status_code == 302


def test_wrong_status_page_settings_are_check_errors() -> None:
    with override_settings(
        PROCPOOL_TASKS_STATUS_PERMISSION="view_note", PROCPOOL_TASKS_STATUS_REFRESH_S=2.5
    ):
        errors = checks.check_status_page()

    assert errors == [
        Error(
            "PROCPOOL_TASKS_STATUS_PERMISSION must be a permission such as "
            "'myapp.view_tasks' (app_label.codename), or None for staff users; not "
            "'view_note'",
            hint="Set PROCPOOL_TASKS_STATUS_PERMISSION to 'app_label.codename' or remove it.",
            id="procpool_tasks.E005",
        ),
        Error(
            "PROCPOOL_TASKS_STATUS_REFRESH_S must be a whole number of seconds >= 0 (0 or "
            "None: the status page does not reload itself); not 2.5",
            hint="Set PROCPOOL_TASKS_STATUS_REFRESH_S to, e.g., 10.",
            id="procpool_tasks.E006",
        ),
    ]
    with override_settings(
        PROCPOOL_TASKS_STATUS_PERMISSION="tests.view_note", PROCPOOL_TASKS_STATUS_REFRESH_S=0
    ):
        assert checks.check_status_page() == []


@pytest.mark.parametrize(
    ("alias", "detail"),
    [
        ("immediate", "TASKS has no ProcPoolBackend named 'immediate'."),
        ("nowhere", "TASKS has no ProcPoolBackend named 'nowhere'."),
    ],
)
def test_a_backend_that_is_not_a_procpool_backend_is_a_404(
    env: Env, users: Users, alias: str, detail: str
) -> None:
    staff = client_of(users.staff)
    for url in ["/tasks/", "/tasks/status.json", "/tasks/task/0123456789abcdef-0/"]:
        response = staff.get(url, {"backend": alias})
        assert response.status_code == 404, url
        assert read_page(response.content.decode()).texts["not-found"] == detail


def test_backend_alias_shows_that_backends_journal(env: Env, users: Users) -> None:
    second = tasks.add.using(backend="second").enqueue(1, 2)

    staff = client_of(users.staff)
    page = page_of(staff, "/tasks/?backend=second")
    document = staff.get("/tasks/status.json", {"backend": "second"}).json()

    assert document["backend"] == "second"
    assert document["journal"] == f"{env.journal}-second"
    assert document["totals"]["READY"] == 1
    assert page.rows("queues")[-1][:2] == ["(all)", "1"]
    task = staff.get(f"/tasks/task/{second.id}/", {"backend": "second"})
    assert read_page(html_of(task)).texts["task-status"] == "READY"
    assert staff.get(f"/tasks/task/{second.id}/").status_code == 404  # not the default's


# -- what it shows --------------------------------------------------------------------------


TIME_DEPENDENT = {
    "generated_at",
    "oldest_ready_age_s",
    "running_for_s",
    "heartbeat_age_s",
    "last_heartbeat_at",
}


def comparable(document: Any) -> Any:
    """The document minus what changes from one second to the next: the time it was read,
    ages, the latest heartbeat; the chart's minutes are compared where they counted tasks."""
    if isinstance(document, dict):
        kept = {
            key: comparable(value) for key, value in document.items() if key not in TIME_DEPENDENT
        }
        if "finished_per_minute" in kept:
            kept["finished_per_minute"] = {
                minute["minute"]: minute
                for minute in document["finished_per_minute"]
                if minute["SUCCESSFUL"] or minute["FAILED"]
            }
        return kept
    if isinstance(document, list):
        return [comparable(item) for item in document]
    return document


def test_status_json_is_the_document_procpool_status_json_prints(
    env: Env, users: Users, mixed_run: MixedRun
) -> None:
    response = client_of(users.staff).get("/tasks/status.json")
    from_command = status_json(env)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    from_page = response.json()
    assert comparable(from_page) == comparable(from_command)
    assert set(from_page) == set(from_command)
    lists = ("running", "supervisors", "recent_failures", "quarantined")
    assert [len(from_page[key]) for key in lists] == [1, 1, 2, 1]  # none compared empty
    assert from_page["totals"]["SUCCESSFUL"] == 2


def test_the_page_shows_the_numbers_of_status_json(
    env: Env, users: Users, mixed_run: MixedRun
) -> None:
    staff = client_of(users.staff)
    page = page_of(staff, "/tasks/")
    document = staff.get("/tasks/status.json").json()

    assert page.heads["queues"] == [["Queue", *COUNTS, "Oldest ready"]]
    expected = {
        name: [str(queue[key]) for key in COUNTS]
        for name, queue in [*document["queues"].items(), ("(all)", document["totals"])]
    }
    assert {row[0]: row[1 : 1 + len(COUNTS)] for row in page.rows("queues")} == expected
    assert expected["default"] == ["0", "1", "1", "2", "2", "0", "0", "1"]
    ages = {row[0]: row[1 + len(COUNTS)] for row in page.rows("queues")}
    assert ages["default"] == ages["high"] == "-"
    assert re.fullmatch(r"\d+\.\ds", ages["low"]), ages

    [supervisor] = document["supervisors"]
    assert page.captions["supervisors"] == "Supervisors: 1 live"
    [beat] = page.rows("supervisors")
    assert beat[:5] == ["w1", str(supervisor["pid"]), supervisor["host"], "2", "default"]
    assert beat[7] == "yes"

    assert page.captions["running"] == "Running: 1"
    [running] = page.rows("running")
    assert running[:5] == [mixed_run.running.id, "tests.tasks.block_until", "default", "w1", "1"]

    assert page.captions["failures"] == "Recent failures: 2"
    failures = {row[1]: row for row in page.rows("failures")}
    assert list(failures) == [failure["id"] for failure in document["recent_failures"]]
    assert failures[mixed_run.failed.id][2:5] == ["tests.tasks.fail_with", "default", "1"]
    # The error line shows; the traceback is folded under it.
    folded = dict(page.details)
    traceback = folded["ValueError: boom"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.endswith("ValueError: boom")
    assert "raise ValueError(message)" in traceback
    assert folded[
        "procpool_tasks.exceptions.TaskNotLoadable: 'deployed_tasks.greet' cannot be imported: "
        "No module named 'deployed_tasks'"
    ]

    assert page.captions["quarantined"] == "Quarantined: 1"
    [bad] = page.rows("quarantined")
    [quarantined] = document["quarantined"]
    assert bad == [
        quarantined["name"],
        "deployed_tasks.greet",
        "default",
        quarantined["reason"],
        quarantined["file"],
    ]

    # The chart: the minutes that counted tasks, as finished_per_minute has them.
    drawn = {
        minute["data-minute"]: (int(minute["data-successful"]), int(minute["data-failed"]))
        for minute in page.chart_minutes
    }
    counted = {
        minute["minute"]: (minute["SUCCESSFUL"], minute["FAILED"])
        for minute in document["finished_per_minute"]
        if minute["SUCCESSFUL"] or minute["FAILED"]
    }
    assert drawn == counted
    assert page.texts["finished-summary"] == (
        "4 finished in the last hour: ■ 2 successful, ■ 2 failed; the busiest minute: "
        f"{max(s + f for s, f in counted.values())}."
    )
    assert page.forms == []  # read-only: admin_actions is off


def test_a_journal_that_does_not_exist_is_said_so_above_empty_tables(
    env: Env, users: Users
) -> None:
    page = page_of(client_of(users.staff), "/tasks/")

    assert page.texts["journal-problem"] == (
        f"The journal directory {env.journal} does not exist: no task was ever enqueued "
        "with this path, or OPTIONS['path'] points elsewhere"
    )
    assert [row[:7] for row in page.rows("queues")] == [
        [name, "0", "0", "0", "0", "0", "0"] for name in ("default", "high", "low", "(all)")
    ]
    assert page.rows("supervisors") == [["No supervisor serves this backend."]]
    assert page.rows("running") == [["No task is running."]]
    assert page.rows("failures") == [["No task failed."]]
    assert page.rows("quarantined") == [["Nothing is quarantined."]]
    assert page.chart_minutes == []
    assert page.texts["finished-summary"] == "No task finished in the last hour."
    assert not env.journal.exists()  # a look makes nothing


def test_the_page_and_a_tasks_page_read_a_read_only_mount(env: Env, users: Users) -> None:
    with journal_on_tmpfs(env) as mount_point:
        run = run_and_leave(env)
        with read_only(mount_point):
            staff = client_of(users.staff)
            page = page_of(staff, "/tasks/")
            task = read_page(html_of(staff.get(f"/tasks/task/{run.failed}/")))

    assert "journal-problem" not in page.texts
    rows = {row[0]: row[1 : 1 + len(COUNTS)] for row in page.rows("queues")}
    assert rows["default"] == ["1", "0", "0", "1", "2", "0", "0", "1"]
    assert sorted(row[1] for row in page.rows("failures")) == sorted(
        [run.not_importable, run.failed]
    )
    assert [row[0] for row in page.rows("quarantined")] == [run.not_importable]
    assert task.texts["task-status"] == "FAILED"


# -- escaping ---------------------------------------------------------------------------------


def test_arguments_errors_task_paths_queues_and_worker_ids_show_as_text(
    env: Env, users: Users, actions: None
) -> None:
    echoed = tasks.echo.enqueue(SCRIPT, note="<b>bold</b>")
    failed = tasks.fail_with.enqueue("<img src=x onerror=alert(2)>")
    bad = enqueue_bad_task_path()
    enqueue_bad_task_path(queue_name="<i>q</i>")  # a queue no worker serves: it waits
    env.run_batch("--worker-id", "<em>w1</em>")
    staff = client_of(users.staff)

    html = html_of(staff.get("/tasks/"))
    page = read_page(html)
    # No markup of theirs reaches the page: not a tag, not an attribute.
    assert "<script" not in html
    assert "<img" not in html
    assert "<i>" not in html
    assert "&lt;img src=x onerror=alert(2)&gt;" in html
    assert "tests.&lt;script&gt;alert(3)&lt;/script&gt;" in html
    # ... and a person reads them as they were written.
    failures = {row[1]: row for row in page.rows("failures")}
    assert failures[bad][2] == BAD_TASK_PATH
    assert dict(page.details)[BAD_TASK_ERROR]
    assert "ValueError: <img src=x onerror=alert(2)>" in dict(page.details)
    [quarantined] = page.rows("quarantined")
    assert quarantined[:4] == [bad, BAD_TASK_PATH, "default", BAD_TASK_ERROR]
    assert "<i>q</i>" in {row[0] for row in page.rows("queues")}

    html = html_of(staff.get(f"/tasks/task/{echoed.id}/"))
    task = read_page(html)
    assert "<script" not in html
    assert "<b>" not in html
    assert "<em>" not in html
    assert json.loads(task.raw_texts["task-args"]) == [SCRIPT]
    assert json.loads(task.raw_texts["task-kwargs"]) == {"note": "<b>bold</b>"}
    assert json.loads(task.raw_texts["task-return-value"]) == {
        "args": [SCRIPT],
        "kwargs": {"note": "<b>bold</b>"},
    }
    assert task.rows("worker-ids") == [["1", "<em>w1</em>"]]

    html = html_of(staff.get(f"/tasks/task/{failed.id}/"))
    assert "<img" not in html
    [(summary, traceback)] = read_page(html).details
    assert summary == "1. builtins.ValueError"
    assert traceback.endswith("ValueError: <img src=x onerror=alert(2)>")

    # The task page of a task that does not import is a 404 that says so, as text.
    missing = staff.get(f"/tasks/task/{bad}/")
    assert missing.status_code == 404
    assert "<script" not in missing.content.decode()
    assert read_page(missing.content.decode()).texts["not-found"] == (
        f"Backend 'default' has no task {bad!r}: {bad}: 'tests.<script>alert(3)</script>' "
        'cannot be imported: Module "tests" does not define a "<script>alert(3)</script>" '
        "attribute/class."
    )

    # A message that names the task path escapes it too.
    token = next(form for form in page.forms if form.action.startswith(f"/tasks/task/{bad}/"))
    followed = staff.post(token.action, token.fields, follow=True)
    html = html_of(followed)
    assert "<script" not in html
    assert read_page(html).texts["messages"] == (
        f"Task {bad} ({BAD_TASK_PATH}) is READY again, as attempt 2."
    )
    assert (
        f"Task {bad} (tests.&lt;script&gt;alert(3)&lt;/script&gt;) is READY again, as "
        "attempt 2." in html
    )


# -- actions ----------------------------------------------------------------------------------


def test_requeue_needs_the_csrf_token_and_then_runs_the_failed_task_again(
    env: Env, users: Users, actions: None
) -> None:
    failed = tasks.fail_with.enqueue("boom")
    env.run_batch()
    staff = client_of(users.staff, enforce_csrf_checks=True)
    requeue_url = f"/tasks/task/{failed.id}/requeue/"

    assert staff.post(requeue_url).status_code == 403
    assert staff.post(requeue_url, {"csrfmiddlewaretoken": "x" * 64}).status_code == 403
    assert state_of(env, failed.id) == "FAILED"

    page = page_of(staff, "/tasks/")
    [form] = page.forms
    assert (form.action, form.method, form.buttons) == (requeue_url, "post", ["Re-queue"])
    assert set(form.fields) == {"csrfmiddlewaretoken", "next"}
    done = staff.post(form.action, form.fields)

    assert done.status_code == 302
    assert done["Location"] == "/tasks/"
    assert state_of(env, failed.id) == "READY"
    page = read_page(html_of(staff.get("/tasks/")))
    assert page.texts["messages"] == (
        f"Task {failed.id} (tests.tasks.fail_with) is READY again, as attempt 2."
    )
    assert page.rows("queues")[0][:2] == ["default", "1"]
    html = html_of(staff.get(f"/tasks/task/{failed.id}/"))
    # The message was shown once, on the page after the redirect.
    assert "is READY again" not in html
    assert read_page(html).texts["task-status"] == "READY"

    # From the task page, back to it; a task that is not FAILED is refused with the reason.
    task_forms = read_page(html).forms
    assert [form.buttons for form in task_forms] == [["Cancel"]]  # READY: nothing to re-queue
    refused = staff.post(requeue_url, {**form.fields, "next": f"/tasks/task/{failed.id}/"})
    assert refused["Location"] == f"/tasks/task/{failed.id}/"
    assert read_page(html_of(staff.get(refused["Location"]))).texts["messages"] == (
        f"Task {failed.id} was not re-queued: it is READY; only FAILED tasks can be re-queued."
    )

    env.run_batch()
    failed.refresh()
    assert str(failed.status) == "FAILED"
    assert len(failed.worker_ids) == 2  # it ran again, as attempt 2


def test_cancel_needs_the_csrf_token_and_then_cancels_a_ready_task(
    env: Env, users: Users, actions: None
) -> None:
    ready = tasks.add.enqueue(1, 2)
    staff = client_of(users.staff, enforce_csrf_checks=True)
    cancel_url = f"/tasks/task/{ready.id}/cancel/"

    assert staff.post(cancel_url).status_code == 403
    assert state_of(env, ready.id) is None  # READY, never claimed

    [form] = page_of(staff, f"/tasks/task/{ready.id}/").forms
    assert (form.action, form.method, form.buttons) == (cancel_url, "post", ["Cancel"])
    assert set(form.fields) == {"csrfmiddlewaretoken", "next"}
    done = staff.post(form.action, form.fields)

    assert done.status_code == 302
    assert done["Location"] == f"/tasks/task/{ready.id}/"
    page = page_of(staff, done["Location"])
    assert page.texts["messages"] == (
        f"Task {ready.id} (tests.tasks.add) is cancelled: it will never run."
    )
    assert page.texts["task-status"] == "FAILED"
    assert [form.buttons for form in page.forms] == [["Re-queue"]]  # FAILED now
    ready.refresh()
    assert [error.traceback for error in ready.errors] == [
        "procpool_tasks.exceptions.TaskCancelled: The task was cancelled before it ran\n"
    ]
    # A finished task is refused with the reason.
    refused = staff.post(cancel_url, form.fields, follow=True)
    assert read_page(html_of(refused)).texts["messages"] == (
        f"Task {ready.id} was not cancelled: it is FAILED; only READY and RUNNING tasks can be "
        "cancelled."
    )
    env.run_batch()
    assert state_of(env, ready.id) == "FAILED"  # it never ran


def test_cancel_of_a_running_task_stops_it(env: Env, users: Users, actions: None) -> None:
    release, marker = env.tmp_path / "release", env.tmp_path / "started"
    running = tasks.block_until.enqueue(str(release), str(marker))
    worker = env.start_worker("--processes", "1")
    wait_for(marker.exists, what="the task to start")
    staff = client_of(users.staff)

    [form] = page_of(staff, f"/tasks/task/{running.id}/").forms
    page = read_page(html_of(staff.post(form.action, form.fields, follow=True)))

    assert page.texts["messages"] == (
        f"Task {running.id} (tests.tasks.block_until) is cancelled: its worker process is "
        "being stopped, and it ends FAILED."
    )
    wait_for(lambda: state_of(env, running.id) == "FAILED", what="its process to be stopped")
    assert worker.stop() == 0


def test_drop_needs_the_csrf_token_and_then_deletes_the_quarantined_record(
    env: Env, users: Users, actions: None
) -> None:
    bad = enqueue_bad_task_path()
    env.run_batch()
    quarantined = env.journal / "quarantine" / f"{bad}.json"
    assert quarantined.exists()
    staff = client_of(users.staff, enforce_csrf_checks=True)
    drop_url = f"/tasks/quarantine/{bad}/drop/"

    assert staff.post(drop_url).status_code == 403
    assert quarantined.exists()

    forms = {form.action: form for form in page_of(staff, "/tasks/").forms}
    assert set(forms) == {drop_url, f"/tasks/task/{bad}/requeue/"}
    assert forms[drop_url].buttons == ["Drop"]
    done = staff.post(drop_url, forms[drop_url].fields)

    assert done.status_code == 302
    assert not quarantined.exists()
    page = page_of(staff, "/tasks/")
    assert page.texts["messages"] == f"Dropped the quarantined record {bad}."
    assert page.rows("quarantined") == [["Nothing is quarantined."]]
    assert state_of(env, bad) == "FAILED"  # the task stays as it ended
    again = staff.post(drop_url, forms[drop_url].fields, follow=True)
    assert read_page(html_of(again)).texts["messages"] == (
        f"Nothing was dropped: no quarantined record is named {bad!r}."
    )


def test_with_admin_actions_off_there_are_no_buttons_and_posts_are_refused(
    env: Env, users: Users
) -> None:
    failed = tasks.fail_with.enqueue("boom")
    bad = enqueue_bad_task_path()
    env.run_batch()
    # CSRF is not what stops these: the client does not enforce it.
    staff = client_of(users.staff)

    ready = tasks.add.enqueue(1, 2)
    assert page_of(staff, "/tasks/").forms == []
    assert page_of(staff, f"/tasks/task/{failed.id}/").forms == []
    assert page_of(staff, f"/tasks/task/{ready.id}/").forms == []
    assert staff.post(f"/tasks/task/{failed.id}/requeue/").status_code == 403
    assert staff.post(f"/tasks/task/{ready.id}/cancel/").status_code == 403
    assert state_of(env, ready.id) is None  # still READY
    assert staff.post(f"/tasks/quarantine/{bad}/drop/").status_code == 403
    assert state_of(env, failed.id) == "FAILED"
    assert (env.journal / "quarantine" / f"{bad}.json").exists()


@pytest.mark.parametrize(
    "url",
    [
        "/tasks/task/0123456789abcdef-0/requeue/",
        "/tasks/task/0123456789abcdef-0/cancel/",
        "/tasks/quarantine/x/drop/",
    ],
)
def test_actions_answer_only_post(env: Env, users: Users, url: str, actions: None) -> None:
    response = client_of(users.staff).get(url)

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert client_of(users.staff).post("/tasks/").status_code == 405


# -- refresh ----------------------------------------------------------------------------------


def test_the_page_refreshes_itself_unless_refresh_is_0(env: Env, users: Users) -> None:
    staff = client_of(users.staff)

    assert page_of(staff, "/tasks/").meta_refresh == ["10"]
    assert page_of(staff, "/tasks/?refresh=0").meta_refresh == []
    assert page_of(staff, "/tasks/?refresh=3").meta_refresh == ["3"]
    assert page_of(staff, "/tasks/?refresh=soon").meta_refresh == ["10"]
    with override_settings(PROCPOOL_TASKS_STATUS_REFRESH_S=60):
        assert page_of(staff, "/tasks/").meta_refresh == ["60"]
        assert page_of(staff, "/tasks/?refresh=0").meta_refresh == []
    with override_settings(PROCPOOL_TASKS_STATUS_REFRESH_S=0):
        assert page_of(staff, "/tasks/").meta_refresh == []
        assert page_of(staff, "/tasks/?refresh=5").meta_refresh == ["5"]


def test_the_refresh_links_switch_it_off_and_on_keeping_the_backend(env: Env, users: Users) -> None:
    staff = client_of(users.staff)
    html = html_of(staff.get("/tasks/?backend=second"))
    assert '<a href="?backend=second&amp;refresh=0">stop</a>' in html

    html = html_of(staff.get("/tasks/?backend=second&refresh=0"))
    assert '<a href="?backend=second">refresh</a>' in html


# -- one task ---------------------------------------------------------------------------------


def test_the_task_page_shows_status_times_attempts_errors_and_arguments(
    env: Env, users: Users
) -> None:
    env.variables["PROCPOOL_TEST_OPTIONS"] = json.dumps(
        {"retry": {"attempts": 2, "delay": 0, "jitter": False}}
    )
    failed = tasks.fail_with.using(priority=5).enqueue("boom")
    env.run_batch("--worker-id", "w1")
    failed.refresh()

    task = page_of(client_of(users.staff), f"/tasks/task/{failed.id}/")

    assert task.texts["task-status"] == "FAILED"
    fields = task.texts["task-fields"]
    assert fields.startswith(
        "Status FAILED Task tests.tasks.fail_with Queue default Priority 5 Backend default "
        "Enqueued "
    )
    assert fields.endswith("Attempts 2")
    for moment in (failed.enqueued_at, failed.started_at, failed.finished_at):
        assert moment is not None
        assert f"{moment:%Y-%m-%d %H:%M:%S.%f} UTC" in fields
    assert task.rows("worker-ids") == [["1", "w1"], ["2", "w1"]]
    assert [summary for summary, _ in task.details] == [
        "1. builtins.ValueError",
        "2. builtins.ValueError",
    ]
    assert all(body.endswith("ValueError: boom") for _, body in task.details)
    assert json.loads(task.raw_texts["task-args"]) == ["boom"]
    assert json.loads(task.raw_texts["task-kwargs"]) == {}
    assert "task-return-value" not in task.texts


def test_a_finished_tasks_page_does_not_refresh_a_ready_or_running_ones_does(
    env: Env, users: Users
) -> None:
    release, marker = env.tmp_path / "release", env.tmp_path / "started"
    succeeded = tasks.add.enqueue(1, 2)
    failed = tasks.fail_with.enqueue("boom")
    worker = env.start_worker("--processes", "2", "--queue-name", "default")
    running = tasks.block_until.enqueue(str(release), str(marker))
    waiting = tasks.add.using(queue_name="low").enqueue(3, 4)  # no worker serves "low"
    wait_for(marker.exists, what="block_until to start")
    wait_for(lambda: status_of(succeeded) == "SUCCESSFUL", what="add to succeed")
    wait_for(lambda: status_of(failed) == "FAILED", what="fail_with to fail")
    staff = client_of(users.staff)

    def page_of_task(result: Any) -> tuple[str, Page]:
        html = html_of(staff.get(f"/tasks/task/{result.id}/"))
        return html, read_page(html)

    for result, status in [(running, "RUNNING"), (waiting, "READY")]:
        html, page = page_of_task(result)
        assert (page.texts["task-status"], page.meta_refresh) == (status, ["10"])
        assert page.texts["user-tools"] == "Logged in as staff · refreshes every 10 s (stop)"
    for result, status in [(succeeded, "SUCCESSFUL"), (failed, "FAILED")]:
        html, page = page_of_task(result)
        assert (page.texts["task-status"], page.meta_refresh) == (status, [])
        assert "<script" not in html
        assert page.texts["user-tools"] == "Logged in as staff ·"
    # The running task's page stops refreshing once it has finished.
    release.touch()
    wait_for(lambda: status_of(running) == "SUCCESSFUL", what="block_until to finish")
    assert page_of_task(running)[1].meta_refresh == []
    assert worker.stop() == 0


@pytest.mark.parametrize(
    ("result_id", "detail"),
    [
        ("0123456789abcdef-0", "Backend 'default' has no task '0123456789abcdef-0'."),
        ("..", "Backend 'default' has no task '..'."),
    ],
)
def test_a_task_that_does_not_exist_is_a_404_page(
    env: Env, users: Users, result_id: str, detail: str
) -> None:
    tasks.add.enqueue(1, 2)  # a journal, with a segment

    response = client_of(users.staff).get(f"/tasks/task/{result_id}/")

    assert response.status_code == 404
    page = read_page(response.content.decode())
    assert page.texts["not-found"] == detail


def test_the_page_shows_each_schedule_with_its_last_and_next_tick(env: Env, users: Users) -> None:
    schedules: dict[str, Any] = {
        "tick": {"task": "tests.tasks.add", "every": 1, "args": [1, 2]},
        "yearly": {"task": "tests.tasks.echo", "cron": "0 0 1 1 *", "queue_name": "low"},
    }
    set_schedules(env, **schedules)
    worker = start_live_worker(env)
    wait_for(lambda: fired(env), what="a first fire")
    assert worker.stop() == 0
    [last_id] = max(fired(env).items())[1]
    with_schedules: dict[str, Any] = copy.deepcopy(settings.TASKS)
    with_schedules["default"]["OPTIONS"]["schedule"] = schedules

    with override_settings(TASKS=with_schedules):
        page = page_of(client_of(users.staff), "/tasks/")
        document = status_json(env)

    assert page.captions["schedules"] == "Schedules: 2 (times in UTC)"
    rows = {row[0]: row for row in page.rows("schedules")}
    assert rows["tick"][1:4] == ["tests.tasks.add", "default", "every 1s"]
    assert rows["tick"][5] == last_id
    assert rows["yearly"][1:6] == ["tests.tasks.echo", "low", "0 0 1 1 *", "-", "-"]
    next_new_year = datetime.fromisoformat(document["schedules"][1]["next_tick"])
    assert rows["yearly"][6] == f"{next_new_year:%Y-%m-%d %H:%M:%S} UTC"
