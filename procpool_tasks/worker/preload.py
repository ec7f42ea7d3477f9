"""Imported once by the forkserver, so every worker process is forked with Django set up.

Children forked from the forkserver share these pages copy-on-write and start fast, but
inherit none of the supervisor's threads, locks, signal handlers or connections.
"""

import contextlib
import os

import django

# Its own process group, which the worker processes forked from it share: a signal to the
# supervisor's group (``kill -TERM -PGID``, a terminal's Ctrl+C) reaches the supervisor
# alone, which decides whether running tasks finish or stop.
with contextlib.suppress(OSError):
    os.setpgid(0, 0)

# A broken project is reported by the first child instead (its initializer sets up
# Django again and the error reaches the supervisor); the forkserver must not die here.
with contextlib.suppress(Exception):
    django.setup()
