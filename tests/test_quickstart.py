"""The README's quick start runs as written: from a clone to a finished task.

The shell blocks between the README's ``quickstart`` markers (the text that
``docs/getting-started.md`` includes) run verbatim, in order, as one bash script under
``set -euo pipefail``, in a temporary directory that holds a copy of the clone (the files
``pip install .`` reads) and nothing else: the project is made there by
``django-admin startproject`` on its SQLite database, and the script ends by printing the
task's status.

The first block is ``python3 -m pip install .``, run in that copy "with the virtualenv of
your project active". Here that virtualenv is a new one (``venv --without-pip``) that sees
this test environment's packages through a ``.pth`` file, so that Django, pip and the
build backend are the ones tox installed, and the venv's own ``bin`` is first on ``PATH``
(``django-admin`` comes next, from this environment's ``bin``). pip runs offline: its
environment says ``PIP_NO_INDEX=1`` and ``PIP_NO_BUILD_ISOLATION=0`` (pip's spelling of
``--no-build-isolation``), so it builds the wheel with this environment's
setuptools and takes the dependencies as installed, where a user's pip would fetch the
build backend from the index. The command itself is the README's; only pip's environment
differs, and the test checks that the venv then imports the procpool_tasks it installed,
not this environment's (the venv's own site-packages come first).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

START, END = "<!-- quickstart-start -->", "<!-- quickstart-end -->"
#: Every step together: a pip install, startproject, migrate, three manage.py commands.
SCRIPT_TIMEOUT_S = 300
#: What ``pip install .`` reads from the clone.
CLONE_FILES = ("pyproject.toml", "README.md", "LICENSE", "procpool_tasks")


def quickstart_blocks() -> list[str]:
    """The ``sh`` blocks of the README's quick start, in order, as they stand."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split(START, 1)[1].split(END, 1)[0]
    return re.findall(r"^```sh\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)


def test_the_docs_getting_started_page_includes_the_readme_quick_start() -> None:
    page = (REPO_ROOT / "docs" / "getting-started.md").read_text()

    assert (f"```{{include}} ../README.md\n:start-after: {START}\n:end-before: {END}\n```") in page


def test_the_quick_start_installs_from_the_clone_first() -> None:
    blocks = quickstart_blocks()

    assert blocks[0] == "python3 -m pip install .\n"
    assert len(blocks) >= 3


def _venv_seeing_this_environment(directory: Path) -> Path:
    """A virtualenv whose Python also imports what this test environment has installed."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", directory],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [site_packages] = directory.glob("lib/python3*/site-packages")
    ours = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: the environment's own .pth files count too.
    (site_packages / "_test_environment.pth").write_text(
        f"import site; site.addsitedir({ours!r})\n"
    )
    return directory / "bin"


def test_the_readme_quick_start_runs_as_written_to_a_successful_task(tmp_path: Path) -> None:
    pytest.importorskip(
        "setuptools", reason="pip install . builds offline with this environment's setuptools"
    )
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in CLONE_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, clone / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, clone / name)
    venv_bin = _venv_seeing_this_environment(tmp_path / "venv")
    script = tmp_path / "quickstart.sh"
    script.write_text("set -euo pipefail\n" + "\n".join(quickstart_blocks()))
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "PYTHONPATH", "VIRTUAL_ENV"}
        and not key.startswith("PROCPOOL_")
    }
    environment.update(
        PATH=os.pathsep.join([str(venv_bin), str(Path(sys.executable).parent), os.environ["PATH"]]),
        VIRTUAL_ENV=str(venv_bin.parent),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )

    done = subprocess.run(
        ["bash", str(script)],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )

    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stdout.splitlines()[-1] == "SUCCESSFUL 5", done.stdout
    imported = subprocess.run(
        [venv_bin / "python", "-c", "import procpool_tasks; print(procpool_tasks.__file__)"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    installed = Path(imported.stdout.strip())
    assert installed.is_relative_to(venv_bin.parent), installed
    assert (tmp_path / "mysite" / ".procpool_tasks").is_dir()
