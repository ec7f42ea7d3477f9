"""Imported once by the forkserver, so every worker process is forked with Django set up.

Children forked from the forkserver share these pages copy-on-write and start fast, but
inherit none of the supervisor's threads, locks, signal handlers or connections.
"""

import contextlib

import django

# A broken project is reported by the first child instead (its initializer sets up
# Django again and the error reaches the supervisor); the forkserver must not die here.
with contextlib.suppress(Exception):
    django.setup()
