"""Imported once by the forkserver, so every worker process is forked with Django set up.

Children forked from the forkserver share these pages copy-on-write and start fast, but
inherit none of the supervisor's threads, locks, signal handlers or connections.
"""

import contextlib
import gc
import json
import os
import sys

import django

#: The supervisor's ``sys.path``, as JSON (``Supervisor._start_forkserver`` sets it).
#: CPython starts the forkserver with ``python -c`` and does not give it the path it was
#: given for it: without this, a project run as ``python path/to/manage.py`` from another
#: directory does not import here, and every worker process set Django up by itself.
SYS_PATH_VARIABLE = "PROCPOOL_TASKS_FORKSERVER_PATH"

with contextlib.suppress(ValueError, TypeError):
    sys.path[:] = json.loads(os.environ.get(SYS_PATH_VARIABLE) or "null") or sys.path

# Its own process group, which the worker processes forked from it share: a signal to the
# supervisor's group (``kill -TERM -PGID``, a terminal's Ctrl+C) reaches the supervisor
# alone, which decides whether running tasks finish or stop.
with contextlib.suppress(OSError):
    os.setpgid(0, 0)

#: Why Django could not be set up here, if it could not. A broken project is reported by
#: each worker process instead (``child.init_child`` raises this, and the error reaches the
#: supervisor): the forkserver must not die, and Django cannot be set up twice in one
#: process, so a process forked from here could not find the error by itself.
setup_error: Exception | None = None
try:
    django.setup()
    # What every worker process runs, imported once here rather than in each of them.
    from procpool_tasks.worker import child  # noqa: F401
except Exception as error:
    setup_error = error

# The objects made so far are never collected: a collection in a worker process would write
# to each of them, and so copy every page it shares with the forkserver into the process
# (its PSS grew by a fifth over 5,000 short tasks; frozen, it stays level).
gc.collect()
gc.freeze()
