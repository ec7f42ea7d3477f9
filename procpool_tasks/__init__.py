"""A Django Tasks backend that runs tasks in a process pool, from a journal directory.

No Redis, no database queue: ``enqueue`` appends a durable record to a journal directory
and ``manage.py procpool_worker`` runs it. See the README and docs/ for settings and guarantees.
"""

from ._moved import install as _install_moved_modules

__version__ = "0.1.0"

# procpool_tasks.status and the other module paths of 0.1 still import (see _moved).
_install_moved_modules()
