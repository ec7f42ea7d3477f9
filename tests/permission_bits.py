"""Run ``django-admin`` bound by permission bits even as root: ``python -m
tests.permission_bits procpool_status``.

Tests run as root, which reads and writes whatever the mode bits say. This drops the
capabilities that let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER) from the
bounding set and runs ``django-admin`` anew, so that a journal made 0500 is one the command
may only read, as it is for any other user.
"""

from __future__ import annotations

import ctypes
import os
import sys

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER = 1, 2, 3


def main() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH, _CAP_FOWNER):
        if libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"cannot drop capability {capability}: {os.strerror(error)}")
    # Capabilities are computed again at exec: without those in the bounding set, root's
    # new process has none of them.
    os.execv(sys.executable, [sys.executable, "-m", "django", *sys.argv[1:]])  # noqa: S606


if __name__ == "__main__":
    main()
