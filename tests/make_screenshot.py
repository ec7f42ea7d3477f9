"""Write the README's screenshot of the status page, ``docs/status-page.png``::

    python3 -m tox exec -e py313-django61 -- python -m tests.make_screenshot [PATH]

It does what the browser tests do (``tests.status_site``): a real ``procpool_worker``
works a fresh journal (tasks that succeed, fail, run, wait, and one whose record is
quarantined), ``runserver`` serves the page and headless Chromium saves it. A test lasts
seconds, not an hour, so the chart's earlier minutes are history this script writes into
the journal first: ``add`` tasks that finished over the last hour.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
django.setup()

from django.utils import timezone  # noqa: E402

from procpool_tasks import journal  # noqa: E402
from tests import tasks  # noqa: E402
from tests.conftest import REPO_ROOT, Env, private_env  # noqa: E402
from tests.services import Chromium, require  # noqa: E402
from tests.status_site import start_site, work_a_journal  # noqa: E402
from tests.system_deps import CHROMIUM  # noqa: E402

logger = logging.getLogger("make_screenshot")

DEFAULT_PATH = REPO_ROOT / "docs" / "status-page.png"
WIDTH, HEIGHT = 1280, 1180
HISTORY_MINUTES = 59


def add_history(env: Env) -> int:
    """Tasks that finished SUCCESSFUL over the last hour, a few a minute; how many."""
    store = journal.Journal(env.journal, durable=False)
    now = timezone.now()
    written = 0
    for minutes_ago in range(HISTORY_MINUTES, 0, -1):
        finished_at = now - timedelta(minutes=minutes_ago)
        # A day's rhythm in an hour: busier, quieter, busier.
        for n in range(2 + (minutes_ago * 7) % 9):
            enqueued_at = finished_at - timedelta(seconds=1 + n)
            record_id = store.append(
                journal.Record(
                    id="",
                    task_path=tasks.add.module_path,
                    args=[n, minutes_ago],
                    kwargs={},
                    priority=0,
                    queue_name="default",
                    backend="default",
                    enqueued_at=enqueued_at,
                )
            )
            store.write_state(
                journal.State(
                    id=record_id,
                    status=journal.SUCCESSFUL,
                    version=2,
                    worker_ids=("web-1",),
                    started_at=finished_at,
                    last_attempted_at=finished_at,
                    finished_at=finished_at,
                    return_value=n + minutes_ago,
                )
            )
            written += 1
    return written


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = Path(argv[0]).resolve() if argv else DEFAULT_PATH
    chromium_binary = require(CHROMIUM)
    with (
        tempfile.TemporaryDirectory(prefix="status-page-") as scratch,
        private_env(Path(scratch)) as env,
    ):
        logger.info("History: %d tasks over the last hour", add_history(env))
        site = start_site(env)
        worked = work_a_journal(env)
        try:
            Chromium(chromium_binary, Path(scratch)).screenshot(
                site.url("/tasks/?refresh=0"), path, width=WIDTH, height=HEIGHT
            )
        finally:
            worked.finish()
    logger.info("Wrote %s (%dx%d)", path, WIDTH, HEIGHT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
