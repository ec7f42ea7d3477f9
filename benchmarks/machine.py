"""What a run ran on: the machine, the disk measured and each system's versions."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from . import systems


def describe(workdir: Path, chosen: list[systems.System]) -> dict[str, Any]:
    """The CPU, memory, disk (of ``workdir``) and software versions of this run."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for system in chosen:
        missing = system.missing()
        versions[system.key] = missing or _version_of(system)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory),
        "disk": _disk(workdir),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "django": _dist_version("django"),
        "versions": versions,
    }


def _dist_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _version_of(system: systems.System) -> str:
    if system.kind == "procpool":
        return f"procpool-tasks {_dist_version('procpool-tasks')}"
    if system.kind == "db":
        return f"django-tasks-db {_dist_version('django-tasks-db')}"
    if system.kind == "ox":
        return f"django-ox {_dist_version('django-ox')}"
    if system.kind == "dbtasks":
        return f"django-dbtasks {_dist_version('django-dbtasks')}"
    if system.kind == "vtasks":
        redis = (systems.redis_version() or "").split(" ")[2:3]
        return (
            f"django-vtasks {_dist_version('django-vtasks')}, "
            f"redis-server {''.join(redis).removeprefix('v=')}"
        )
    if system.kind == "threadmill":
        redis = (systems.redis_version() or "").split(" ")[2:3]
        return (
            f"threadmill {_dist_version('threadmill')}, "
            f"redis-server {''.join(redis).removeprefix('v=')}"
        )
    if system.kind == "huey":
        return f"huey {_dist_version('huey')}"
    if system.kind == "rq":
        redis = (systems.redis_version() or "").split(" ")[2:3]
        return (
            f"django-tasks-rq {_dist_version('django-tasks-rq')}, rq {_dist_version('rq')}, "
            f"redis-server {''.join(redis).removeprefix('v=')}"
        )
    return f"Django {_dist_version('django')}"


def _disk(path: Path) -> str:
    """The filesystem and device a path is on, from /proc/mounts."""
    best = ("?", "?", "")
    with contextlib.suppress(OSError):
        resolved = str(path.resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            device, mount, fstype = line.split()[:3]
            if resolved.startswith(mount.rstrip("/") + "/") or resolved == mount:
                if len(mount) >= len(best[2]):
                    best = (device, fstype, mount)
    return f"{best[1]} on {best[0]}"
