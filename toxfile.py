"""tox inline plugin: let interpreter discovery see every pyenv-installed Python 3.

`pyenv global` selects one version, and the pyenv shim for any other (python3.12, ...)
refuses to run, so tox would report that interpreter missing. Importing this module
puts each `$PYENV_ROOT/versions/3.*/bin` in front of PATH, newest first, so tox finds
the real binaries; machines without pyenv are unaffected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


def _version_key(bin_dir: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", bin_dir.parent.name))


def _pyenv_bin_dirs() -> list[str]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    bin_dirs = [d for d in root.glob("versions/3.*/bin") if d.is_dir()]
    return [str(d) for d in sorted(bin_dirs, key=_version_key, reverse=True)]


os.environ["PATH"] = os.pathsep.join(filter(None, [*_pyenv_bin_dirs(), os.environ.get("PATH")]))
