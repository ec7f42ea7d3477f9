"""A Django Tasks backend that runs tasks in a process pool, from a journal directory.

No Redis, no database queue: ``enqueue`` appends a durable record to a journal directory
and ``manage.py procpool_worker`` runs it. See the README for settings and guarantees.
"""

__version__ = "0.1.0"
