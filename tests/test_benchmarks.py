"""The benchmark harness runs end to end (``python -m benchmarks --quick``); no timings.

Peers that are not installed in this environment must still have their rows, saying
how to install them; the harness is run as a user would, in a subprocess.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

SYSTEMS = {
    "procpool": "procpool_tasks (durable)",
    "procpool-nondurable": 'procpool_tasks ("durable": False)',
    "db": "django-tasks-db (SQLite)",
    "huey-sqlite": "huey (SqliteHuey)",
    "huey-file": "huey (FileHuey)",
    "rq": "RQ (django-tasks-rq, Redis)",
    "immediate": "ImmediateBackend",
    "ox": "django-ox (SQLite)",
    "dbtasks": "django-dbtasks (SQLite)",
    "vtasks": "django-vtasks (Valkey backend, Redis)",
    "threadmill": "threadmill (Redis)",
}
WORKLOADS = [
    "enqueue_1",
    "enqueue_4",
    "drain",
    "supervisor_cpu_us",
    "drain_4",
    "supervisor_cpu_us_4",
    "drain_sleep10",
    "drain_sleep10_4",
    "latency_p50",
    "latency_p99",
    "rss_idle",
    "pss_idle",
    "rss_after",
    "pss_after",
    *(
        f"growth_{what}_{level}"
        for level in (0, 1)
        for what in ("enqueue", "claim", "get_result", "startup", "status", "status_page")
    ),
    "startup_1",
    "startup_ready",
    "recovery",
]
LIMITS = [
    "durable_create",
    "durable_append",
    "file_create",
    "pool_round_trip",
    "pool_round_trip_4",
    "watch_p50",
    "watch_p99",
]
#: The Markdown tables, each with a row per system.
TABLES = ["### Throughput and latency", "### Memory, start-up and recovery", "### Growth"]
SECTIONS = [*TABLES, "### Targets"]
#: A quick run takes 2-3 minutes on a 2-core machine busy with other test runs.
QUICK_RUN_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, Any]]:
    """Run ``python -m benchmarks --quick`` once; its stdout, stderr and JSON."""
    tmp_path = tmp_path_factory.mktemp("bench")
    json_path = tmp_path / "results" / "quick.json"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--json", str(json_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=QUICK_RUN_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # The report is also written beside the JSON, as printed.
    assert json_path.with_suffix(".md").read_text() == done.stdout.removesuffix("\n")
    return done.stdout, done.stderr, json.loads(json_path.read_text())


@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 60)
def test_quick_run_reports_every_system_in_every_table(
    quick_run: tuple[str, str, dict[str, Any]],
) -> None:
    markdown, _, results = quick_run
    sections = _sections(markdown)
    for heading in TABLES:
        rows = sections[heading]
        for label in SYSTEMS.values():
            assert any(row.startswith(f"| {label} |") for row in rows), (heading, label, rows)
    # Every target of the issue is decided (or says why not) in a table of its own.
    targets = sections["### Targets"]
    assert len(targets) == 1 + len(results["targets"]) > 1, targets  # a head, a row each


@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 60)
def test_quick_run_writes_every_workload_and_limit_to_json(
    quick_run: tuple[str, str, dict[str, Any]],
) -> None:
    markdown, _, results = quick_run
    assert results["quick"] is True
    assert {s["key"]: s["label"] for s in results["systems"]} == SYSTEMS
    assert [w["key"] for w in results["workloads"]] == WORKLOADS
    for workload in results["workloads"]:
        assert workload["title"] in markdown, workload["title"]
        figures = results["figures"][workload["key"]]
        assert set(figures) == set(SYSTEMS), workload["key"]
        for system, figure in figures.items():
            # A figure, or the reason there is none: never a silent gap.
            assert (figure["value"] is None) == bool(figure["missing"]), (workload, system)
    for key in LIMITS:
        assert results["limits"][key]["value"] > 0, key
    # The reference itself is measured on every workload.
    for workload in WORKLOADS:
        assert results["figures"][workload]["procpool"]["value"] is not None, workload


@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 60)
def test_missing_peers_and_chart_say_how_to_install_them(
    quick_run: tuple[str, str, dict[str, Any]],
) -> None:
    markdown, stderr, results = quick_run
    peers = {"db": "django_tasks_db", "huey-sqlite": "huey", "rq": "django_tasks_rq"}
    for system, module in peers.items():
        if importlib.util.find_spec(module) is None:
            missing = results["figures"]["drain"][system]["missing"]
            assert missing.startswith("not installed: pip install"), missing
            assert missing in markdown
    # The 2026 peers need Python 3.12+ (some Django 6+), newer than the harness may run.
    for system, module in {
        "ox": "django_ox",
        "dbtasks": "dbtasks",
        "vtasks": "django_vtasks",
        "threadmill": "threadmill",
    }.items():
        missing = results["figures"]["drain"][system]["missing"]
        if sys.version_info < (3, 12):
            assert missing.startswith("needs Python 3.12+ (this run: Python 3."), missing
        elif importlib.util.find_spec(module) is None:
            assert missing.startswith(("not installed: pip install", "needs Django")), missing
        if missing:
            assert missing in markdown
    if importlib.util.find_spec("matplotlib") is None:
        assert "no chart: matplotlib is not installed" in stderr
    else:
        png = Path(stderr.rsplit("PNG: ", 1)[1].strip())
        assert png.read_bytes().startswith(b"\x89PNG")


@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 60)
def test_compare_of_a_run_with_itself_finds_no_ratio_moved(
    quick_run: tuple[str, str, dict[str, Any]], tmp_path: Path
) -> None:
    _, _, results = quick_run
    run = tmp_path / "run.json"
    run.write_text(json.dumps(results))
    rows, summary = _compare(now=run, then=run)
    assert rows, "no ratio in both runs"
    assert all(row.endswith(" | +0% | no |") for row in rows), rows
    assert summary == f"0 of {len(rows)} ratios moved more than 10%."


@pytest.mark.timeout(QUICK_RUN_TIMEOUT_S + 60)
def test_compare_says_which_ratio_moved_and_whether_for_the_better(
    quick_run: tuple[str, str, dict[str, Any]], tmp_path: Path
) -> None:
    _, _, results = quick_run
    now, then = tmp_path / "now.json", tmp_path / "then.json"
    now.write_text(json.dumps(results))
    earlier = copy.deepcopy(results)
    # Then, the non-durable enqueue was 1.5x as far ahead of the durable one as now.
    earlier["figures"]["enqueue_1"]["procpool-nondurable"]["value"] *= 1.5
    then.write_text(json.dumps(earlier))
    rows, summary = _compare(now=now, then=then)
    moved = [row for row in rows if not row.endswith(" | no |")]
    assert len(moved) == 1, rows
    assert moved[0].startswith('| enqueue, 1 process | procpool_tasks ("durable": False) | ')
    assert moved[0].endswith(" | -33% | yes, better |"), moved
    assert summary == f"1 of {len(rows)} ratios moved more than 10%."


def _compare(*, now: Path, then: Path) -> tuple[list[str], str]:
    """``python -m benchmarks --compare THEN --json NOW``: its table rows and last line."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--compare", str(then), "--json", str(now)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.strip().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| workload")]
    return rows, lines[-1]


def _sections(markdown: str) -> dict[str, list[str]]:
    """The table rows under each heading that starts with one of SECTIONS."""
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading = next((h for h in SECTIONS if line.startswith(h)), None)
            current = found.setdefault(heading, []) if heading else None
        elif current is not None and line.startswith("| "):
            current.append(line)
    return found


def test_help_names_every_option_and_the_compare_threshold() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    for option in ("--quick", "--json", "--repeats", "--systems", "--workloads", "--compare"):
        assert option in shown.stdout
    assert "moved more than 10%" in " ".join(shown.stdout.split())
