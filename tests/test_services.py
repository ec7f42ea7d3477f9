"""tests/services.py starts real Redis, PostgreSQL and Chromium, or says how to install them."""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

from tests import services, system_deps
from tests.conftest import REPO_ROOT
from tests.services import Chromium, PostgresServer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_redis_server_answers_ping_set_and_get(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:")
    with redis.Redis.from_url(redis_server) as client:
        assert client.ping() is True
        client.set("greeting", "hello")
        assert client.get("greeting") == b"hello"


def test_postgres_server_runs_queries_in_its_own_database(postgres_server: PostgresServer) -> None:
    with psycopg.connect(postgres_server.conninfo) as connection:
        connection.execute("CREATE TABLE note (body text)")
        connection.execute("INSERT INTO note VALUES (%s)", ["written"])
        row = connection.execute(
            "SELECT current_database(), current_user, inet_server_port(), (SELECT body FROM note)"
        ).fetchone()
    assert row == ("procpool_tasks", "procpool", postgres_server.port, "written")
    assert postgres_server.django_database == {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": str(postgres_server.port),
        "USER": "procpool",
        "PASSWORD": "",
        "NAME": "procpool_tasks",
    }


# Run by every xdist worker of an inner pytest run: each records what its cluster holds.
_PER_WORKER_PROBE = """
import json, os
from pathlib import Path

import psycopg


def test_record_this_workers_cluster(postgres_server, worker_id):
    with psycopg.connect(postgres_server.conninfo) as connection:
        # A shared cluster would fail here for the second worker: the table would exist.
        connection.execute("CREATE TABLE probe (worker text)")
        connection.execute("INSERT INTO probe VALUES (%s)", [worker_id])
        workers = [row[0] for row in connection.execute("SELECT worker FROM probe")]
        data_dir = connection.execute("SHOW data_directory").fetchone()[0]
    record = {"port": postgres_server.port, "data_dir": data_dir, "workers": workers}
    Path(os.environ["PROBE_OUT"], worker_id + ".json").write_text(json.dumps(record))
"""


@pytest.mark.slow
def test_each_xdist_worker_gets_a_postgres_cluster_of_its_own(tmp_path: Path) -> None:
    services.require(system_deps.POSTGRES)  # here, a missing PostgreSQL fails with its hint
    (tmp_path / "test_probe.py").write_text(_PER_WORKER_PROBE)
    out = tmp_path / "out"
    out.mkdir()
    variables = {
        name: value for name, value in os.environ.items() if not name.startswith("PYTEST_")
    }
    variables |= {"PYTHONPATH": str(REPO_ROOT), "PROBE_OUT": str(out)}
    done = subprocess.run(
        # --dist each: both workers run the probe, each in its own session.
        [sys.executable, "-m", "pytest", "-p", "tests.services", "-p", "no:cacheprovider",
         "-n", "2", "--dist", "each", "test_probe.py"],
        cwd=tmp_path,
        env=variables,
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    records = {path.stem: json.loads(path.read_text()) for path in out.iterdir()}
    assert sorted(records) == ["gw0", "gw1"]
    assert [record["workers"] for record in records.values()] == [[worker] for worker in records]
    assert records["gw0"]["port"] != records["gw1"]["port"]
    assert records["gw0"]["data_dir"] != records["gw1"]["data_dir"]
    # Each worker stopped and deleted its cluster at the end of its session.
    assert not any(Path(record["data_dir"]).exists() for record in records.values())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def page_url(tmp_path: Path) -> Iterator[str]:
    """A page served over HTTP from 127.0.0.1 that writes part of its text from a script."""
    (tmp_path / "page.html").write_text(
        "<!doctype html><html><head><title>Probe</title></head><body>\n"
        "<h1>Served statically</h1><p id='dynamic'></p>\n"
        "<script>\n"
        "document.getElementById('dynamic').textContent = ['Written', 'by', 'script'].join(' ');\n"
        "setTimeout(() => document.body.append('After a timer'), 200);\n"
        "</script></body></html>\n"
    )
    handler = functools.partial(_QuietHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/page.html"
        finally:
            server.shutdown()
            thread.join(10)


def test_chromium_renders_text_that_the_pages_scripts_write(
    chromium: Chromium, page_url: str
) -> None:
    assert chromium.text(page_url) == "Served statically Written by script After a timer"


def test_chromium_with_javascript_off_shows_the_page_as_served(
    chromium: Chromium, page_url: str
) -> None:
    assert chromium.text(page_url, javascript=False) == "Served statically"


def test_chromium_saves_a_png_screenshot_of_the_requested_size(
    chromium: Chromium, page_url: str, tmp_path: Path
) -> None:
    path = chromium.screenshot(page_url, tmp_path / "page.png", width=640, height=480)
    png = path.read_bytes()
    assert png[:8] == PNG_SIGNATURE
    # The IHDR chunk comes first: length, type, then width and height.
    assert png[12:16] == b"IHDR"
    assert struct.unpack(">II", png[16:24]) == (640, 480)


def test_visible_text_leaves_out_head_scripts_and_styles() -> None:
    html = (
        "<html><head><title>T</title><style>p {}</style></head>"
        "<body><p>one</p><script>var two;</script><noscript>three</noscript>"
        "<div>f<b>ou</b>r</div>five<br>six</body></html>"
    )
    assert services.visible_text(html) == "one four five six"


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        pytest.param(
            system_deps.REDIS,
            "redis-server not found on PATH; install Debian's package with "
            "`sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            "redis-server` (`python3 -m tox` does that itself when run as root)",
            id="redis",
        ),
        pytest.param(
            system_deps.CHROMIUM,
            "chromium not found on PATH; install Debian's package with "
            "`sudo apt-get update && sudo apt-get install -y --no-install-recommends "
            "chromium` (`python3 -m tox` does that itself when run as root)",
            id="chromium",
        ),
        pytest.param(
            system_deps.POSTGRES,
            "PostgreSQL (initdb, pg_ctl) not found in /usr/lib/postgresql/*/bin and on PATH; "
            "install Debian's package with `sudo apt-get update && sudo apt-get install -y "
            "--no-install-recommends postgresql` (`python3 -m tox` does that itself when run "
            "as root)",
            id="postgres",
        ),
    ],
)
def test_missing_program_fails_the_test_with_the_command_that_installs_it(
    program: system_deps.Program,
    expected: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing on PATH, and Debian's PostgreSQL directory searched somewhere empty.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(system_deps, "POSTGRES_LIB", tmp_path)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(pytest.fail.Exception) as failure:
        services.require(program)
    assert failure.value.msg == expected
