"""The status page as a person sees it: Debian's headless Chromium loads it from a real
``runserver`` (``tests.status_site``) against a journal a real ``procpool_worker`` is
working, checks the numbers it renders, with JavaScript on and off, and saves a
screenshot. Without Chromium these tests fail with the command that installs it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Env
from tests.pages import Page, read_page
from tests.services import Chromium
from tests.status_site import (
    BAD_TASK_PATH,
    SCRIPT,
    SCRIPT_THAT_WRITES,
    Site,
    WorkedJournal,
    start_site,
    work_a_journal,
)
from tests.test_status import COUNTS

#: A server, a worker and a few Chromium runs each: more than most tests on a loaded machine.
pytestmark = pytest.mark.timeout(300)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SCREENSHOT_SIZE = (1280, 1400)


@pytest.fixture
def site(env: Env) -> Site:
    return start_site(env)


@pytest.fixture
def worked(env: Env) -> Iterator[WorkedJournal]:
    worked = work_a_journal(env)
    yield worked
    worked.finish()


def status_document(env: Env) -> dict[str, Any]:
    """``procpool_status --json``, as an operator would run it beside the page."""
    document: dict[str, Any] = json.loads(env.manage("procpool_status", "--json").stdout)
    return document


def assert_page_shows(page: Page, document: dict[str, Any], worked: WorkedJournal) -> None:
    """The numbers of ``procpool_status --json`` are the numbers on the page."""
    expected = {
        name: [str(queue[key]) for key in COUNTS]
        for name, queue in [*document["queues"].items(), ("(all)", document["totals"])]
    }
    assert {row[0]: row[1 : 1 + len(COUNTS)] for row in page.rows("queues")} == expected
    assert expected["default"] == ["0", "1", "1", "6", "2", "0", "0", "1"]
    assert expected["high"] == ["0", "0", "0", "1", "0", "0", "0", "0"]
    assert expected["low"] == ["2", "0", "0", "0", "0", "0", "0", "0"]

    assert page.captions["supervisors"] == "Supervisors: 1 live"
    [supervisor] = page.rows("supervisors")
    [beat] = document["supervisors"]
    assert supervisor[:5] == ["web-1", str(beat["pid"]), beat["host"], "2", "default, high"]
    assert supervisor[-1] == "yes"

    [running] = page.rows("running")
    assert running[:5] == [worked.running.id, "tests.tasks.block_until", "default", "web-1", "1"]

    failures = [row[1:3] for row in page.rows("failures")]
    assert failures == [
        [failure["id"], failure["task_path"]] for failure in document["recent_failures"]
    ]
    assert sorted(failures) == sorted(
        [[worked.failed.id, "tests.tasks.fail_with"], [worked.not_importable, BAD_TASK_PATH]]
    )
    [quarantined] = page.rows("quarantined")
    assert quarantined[:3] == [worked.not_importable, BAD_TASK_PATH, "default"]

    drawn = [(int(g["data-successful"]), int(g["data-failed"])) for g in page.chart_minutes]
    minutes = document["finished_per_minute"]
    assert sum(s for s, _ in drawn) == sum(m["SUCCESSFUL"] for m in minutes) == 7
    assert sum(f for _, f in drawn) == sum(m["FAILED"] for m in minutes) == 2
    assert page.texts["finished-summary"].startswith(
        "9 finished in the last hour: ■ 7 successful, ■ 2 failed;"
    )


def test_the_browser_shows_the_numbers_of_a_worked_journal_and_a_screenshot_is_saved(
    env: Env, site: Site, worked: WorkedJournal, chromium: Chromium, tmp_path: Path
) -> None:
    document = status_document(env)

    dom = chromium.dom(site.url("/tasks/"))

    page = read_page(dom)
    assert_page_shows(page, document, worked)
    assert page.meta_refresh == ["10"]  # it refreshes itself...
    assert read_page(chromium.dom(site.url("/tasks/?refresh=0"))).meta_refresh == []  # ...or not
    # The failure's error line, with its traceback folded under it.
    traceback = dict(page.details)[f"ValueError: {SCRIPT}"]
    assert traceback.startswith("Traceback (most recent call last):")

    path = chromium.screenshot(
        site.url("/tasks/?refresh=0"),
        tmp_path / "status-page.png",
        width=SCREENSHOT_SIZE[0],
        height=SCREENSHOT_SIZE[1],
    )
    png = path.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == SCREENSHOT_SIZE
    assert len(png) > 20_000  # a page, not a blank


def test_the_page_works_with_javascript_off(
    env: Env, site: Site, worked: WorkedJournal, chromium: Chromium
) -> None:
    document = status_document(env)

    page = read_page(chromium.dom(site.url("/tasks/"), javascript=False))

    assert_page_shows(page, document, worked)
    assert page.meta_refresh == ["10"]  # a meta refresh needs no script
    assert dict(page.details)[f"ValueError: {SCRIPT}"].endswith(f"ValueError: {SCRIPT}")
    task = read_page(chromium.dom(site.url(f"/tasks/task/{worked.failed.id}/"), javascript=False))
    assert task.texts["task-status"] == "FAILED"
    assert json.loads(task.raw_texts["task-args"]) == [SCRIPT]


def test_a_script_argument_shows_as_text_and_never_runs(
    env: Env, site: Site, worked: WorkedJournal, chromium: Chromium
) -> None:
    echoed = worked.echoed.id

    dom = chromium.dom(site.url(f"/tasks/task/{echoed}/"))

    task = read_page(dom)
    assert "<script" not in dom  # the browser made no element of it
    assert f"<title>Task {echoed} | Tasks</title>" in dom  # the script did not run
    assert task.texts["task-status"] == "SUCCESSFUL"
    assert json.loads(task.raw_texts["task-args"]) == [SCRIPT, SCRIPT_THAT_WRITES]
    text = chromium.text(site.url(f"/tasks/task/{echoed}/"))
    assert f'"{SCRIPT}"' in text
    assert "document.title" in text
