"""A task module that only a worker process's main thread may import: it sets a signal
handler when imported, which works only there (``test_inbox``)."""

import os
import signal
import threading

try:
    from django.tasks import task
except ImportError:  # Django < 6: the backport
    from django_tasks import task  # type: ignore[no-redef]

# Each thread that imports it, even one that fails to, says so (test_inbox reads it).
_imported_by = os.environ.get("MAIN_THREAD_TASKS_IMPORTED_BY", "")
os.environ["MAIN_THREAD_TASKS_IMPORTED_BY"] = f"{_imported_by}{threading.current_thread().name};"
# Sets the handler it has: no change, but only the main thread may call this.
signal.signal(signal.SIGUSR2, signal.getsignal(signal.SIGUSR2))


@task()
def noop(*args: object) -> None:
    """Does nothing (with the arguments make_record gives every record)."""
