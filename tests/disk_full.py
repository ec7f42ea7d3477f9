"""Run ``django-admin`` with a simulated full disk: ``python -m tests.disk_full procpool_worker``.

While the file named by ``PROCPOOL_DISK_FULL_FLAG`` exists, every write to the journal
writes half of its bytes and then fails with ENOSPC, as a filesystem that fills up in the
middle of a write does. The stand-in for a real full filesystem where none can be mounted,
and a deterministic torn write where one can.
"""

from __future__ import annotations

import errno
import os
import sys

from procpool_tasks.journal import files

FLAG_VARIABLE = "PROCPOOL_DISK_FULL_FLAG"

# Every write of the journal calls it through procpool_tasks.journal.files: patched there.
_write_all = files._write_all


def _write_all_unless_full(fd: int, data: bytes) -> None:
    flag = os.environ.get(FLAG_VARIABLE)
    if flag and os.path.exists(flag):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    _write_all(fd, data)


def main() -> None:
    files._write_all = _write_all_unless_full
    from django.core.management import execute_from_command_line

    execute_from_command_line(["django-admin", *sys.argv[1:]])


if __name__ == "__main__":
    main()
