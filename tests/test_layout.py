"""The package's layout keeps its promises: old paths import, commands load what they need.

0.2.0 moved modules into folders and every exception into ``procpool_tasks.exceptions``;
code and result files of 0.1 that name the old paths keep working for one more release.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from django.core import management
from django.utils.module_loading import import_string

import procpool_tasks
from procpool_tasks import _moved, exceptions
from procpool_tasks.operations import status
from tests.conftest import REPO_ROOT, Env


@pytest.mark.parametrize("path", sorted(exceptions.FORMER_PATHS))
def test_every_former_exception_path_imports_the_canonical_class(path: str) -> None:
    if _is_moved(path):
        sys.modules.pop(path.rpartition(".")[0], None)  # imported by an earlier test
        with pytest.warns(DeprecationWarning, match="moved to procpool_tasks"):
            found = import_string(path)
    else:  # a module that stayed: no warning (filterwarnings=error would fail the test)
        found = import_string(path)

    assert found is exceptions.FORMER_PATHS[path]
    assert found.__module__ == "procpool_tasks.exceptions"
    assert getattr(exceptions, found.__name__) is found


@pytest.mark.parametrize(("old", "new"), sorted(_moved.MOVED_MODULES.items()))
def test_every_moved_module_imports_from_its_old_path_with_a_deprecation_warning(
    old: str, new: str
) -> None:
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=f"{old} moved to {new} in procpool_tasks 0.2.0"):
        module = importlib.import_module(old)

    names = [name for name in vars(importlib.import_module(new)) if not name.startswith("__")]
    assert names
    assert all(
        getattr(module, name) is getattr(importlib.import_module(new), name) for name in names
    )


def test_the_scheduler_names_of_procpool_tasks_periodic_still_import() -> None:
    from procpool_tasks.periodic import scheduler

    with pytest.warns(DeprecationWarning, match="moved to procpool_tasks.periodic.scheduler"):
        assert import_string("procpool_tasks.periodic.Scheduler") is scheduler.Scheduler
    with pytest.raises(ImportError, match='does not define a "no_such_name"'):
        import_string("procpool_tasks.periodic.no_such_name")


@pytest.mark.parametrize(
    "command",
    [
        "procpool_status",
        "procpool_requeue",
        "procpool_cancel",
        "procpool_prune",
        "procpool_quarantine",
    ],
)
def test_read_only_and_operator_commands_load_no_module_of_the_worker(
    env: Env, command: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "django", command, "--help"],
        env=env.variables,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    imported = [line.rpartition("|")[2].strip() for line in done.stderr.splitlines()]
    assert "procpool_tasks.operations" in imported or command == "procpool_prune"
    assert [name for name in imported if name.startswith("procpool_tasks.worker")] == []


def _is_moved(path: str) -> bool:
    return path.rpartition(".")[0] in _moved.MOVED_MODULES


PROCPOOL_COMMANDS = sorted(
    name for name, app in management.get_commands().items() if app == "procpool_tasks"
)


@pytest.mark.parametrize("command", PROCPOOL_COMMANDS)
def test_every_procpool_command_prints_the_version_of_procpool_tasks(
    env: Env, command: str
) -> None:
    assert env.manage(command, "--version").stdout == f"{procpool_tasks.__version__}\n"


def test_the_procpool_commands_are_found_for_the_version_test() -> None:
    assert {"procpool_prune", "procpool_status", "procpool_worker"} <= set(PROCPOOL_COMMANDS)


def test_the_wheel_ships_the_json_schema_of_procpool_status(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools here")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "procpool_tasks"):
        copy = shutil.copytree if (REPO_ROOT / name).is_dir() else shutil.copy
        copy(REPO_ROOT / name, source / name if name == "procpool_tasks" else source)
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--no-index", "--wheel-dir", str(tmp_path / "dist"), str(source)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = (tmp_path / "dist").glob("*.whl")
    with zipfile.ZipFile(wheel) as contents:
        shipped = json.loads(contents.read("procpool_tasks/status.schema.json"))

    assert shipped == json.loads(status.SCHEMA_PATH.read_text())
    assert shipped["properties"]["schema_version"]["const"] == status.SCHEMA_VERSION
