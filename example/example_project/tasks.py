"""The example's tasks: ordinary functions with the framework's @task decorator."""

import asyncio
import hashlib

try:
    from django.tasks import task
except ImportError:  # Django < 6: the django-tasks backport
    from django_tasks import task


@task()
def checksum(text: str, rounds: int = 2000) -> str:
    """A little CPU work: what a process pool is for."""
    digest = text.encode()
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:16]


@task(priority=10, queue_name="reports")
def build_report(name: str, rows: int) -> dict[str, object]:
    return {"report": name, "rows": rows, "total": sum(range(rows))}


@task()
async def fetch_profile(user_id: int) -> dict[str, object]:
    """An async task: the worker runs it in an event loop."""
    await asyncio.sleep(0)
    return {"user_id": user_id, "name": f"user-{user_id}"}


@task()
def divide(a: int, b: int) -> float:
    """Fails for b == 0: the error and traceback land in the task's result."""
    return a / b
