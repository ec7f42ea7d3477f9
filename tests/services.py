"""Fixtures that run real outside programs: a Redis server, a PostgreSQL cluster, Chromium.

Servers are session-scoped, so each pytest-xdist worker (its own session) starts its own,
on a port the kernel picked free, in a directory of its own, and stops and deletes it at
the end. A missing program fails the test with the command that installs it
(``tests/system_deps.py``, which tox runs first, installs them as root).

    redis_server     "redis://127.0.0.1:PORT/0"
    postgres_server  PostgresServer: host, port, user, name, conninfo, django_database
    chromium         Chromium: dom(url), text(url), screenshot(url, path); each can turn
                     JavaScript off (javascript=False) and take more switches

Chromium runs once per call, headless, from the command line (``--dump-dom``,
``--screenshot``): no driver whose version must match Debian's browser, and nothing that
could try to download a browser of its own. Pages that need clicks would need a driver.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from tests.system_deps import CHROMIUM, POSTGRES, REDIS, Program, install_hint

__all__ = [
    "Chromium",
    "PostgresServer",
    "chromium",
    "postgres_server",
    "redis_server",
    "require",
    "visible_text",
]

#: How long a server may take to start or stop, or Chromium to render a page.
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
RENDER_TIMEOUT_S = 60.0
#: Another process can take the port between our probe and the server's bind.
PORT_ATTEMPTS = 3
ADDRESS_IN_USE = "Address already in use"
HOST = "127.0.0.1"
#: Debian's postgresql package creates this account; initdb and postgres refuse root.
CLUSTER_OWNER = "postgres"
POSTGRES_USER = "procpool"
POSTGRES_DB = "procpool_tasks"


def require(program: Program) -> Path:
    """Where ``program`` is; fail the test with the command that installs it if missing."""
    location = program.find()
    if location is None:
        pytest.fail(install_hint(program), pytrace=False)
    return location


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _poll(check: Callable[[], bool], *, timeout: float, what: str, said: Callable[[], str]) -> None:
    """Wait for ``check``; past ``timeout``, fail with what the server ``said`` (its log)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout}s waiting for {what}; it said:\n{said()}")
        time.sleep(0.02)


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def _reap(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT_S)


# --- Redis -------------------------------------------------------------------------------


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _start_redis(binary: Path, directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    for attempt in range(PORT_ATTEMPTS):
        port = _free_port()
        log_path = directory / f"redis-{attempt}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                # No snapshots or append-only file: nothing outlives the session.
                [binary, "--bind", HOST, "--port", str(port), "--dir", directory,
                 "--save", "", "--appendonly", "no", "--daemonize", "no"],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=directory,
            )  # fmt: skip
        try:
            _poll(
                # B023: the lambda runs before the loop moves on to the next port.
                lambda: process.poll() is not None or _redis_answers(port),  # noqa: B023
                timeout=START_TIMEOUT_S,
                what=f"redis-server on port {port} (log: {log_path})",
                said=lambda: log_path.read_text(errors="replace"),  # noqa: B023 (as above)
            )
        except BaseException:
            _reap(process)
            raise
        if process.poll() is None:
            return process, port
        log_text = log_path.read_text(errors="replace")
        if ADDRESS_IN_USE not in log_text:
            pytest.fail(f"redis-server exited with {process.returncode}:\n{log_text}")
    pytest.fail(f"redis-server found no free port in {PORT_ATTEMPTS} attempts")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server on 127.0.0.1 for this session (xdist worker); yields its URL."""
    binary = require(REDIS)
    process, port = _start_redis(binary, tmp_path_factory.mktemp("redis"))
    try:
        yield f"redis://{HOST}:{port}/0"
    finally:
        _reap(process)


# --- PostgreSQL --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PostgresServer:
    """A running throw-away PostgreSQL cluster: trust authentication, TCP on 127.0.0.1 only."""

    host: str
    port: int
    user: str
    name: str
    data_dir: Path

    @property
    def conninfo(self) -> str:
        """A libpq connection string, for ``psycopg.connect``."""
        return f"host={self.host} port={self.port} user={self.user} dbname={self.name}"

    @property
    def django_database(self) -> dict[str, Any]:
        """One entry of Django's ``DATABASES`` setting for this server."""
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": self.host,
            "PORT": str(self.port),
            "USER": self.user,
            "PASSWORD": "",
            "NAME": self.name,
        }


def _cluster_owner() -> pwd.struct_passwd | None:
    """The account that runs the cluster: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(CLUSTER_OWNER)
    except KeyError:
        pass
    # Two xdist workers may both get here; the second useradd fails, the account exists.
    created = subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", CLUSTER_OWNER],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        return pwd.getpwnam(CLUSTER_OWNER)
    except KeyError:
        pytest.fail(
            f"initdb refuses root and there is no {CLUSTER_OWNER!r} account to run "
            f"PostgreSQL as; `useradd --system {CLUSTER_OWNER}` said: {created.stderr}"
        )


class _Cluster:
    """initdb, pg_ctl and createdb on one data directory, run as the cluster's owner."""

    def __init__(self, bin_dir: Path, base: Path, owner: pwd.struct_passwd | None) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data_dir = base / "data"
        self.log_path = base / "postgres.log"
        self.owner = owner

    def run(self, program: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
        as_owner: dict[str, Any] = {}
        if self.owner is not None:
            as_owner = {"user": self.owner.pw_uid, "group": self.owner.pw_gid, "extra_groups": []}
        timeout = START_TIMEOUT_S * 2
        try:
            return subprocess.run(
                [self.bin_dir / program, *args],
                # The owner may not enter root's home, which would be the working directory.
                cwd=self.base,
                env={**os.environ, "HOME": str(self.base)},
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                **as_owner,
            )
        except subprocess.TimeoutExpired as expired:
            pytest.fail(
                f"{program} {' '.join(map(str, args))} did not finish within {timeout}s; it "
                f"said:\n{_text(expired.stdout)}{_text(expired.stderr)}\nthe server's log:\n"
                f"{self.log()}"
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run_checked(self, program: str, *args: str | Path) -> None:
        done = self.run(program, *args)
        if done.returncode != 0:
            pytest.fail(f"{program} exited with {done.returncode}:\n{done.stdout}{done.stderr}")

    def init(self) -> None:
        self.run_checked(
            "initdb", "-D", self.data_dir, "-U", POSTGRES_USER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{HOST}'\n"
                # TCP only: no socket in a directory that may not be ours (/var/run/postgresql).
                "unix_socket_directories = ''\n"
                # A throw-away cluster needs no durability.
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )

    def start(self) -> int:
        for _ in range(PORT_ATTEMPTS):
            port = _free_port()
            started = self.run(
                "pg_ctl", "start", "-D", self.data_dir, "-l", self.log_path,
                "-o", f"-p {port}", "-w", "-t", str(int(START_TIMEOUT_S)),
            )  # fmt: skip
            if started.returncode == 0:
                return port
            log_text = self.log()
            if ADDRESS_IN_USE not in log_text:
                pytest.fail(f"pg_ctl start exited with {started.returncode}:\n{log_text}")
        pytest.fail(f"PostgreSQL found no free port in {PORT_ATTEMPTS} attempts")

    def stop(self) -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        stop: list[str | Path] = ["stop", "-D", self.data_dir, "-w", "-t", str(int(STOP_TIMEOUT_S))]
        if self.run("pg_ctl", *stop, "-m", "fast").returncode != 0:
            self.run_checked("pg_ctl", *stop, "-m", "immediate")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A throw-away PostgreSQL cluster for this session (xdist worker), deleted afterwards."""
    bin_dir = require(POSTGRES)
    owner = _cluster_owner()
    # Not under pytest's base temp: that is private to us, so the owner could not enter it.
    base = Path(tempfile.mkdtemp(prefix="procpool-postgres-"))
    cluster = _Cluster(bin_dir, base, owner)
    try:
        if owner is not None:
            os.chown(base, owner.pw_uid, owner.pw_gid)
        cluster.init()
        port = cluster.start()
        cluster.run_checked(
            "createdb", "-h", HOST, "-p", str(port), "-U", POSTGRES_USER, POSTGRES_DB
        )
        yield PostgresServer(
            host=HOST, port=port, user=POSTGRES_USER, name=POSTGRES_DB, data_dir=cluster.data_dir
        )
    finally:
        # Also after a failed start: pg_ctl may give up on a server that is still starting.
        cluster.stop()
        shutil.rmtree(base)


# --- Chromium ----------------------------------------------------------------------------

#: Headless, and nothing that reaches out: this machine's network is closed. No sandbox,
#: which root cannot have and containers often refuse; it loads only our local pages.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars",
)  # fmt: skip
#: A profile's preferences that block every page's JavaScript, as a person can turn it off.
#: (``--blink-settings=scriptEnabled=false`` would also stop ``--dump-dom``, which reads
#: the DOM with a script of its own; the content setting blocks only the page's.)
JAVASCRIPT_OFF_PREFERENCES = {"profile": {"default_content_setting_values": {"javascript": 2}}}
#: Virtual time: the page's timers and requests run this long, without waiting in real time.
VIRTUAL_TIME_BUDGET_MS = 5000


class _TextCollector(HTMLParser):
    _HIDDEN = frozenset({"head", "script", "style", "template", "noscript"})
    # Text runs on across these; any other element (p, div, li, td, br...) separates words.
    _INLINE = frozenset(
        "a abbr b bdi bdo cite code data dfn em i kbd mark q s samp small span strong sub sup "
        "time u var".split()
    )

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._HIDDEN:
            self._hidden_depth += 1
        elif tag not in self._INLINE:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._HIDDEN and self._hidden_depth:
            self._hidden_depth -= 1
        elif tag not in self._INLINE:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden_depth:
            self.parts.append(data)


def visible_text(html: str) -> str:
    """The text of ``html`` outside head, script and style, whitespace collapsed.

    Close to what the browser shows, not its exact ``innerText``: CSS (``display: none``)
    is not applied.
    """
    collector = _TextCollector()
    collector.feed(html)
    collector.close()
    return " ".join("".join(collector.parts).split())


@dataclass(frozen=True, slots=True)
class Chromium:
    """Headless Chromium, one fresh process and profile for each page it loads."""

    binary: Path
    scratch: Path

    def dom(self, url: str, *, javascript: bool = True, switches: Sequence[str] = ()) -> str:
        """The page's DOM as HTML once it has loaded and its scripts have run.

        ``javascript=False``: the page's scripts are blocked. ``switches``: more of
        Chromium's flags.
        """
        return self._run(url, "--dump-dom", *switches, javascript=javascript)

    def text(self, url: str, *, javascript: bool = True, switches: Sequence[str] = ()) -> str:
        """The page's rendered text (see ``visible_text``)."""
        return visible_text(self.dom(url, javascript=javascript, switches=switches))

    def screenshot(
        self,
        url: str,
        path: Path,
        *,
        width: int = 1280,
        height: int = 800,
        javascript: bool = True,
        switches: Sequence[str] = (),
    ) -> Path:
        """Save a PNG of the page's top ``width`` x ``height`` pixels at ``path``."""
        self._run(
            url,
            f"--screenshot={path}",
            f"--window-size={width},{height}",
            *switches,
            javascript=javascript,
        )
        if not path.is_file():
            pytest.fail(f"chromium wrote no screenshot to {path}")
        return path

    def _run(self, url: str, *switches: str, javascript: bool = True) -> str:
        profile = Path(tempfile.mkdtemp(prefix="profile-", dir=self.scratch))
        if not javascript:
            (profile / "Default").mkdir()
            (profile / "Default" / "Preferences").write_text(json.dumps(JAVASCRIPT_OFF_PREFERENCES))
        command = [
            str(self.binary), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", *switches, url,
        ]  # fmt: skip
        # Its own process group, so that no renderer or zygote outlives the call.
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0
        )
        try:
            stdout, stderr = process.communicate(timeout=RENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(f"chromium took over {RENDER_TIMEOUT_S}s on {url}; stderr:\n{stderr}")
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            shutil.rmtree(profile, ignore_errors=True)
        if process.returncode != 0:
            pytest.fail(f"chromium exited with {process.returncode} on {url}; stderr:\n{stderr}")
        return stdout


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless Chromium (Debian's ``chromium``), as a ``Chromium`` helper."""
    return Chromium(require(CHROMIUM), tmp_path_factory.mktemp("chromium"))
