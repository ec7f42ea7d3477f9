"""Install the programs the tests run (Chromium, Redis, PostgreSQL) where they are missing.

tox runs this script first, as the ``system-deps`` environment: as root on a machine with
``apt-get`` (CI) it installs Debian's packages for whatever is missing, in one apt-get run;
anywhere else it names what is missing, prints the command that installs it and exits 1.
When everything is there it only looks and takes well under a second. ``tests/services.py``
finds the programs with the same functions and fails a test with the same hint.

Standard library only: tox runs it before any package is installed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("system_deps")

#: Where Debian's postgresql-NN packages put initdb and pg_ctl (not on PATH).
POSTGRES_LIB = Path("/usr/lib/postgresql")
EXIT_OK = 0
EXIT_MISSING = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Program:
    """A program the tests run, where it is looked for, and the Debian package that brings it."""

    name: str
    package: str
    looked_for: str
    find: Callable[[], Path | None]


def _which(command: str) -> Path | None:
    found = shutil.which(command)
    return Path(found) if found else None


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def find_postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: Debian's newest, else the one on PATH."""
    debian = sorted(POSTGRES_LIB.glob("*/bin"), key=_version_key, reverse=True)
    on_path = [initdb.parent] if (initdb := _which("initdb")) else []
    for bin_dir in [*debian, *on_path]:
        if (bin_dir / "initdb").is_file() and (bin_dir / "pg_ctl").is_file():
            return bin_dir
    return None


CHROMIUM = Program(
    name="chromium",
    package="chromium",
    looked_for="on PATH",
    find=lambda: _which("chromium"),
)
REDIS = Program(
    name="redis-server",
    package="redis-server",
    looked_for="on PATH",
    find=lambda: _which("redis-server"),
)
POSTGRES = Program(
    name="PostgreSQL (initdb, pg_ctl)",
    package="postgresql",
    looked_for=f"in {POSTGRES_LIB}/*/bin and on PATH",
    find=find_postgres_bin_dir,
)
PROGRAMS = (CHROMIUM, REDIS, POSTGRES)


def install_command(packages: list[str]) -> str:
    """The shell command that installs Debian ``packages``; with sudo unless we are root."""
    sudo = "" if os.geteuid() == 0 else "sudo "
    return (
        f"{sudo}apt-get update && "
        f"{sudo}apt-get install -y --no-install-recommends {' '.join(packages)}"
    )


def install_hint(program: Program) -> str:
    """What a test says when ``program`` is missing."""
    return (
        f"{program.name} not found {program.looked_for}; install Debian's package with "
        f"`{install_command([program.package])}` (`python3 -m tox` does that itself when "
        "run as root)"
    )


def _can_install() -> bool:
    return os.geteuid() == 0 and shutil.which("apt-get") is not None


def _apt_get(*args: str) -> None:
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for another apt or dpkg (unattended-upgrades, say) instead of failing at once.
    command = ["apt-get", "-q", "-o", "DPkg::Lock::Timeout=300", *args]
    subprocess.run(command, env=environment, check=True)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="system_deps: %(message)s")
    missing = [program for program in PROGRAMS if program.find() is None]
    if not missing:
        logger.info("found %s", ", ".join(program.name for program in PROGRAMS))
        return EXIT_OK
    packages = [program.package for program in missing]
    if not _can_install():
        logger.error(
            "missing %s; install Debian's packages with:\n    %s",
            ", ".join(program.name for program in missing),
            install_command(packages),
        )
        return EXIT_MISSING
    started = time.monotonic()
    _apt_get("update")
    _apt_get("install", "-y", "--no-install-recommends", *packages)
    logger.info("installed %s in %.0f s", " ".join(packages), time.monotonic() - started)
    still_missing = [program.name for program in missing if program.find() is None]
    if still_missing:
        logger.error("still missing after apt-get install: %s", ", ".join(still_missing))
        return EXIT_MISSING
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
